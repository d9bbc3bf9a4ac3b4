"""Indexed-colour (palette) PNGs: tensorpng.png.encode_indexed_png and tensorpng.palettes.

Round trips through Pillow (indices), pypng (indices) and imagecodecs (RGB), bit depths
and row packing checked against the PNG specification, pngcheck on every file, the VOC
colour map, and the errors."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import decode_imagecodecs, decode_pillow, decode_pypng, parse_chunks, pngcheck, pngcheck_bytes
from tensorpng.errors import DTypeError, OptionError, ShapeError, ValueRangeError
from tensorpng.palettes import resolve_palette, voc_palette
from tensorpng.png import encode_indexed_png

# From the PNG specification, written out rather than imported from the module under test.
SIGNATURE = bytes([137, 80, 78, 71, 13, 10, 26, 10])
COLOR_TYPE_INDEXED = 3
COMPRESSIONS = ("fast", "small", "none")
# label maximum -> the smallest bit depth that holds it
DEPTH_FOR_MAX = {1: 1, 3: 2, 15: 4, 255: 8}
ODD_WIDTHS = (1, 3, 5, 7, 9, 33)


def ihdr(data: bytes) -> tuple[int, int, int, int]:
    """(width, height, bit depth, colour type) read straight from the file's first chunk."""
    assert data[:8] == SIGNATURE
    length, tag = struct.unpack(">I4s", data[8:16])
    assert (length, tag) == (13, b"IHDR")
    width, height = struct.unpack(">II", data[16:24])
    return width, height, data[24], data[25]


chunks = parse_chunks


def plte(data: bytes) -> np.ndarray:
    (body,) = [body for tag, body in chunks(data) if tag == b"PLTE"]
    assert len(body) % 3 == 0
    return np.frombuffer(body, np.uint8).reshape(-1, 3)


def labels_upto(height: int, width: int, labels_max: int, seed: int = 0) -> np.ndarray:
    """Random labels in 0..labels_max that include labels_max (so the depth is forced)."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, labels_max + 1, size=(height, width), dtype=np.uint8)
    labels[rng.integers(height), rng.integers(width)] = labels_max
    return labels


def random_palette(count: int, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(count, 3), dtype=np.uint8)


def reference_scanline(row: np.ndarray, depth: int) -> bytes:
    """One row packed as the spec says, bit by bit: MSB first, zero-padded to a byte."""
    bits = "".join(format(int(value), f"0{depth}b") for value in row)
    bits += "0" * (-len(bits) % 8)
    return bytes(int(bits[i : i + 8], 2) for i in range(0, len(bits), 8))


# --------------------------------------------------------------------------------------
# Round trips


@pytest.mark.parametrize("compression", COMPRESSIONS)
@pytest.mark.parametrize("width", ODD_WIDTHS)
@pytest.mark.parametrize("labels_max", sorted(DEPTH_FOR_MAX))
def test_round_trip_every_depth_and_odd_width(
    labels_max: int, width: int, compression: str, tmp_path: Path
) -> None:
    labels = labels_upto(6, width, labels_max, seed=width)
    palette = random_palette(256)
    data = encode_indexed_png(labels, palette, compression=compression)  # type: ignore[arg-type]

    assert ihdr(data) == (width, 6, DEPTH_FOR_MAX[labels_max], COLOR_TYPE_INDEXED)
    np.testing.assert_array_equal(decode_pillow(data), labels)
    np.testing.assert_array_equal(decode_pypng(data), labels)
    np.testing.assert_array_equal(decode_imagecodecs(data), palette[labels])
    pngcheck_bytes(data, tmp_path)


def test_pillow_reads_palette_mode_and_colours() -> None:
    labels = labels_upto(5, 7, 3)
    palette = random_palette(4)
    from PIL import Image

    with Image.open(io.BytesIO(encode_indexed_png(labels, palette))) as image:
        assert image.mode == "P"
        assert image.size == (7, 5)
        np.testing.assert_array_equal(np.asarray(image), labels)
        np.testing.assert_array_equal(np.asarray(image.convert("RGB")), palette[labels])


@pytest.mark.parametrize(
    ("labels_max", "palette_size", "entries"),
    [(1, 256, 2), (3, 256, 4), (15, 256, 16), (255, 256, 256), (2, 3, 3), (9, 10, 10), (0, 1, 1), (0, 5, 2)],
)
def test_plte_holds_first_entries_up_to_two_to_the_depth(
    labels_max: int, palette_size: int, entries: int, tmp_path: Path
) -> None:
    palette = random_palette(palette_size)
    data = encode_indexed_png(labels_upto(4, 5, labels_max), palette)
    np.testing.assert_array_equal(plte(data), palette[:entries])
    tags = [tag for tag, _ in chunks(data)]
    assert tags.index(b"PLTE") < tags.index(b"IDAT")
    pngcheck_bytes(data, tmp_path)


def test_all_zero_labels_use_depth_one(tmp_path: Path) -> None:
    labels = np.zeros((3, 11), np.uint8)
    data = encode_indexed_png(labels, voc_palette())
    assert ihdr(data)[2] == 1
    np.testing.assert_array_equal(decode_pillow(data), labels)
    pngcheck_bytes(data, tmp_path)


@pytest.mark.parametrize("width", ODD_WIDTHS)
@pytest.mark.parametrize("labels_max", sorted(DEPTH_FOR_MAX))
def test_scanlines_packed_msb_first_with_zero_padding(labels_max: int, width: int) -> None:
    """With compression="none" every row is filter byte 0 + the packed row: compare bytes."""
    labels = labels_upto(4, width, labels_max, seed=labels_max)
    depth = DEPTH_FOR_MAX[labels_max]
    data = encode_indexed_png(labels, voc_palette(), compression="none")
    raw = zlib.decompress(b"".join(body for tag, body in chunks(data) if tag == b"IDAT"))
    expected = b"".join(b"\x00" + reference_scanline(row, depth) for row in labels)
    assert raw == expected


def test_strided_labels_and_text(tmp_path: Path) -> None:
    base = labels_upto(10, 21, 15)
    labels = base[::2, ::3]  # a non-contiguous view
    data = encode_indexed_png(labels, voc_palette(), text={"Title": "labels", "note": "π"})
    np.testing.assert_array_equal(decode_pillow(data), labels)
    from PIL import Image

    with Image.open(io.BytesIO(data)) as image:
        assert (image.info["Title"], image.info["note"]) == ("labels", "π")
    pngcheck_bytes(data, tmp_path)


def test_one_pixel_and_one_row(tmp_path: Path) -> None:
    for labels in (np.array([[1]], np.uint8), np.array([[0, 1, 2, 3, 2, 1, 0]], np.uint8)):
        for compression in COMPRESSIONS:
            data = encode_indexed_png(labels, voc_palette(), compression=compression)  # type: ignore[arg-type]
            np.testing.assert_array_equal(decode_pillow(data), labels)
            pngcheck_bytes(data, tmp_path)


def test_many_files_pass_pngcheck(tmp_path: Path) -> None:
    paths = []
    for labels_max in (1, 2, 3, 7, 15, 16, 100, 255):
        for width in ODD_WIDTHS:
            path = tmp_path / f"{labels_max}_{width}.png"
            path.write_bytes(encode_indexed_png(labels_upto(5, width, labels_max), voc_palette()))
            paths.append(path)
    pngcheck(*paths)


@settings(max_examples=50, deadline=None)
@given(
    height=st.integers(1, 9),
    width=st.integers(1, 19),
    depth=st.sampled_from((1, 2, 4, 8)),
    palette_size=st.integers(1, 256),
    compression=st.sampled_from(COMPRESSIONS),
    seed=st.integers(0, 2**32 - 1),
)
def test_property_round_trip_through_pillow(
    height: int, width: int, depth: int, palette_size: int, compression: str, seed: int
) -> None:
    rng = np.random.default_rng(seed)
    top = min(palette_size, 1 << depth) - 1
    labels = rng.integers(0, top + 1, size=(height, width), dtype=np.uint8)
    palette = random_palette(palette_size, seed=seed)
    data = encode_indexed_png(labels, palette, compression=compression)  # type: ignore[arg-type]
    expected_depth = next(d for d in (1, 2, 4, 8) if int(labels.max()) < 1 << d)
    assert ihdr(data) == (width, height, expected_depth, COLOR_TYPE_INDEXED)
    assert len(plte(data)) == min(palette_size, 1 << expected_depth)
    np.testing.assert_array_equal(decode_pillow(data), labels)
    np.testing.assert_array_equal(decode_imagecodecs(data), palette[labels])


# --------------------------------------------------------------------------------------
# Palettes


def test_voc_palette_known_entries() -> None:
    palette = voc_palette()
    assert palette.shape == (256, 3) and palette.dtype == np.uint8
    assert [tuple(map(int, c)) for c in palette[:5]] == [
        (0, 0, 0),
        (128, 0, 0),
        (0, 128, 0),
        (128, 128, 0),
        (0, 0, 128),
    ]
    assert tuple(map(int, palette[255])) == (224, 224, 192)
    assert len(np.unique(palette, axis=0)) == 256  # every label has its own colour


def test_voc_palette_matches_devkit_algorithm() -> None:
    """The VOC devkit's labelcolormap, written out per label in plain Python."""
    for label in range(256):
        r = g = b = 0
        c = label
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        assert tuple(map(int, voc_palette()[label])) == (r, g, b), label


def test_voc_palette_count_and_copy() -> None:
    np.testing.assert_array_equal(voc_palette(21), voc_palette()[:21])
    assert voc_palette(1).shape == (1, 3)
    palette = voc_palette()
    palette[0] = 7  # a fresh writable copy: the shared table is untouched
    assert tuple(voc_palette()[0]) == (0, 0, 0)
    for bad in (0, 257, -1):
        with pytest.raises(OptionError, match=r"1\.\.256"):
            voc_palette(bad)


@pytest.mark.parametrize("spec", ["voc", "VOC", "Voc", True])
def test_resolve_named_and_default_palette_is_voc(spec: str | bool) -> None:
    np.testing.assert_array_equal(resolve_palette(spec, 20), voc_palette())


def test_resolve_list_and_array() -> None:
    triples = [(0, 0, 0), (255, 0, 0), (0, 255, 0)]
    resolved = resolve_palette(triples, 2)
    assert resolved.dtype == np.uint8 and resolved.shape == (3, 3)
    np.testing.assert_array_equal(resolved, np.array(triples))
    source = np.array(triples, dtype=np.int64)
    resolved = resolve_palette(source, 1)
    source[0, 0] = 9
    assert resolved[0, 0] == 0  # a copy, not a view of the caller's array
    uint8 = np.array(triples, np.uint8)
    np.testing.assert_array_equal(resolve_palette(uint8, 0), uint8)
    assert resolve_palette(np.zeros((256, 3), np.uint16), 255).shape == (256, 3)


def test_resolved_palette_encodes(tmp_path: Path) -> None:
    labels = labels_upto(4, 9, 2)
    palette = resolve_palette([[10, 20, 30], [40, 50, 60], [70, 80, 90]], int(labels.max()))
    data = encode_indexed_png(labels, palette)
    np.testing.assert_array_equal(decode_imagecodecs(data), palette[labels])
    pngcheck_bytes(data, tmp_path)


# --------------------------------------------------------------------------------------
# Errors


def test_labels_beyond_palette() -> None:
    labels = labels_upto(3, 3, 5)
    with pytest.raises(ValueRangeError, match=r"labels reach 5 .*palette has 4 entries"):
        encode_indexed_png(labels, random_palette(4))
    with pytest.raises(ValueRangeError, match=r"labels reach 5 .*palette has 5 entries"):
        encode_indexed_png(labels, random_palette(5))
    with pytest.raises(ValueRangeError, match=r"labels reach 3 .*palette has 2 entries"):
        resolve_palette([(0, 0, 0), (1, 1, 1)], 3)


def test_labels_beyond_255_in_resolve_palette() -> None:
    with pytest.raises(ValueRangeError, match=r"palette PNGs hold labels 0\.\.255.*256"):
        resolve_palette("voc", 256)
    with pytest.raises(ValueRangeError, match=r"labels 0\.\.255.*70000"):
        resolve_palette(True, 70000)
    with pytest.raises(ValueRangeError, match=r"negative"):
        resolve_palette("voc", -1)


@pytest.mark.parametrize("dtype", [np.uint16, np.int8, np.int64, np.float32, np.bool_])
def test_wrong_label_dtype(dtype: type) -> None:
    with pytest.raises(
        DTypeError, match=rf"uint8 indices, got an array of dtype {np.dtype(dtype)} and shape \(2, 3\)"
    ):
        encode_indexed_png(np.zeros((2, 3), dtype), voc_palette())


def test_labels_not_an_array() -> None:
    with pytest.raises(DTypeError, match="numpy.ndarray, got list"):
        encode_indexed_png([[0, 1]], voc_palette())  # type: ignore[arg-type]


@pytest.mark.parametrize("shape", [(4,), (2, 3, 1), (1, 2, 3, 4)])
def test_wrong_label_shape(shape: tuple[int, ...]) -> None:
    with pytest.raises(ShapeError, match=rf"H x W array, got shape {re_shape(shape)}"):
        encode_indexed_png(np.zeros(shape, np.uint8), voc_palette())


def re_shape(shape: tuple[int, ...]) -> str:
    return str(tuple(shape)).replace("(", r"\(").replace(")", r"\)")


@pytest.mark.parametrize("shape", [(0, 3), (3, 0)])
def test_empty_labels(shape: tuple[int, int]) -> None:
    with pytest.raises(ShapeError, match="at least one pixel"):
        encode_indexed_png(np.zeros(shape, np.uint8), voc_palette())


@pytest.mark.parametrize("shape", [(4, 4), (4,), (0, 3), (257, 3), (2, 3, 1)])
def test_encode_bad_palette_shape(shape: tuple[int, ...]) -> None:
    with pytest.raises(ShapeError, match=rf"P x 3 RGB array with 1 <= P <= 256, got shape {re_shape(shape)}"):
        encode_indexed_png(np.zeros((2, 2), np.uint8), np.zeros(shape, np.uint8))


def test_encode_bad_palette_dtype() -> None:
    with pytest.raises(DTypeError, match="P x 3 uint8 RGB array, got dtype int64"):
        encode_indexed_png(np.zeros((2, 2), np.uint8), np.zeros((4, 3), np.int64))
    with pytest.raises(DTypeError, match="palette as a numpy.ndarray, got list"):
        encode_indexed_png(np.zeros((2, 2), np.uint8), [[0, 0, 0]])  # type: ignore[arg-type]


def test_encode_bad_compression() -> None:
    with pytest.raises(OptionError, match="compression must be one of"):
        encode_indexed_png(np.zeros((2, 2), np.uint8), voc_palette(), compression="best")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "spec",
    [
        [(0, 0, 0, 0)],
        [(1, 2)],
        [],
        np.zeros((257, 3), np.uint8),
        np.zeros((3,), np.uint8),
        [[1, 2, 3], [4, 5]],
    ],
)
def test_resolve_bad_palette_shape(spec: object) -> None:
    with pytest.raises(ShapeError, match="P x 3 RGB triples"):
        resolve_palette(spec, 0)  # type: ignore[arg-type]


@pytest.mark.parametrize("spec", [[(0, 0, 256)], [(-1, 0, 0)], np.array([[0, 300, 0]])])
def test_resolve_bad_palette_values(spec: object) -> None:
    with pytest.raises(ValueRangeError, match=r"integers in 0\.\.255, got values in"):
        resolve_palette(spec, 0)  # type: ignore[arg-type]


@pytest.mark.parametrize("spec", [[(0.5, 0, 0)], np.ones((2, 3), np.float32), np.ones((2, 3), bool)])
def test_resolve_non_integer_palette(spec: object) -> None:
    with pytest.raises(DTypeError, match=r"integers in 0\.\.255, got dtype"):
        resolve_palette(spec, 0)  # type: ignore[arg-type]


def test_resolve_unknown_name_and_false() -> None:
    with pytest.raises(OptionError, match=r"unknown palette 'cityscapes': use one of \('voc',\)"):
        resolve_palette("cityscapes", 3)
    with pytest.raises(OptionError, match="palette=False"):
        resolve_palette(False, 3)
