"""The PNG container module on its own: what it writes, and what its reader accepts."""

from __future__ import annotations

import struct
import zlib

import pytest

from conftest import parse_chunks
from tensorpng import DecodeError, OptionError
from tensorpng._png_chunks import (
    IEND,
    SIGNATURE,
    Chunk,
    Header,
    chunk,
    idat_parts,
    ihdr,
    iter_chunks,
    png_bytes,
    read_container,
)
from tensorpng._png_text import read_texts, text_chunk


def small_png(extra: bytes = b"", split: int | None = None) -> bytes:
    scan = bytes([0, 1, 2, 3]) * 2  # 2 rows of 3 gray pixels, filter 0
    return png_bytes((SIGNATURE + ihdr(3, 2, 8, 0), extra), zlib.compress(scan), split)


def test_written_chunks_parse_with_an_independent_reader() -> None:
    data = small_png(text_chunk("k", "v"), split=4)
    tags = [tag for tag, _ in parse_chunks(data)]
    assert tags[:2] == [b"IHDR", b"tEXt"] and tags[-1] == b"IEND" and tags.count(b"IDAT") > 2
    assert [len(body) for tag, body in parse_chunks(data) if tag == b"IDAT"][:-1] == [4] * (
        tags.count(b"IDAT") - 1
    )
    assert read_container(data).header == Header(3, 2, 8, 0, 0)


@pytest.mark.parametrize("depth, color", [(16, 3), (1, 2), (4, 4), (3, 0), (8, 1), (8, 7)])
def test_invalid_ihdr_combinations_are_refused_when_writing(depth: int, color: int) -> None:
    with pytest.raises(OptionError, match="bit depth|not a valid"):
        ihdr(4, 4, depth, color)


def test_invalid_sizes_are_refused() -> None:
    with pytest.raises(OptionError):
        ihdr(0, 4, 8, 0)
    with pytest.raises(OptionError):
        idat_parts(b"x", split=0)
    with pytest.raises(OptionError):
        chunk(b"TOOLONG")


@pytest.mark.parametrize(
    "value, tag",
    [
        ("latin-1 é", b"tEXt"),
        ("ü" * 2000, b"zTXt"),
        ("日本", b"iTXt"),
        ("日本" * 1000, b"iTXt"),
        ("", b"tEXt"),
    ],
)
def test_text_chunk_kinds(value: str, tag: bytes) -> None:
    piece = text_chunk("key", value)
    assert piece[4:8] == tag
    compressed = len(value.encode("utf-8")) >= 1024
    if tag == b"iTXt":
        assert piece[8 + 4] == compressed  # the compression flag
    assert read_texts([Chunk(tag, memoryview(piece)[8:-4], 0)]) == {"key": value}


def test_reader_refuses_bad_crc_bad_lengths_and_missing_iend() -> None:
    good = small_png()
    bad_crc = good[:-5] + bytes([good[-5] ^ 1]) + good[-4:]
    with pytest.raises(DecodeError, match="CRC"):
        list(iter_chunks(bad_crc))
    huge = good[:8] + struct.pack(">I", 2**31 + 5) + good[12:]
    with pytest.raises(DecodeError, match="declares"):
        list(iter_chunks(huge))
    with pytest.raises(DecodeError, match="no IEND"):
        list(iter_chunks(good[: -len(IEND)]))


def test_structure_rules() -> None:
    plte = chunk(b"PLTE", bytes(6))
    with pytest.raises(DecodeError, match="PLTE"):
        read_container(small_png(plte))  # gray has no palette
    trns_wrong_size = chunk(b"tRNS", b"\x00")
    with pytest.raises(DecodeError, match="tRNS"):
        read_container(small_png(trns_wrong_size))
    with pytest.raises(DecodeError, match="critical"):
        read_container(small_png(chunk(b"ABCD", b"")))
    read_container(small_png(chunk(b"abCD", b"")))  # unknown ancillary chunks are skipped


def test_only_the_text_asked_for_is_inflated() -> None:
    damaged = chunk(b"zTXt", b"other\x00\x00not zlib")
    good = text_chunk("wanted", "yes")
    texts = read_container(small_png(damaged + good)).texts
    assert read_texts(texts, ("wanted",)) == {"wanted": "yes"}
    with pytest.raises(DecodeError, match="'other' is damaged"):
        read_texts(texts)


def test_adam7_raw_size() -> None:
    # 8 x 8 gray 8-bit: passes of 1x1, 1x1, 2x1, 2x2, 4x2, 4x4, 8x4 pixels
    assert Header(8, 8, 8, 0, 1).raw_size() == sum(
        r * (1 + w) for w, r in [(1, 1), (1, 1), (2, 1), (2, 2), (4, 2), (4, 4), (8, 4)]
    )
    assert Header(1, 1, 8, 0, 1).raw_size() == 2  # only the first pass has pixels
