"""The PNG container: chunks, IHDR, IDAT and PLTE, for writing and for reading.

Every byte of framing that tensorpng writes or reads goes through here (PNG specification,
ISO/IEC 15948 and the W3C PNG 3rd edition); the encoders only produce deflate streams and
:mod:`tensorpng.load` only interprets pixels.

Reading treats the file as hostile: lengths are checked against the file, every CRC is
checked, IHDR and the chunk order are validated, and the image data is inflated in bounded
pieces to check its size. Text chunks are in :mod:`tensorpng._png_text`.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, NamedTuple

from .errors import DecodeError, OptionError

crc32: Callable[[bytes | memoryview, int], int]
_inflaters: list[Callable[[], Any]] = [zlib.decompressobj]
_INFLATE_ERRORS: tuple[type[Exception], ...] = (zlib.error,)
try:  # ISA-L's CRC-32 is ~20x zlib's and its inflate ~2x; the results are identical.
    from isal import isal_zlib
    from isal.isal_zlib import crc32

    _inflaters.insert(0, isal_zlib.decompressobj)
    _INFLATE_ERRORS += (isal_zlib.error,)  # type: ignore[operator]
except ImportError:  # pragma: no cover - exercised by a subprocess test with isal hidden
    crc32 = zlib.crc32

SIGNATURE = b"\x89PNG\r\n\x1a\n"
MAX_CHUNK_DATA = 2**31 - 1  # chunk lengths are 31-bit (spec 5.3)
MAX_DIMENSION = 2**31 - 1  # so are width and height (spec 11.2.2)
IDAT_SPLIT = 1 << 30  # IDAT data above this is split into several chunks

# Allowed bit depths of each colour type (spec table 11.1), and its samples per pixel.
DEPTHS: dict[int, tuple[int, ...]] = {
    0: (1, 2, 4, 8, 16),
    2: (8, 16),
    3: (1, 2, 4, 8),
    4: (8, 16),
    6: (8, 16),
}
CHANNELS: dict[int, int] = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}
TEXT_TAGS = (b"tEXt", b"zTXt", b"iTXt")
_INFLATE_PIECE = 1 << 16  # bytes of output per step of a bounded inflate
_INFLATE_INPUT = 1 << 14  # bytes of image data given to the inflater at a time (its copies)


# ---------------------------------------------------------------------------------------------
# Writing


def chunk_parts(tag: bytes, data: bytes | memoryview = b"") -> tuple[bytes, bytes, bytes | memoryview, bytes]:
    """The four pieces of one chunk, so that a large ``data`` is copied once, into the file."""
    if len(tag) != 4:
        raise OptionError(f"a PNG chunk tag has 4 bytes, got {tag!r}")
    if len(data) > MAX_CHUNK_DATA:
        raise OptionError(f"a PNG chunk holds at most 2**31-1 bytes, got {len(data)}")
    crc = crc32(data, crc32(tag, 0)) & 0xFFFFFFFF
    return struct.pack(">I", len(data)), tag, data, struct.pack(">I", crc)


def chunk(tag: bytes, data: bytes | memoryview = b"") -> bytes:
    """One PNG chunk: 4-byte big-endian length, 4-byte tag, data, CRC-32 of tag and data."""
    return b"".join(chunk_parts(tag, data))


IEND = chunk(b"IEND")


def ihdr(width: int, height: int, bit_depth: int, color_type: int, interlace: int = 0) -> bytes:
    """The IHDR chunk; raises :class:`OptionError` for a combination PNG does not allow."""
    Header(width, height, bit_depth, color_type, interlace).check(OptionError)
    return chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, interlace))


def idat_parts(compressed: bytes | memoryview, split: int | None = None) -> list[bytes | memoryview]:
    """IDAT chunks of a zlib stream, ``split`` (default :data:`IDAT_SPLIT`) data bytes at
    most each, as pieces to join."""
    split = IDAT_SPLIT if split is None else split
    if not 1 <= split <= MAX_CHUNK_DATA:
        raise OptionError(f"IDAT chunks hold 1 to 2**31-1 bytes, got a split of {split}")
    view = memoryview(compressed)
    parts: list[bytes | memoryview] = []
    for start in range(0, max(len(view), 1), split):
        parts.extend(chunk_parts(b"IDAT", view[start : start + split]))
    return parts


def png_bytes(head: Iterable[bytes], compressed: bytes | memoryview, split: int | None = None) -> bytes:
    """A whole file: ``head`` (the chunks from the signature on), the IDAT chunks, IEND."""
    if split is None and len(compressed) <= IDAT_SPLIT:  # one IDAT: the common case, made directly
        crc = crc32(compressed, _IDAT_CRC) & 0xFFFFFFFF
        return b"".join([*head, _BE32.pack(len(compressed)), b"IDAT", compressed, _BE32.pack(crc), IEND])
    return b"".join([*head, *idat_parts(compressed, split), IEND])


_BE32 = struct.Struct(">I")
_IDAT_CRC = crc32(b"IDAT", 0)


def plte(colors: bytes) -> bytes:
    """A PLTE chunk of ``colors`` (RGB triples, 1 to 256 of them)."""
    if len(colors) % 3 or not 3 <= len(colors) <= 768:
        raise OptionError(f"a PNG palette holds 1 to 256 RGB entries, got {len(colors)} bytes")
    return chunk(b"PLTE", colors)


# ---------------------------------------------------------------------------------------------
# Reading


class Chunk(NamedTuple):
    tag: bytes
    data: memoryview
    offset: int  # where its length field starts in the file


def iter_chunks(data: bytes | memoryview) -> Iterator[Chunk]:
    """Every chunk up to and including IEND, each length bounded by the file and each CRC
    checked; :class:`DecodeError` for anything else (a cut file, a bad CRC, no IEND)."""
    view = memoryview(data)
    if bytes(view[:8]) != SIGNATURE:
        raise DecodeError("not a PNG file (the signature is missing)")
    offset = 8
    while True:
        if offset + 12 > len(view):
            raise DecodeError(f"the PNG is cut at byte {len(view)}: no IEND chunk")
        length, tag = struct.unpack_from(">I4s", view, offset)
        if length > MAX_CHUNK_DATA or offset + 12 + length > len(view):
            raise DecodeError(
                f"chunk {tag!r} at byte {offset} declares {length:,} bytes but the file ends "
                f"{len(view) - offset - 12:,} bytes later: the file is cut or corrupt"
            )
        if not all(65 <= b <= 90 or 97 <= b <= 122 for b in tag):
            raise DecodeError(f"chunk at byte {offset} has an invalid type {tag!r}")
        body = view[offset + 8 : offset + 8 + length]
        (stored,) = struct.unpack_from(">I", view, offset + 8 + length)
        if crc32(body, crc32(tag, 0)) & 0xFFFFFFFF != stored:
            raise DecodeError(f"chunk {tag.decode('latin-1')} at byte {offset} fails its CRC check")
        yield Chunk(tag, body, offset)
        if tag == b"IEND":
            return
        offset += 12 + length


@dataclass(frozen=True)
class Header:
    """The IHDR fields."""

    width: int
    height: int
    bit_depth: int
    color_type: int
    interlace: int = 0

    @property
    def channels(self) -> int:
        """Samples per pixel as stored (1 for palette indices)."""
        return CHANNELS[self.color_type]

    @property
    def pixels(self) -> int:
        return self.width * self.height

    def check(self, error: type[Exception] = DecodeError) -> None:
        if not (1 <= self.width <= MAX_DIMENSION and 1 <= self.height <= MAX_DIMENSION):
            raise error(f"PNG width and height are 1 to 2**31-1, got {self.width} x {self.height}")
        if self.bit_depth not in DEPTHS.get(self.color_type, ()):
            raise error(
                f"bit depth {self.bit_depth} with colour type {self.color_type} is not a valid PNG "
                f"combination (allowed: {DEPTHS})"
            )
        if self.interlace not in (0, 1):
            raise error(f"PNG interlace method is 0 or 1, got {self.interlace}")

    def row_bytes(self, width: int) -> int:
        """Bytes of one scanline of ``width`` pixels, without its filter byte."""
        return (width * self.channels * self.bit_depth + 7) // 8

    def passes(self) -> list[tuple[int, int]]:
        """``(rows, row bytes)`` of each non-empty pass (one, or Adam7's seven)."""
        if not self.interlace:
            return [(self.height, self.row_bytes(self.width))]
        out = []
        for x0, y0, dx, dy in (
            (0, 0, 8, 8),
            (4, 0, 8, 8),
            (0, 4, 4, 8),
            (2, 0, 4, 4),
            (0, 2, 2, 4),
            (1, 0, 2, 2),
            (0, 1, 1, 2),
        ):
            width, rows = (self.width - x0 + dx - 1) // dx, (self.height - y0 + dy - 1) // dy
            if width > 0 and rows > 0:
                out.append((rows, self.row_bytes(width)))
        return out

    def raw_size(self) -> int:
        """Bytes the image data inflates to: every scanline of every pass, filter bytes included."""
        return sum(rows * (1 + size) for rows, size in self.passes())


def parse_ihdr(body: bytes | memoryview) -> Header:
    if len(body) != 13:
        raise DecodeError(f"the PNG's IHDR chunk is {len(body)} bytes, not 13: the file is cut or corrupt")
    width, height, depth, color, compression, filtering, interlace = struct.unpack(">IIBBBBB", body)
    if compression != 0 or filtering != 0:
        raise DecodeError(f"unknown PNG compression/filter method {compression}/{filtering} in IHDR")
    header = Header(width, height, depth, color, interlace)
    header.check()
    return header


@dataclass(frozen=True)
class Container:
    """A PNG whose chunks are sound: its header, palette, tRNS, image data and text chunks."""

    header: Header
    palette: bytes | None
    transparency: bytes | None
    idat: tuple[memoryview, ...]
    texts: tuple[Chunk, ...]


def read_container(data: bytes | memoryview) -> Container:
    """Check the chunk structure (IHDR first, PLTE and tRNS valid and before IDAT, IDAT
    present and consecutive, IEND last) and collect what decoding needs."""
    chunks = iter_chunks(data)
    first = next(chunks)
    if first.tag != b"IHDR":
        raise DecodeError(f"the PNG's first chunk is {first.tag!r}, not IHDR")
    header = parse_ihdr(first.data)
    palette = transparency = None
    idat: list[memoryview] = []
    texts: list[Chunk] = []
    idat_done = False
    for item in chunks:
        tag = item.tag
        if tag == b"IDAT":
            if idat_done:
                raise DecodeError("the PNG's IDAT chunks are not consecutive")
            idat.append(item.data)
            continue
        idat_done = bool(idat)
        if tag in (b"IHDR", b"PLTE", b"tRNS") and (tag == b"IHDR" or idat):
            raise DecodeError(f"the PNG has a {tag.decode()} chunk where none may be")
        if tag == b"PLTE":
            if palette is not None or header.color_type in (0, 4):
                raise DecodeError("the PNG has a PLTE chunk where none may be")
            if len(item.data) % 3 or not 3 <= len(item.data) <= 3 * 256:
                raise DecodeError(f"the PNG's PLTE chunk has {len(item.data)} bytes")
            palette = bytes(item.data)
        elif tag == b"tRNS":
            transparency = _check_trns(header, palette, bytes(item.data), transparency)
        elif tag in TEXT_TAGS:
            texts.append(item)
        elif tag == b"IEND":
            if len(item.data):
                raise DecodeError("the PNG's IEND chunk is not empty")
        elif not tag[0] & 0x20:  # an unknown critical chunk (bit 5 of the first byte clear)
            raise DecodeError(f"the PNG has an unknown critical chunk {tag!r}")
    if not idat:
        raise DecodeError("the PNG has no IDAT chunk (no image data)")
    if header.color_type == 3:
        if palette is None:
            raise DecodeError("the palette PNG has no PLTE chunk")
        if len(palette) // 3 > 1 << header.bit_depth:
            raise DecodeError(f"the PLTE chunk has more entries than {header.bit_depth}-bit indices reach")
    return Container(header, palette, transparency, tuple(idat), tuple(texts))


def _check_trns(header: Header, palette: bytes | None, body: bytes, earlier: bytes | None) -> bytes:
    expected = {0: 2, 2: 6}.get(header.color_type)
    if earlier is not None or header.color_type in (4, 6):
        raise DecodeError("the PNG has a tRNS chunk where none may be")
    if header.color_type == 3:
        if palette is None or not 1 <= len(body) <= len(palette) // 3:
            raise DecodeError("the PNG's tRNS chunk does not fit its palette")
    elif len(body) != expected:
        raise DecodeError(f"the PNG's tRNS chunk has {len(body)} bytes, not {expected}")
    return body


def inflate_image_data(container: Container) -> None:
    """Check that the IDAT stream inflates to exactly the bytes IHDR implies, each scanline
    starting with a valid filter type, holding at most 64 KiB of output at a time."""
    header = container.header
    expected = header.raw_size()
    rows = _row_starts(header)
    inflater = _inflaters[0]()  # the image data is the bulk: ISA-L's inflate when installed
    produced = 0
    try:
        for pending in _input_pieces(container.idat):
            while pending:
                out = inflater.decompress(pending, _INFLATE_PIECE)
                pending = inflater.unconsumed_tail
                _check_filters(out, produced, rows)
                produced += len(out)
                if produced > expected:
                    raise DecodeError(
                        f"the PNG's image data inflates to more than the {expected:,} bytes IHDR implies"
                    )
                if inflater.eof:
                    break
            if inflater.eof:
                break
        while not inflater.eof and produced <= expected:
            out = inflater.decompress(b"", _INFLATE_PIECE)  # flush what zlib holds
            if not out:
                break
            _check_filters(out, produced, rows)
            produced += len(out)
    except _INFLATE_ERRORS as error:
        raise DecodeError(f"the PNG's image data is not a valid zlib stream ({error})") from None
    if not inflater.eof or produced != expected:
        raise DecodeError(
            f"the PNG's image data inflates to {produced:,} bytes"
            f"{'' if inflater.eof else ' and is cut'}; IHDR implies {expected:,}"
        )


def _input_pieces(idat: Iterable[Any]) -> Iterator[bytes]:
    """The image data in pieces of at most :data:`_INFLATE_INPUT` bytes: each bounded inflate
    step copies its unconsumed input, so a whole 50 MB IDAT chunk at once cost 50 MB of copying
    per 64 KiB of output (quadratic in the file)."""
    for chunk_data in idat:
        view = memoryview(chunk_data)
        for start in range(0, len(view), _INFLATE_INPUT):
            yield bytes(view[start : start + _INFLATE_INPUT])


def _row_starts(header: Header) -> list[tuple[int, int, int]]:
    """``(first byte, stop, stride)`` of the filter-type bytes of each pass."""
    out, start = [], 0
    for rows, size in header.passes():
        out.append((start, start + rows * (1 + size), 1 + size))
        start += rows * (1 + size)
    return out


def _check_filters(out: bytes, at: int, rows: list[tuple[int, int, int]]) -> None:
    end = at + len(out)
    for first, stop, stride in rows:
        if stop <= at or first >= end:
            continue
        begin = max(first, at)
        begin += (first - begin) % stride  # the first filter byte at or after ``begin``
        if begin < min(stop, end) and max(out[begin - at : min(stop, end) - at : stride], default=0) > 4:
            raise DecodeError("a PNG scanline has a filter type above 4: the image data is corrupt")
