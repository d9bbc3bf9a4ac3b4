"""The PNG encoder (tensorpng.png): exact round trips through independent decoders, filters
checked against the spec, chunk framing, text, errors, the zlib fallback, and the GIL."""

from __future__ import annotations

import importlib
import io
import re
import struct
import subprocess
import sys
import textwrap
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import tensorpng
import tensorpng.png as png_module
from conftest import (
    decode_imagecodecs,
    decode_opencv,
    decode_pillow,
    decode_pypng,
    parse_chunks,
    pngcheck,
    pngcheck_bytes,
)
from tensorpng.errors import DTypeError, OptionError, ShapeError
from tensorpng.png import choose_filter, deflate_backend, encode_png, filter_image

REPO = Path(__file__).resolve().parents[1]

# Constants from the PNG specification, written out here rather than imported from the
# module under test.
SIGNATURE = bytes([137, 80, 78, 71, 13, 10, 26, 10])
COLOR_TYPE = {1: 0, 2: 4, 3: 2, 4: 6}  # channels -> gray, gray+alpha, RGB, RGBA
NONE, SUB, UP, AVERAGE, PAETH = range(5)
FILTER_NAMES = {NONE: "None", SUB: "Sub", UP: "Up", AVERAGE: "Average", PAETH: "Paeth"}

COMPRESSIONS = ("fast", "small", "none")
DTYPES = (np.uint8, np.uint16)
CHANNELS = (1, 2, 3, 4)


# --------------------------------------------------------------------------------------
# Helpers: chunk parsing, reference filters, decoders.


def read_ihdr(data: bytes) -> dict[str, int]:
    tag, body = parse_chunks(data)[0]
    assert tag == b"IHDR" and len(body) == 13
    fields = struct.unpack(">IIBBBBB", body)
    names = ("width", "height", "bit_depth", "color_type", "compression", "filter", "interlace")
    return dict(zip(names, fields, strict=True))


def scanlines(data: bytes) -> np.ndarray:
    """The decompressed IDAT stream as ``H x (1 + row bytes)``: column 0 is the filter type."""
    header = read_ihdr(data)
    channels = {v: k for k, v in COLOR_TYPE.items()}[header["color_type"]]
    row_bytes = header["width"] * channels * header["bit_depth"] // 8
    stream = b"".join(body for tag, body in parse_chunks(data) if tag == b"IDAT")
    raw = zlib.decompress(stream)
    assert len(raw) == header["height"] * (1 + row_bytes)
    return np.frombuffer(raw, dtype=np.uint8).reshape(header["height"], 1 + row_bytes)


def filter_bytes(data: bytes) -> list[int]:
    return scanlines(data)[:, 0].tolist()


def check_framing(data: bytes, image: np.ndarray, text: dict[str, str] | None = None) -> None:
    """Chunk order IHDR, [text], IDAT..., IEND, and IHDR fields that describe ``image``."""
    chunks = parse_chunks(data)
    tags = [tag for tag, _ in chunks]
    assert tags[0] == b"IHDR"
    assert tags[-1] == b"IEND" and chunks[-1][1] == b""
    idat = [i for i, tag in enumerate(tags) if tag == b"IDAT"]
    assert idat, "no IDAT chunk"
    assert idat == list(range(idat[0], idat[-1] + 1)), "IDAT chunks must be consecutive"
    assert idat[-1] == len(tags) - 2, "IEND must follow the last IDAT"
    between = tags[1 : idat[0]]
    assert all(tag in (b"tEXt", b"iTXt") for tag in between), between
    assert len(between) == len(text or {})
    channels = 1 if image.ndim == 2 else image.shape[2]
    assert read_ihdr(data) == {
        "width": image.shape[1],
        "height": image.shape[0],
        "bit_depth": 8 * image.dtype.itemsize,
        "color_type": COLOR_TYPE[channels],
        "compression": 0,
        "filter": 0,
        "interlace": 0,
    }


def expected_pixels(image: np.ndarray) -> np.ndarray:
    """What a decoder returns for ``image``: C-ordered, native byte order, H x W for gray."""
    native = np.dtype(np.uint8) if image.dtype.itemsize == 1 else np.dtype(np.uint16)
    expected = np.ascontiguousarray(image).astype(native)
    return expected[..., 0] if expected.ndim == 3 and expected.shape[2] == 1 else expected


def assert_same(decoded: np.ndarray, expected: np.ndarray, decoder: str) -> None:
    assert decoded.dtype == expected.dtype, f"{decoder}: dtype {decoded.dtype} != {expected.dtype}"
    assert decoded.shape == expected.shape, f"{decoder}: shape {decoded.shape} != {expected.shape}"
    if not np.array_equal(decoded, expected):
        where = np.argwhere(decoded != expected)[0]
        raise AssertionError(f"{decoder}: pixels differ, first at {tuple(where)}")


def assert_decodes_exactly(data: bytes, image: np.ndarray) -> None:
    """Bit-exact through imagecodecs and pypng always; Pillow and OpenCV where they can.

    Pillow reads 8-bit images of every colour type and 16-bit gray (mode ``I;16``) exactly,
    but turns 16-bit gray+alpha, RGB and RGBA into 8-bit. OpenCV reads everything; it
    expands gray+alpha into four channels (gray, gray, gray, alpha).
    """
    expected = expected_pixels(image)
    channels = 1 if expected.ndim == 2 else expected.shape[2]
    assert_same(decode_imagecodecs(data), expected, "imagecodecs")
    assert_same(decode_pypng(data), expected, "pypng")
    if expected.dtype == np.uint8 or channels == 1:
        assert_same(decode_pillow(data), expected, "pillow")
    if channels == 2:
        gray, alpha = expected[..., 0], expected[..., 1]
        assert_same(decode_opencv(data), np.stack([gray, gray, gray, alpha], axis=-1), "opencv")
    else:
        assert_same(decode_opencv(data), expected, "opencv")


def encode_checked(image: np.ndarray, compression: str = "fast", **kwargs: object) -> bytes:
    data = encode_png(image, compression=compression, **kwargs)  # type: ignore[arg-type]
    check_framing(data, expected_pixels(image), kwargs.get("text"))  # type: ignore[arg-type]
    return data


def pngcheck_all(tmp_path: Path, files: dict[str, bytes]) -> None:
    """Write every PNG into ``tmp_path`` and run ``pngcheck -q`` on all of them at once."""
    paths = []
    for name, data in files.items():
        path = tmp_path / f"{re.sub(r'[^A-Za-z0-9_.-]', '_', name)}.png"
        path.write_bytes(data)
        paths.append(path)
    pngcheck(*paths)


def sample_bytes(image: np.ndarray) -> np.ndarray:
    """PNG's view of the samples: ``H x row bytes``, 16-bit big-endian."""
    big = np.ascontiguousarray(image, dtype=">u2" if image.dtype.itemsize == 2 else np.uint8)
    return big.reshape(image.shape[0], -1).view(np.uint8)


def paeth(a: int, b: int, c: int) -> int:
    """The Paeth predictor, as written in the PNG specification (section 9.4)."""
    p = a + b - c
    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
    if pa <= pb and pa <= pc:
        return a
    return b if pb <= pc else c


def reference_filter(data: np.ndarray, bpp: int, kind: int) -> np.ndarray:
    """Filter ``H x n`` bytes byte by byte, straight from the specification (slow, exact)."""
    height, width = data.shape
    rows = data.astype(int).tolist()
    out = np.zeros((height, width), dtype=np.uint8)
    for y in range(height):
        for i in range(width):
            x = rows[y][i]
            a = rows[y][i - bpp] if i >= bpp else 0
            b = rows[y - 1][i] if y > 0 else 0
            c = rows[y - 1][i - bpp] if y > 0 and i >= bpp else 0
            predictor = (0, a, b, (a + b) // 2, paeth(a, b, c))[kind]
            out[y, i] = (x - predictor) % 256
    return out


def reference_costs(data: np.ndarray, bpp: int) -> np.ndarray:
    """``5 x H``: per row and filter, the sum of |residual| with residuals read as int8."""
    return np.stack(
        [
            np.abs(reference_filter(data, bpp, kind).view(np.int8).astype(np.int64)).sum(axis=1)
            for kind in range(5)
        ]
    )


def from_bytes(data: np.ndarray, dtype: type, channels: int) -> np.ndarray:
    """An image whose PNG sample bytes are ``data`` (``H x n``, n a multiple of bpp)."""
    height = data.shape[0]
    if np.dtype(dtype).itemsize == 2:
        image = np.ascontiguousarray(data).view(">u2").astype(np.uint16)
    else:
        image = data.astype(np.uint8)
    return image.reshape(height, -1, channels) if channels > 1 else image.reshape(height, -1)


def make_image(kind: str, shape: tuple[int, ...], dtype: type, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    top = int(np.iinfo(dtype).max)
    if kind == "zeros":
        return np.zeros(shape, dtype=dtype)
    if kind == "max":
        return np.full(shape, top, dtype=dtype)
    if kind == "noise":
        return rng.integers(0, top, size=shape, dtype=dtype, endpoint=True)
    if kind == "smooth":  # gradients with a little noise, wrapping around at the top
        y, x = np.indices(shape[:2])
        base = (x * 7 + y * 3) * (top // 255)
        if len(shape) == 3:
            base = base[..., None] + np.arange(shape[2]) * (top // 5)
        return ((base + rng.integers(0, 4, size=shape)) % (top + 1)).astype(dtype)
    raise AssertionError(kind)


def segmentation_mask(shape: tuple[int, int] = (96, 128), seed: int = 3) -> np.ndarray:
    """Labels 0..20 in blocky regions, like a semantic segmentation map."""
    rng = np.random.default_rng(seed)
    mask = np.zeros(shape, dtype=np.uint8)
    for _ in range(25):
        top, left = rng.integers(0, shape[0] - 8), rng.integers(0, shape[1] - 8)
        height, width = rng.integers(8, 48, size=2)
        mask[top : top + height, left : left + width] = rng.integers(0, 21)
    return mask


def shaped(shape: tuple[int, int], channels: int) -> tuple[int, ...]:
    return shape if channels == 1 else (*shape, channels)


# --------------------------------------------------------------------------------------
# Round trips.

ODD_SHAPES = {"1x1": (1, 1), "1x17": (1, 17), "17x1": (17, 1), "3x5": (3, 5), "29x41": (29, 41)}


def round_trip_images(dtype: type, channels: int) -> Iterator[tuple[str, np.ndarray]]:
    for name, shape in ODD_SHAPES.items():
        for content in ("noise", "smooth"):
            yield f"{content}-{name}", make_image(content, shaped(shape, channels), dtype)
    for content in ("zeros", "max"):
        yield f"{content}-6x9", make_image(content, shaped((6, 9), channels), dtype)


@pytest.mark.parametrize("compression", COMPRESSIONS)
@pytest.mark.parametrize("dtype", DTYPES, ids=["uint8", "uint16"])
@pytest.mark.parametrize("channels", CHANNELS, ids=["gray", "gray_alpha", "rgb", "rgba"])
def test_round_trip_every_color_type_depth_and_mode(
    channels: int, dtype: type, compression: str, tmp_path: Path
) -> None:
    files = {}
    for name, image in round_trip_images(dtype, channels):
        data = encode_checked(image, compression)
        assert_decodes_exactly(data, image)
        files[name] = data
    pngcheck_all(tmp_path, files)


@pytest.mark.parametrize("dtype", DTYPES, ids=["uint8", "uint16"])
def test_h_w_1_is_gray(dtype: type, tmp_path: Path) -> None:
    image = make_image("noise", (7, 5, 1), dtype)
    data = encode_checked(image)
    assert read_ihdr(data)["color_type"] == 0
    assert data == encode_png(image[..., 0])
    assert_decodes_exactly(data, image)
    pngcheck_bytes(data, tmp_path)


def photo_variants(photo: np.ndarray) -> dict[str, np.ndarray]:
    gray = photo.mean(axis=2).astype(np.uint8)
    alpha = np.linspace(0, 255, photo.shape[1]).astype(np.uint8)[None, :].repeat(photo.shape[0], 0)
    rng = np.random.default_rng(5)
    return {
        "rgb": photo,
        "gray": gray,
        "gray_alpha": np.stack([gray, alpha], axis=-1),
        "rgba": np.concatenate([photo, alpha[..., None]], axis=-1),
        "rgb16": photo.astype(np.uint16) * 257 + rng.integers(0, 2, photo.shape, dtype=np.uint16),
        "gray16": gray.astype(np.uint16) * 256 + rng.integers(0, 256, gray.shape, dtype=np.uint16),
    }


@pytest.mark.parametrize("compression", COMPRESSIONS)
def test_photo_round_trips(photo: np.ndarray, compression: str, tmp_path: Path) -> None:
    files = {}
    for name, image in photo_variants(photo).items():
        data = encode_checked(image, compression)
        assert_decodes_exactly(data, image)
        files[name] = data
    pngcheck_all(tmp_path, files)


def test_photo_filters_per_mode(photo: np.ndarray) -> None:
    """Mode "fast": one filter for every row; "small": a per-row mix; "none": filter type None."""
    fast = filter_bytes(encode_png(photo, compression="fast"))
    assert len(set(fast)) == 1 and fast[0] in (NONE, SUB, UP, AVERAGE)
    assert fast[0] != NONE, "a photo compresses better with a predicting filter"
    small = filter_bytes(encode_png(photo, compression="small"))
    assert len(set(small)) >= 3, f"small mode used only filters {set(small)} on a photo"
    assert set(filter_bytes(encode_png(photo, compression="none"))) == {NONE}


def test_photo_compresses(photo: np.ndarray) -> None:
    sizes = {c: len(encode_png(photo, compression=c)) for c in COMPRESSIONS}
    assert sizes["none"] > photo.nbytes
    assert sizes["fast"] < 0.7 * photo.nbytes
    assert sizes["small"] <= sizes["fast"]


@pytest.mark.parametrize("compression", COMPRESSIONS)
def test_segmentation_mask(compression: str, tmp_path: Path) -> None:
    mask = segmentation_mask()
    data = encode_checked(mask, compression)
    assert_decodes_exactly(data, mask)
    pngcheck_bytes(data, tmp_path)
    if compression != "none":
        assert len(data) < 0.1 * mask.nbytes


def test_constant_images_are_tiny(tmp_path: Path) -> None:
    for dtype in DTYPES:
        for value in (0, 1, int(np.iinfo(dtype).max)):
            image = np.full((300, 200, 3), value, dtype=dtype)
            for compression in ("fast", "small"):
                data = encode_checked(image, compression)
                assert len(data) < 0.01 * image.nbytes
                assert_decodes_exactly(data, image)
    pngcheck_bytes(encode_png(np.zeros((300, 200), np.uint16)), tmp_path)


def test_none_mode_stores_raw_samples() -> None:
    """compression="none": stored deflate blocks of the unfiltered, big-endian samples."""
    image = make_image("noise", (9, 11, 3), np.uint16)
    data = encode_png(image, compression="none")
    stream = b"".join(body for tag, body in parse_chunks(data) if tag == b"IDAT")
    assert (stream[2] >> 1) & 3 == 0, "first deflate block is not a stored block"
    lines = scanlines(data)
    assert (lines[:, 0] == NONE).all()
    assert lines[:, 1:].tobytes() == image.astype(">u2").tobytes()


def test_sixteen_bit_samples_are_big_endian() -> None:
    image = np.array([[0x0102, 0xA0B0], [0xFFFE, 0x0001]], dtype=np.uint16)
    lines = scanlines(encode_png(image, compression="none"))
    assert lines[:, 1:].tolist() == [[1, 2, 0xA0, 0xB0], [0xFF, 0xFE, 0, 1]]


def channels_first(image: np.ndarray) -> np.ndarray:
    """``image`` (``H x W x C``) as an ``H x W x C`` view of a C-contiguous ``C x H x W`` copy."""
    return np.ascontiguousarray(image.transpose(2, 0, 1)).transpose(1, 2, 0)


def strided_variants(base: np.ndarray) -> dict[str, np.ndarray]:
    variants = {
        "every_other": base[::2, ::3],
        "flipped": base[::-1, ::-1],
        "channel_reversed": base[..., ::-1],
        "rgb_of_rgba": base[..., :3],
        "fortran": np.asfortranarray(base),
        "transposed": base.transpose(1, 0, 2),
        "one_channel_2d": base[..., 1],
        "gray_alpha_pair": base[..., 1:3],
        # channels-first memory, as torch holds images (8-bit: filtered plane by plane)
        "channels_first": channels_first(base),
        "channels_first_rgb": channels_first(base)[..., :3],
        "channels_first_pair": channels_first(base)[..., 2:],
    }
    for name, view in variants.items():
        assert not view.flags.c_contiguous, name
    return variants


@pytest.mark.parametrize("dtype", DTYPES, ids=["uint8", "uint16"])
def test_non_contiguous_inputs(dtype: type, tmp_path: Path) -> None:
    base = make_image("noise", (20, 30, 4), dtype, seed=11)
    files = {}
    for name, view in strided_variants(base).items():
        for compression in COMPRESSIONS:
            data = encode_checked(view, compression)
            assert data == encode_png(np.ascontiguousarray(view), compression=compression)  # type: ignore[arg-type]
            assert_decodes_exactly(data, view)
            files[f"{name}-{compression}"] = data
    pngcheck_all(tmp_path, files)


def test_big_and_little_endian_uint16(tmp_path: Path) -> None:
    image = make_image("noise", (13, 17, 3), np.uint16, seed=2)
    same = {  # the same values as ``image`` in other memory layouts
        "big": image.astype(">u2"),
        "little": image.astype("<u2"),
        "byteswapped_view": image.byteswap().view(image.dtype.newbyteorder()),
    }
    strided = {  # strided views, compared with their own values
        "big_strided": image.astype(">u2")[:, ::-1],
        "little_strided": image.astype("<u2")[::-2],
        "big_channel": image.astype(">u2")[..., 1],
    }
    assert same["big"].dtype.byteorder == ">" and same["byteswapped_view"].dtype.byteorder == ">"
    files = {}
    for compression in COMPRESSIONS:
        native = encode_checked(image, compression)
        assert_decodes_exactly(native, image)
        for name, variant in same.items():
            assert np.array_equal(variant, image)
            data = encode_checked(variant, compression)
            assert data == native, f"{name} encodes differently from the native array"
            files[f"{name}-{compression}"] = data
        for name, variant in strided.items():
            data = encode_checked(variant, compression)
            assert_decodes_exactly(data, variant)
            files[f"{name}-{compression}"] = data
    pngcheck_all(tmp_path, files)


# --------------------------------------------------------------------------------------
# Filters.


@pytest.mark.parametrize("kind", range(5), ids=FILTER_NAMES.values())
@pytest.mark.parametrize("bpp", [1, 2, 3, 4, 6, 8])
def test_filter_image_matches_the_spec(kind: int, bpp: int) -> None:
    rng = np.random.default_rng(kind * 10 + bpp)
    for height, pixels in ((1, 1), (1, 5), (4, 1), (5, 7)):
        data = rng.integers(0, 256, size=(height, pixels * bpp), dtype=np.uint8)
        out = np.full((height, pixels * bpp + 1), 77, dtype=np.uint8)
        filter_image(data, bpp, kind, out[:, 1:])  # strided output, like the encoder's
        assert (out[:, 0] == 77).all(), "filter_image wrote outside its output"
        np.testing.assert_array_equal(out[:, 1:], reference_filter(data, bpp, kind))


def crafted_bytes(kind: int, bpp: int, height: int = 12, pixels: int = 64, seed: int = 0) -> np.ndarray:
    """``height x (pixels*bpp)`` sample bytes on which ``kind`` clearly beats None/Sub/Up/Average."""
    rng = np.random.default_rng(seed)
    y = np.arange(height)[:, None]
    px = (np.arange(pixels * bpp) // bpp)[None, :]
    if kind == NONE:  # pixel checkerboard: every neighbour differs by 100, the pixel itself is 0/100
        values = np.where((px + y) % 2 == 1, 100, 0)
    elif kind == SUB:  # a ramp along each row, with a random offset per row
        values = rng.integers(0, 256, size=(height, 1)) + 3 * px
    elif kind == UP:  # random columns, each brightening by 5 per row
        values = rng.integers(0, 256, size=(1, pixels * bpp)) + 5 * y
    elif kind == AVERAGE:  # a plane (no wrap-around): left is -2, up is +2, their mean is exact
        values = 128 + 2 * (px - y)
        assert values.min() >= 0 and values.max() <= 255
    else:
        raise AssertionError(kind)
    return (values % 256).astype(np.uint8)


FAST_CASES = [(np.uint8, 1), (np.uint8, 3), (np.uint8, 2), (np.uint16, 4), (np.uint16, 1)]


@pytest.mark.parametrize("kind", [NONE, SUB, UP, AVERAGE], ids=["None", "Sub", "Up", "Average"])
@pytest.mark.parametrize(("dtype", "channels"), FAST_CASES, ids=["g8", "rgb8", "ga8", "rgba16", "g16"])
def test_fast_mode_uses_each_filter(kind: int, dtype: type, channels: int, tmp_path: Path) -> None:
    bpp = channels * np.dtype(dtype).itemsize
    data = crafted_bytes(kind, bpp)
    costs = reference_costs(data, bpp)[:4, 1:].sum(axis=1)  # choose_filter samples rows 1..H-1
    assert costs.argmin() == kind and np.sort(costs)[1] > 1.5 * costs[kind], "bad crafted image"
    assert choose_filter(data, bpp) == kind
    image = from_bytes(data, dtype, channels)
    encoded = encode_checked(image, "fast")
    assert filter_bytes(encoded) == [kind] * image.shape[0], FILTER_NAMES[kind]
    np.testing.assert_array_equal(scanlines(encoded)[:, 1:], reference_filter(data, bpp, kind))
    assert_decodes_exactly(encoded, image)
    pngcheck_bytes(encoded, tmp_path)
    if image.ndim == 3:  # the same image held channels-first: the same file
        assert encode_checked(channels_first(image), "fast") == encoded


@pytest.mark.parametrize("bpp", [1, 3, 8])
def test_choose_filter_single_row(bpp: int) -> None:
    ramp = crafted_bytes(SUB, bpp, height=1)
    assert choose_filter(ramp, bpp) == SUB
    checker = crafted_bytes(NONE, bpp, height=1)
    assert choose_filter(checker, bpp) == NONE


def mixed_rows(bpp: int, pixels: int = 40, seed: int = 4) -> tuple[np.ndarray, dict[int, int]]:
    """Rows built so that a given filter is strictly best (by the spec heuristic) on given rows.

    Returns the ``H x n`` bytes and ``{row: filter}`` for the rows whose winner is designed.
    """
    rng = np.random.default_rng(seed)
    n = pixels * bpp
    px = np.arange(n) // bpp
    rows: list[np.ndarray] = []
    designed: dict[int, int] = {}

    def add(row: np.ndarray, winner: int | None = None) -> None:
        if winner is not None:
            designed[len(rows)] = winner
        rows.append(row.astype(np.uint8))

    # None: a pixel checkerboard of 0/100 under its complement.
    add(np.where(px % 2 == 1, 100, 0))
    add(np.where(px % 2 == 0, 100, 0), NONE)
    # Up: a flat row, then the same row with every other pixel raised by 100 (Paeth and Sub
    # predict from the raised left pixel and miss); Sub: then flat again (the left is exact).
    add(np.full(n, 50))
    add(50 + 100 * (px % 2), UP)
    add(np.full(n, 50), SUB)
    add(50 + 100 * (px % 2), UP)
    # Average: each byte is the floor of the mean of its left and up neighbours.
    up = rng.integers(0, 256, n)
    add(up)
    row = rng.integers(0, 256, n)
    for i in range(bpp, n):
        row[i] = (row[i - bpp] + up[i]) // 2
    add(row, AVERAGE)
    # Paeth: each byte is the Paeth prediction from its neighbours, under a row of pixel
    # pairs (where up equals up-left Paeth copies the left pixel, elsewhere often the up one).
    up = np.repeat(rng.integers(0, 256, (pixels // 2, 1, bpp)), 2, axis=1).reshape(-1)
    add(up)
    row = rng.integers(0, 256, n)
    for i in range(bpp, n):
        row[i] = paeth(int(row[i - bpp]), int(up[i]), int(up[i - bpp]))
    add(row, PAETH)
    return np.stack(rows), designed


@pytest.mark.parametrize("block_rows", [None, 1, 3], ids=["one_block", "row_blocks", "3_row_blocks"])
@pytest.mark.parametrize(
    ("dtype", "channels"), [(np.uint8, 1), (np.uint8, 3), (np.uint16, 2), (np.uint16, 4)]
)
def test_small_mode_picks_the_best_filter_per_row(
    dtype: type, channels: int, block_rows: int | None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every row gets a filter of least cost; the designed rows get the designed filter.

    ``block_rows`` makes the encoder work through blocks of that many rows, so that rows at
    block boundaries (whose "up" row lies in the previous block) are checked too.
    """
    bpp = channels * np.dtype(dtype).itemsize
    data, designed = mixed_rows(bpp)
    costs = reference_costs(data, bpp)
    for row, winner in designed.items():  # the construction really makes ``winner`` best
        others = np.delete(costs[:, row], winner)
        assert costs[winner, row] < others.min(), (row, FILTER_NAMES[winner], costs[:, row])
    if block_rows is not None:
        monkeypatch.setattr(
            importlib.import_module("tensorpng._png_filters"),
            "ADAPTIVE_BLOCK_BYTES",
            block_rows * data.shape[1],
        )
    image = from_bytes(data, dtype, channels)
    encoded = encode_checked(image, "small")
    chosen = filter_bytes(encoded)
    for row, kind in enumerate(chosen):
        assert costs[kind, row] == costs[:, row].min(), f"row {row}: {FILTER_NAMES[kind]} is not best"
    assert {row: chosen[row] for row in designed} == designed
    assert set(chosen) == {NONE, SUB, UP, AVERAGE, PAETH}
    lines = scanlines(encoded)
    for row, kind in enumerate(chosen):  # each stored row is that filter applied to that row
        expected = reference_filter(data[max(row - 1, 0) : row + 1], bpp, kind)[-1]
        np.testing.assert_array_equal(lines[row, 1:], expected)
    assert_decodes_exactly(encoded, image)
    pngcheck_bytes(encoded, tmp_path)


# --------------------------------------------------------------------------------------
# Chunk framing.


@pytest.mark.parametrize(
    ("shape", "dtype"),
    [((1, 1), np.uint8), ((3, 5, 2), np.uint16), ((17, 4, 3), np.uint8), ((6, 300, 4), np.uint16)],
)
@pytest.mark.parametrize(
    "text", [None, {}, {"Title": "x"}, {"Title": "x", "Autor": "Zoë", "Beschreibung": "名前"}], ids=str
)
def test_chunk_framing(shape: tuple[int, ...], dtype: type, text: dict[str, str] | None) -> None:
    image = make_image("noise", shape, dtype)
    for compression in COMPRESSIONS:
        data = encode_png(image, compression=compression, text=text)  # type: ignore[arg-type]
        check_framing(data, image, text)
        assert_same(decode_imagecodecs(data), expected_pixels(image), "imagecodecs")


def test_idat_split_into_several_chunks(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(importlib.import_module("tensorpng._png_chunks"), "IDAT_SPLIT", 100)
    image = make_image("noise", (40, 30, 3), np.uint8)
    data = encode_checked(image, "fast", text={"Comment": "split"})
    idat = [body for tag, body in parse_chunks(data) if tag == b"IDAT"]
    assert len(idat) > 3
    assert all(len(body) == 100 for body in idat[:-1]) and 0 < len(idat[-1]) <= 100
    assert_decodes_exactly(data, image)
    pngcheck_bytes(data, tmp_path)


def test_crc_and_signature_are_checked_by_our_parser() -> None:
    """The framing helper itself must catch a corrupted CRC (else the framing tests are void)."""
    data = bytearray(encode_png(np.zeros((2, 2), np.uint8)))
    data[-1] ^= 1
    with pytest.raises(AssertionError, match="CRC"):
        parse_chunks(bytes(data))


# --------------------------------------------------------------------------------------
# Text metadata.


def test_text_latin1_and_international(tmp_path: Path) -> None:
    from PIL import Image

    text = {
        "Title": "plain ASCII",
        "Comment": "Latin-1: café, naïve, ±½ and a\nnewline",
        "Author": "日本語のテキスト",
        "Description": "emoji \N{PARTY POPPER} and ümlauts",
        "Empty": "",
        "Schlüssel": "Latin-1 key, UTF-8 value: Ωμέγα",
    }
    image = make_image("smooth", (8, 8, 3), np.uint8)
    for compression in COMPRESSIONS:
        data = encode_checked(image, compression, text=text)
        chunks = [(tag, body) for tag, body in parse_chunks(data) if tag in (b"tEXt", b"iTXt")]
        assert len(chunks) == len(text)
        for (tag, body), (key, value) in zip(chunks, text.items(), strict=True):
            latin1 = all(ord(ch) < 256 for ch in value)
            assert tag == (b"tEXt" if latin1 else b"iTXt"), key
            if latin1:
                assert body == key.encode("latin-1") + b"\0" + value.encode("latin-1")
            else:  # keyword, NUL, flag 0 (uncompressed), method 0, empty language, empty key
                assert body == key.encode("latin-1") + b"\0\0\0\0\0" + value.encode("utf-8")
        with Image.open(io.BytesIO(data)) as decoded:
            decoded.load()
            assert decoded.text == text
        assert_decodes_exactly(data, image)
        pngcheck_bytes(data, tmp_path, f"text-{compression}.png")


def test_text_key_of_79_characters() -> None:
    key = "k" * 79
    data = encode_png(np.zeros((1, 1), np.uint8), text={key: "v"})
    assert (b"tEXt", key.encode() + b"\0v") in parse_chunks(data)


@pytest.mark.parametrize(
    "key",
    [
        "",
        " lead",
        "trail ",
        "double  space",
        "k" * 80,
        "nul\0key",
        "tab\tkey",
        "del\x7f",
        "nbsp\xa0key",
        "ключ",
    ],
)
def test_invalid_text_keys(key: str) -> None:
    with pytest.raises(OptionError, match="key"):
        encode_png(np.zeros((2, 2), np.uint8), text={key: "value"})


def test_text_value_with_nul() -> None:
    with pytest.raises(OptionError, match="NUL"):
        encode_png(np.zeros((2, 2), np.uint8), text={"Comment": "a\0b"})


# --------------------------------------------------------------------------------------
# Errors.


@pytest.mark.parametrize(
    ("image", "named"),
    [
        (np.zeros((4, 4), np.float32), "float32"),
        (np.zeros((4, 4, 3), np.int16), "int16"),
        (np.zeros((4, 4), bool), "bool"),
        (np.zeros((4, 4), np.uint32), "uint32"),
        (np.zeros((4, 4), np.int8), "int8"),
    ],
)
def test_wrong_dtype(image: np.ndarray, named: str) -> None:
    with pytest.raises(DTypeError, match=rf"dtype {named}\b.*shape {re.escape(str(image.shape))}"):
        encode_png(image)


def test_wrong_type() -> None:
    with pytest.raises(DTypeError, match="got list"):
        encode_png([[0, 1], [2, 3]])  # type: ignore[arg-type]
    assert issubclass(DTypeError, TypeError) and issubclass(ShapeError, ValueError)


def fake_huge(shape: tuple[int, ...]) -> np.ndarray:
    """A uint8 array of any shape over one byte of memory (every stride 0)."""
    return np.lib.stride_tricks.as_strided(np.zeros(1, np.uint8), shape=shape, strides=(0,) * len(shape))


@pytest.mark.parametrize(
    "image",
    [
        np.zeros((0, 5), np.uint8),
        np.zeros((5, 0), np.uint8),
        np.zeros((0, 0, 3), np.uint16),
        np.zeros((2, 2, 5), np.uint8),
        np.zeros((2, 2, 0), np.uint8),
        np.zeros((1, 2, 2, 3), np.uint8),
        np.zeros((5,), np.uint8),
        np.zeros((), np.uint8),
        fake_huge((1, 2**31)),
        fake_huge((2**31, 1)),
        fake_huge((2**31, 2**31)),
        fake_huge((3, 2**31, 3)),
    ],
    ids=lambda image: "x".join(map(str, image.shape)) or "scalar",
)
def test_bad_shapes(image: np.ndarray) -> None:
    with pytest.raises(ShapeError, match=re.escape(f"shape {tuple(image.shape)}")):
        encode_png(image)


def test_bad_compression() -> None:
    with pytest.raises(OptionError, match=r"compression.*'zip'"):
        encode_png(np.zeros((2, 2), np.uint8), compression="zip")  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------
# Deflate backends.


def test_isal_is_the_default_backend() -> None:
    assert deflate_backend() == "isal"


FALLBACK_SCRIPT = textwrap.dedent(
    """
    import sys
    from pathlib import Path

    sys.modules["isal"] = None  # importing isal (or isal.isal_zlib) now raises ImportError
    sys.modules["isal.isal_zlib"] = None
    sys.modules["deflate"] = None  # and "small" falls back to zlib level 9

    import numpy as np
    import tensorpng.png as png

    assert png.deflate_backend() == "zlib", png.deflate_backend()
    out = Path(sys.argv[1])
    rng = np.random.default_rng(9)
    images = {
        "rgb8": rng.integers(0, 256, (37, 23, 3), dtype=np.uint8),
        "ga16": rng.integers(0, 65536, (5, 41, 2), dtype=np.uint16),
        "gray8": (np.arange(64 * 48) % 251).astype(np.uint8).reshape(64, 48),
        "rgba16": (np.arange(20 * 30 * 4) * 97 % 65536).astype(np.uint16).reshape(20, 30, 4),
    }
    for name, image in images.items():
        np.save(out / f"{name}.npy", image)
        for compression in ("fast", "small", "none"):
            data = png.encode_png(image, compression=compression, text={"Comment": "zlib"})
            (out / f"{name}-{compression}.png").write_bytes(data)
    print("isal" in sys.modules and sys.modules["isal"] is not None)
    """
)


def test_zlib_fallback_without_isal(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-c", FALLBACK_SCRIPT, str(tmp_path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False", "isal was imported after all"
    pngs = sorted(tmp_path.glob("*.png"))
    assert len(pngs) == 12
    for path in pngs:
        image = np.load(tmp_path / f"{path.stem.rsplit('-', 1)[0]}.npy")
        data = path.read_bytes()
        check_framing(data, image, {"Comment": "zlib"})
        assert_decodes_exactly(data, image)
    pngcheck(*pngs)


# --------------------------------------------------------------------------------------
# Property tests.

COMPRESSION = st.sampled_from(COMPRESSIONS)


@st.composite
def images(draw: st.DrawFn) -> np.ndarray:
    dtype = draw(st.sampled_from(["u1", "<u2", ">u2"]))
    channels = draw(st.sampled_from([0, 1, 2, 3, 4]))  # 0: a 2-D array
    shape = (draw(st.integers(1, 9)), draw(st.integers(1, 9)))
    if channels:
        shape = (*shape, channels)
    top = 255 if dtype == "u1" else 65535
    # Mostly small values and repeats (what real images have), sometimes the extremes.
    elements = st.one_of(st.integers(0, 3), st.integers(0, top), st.sampled_from([0, top, top - 1, 128]))
    image = draw(hnp.arrays(np.dtype(dtype), shape, elements=elements))
    layout = draw(st.sampled_from(["c", "fortran", "flipped"]))
    if layout == "fortran":
        image = np.asfortranarray(image)
    elif layout == "flipped":
        image = np.ascontiguousarray(image[::-1, ::-1])[::-1, ::-1]
    return image


@settings(max_examples=60, deadline=None)
@given(image=images(), compression=COMPRESSION)
def test_property_round_trip(
    image: np.ndarray, compression: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    data = encode_png(image, compression=compression)  # type: ignore[arg-type]
    expected = expected_pixels(image)
    check_framing(data, expected)
    assert_same(decode_imagecodecs(data), expected, "imagecodecs")
    assert_same(decode_pypng(data), expected, "pypng")
    pngcheck_bytes(data, tmp_path_factory.mktemp("property"))
    if image.ndim == 3:  # held channels-first (8-bit: filtered plane by plane): the same file
        assert encode_png(channels_first(image), compression=compression) == data  # type: ignore[arg-type]


@st.composite
def sample_rows(draw: st.DrawFn) -> tuple[np.ndarray, int]:
    """``H x (pixels * bpp)`` bytes and ``bpp``."""
    bpp = draw(st.sampled_from([1, 2, 3, 4, 6, 8]))
    shape = (draw(st.integers(1, 5)), bpp * draw(st.integers(1, 6)))
    elements = st.one_of(st.integers(0, 255), st.integers(0, 3), st.integers(125, 131))
    return draw(hnp.arrays(np.uint8, shape, elements=elements)), bpp


@settings(max_examples=60, deadline=None)
@given(rows=sample_rows(), kind=st.integers(0, 4))
def test_property_filters_match_the_spec(rows: tuple[np.ndarray, int], kind: int) -> None:
    data, bpp = rows
    out = np.empty_like(data)
    filter_image(data, bpp, kind, out)
    np.testing.assert_array_equal(out, reference_filter(data, bpp, kind))
    choice = choose_filter(data, bpp)
    assert choice in ((NONE, SUB) if data.shape[0] == 1 else (NONE, SUB, UP, AVERAGE))


@settings(max_examples=40, deadline=None)
@given(image=images())
def test_property_small_mode_rows_are_optimal(image: np.ndarray) -> None:
    data = sample_bytes(image)
    bpp = data.shape[1] // image.shape[1]
    costs = reference_costs(data, bpp)
    chosen = filter_bytes(encode_png(image, compression="small"))
    assert [costs[kind, row] for row, kind in enumerate(chosen)] == costs.min(axis=0).tolist()


# --------------------------------------------------------------------------------------
# The GIL.


def longest_stall(work: Callable[[], object]) -> float:
    """Run ``work`` in a thread; return the longest the main thread went without running.

    The main thread spins on ``time.perf_counter()``. When the worker holds the GIL, the
    main thread cannot run, and the gap between two of its iterations is as long as the
    worker held it. The worker waits for a go signal so that the measurement is already
    running when it starts.
    """
    go, done = threading.Event(), threading.Event()
    errors: list[BaseException] = []

    def run() -> None:
        go.wait()
        try:
            work()
        except BaseException as error:
            errors.append(error)
        finally:
            done.set()

    thread = threading.Thread(target=run)
    thread.start()
    longest = 0.0
    last = time.perf_counter()
    go.set()
    while not done.is_set():
        now = time.perf_counter()
        longest = max(longest, now - last)
        last = now
    thread.join()
    assert not errors, errors
    return longest


def gil_ratio(work: Callable[[], object], attempts: int = 3, stop_below: float = 0.05) -> float:
    """Longest main-thread stall while ``work`` runs in a thread, over its single-thread time.

    The smallest ratio of a few attempts: a scheduler hiccup can make one attempt look bad,
    but a GIL held through the work shows up in every attempt.
    """
    best = np.inf
    for _ in range(attempts):
        start = time.perf_counter()
        work()
        alone = time.perf_counter() - start
        best = min(best, longest_stall(work) / alone)
        if best < stop_below:
            break
    return float(best)


@pytest.fixture(scope="module")
def big_photo_like() -> np.ndarray:
    """3000 x 3000 x 3 (27 MB): smooth waves plus noise, a stand-in for a large photo."""
    rng = np.random.default_rng(0)
    y = np.arange(3000, dtype=np.float32)[:, None]
    x = np.arange(3000, dtype=np.float32)[None, :]
    waves = (np.sin(x / 37) + np.cos(y / 53)) * 50 + 100
    noise = rng.integers(0, 16, size=(3000, 3000, 3), dtype=np.uint8)
    return waves.astype(np.uint8)[..., None] + noise


@pytest.mark.parametrize("compression", ["fast", "small"])
def test_encode_releases_the_gil(
    big_photo_like: np.ndarray, compression: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The NumPy + ISA-L path; tests/test_native.py probes the native encoder the same way.
    monkeypatch.setenv("TENSORPNG_CPU_ENCODER", "numpy")
    image = big_photo_like if compression == "fast" else big_photo_like[:400]
    ratio = gil_ratio(lambda: encode_png(image, compression=compression))  # type: ignore[arg-type]
    assert ratio < 0.25, f"the main thread stalled for {ratio:.0%} of an encode: GIL held"


def test_gil_probe_catches_an_encoder_that_holds_the_gil(
    big_photo_like: np.ndarray, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same probe on encode_png with a deflate that holds the GIL must fail.

    ``sum(range(n))`` is one C loop that never lets go of the GIL (unlike a Python loop,
    which hands it over every few milliseconds); it stands in for a deflate that would not
    release the GIL. If the probe did not see it, test_encode_releases_the_gil would be void.
    """
    real_deflate = png_module.deflate_fast
    start = time.perf_counter()
    real_deflate(big_photo_like, 10.0)
    seconds = time.perf_counter() - start
    start = time.perf_counter()
    sum(range(1_000_000))
    count = int(1_000_000 * 2 * seconds / (time.perf_counter() - start))

    def gil_holding_deflate(data: np.ndarray, residual: float) -> bytes:
        sum(range(count))  # holds the GIL for about twice the real deflate's time
        return real_deflate(data, residual)

    monkeypatch.setattr(png_module, "deflate_fast", gil_holding_deflate)
    monkeypatch.setenv("TENSORPNG_CPU_ENCODER", "numpy")  # the path that calls deflate_fast
    ratio = gil_ratio(lambda: encode_png(big_photo_like), attempts=1)
    assert ratio > 0.25, f"the probe missed a GIL held for most of the encode ({ratio:.0%})"


def test_the_public_surface_is_the_documented_one() -> None:
    """png.encode_png is internal now (tensorpng.encode covers it); __all__ lists the surface."""
    assert not hasattr(tensorpng, "encode_png")
    assert all(hasattr(tensorpng, name) for name in tensorpng.__all__)
