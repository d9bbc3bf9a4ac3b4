"""The tensorpng record is untrusted: only values tensorpng writes are used, it must fit the
file's IHDR, and anything else is ignored with a RecordWarning (the raw samples returned)."""

from __future__ import annotations

import json
import struct
import tracemalloc
import warnings
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import tensorpng
from tensorpng.metadata import MappingRecord, RecordError
from tensorpng.png import encode_png

IMAGE = np.random.default_rng(2).integers(0, 256, (6, 5, 3), dtype=np.uint8)
GOOD: dict[str, Any] = {
    "version": "0.1.0",
    "framework": "numpy",
    "dtype": "float32",
    "shape": [6, 5, 3],
    "layout": "HWC",
    "index": None,
    "mapping": "affine",
    "bits": 8,
    "mean": None,
    "std": None,
    "scale": None,
    "value_range": [0.0, 1.0],
    "min": 0.0,
    "max": 1.0,
}


def forged(**changes: Any) -> str:
    return json.dumps({**GOOD, **changes})


def load_forged(tmp_path: Path, text: str, image: np.ndarray = IMAGE) -> np.ndarray:
    path = tmp_path / "forged.png"
    path.write_bytes(encode_png(image, text={"tensorpng": text}))
    return tensorpng.load(path)  # type: ignore[no-any-return]


def test_the_good_record_is_used(tmp_path: Path) -> None:
    loaded = load_forged(tmp_path, forged())
    assert loaded.dtype == np.float32
    np.testing.assert_allclose(loaded, IMAGE / 255, atol=1e-6)


BAD = {
    "void dtype": forged(dtype="V100000"),
    "wide string dtype": forged(dtype="<U1000000"),
    "object dtype": forged(dtype="O", mapping="copy"),
    "sub-array dtype": forged(dtype="(2,3)f4", mapping="copy"),
    "bits 12": forged(bits=12),
    "bits true": forged(bits=True),
    "bits as text": forged(bits="x"),
    "unknown layout": forged(layout="XYZ"),
    "shape not fitting layout": forged(shape=[6, 5]),
    "huge shape": forged(shape=[2**40, 5, 3]),
    "negative shape": forged(shape=[-6, 5, 3]),
    "unknown mapping": forged(mapping="eval"),
    "colormap name": forged(mapping="colormap", cmap="../../etc/passwd"),
    "value_range not a pair": forged(value_range=5),
    "infinite value": forged(value_range=[0, 1e999]),
    "huge integer": forged(min=10**400),
    "mean of wrong length": forged(mean=[1, 2], std=[1, 2]),
    "zero std": forged(mean=[0.5], std=[0]),
    "deep nesting": "[" * 100_000 + "]" * 100_000,
    "nesting in a field": forged(grid={"count": [[[[[1]]]]]}),
    "not an object": "[1, 2]",
    "not JSON": "{not json",
    "JSON too big": forged(pad="x" * 70_000),
    "size mismatch": forged(shape=[7, 5, 3]),
    "channel mismatch": forged(shape=[6, 5, 4]),
    "16-bit record on an 8-bit file": forged(bits=16),
    "palette record on an RGB file": forged(mapping="palette", dtype="int64"),
    "widen record on 8 bits": forged(mapping="widen", dtype="uint8", bits=8),
    "widen of floats": forged(mapping="widen", dtype="float32", bits=8),
    "copy of uint16 on 8 bits": forged(mapping="copy", dtype="uint16", bits=8),
    "copy of floats": forged(mapping="copy", dtype="float32"),
    "bool of floats": forged(mapping="bool", dtype="float32"),
}


@pytest.mark.parametrize("name", list(BAD))
def test_bad_records_are_ignored_with_a_warning(name: str, tmp_path: Path) -> None:
    with pytest.warns(tensorpng.RecordWarning, match="ignored"):
        loaded = load_forged(tmp_path, BAD[name])
    assert loaded.dtype == np.uint8
    np.testing.assert_array_equal(loaded, IMAGE)


def test_huge_numbers_and_depth_raise_no_builtin_errors() -> None:
    for text in ("9" * 5000, "[" * 10**6, '{"a":' * 10**5, forged(min=10**400), forged(max=-(10**4000))):
        with pytest.raises(RecordError):
            MappingRecord.from_json(text)


def test_sixteen_bit_save_reencoded_at_eight_bits_is_not_read_256_times_too_small(tmp_path: Path) -> None:
    """Some tools re-encode the pixels at 8 bits and keep the text chunks."""
    x = np.random.default_rng(3).random((6, 5)).astype(np.float32)
    (path,) = tensorpng.save(x, tmp_path / "x16.png", bits=16)
    record = tensorpng.read_text(path)["tensorpng"]
    samples8 = (tensorpng.load(path) * 255 + 0.5).astype(np.uint8)
    assert samples8.shape == (6, 5)
    with pytest.warns(tensorpng.RecordWarning, match="16-bit"):
        loaded = load_forged(tmp_path, record, samples8)
    np.testing.assert_array_equal(loaded, samples8)


def test_records_round_trip_through_json() -> None:
    entry = MappingRecord.from_json(forged(grid={"count": 4, "nrow": 2, "padding": 1}, per_image_range=False))
    assert MappingRecord.from_json(entry.to_json()) == entry
    assert entry.grid == (4, 2, 1) and entry.shape == (6, 5, 3)


@pytest.mark.parametrize(
    "junk",
    [
        (b"tEXt", b"no keyword at all"),
        (b"zTXt", b"other\x00\x00not zlib"),
        (b"iTXt", b"other\x00\x07\x00"),
        (b"tEXt", b"x" * 200),
    ],
)
def test_a_damaged_text_chunk_of_another_key_costs_not_the_record(
    tmp_path: Path, junk: tuple[bytes, bytes]
) -> None:
    from tensorpng._png_chunks import chunk

    data = encode_png(IMAGE, text={"tensorpng": forged()})
    iend = data.rindex(b"IEND") - 4
    path = tmp_path / "junk.png"
    path.write_bytes(data[:iend] + chunk(*junk) + data[iend:])
    loaded = tensorpng.load(path)
    assert loaded.dtype == np.float32
    np.testing.assert_allclose(loaded, IMAGE / 255, atol=1e-6)


# ---- records whose undo would give wrong values: checked against the samples -------------------

IMAGE16 = np.random.default_rng(4).integers(0, 65536, (6, 5, 3), dtype=np.uint16)


def palette_png(indices: np.ndarray, record: str) -> bytes:
    """An 8-bit palette PNG of ``indices`` with 256 palette entries and ``record``."""
    from tensorpng._png_chunks import chunk

    height, width = indices.shape
    scanlines = np.concatenate([np.zeros((height, 1), np.uint8), indices], axis=1).tobytes()
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 3, 0, 0, 0))
        + chunk(b"PLTE", np.repeat(np.arange(256, dtype=np.uint8), 3).tobytes())
        + chunk(b"tEXt", b"tensorpng\x00" + record.encode())
        + chunk(b"IDAT", zlib.compress(scanlines))
        + chunk(b"IEND")
    )


NARROW_COPIES = {
    "int8 copy of samples up to 255": (forged(mapping="copy", dtype="int8"), IMAGE),
    "int8 copy of 16-bit samples": (forged(mapping="copy", dtype="int8", bits=16), IMAGE16),
    "int16 copy of 16-bit samples": (forged(mapping="copy", dtype="int16", bits=16), IMAGE16),
    "bool copy of 8-bit samples": (forged(mapping="copy", dtype="bool"), IMAGE),
    "bool copy of 16-bit samples": (forged(mapping="copy", dtype="bool", bits=16), IMAGE16),
}


@pytest.mark.parametrize("name", list(NARROW_COPIES))
def test_a_copy_record_of_a_dtype_too_narrow_for_the_samples_is_ignored(name: str, tmp_path: Path) -> None:
    """int8 would wrap samples above 127 to negative values, bool would make 2..255 True."""
    text, image = NARROW_COPIES[name]
    with pytest.warns(tensorpng.RecordWarning, match="ignored"):
        loaded = load_forged(tmp_path, text, image)
    assert loaded.dtype == image.dtype
    np.testing.assert_array_equal(loaded, image)


def test_a_copy_record_is_used_when_the_samples_fit_its_dtype(tmp_path: Path) -> None:
    small = IMAGE // 2  # 0..127: int8 holds them
    loaded = load_forged(tmp_path, forged(mapping="copy", dtype="int8"), small)
    assert loaded.dtype == np.int8
    np.testing.assert_array_equal(loaded, small)
    with pytest.warns(
        tensorpng.RecordWarning, match="int8 values, at most 127, but the PNG holds samples up to"
    ):
        load_forged(tmp_path, forged(mapping="copy", dtype="int8"), small + 1)


@pytest.mark.parametrize(("dtype", "top"), [("int8", 200), ("bool", 2)])
def test_a_palette_record_of_a_dtype_too_narrow_for_the_indices_is_ignored(
    dtype: str, top: int, tmp_path: Path
) -> None:
    indices = np.arange(top + 1, dtype=np.uint8).repeat(2).reshape(2, -1)
    shape = list(indices.shape)
    record = forged(mapping="palette", dtype=dtype, shape=shape, layout="HW")
    path = tmp_path / "labels.png"
    path.write_bytes(palette_png(indices, record))
    with pytest.warns(tensorpng.RecordWarning, match="ignored"):
        loaded = tensorpng.load(path)
    np.testing.assert_array_equal(loaded, np.repeat(indices[..., None], 3, axis=2))  # the colours


def test_the_padding_of_a_grid_is_not_a_value(tmp_path: Path) -> None:
    """``pad_value=1`` pads an int8 grid with 255: it loads; a value of 200 in a tile does not."""
    x = np.arange(2 * 3 * 4, dtype=np.int8).reshape(2, 3, 4)
    (path,) = tensorpng.save(x, tmp_path / "grid.png", grid=True, pad_value=1.0, layout="NHW")
    record = tensorpng.read_text(path)["tensorpng"]
    samples = tensorpng.load(path, as_tensor=False)  # the grid, tiles and padding
    assert samples.dtype == np.int8 and samples.shape == (7, 14)
    raw = np.where(samples < 0, 255, samples).astype(np.uint8)
    raw[2, 2] = 200  # inside the first tile
    with pytest.warns(tensorpng.RecordWarning, match="up to 200"):
        loaded = load_forged(tmp_path, record, raw)
    np.testing.assert_array_equal(loaded, raw)


BAD_GRIDS = {
    "grid of another size": {"count": 4, "nrow": 2, "padding": 1},
    "grid of no images": {"count": 0, "nrow": 2, "padding": 1},
    "grid of no columns": {"count": 1, "nrow": 0, "padding": 0},
}


@pytest.mark.parametrize("name", list(BAD_GRIDS))
def test_a_grid_record_must_fit_the_file(name: str, tmp_path: Path) -> None:
    text = forged(shape=[1, 6, 5, 3], layout="NHWC", grid=BAD_GRIDS[name])
    with pytest.warns(tensorpng.RecordWarning, match="ignored"):
        loaded = load_forged(tmp_path, text)
    np.testing.assert_array_equal(loaded, IMAGE)


# ---- affine records whose numbers overflow ------------------------------------------------------

OVERFLOWING = {
    "value_range wider than float64": forged(value_range=[-1e308, 1e308]),
    "values past float32": forged(value_range=[0, 1e300]),
    "values past float16": forged(value_range=[0, 1e6], dtype="float16"),
    "tiny std": forged(std=[1e-310]),
    "tiny std per channel": forged(mean=[0, 0, 0], std=[1, 1e-310, 1]),
    "huge mean": forged(value_range=[-1e308, 0], mean=[1e308], dtype="float64"),
    "huge value_range of an integer input": forged(value_range=[0, 1e39], dtype="int32"),
    "values past bfloat16, within float32": forged(value_range=[0, 3.4e38], dtype="bfloat16"),
    "values past float8_e4m3fn": forged(value_range=[0, 1000.0], dtype="float8_e4m3fn"),
}


@pytest.mark.parametrize("name", list(OVERFLOWING))
def test_an_affine_record_giving_inf_or_nan_is_ignored_without_numpy_warnings(
    name: str, tmp_path: Path
) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        loaded = load_forged(tmp_path, OVERFLOWING[name])
    assert [w.category for w in caught] == [tensorpng.RecordWarning], [str(w.message) for w in caught]
    assert "past the range" in str(caught[0].message)
    assert loaded.dtype == np.uint8
    np.testing.assert_array_equal(loaded, IMAGE)


def test_an_overflowing_colormap_record_is_ignored(tmp_path: Path) -> None:
    x = np.random.default_rng(9).random((6, 5))
    (path,) = tensorpng.save(x, tmp_path / "c.png", cmap="viridis")
    entry = json.loads(tensorpng.read_text(path)["tensorpng"])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        loaded = load_forged(tmp_path, json.dumps({**entry, "value_range": [-1e308, 1e308]}), IMAGE)
    assert [w.category for w in caught] == [tensorpng.RecordWarning], [str(w.message) for w in caught]
    np.testing.assert_array_equal(loaded, IMAGE)


def test_float16_values_at_its_limits_still_load(tmp_path: Path) -> None:
    x = np.array([[-65504.0, 0.0], [1.0, 65504.0]], dtype=np.float16)
    (path,) = tensorpng.save(x, tmp_path / "h.png", scale="image", bits=16)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loaded = tensorpng.load(path)
    assert loaded.dtype == np.float16
    np.testing.assert_allclose(loaded.astype(np.float64), x.astype(np.float64), atol=2.0)
    with pytest.warns(tensorpng.RecordWarning, match="past the range of float16"):
        record = json.loads(tensorpng.read_text(path)["tensorpng"])
        load_forged(tmp_path, json.dumps({**record, "value_range": [-65504.0, 70000.0]}), x.view(np.uint16))


def test_an_ignored_record_leaves_the_raw_samples_as_they_are(tmp_path: Path) -> None:
    """A bfloat16 record that fails when undone used to turn the raw samples into bfloat16."""
    import torch

    with pytest.warns(tensorpng.RecordWarning, match="its mean has 2 values for 3 channels"):
        path = tmp_path / "forged.png"
        path.write_bytes(
            encode_png(IMAGE, text={"tensorpng": forged(dtype="bfloat16", mean=[1, 2], std=[1, 2])})
        )
        loaded = tensorpng.load(path, as_tensor=True)
    assert loaded.dtype == torch.uint8
    np.testing.assert_array_equal(loaded.numpy(), IMAGE.transpose(2, 0, 1))


# ---- colormap records: work bounded by the pixels ----------------------------------------------


def colormap_record(tmp_path: Path, name: str = "viridis") -> str:
    (path,) = tensorpng.save(np.random.default_rng(0).random((4, 4)), tmp_path / "c.png", cmap=name)
    return tensorpng.read_text(path)["tensorpng"]


def colours(keys: np.ndarray) -> np.ndarray:
    """RGB pixels of ``0xRRGGBB`` keys."""
    return np.stack([(keys >> shift) & 255 for shift in (16, 8, 0)], axis=-1).astype(np.uint8)


def test_a_colormap_record_on_too_many_other_colours_is_ignored(tmp_path: Path) -> None:
    """Noise under a forged colormap record: each of its ~260,000 colours used to cost a
    nearest-colour search over the table (and ~100 bytes a pixel); past 65,536 colours that
    are not in the table, the file is not a colormap image."""
    noise = np.random.default_rng(10).integers(0, 256, (512, 512, 3), dtype=np.uint8)
    text = colormap_record(tmp_path)
    entry = json.loads(text)
    with pytest.warns(tensorpng.RecordWarning, match="more than 65,536 colours that are not in viridis"):
        loaded = load_forged(tmp_path, json.dumps({**entry, "shape": [512, 512]}), noise)
    np.testing.assert_array_equal(loaded, noise)


def test_undoing_a_colormap_takes_memory_linear_in_the_pixels(tmp_path: Path) -> None:
    """60,000 colours outside the table, each the nearest table colour's position; the peak
    memory of load is a few bytes a pixel more than its float64 result (it was ~100)."""
    from tensorpng.colormaps import colormap_table

    rng = np.random.default_rng(11)
    keys = rng.choice(1 << 24, 60_000, replace=False).astype(np.uint32)
    pixels = keys[np.arange(1 << 20) % len(keys)].reshape(1024, 1024)
    rgb = colours(pixels)
    path = tmp_path / "forged.png"
    path.write_bytes(
        encode_png(
            rgb,
            text={"tensorpng": json.dumps({**json.loads(colormap_record(tmp_path)), "shape": [1024, 1024]})},
        )
    )
    tracemalloc.start()
    try:
        values = tensorpng.load(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert values.dtype == np.float64 and values.shape == (1024, 1024)
    assert peak < 24 * values.size, f"{peak / values.size:.0f} bytes a pixel"
    table = colormap_table("viridis").astype(np.int64)
    for row, col in [(0, 0), (17, 200), (1023, 3), (512, 777)]:
        distances = ((table - rgb[row, col].astype(np.int64)) ** 2).sum(axis=1)
        nearest = np.flatnonzero((table == table[np.argmin(distances)]).all(axis=1)).mean()
        assert values[row, col] == pytest.approx(nearest / 255, abs=1e-9)


@pytest.mark.timeout(20)  # a hang guard: a 178-byte file took 11 s, 64 KiB minutes
@pytest.mark.parametrize(
    "text",
    [
        '"' + '\\"' * 32767,  # escaped quotes, never closed
        '{"a": "' + "[" * 30000 + '"}',  # brackets inside a string are no nesting
        "[" * 65536,
        '{"k": "' + '\\\\"' * 21000,
    ],
)
def test_checking_a_record_takes_one_pass(text: str) -> None:
    with pytest.raises(RecordError):  # not JSON, too deep, or not a record: refused, and quickly
        MappingRecord.from_json(text)
    data = encode_png(np.zeros((4, 4), np.uint8), text={"tensorpng": text[: (1 << 16)]})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", tensorpng.RecordWarning)
        assert tensorpng.load(data, as_tensor=False).shape == (4, 4)


def test_a_record_with_a_trns_chunk_is_ignored(tmp_path: Path) -> None:
    """tensorpng never writes tRNS: with one (an edit), its alpha would be undone as a value
    channel (4 channels read as CHW 4 x H x W). The raw samples come back, alpha included."""
    data = encode_png(IMAGE, text={"tensorpng": forged()})
    trns = b"tRNS" + struct.pack(">HHH", 1, 2, 3)
    chunk = struct.pack(">I", 6) + trns + struct.pack(">I", zlib.crc32(trns))
    edited = data[:33] + chunk + data[33:]  # after IHDR
    path = tmp_path / "trns.png"
    path.write_bytes(edited)
    with pytest.warns(tensorpng.RecordWarning, match="tRNS"):
        loaded = tensorpng.load(path, as_tensor=False)
    assert loaded.dtype == np.uint8 and loaded.shape == (6, 5, 4)
    np.testing.assert_array_equal(loaded[..., :3], IMAGE)


def test_every_dtype_tensorpng_writes_it_reads_back() -> None:
    """NumPy's longdouble (float128 on x86) among them: its own record is not refused."""
    for dtype in (np.longdouble, np.float16, np.float64, np.int16, np.uint64, np.bool_):
        x = (np.arange(6).reshape(2, 3) % 2).astype(dtype)
        with warnings.catch_warnings():
            warnings.simplefilter("error", tensorpng.RecordWarning)
            loaded = tensorpng.load(tensorpng.encode(x), as_tensor=False)
        assert loaded.dtype == np.dtype(dtype), dtype
        np.testing.assert_allclose(loaded.astype(np.float64), x.astype(np.float64), atol=1 / 255)


def test_a_record_of_empty_images_is_ignored(tmp_path: Path) -> None:
    """tensorpng writes no empty image: a grid of 0 x 0 tiles made every pixel padding."""
    record = forged(
        shape=[2, 1, 0, 0], layout="NCHW", dtype="int8", mapping="copy",
        grid={"count": 2, "nrow": 1, "padding": 1}, value_range=None,
    )  # fmt: skip
    with pytest.warns(tensorpng.RecordWarning, match="shape"):
        loaded = load_forged(tmp_path, record, np.full((2, 3), 200, np.uint8))
    assert loaded.dtype == np.uint8 and (loaded == 200).all()
