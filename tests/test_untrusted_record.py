"""The tensorpng record is untrusted: only values tensorpng writes are used, it must fit the
file's IHDR, and anything else is ignored with a RecordWarning (the raw samples returned)."""

from __future__ import annotations

import json
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
