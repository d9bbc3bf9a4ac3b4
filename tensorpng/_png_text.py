"""Text chunks of the PNG container (``tEXt``, ``zTXt``, ``iTXt``): writing and bounded reading.

Text is written as ``tEXt`` when the value is Latin-1 and as ``iTXt`` (UTF-8) otherwise;
values whose encoded size reaches :data:`TEXT_COMPRESS_THRESHOLD` (1 KiB) are compressed
(``zTXt``, or ``iTXt`` with its compression flag). Below 1 KiB deflate saves little and
every reader, including a plain ``strings``, can see the text. Reading inflates only the
keys asked for, with a per-value and a total limit (Pillow's ``MAX_TEXT_CHUNK`` and
``MAX_TEXT_MEMORY``); values above the per-value limit are refused when writing too, so what
tensorpng writes, tensorpng and Pillow read back.
"""

from __future__ import annotations

import functools
import zlib
from collections.abc import Iterable, Mapping

from ._png_chunks import Chunk, chunk
from .arrays import plain_number
from .errors import DecodeError, OptionError

TEXT_COMPRESS_THRESHOLD = 1024  # encoded text values of this many bytes or more are compressed
MAX_TEXT_CHUNK = 1 << 20  # the most bytes one text value may hold (Pillow's MAX_TEXT_CHUNK)
MAX_TEXT_MEMORY = 64 << 20  # the most bytes all text values read from one file may hold


def check_text_key(key: str) -> bytes:
    """The keyword's Latin-1 bytes: 1-79 printable characters without leading, trailing or
    consecutive spaces (spec 11.3.3.2), else :class:`OptionError`."""
    if not isinstance(key, str):
        raise OptionError(f"PNG text keys are str, got {type(key).__name__}")
    try:
        key_bytes = key.encode("latin-1")
    except UnicodeEncodeError:
        raise OptionError(f"PNG text keys must be Latin-1, got {key!r}") from None
    if not (
        1 <= len(key_bytes) <= 79
        and all(32 <= b <= 126 or b >= 161 for b in key_bytes)
        and key == key.strip(" ")
        and "  " not in key
    ):
        raise OptionError(
            f"PNG text key {key!r} is not valid: use 1-79 printable Latin-1 characters, "
            "no leading, trailing or double spaces"
        )
    return key_bytes


_checked_key = functools.lru_cache(maxsize=64)(check_text_key)  # the same few keys, once a file


def text_chunk(key: str, value: str, threshold: int = TEXT_COMPRESS_THRESHOLD) -> bytes:
    """One text chunk: ``tEXt`` (Latin-1 ``value``) or ``iTXt`` (UTF-8), compressed as
    ``zTXt`` / compressed ``iTXt`` when the encoded value has ``threshold`` bytes or more.

    Raises :class:`OptionError` for an invalid key, a value with NUL (``tEXt`` and ``zTXt``
    cannot hold one) or a lone surrogate (UTF-8 cannot), or a value over
    :data:`MAX_TEXT_CHUNK` bytes, which readers (this one and Pillow's) refuse to inflate.
    """
    key_bytes = _checked_key(key) if isinstance(key, str) else check_text_key(key)
    if not isinstance(value, str):
        raise OptionError(f"PNG text value for key {key!r} must be str, got {type(value).__name__}")
    if "\x00" in value:
        raise OptionError(f"PNG text value for key {key!r} contains a NUL character")
    try:
        raw, latin = value.encode("latin-1"), True
    except UnicodeEncodeError:
        try:
            raw, latin = value.encode("utf-8"), False
        except UnicodeEncodeError as error:  # a lone surrogate: no UTF-8 text holds one
            raise OptionError(
                f"PNG text value for key {key!r} holds {value[error.start]!r} at position {error.start}, "
                "a lone surrogate that UTF-8 cannot encode; remove it, or decode the bytes it came "
                "from with errors='replace'"
            ) from None
    if len(raw) > MAX_TEXT_CHUNK:
        raise OptionError(
            f"PNG text value for key {key!r} has {len(raw):,} bytes; readers refuse more than "
            f"{MAX_TEXT_CHUNK:,} (store it in a file beside the image)"
        )
    compress = len(raw) >= threshold
    if latin:
        if compress:
            return chunk(b"zTXt", key_bytes + b"\x00\x00" + zlib.compress(raw, 9))
        return chunk(b"tEXt", key_bytes + b"\x00" + raw)
    # keyword, NUL, compression flag, method 0, empty language tag, empty translated keyword
    body = zlib.compress(raw, 9) if compress else raw
    return chunk(b"iTXt", key_bytes + b"\x00" + bytes([compress, 0]) + b"\x00\x00" + body)


def text_chunks(texts: Mapping[str, str] | None) -> bytes:
    """The text chunks of ``texts`` (key -> value), in order."""
    return b"".join(text_chunk(key, value) for key, value in (texts or {}).items())


def read_texts(
    texts: Iterable[Chunk],
    keys: Iterable[str] | None = None,
    *,
    max_chunk: int = MAX_TEXT_CHUNK,
    max_total: int = MAX_TEXT_MEMORY,
) -> dict[str, str]:
    """The text entries (key -> value) of text chunks, inflating only those whose key is in
    ``keys`` (None: all). A later chunk with the same key replaces an earlier one, as in
    Pillow. :class:`DecodeError` for a malformed chunk or one past the limits (bytes of one
    value, and of all values together); with ``keys``, chunks of other keys and chunks with
    no keyword at all are skipped unread, so a damaged chunk of another tool costs nothing."""
    wanted = None if keys is None else set(keys)
    found: dict[str, str] = {}
    total = 0
    for item in texts:
        body = bytes(item.data[:80])
        if b"\x00" not in body:
            if wanted is not None:  # not one we want, whatever it is: never let it cost ours
                continue
            raise DecodeError(f"a {item.tag.decode()} chunk at byte {item.offset} has no keyword")
        key = body[: body.index(b"\x00")].decode("latin-1")
        if wanted is not None and key not in wanted:
            continue
        value = _text_value(item, len(key) + 1, max_chunk)
        total += len(value)
        if total > max_total:
            raise DecodeError(f"the PNG's text chunks hold more than {max_total:,} bytes")
        found[key] = value
    return found


def _text_value(item: Chunk, start: int, max_chunk: int) -> str:
    rest = item.data[start:]
    key = bytes(item.data[: start - 1]).decode("latin-1")
    try:
        if item.tag == b"tEXt":
            return _limited(bytes(rest), max_chunk, key).decode("latin-1")
        if item.tag == b"zTXt":
            if len(rest) < 1 or rest[0] != 0:
                raise ValueError("unknown compression method")
            return inflate_text(rest[1:], max_chunk, key).decode("latin-1")
        if len(rest) < 2 or rest[1] != 0 or rest[0] not in (0, 1):
            raise ValueError("unknown compression flag or method")
        tail = bytes(rest[2:])
        _language, _, tail = tail.partition(b"\x00")
        _translated, _, text = tail.partition(b"\x00")
        raw = inflate_text(text, max_chunk, key) if rest[0] else _limited(text, max_chunk, key)
        return raw.decode("utf-8")
    except (ValueError, zlib.error) as error:
        if isinstance(error, DecodeError):
            raise
        raise DecodeError(f"the PNG's {item.tag.decode()} chunk {key!r} is damaged ({error})") from None


def _limited(raw: bytes, limit: int, key: str) -> bytes:
    if len(raw) > limit:
        raise DecodeError(f"the PNG's text {key!r} has more than {limit:,} bytes; refused")
    return raw


def inflate_text(compressed: bytes | memoryview, limit: int, key: str = "") -> bytes:
    """Inflate a zlib stream to at most ``limit`` bytes (:class:`DecodeError` past it)."""
    inflater = zlib.decompressobj()
    out = inflater.decompress(bytes(compressed), limit + 1)
    if len(out) > limit:
        raise DecodeError(f"the PNG's text {key!r} inflates to more than {limit:,} bytes; refused")
    if not inflater.eof:
        raise zlib.error("the compressed text is cut")
    return out


def text_key(key: object) -> str:
    if not isinstance(key, str):
        raise OptionError(f"metadata keys are str (1-79 Latin-1 characters), got {key!r}")
    return key


def text_value(key: str, value: object) -> str:
    """A text chunk's value: str, or a number written as str() writes it. Bytes, None and
    containers are refused rather than written as their repr, which no reader could use."""
    if isinstance(value, str):
        return value
    value = plain_number(value)  # NumPy and 0-d torch numbers, as Python's
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    hint = ""
    if isinstance(value, (bytes, bytearray)):
        hint = "; decode it first, e.g. value.decode('utf-8')"
    elif isinstance(value, (dict, list)):
        hint = "; serialize it first, e.g. json.dumps(value)"
    raise OptionError(f"metadata[{key!r}] must be str (or a number), got {type(value).__name__}{hint}")
