"""A chunk of small images converted in one pass (tensorpng._chunks) gives exactly what
converting each image on its own gives: samples, NaN counts, extremes and text chunks."""

from __future__ import annotations

import itertools
import struct
import zlib
from typing import Any

import numpy as np
import pytest
import torch

import tensorpng
from conftest import parse_chunks, png_content
from tensorpng._chunks import chunk_bounds, chunk_texts, convert_chunk
from tensorpng._encode import filtered_chunk, filtered_image, texts
from tensorpng._options import parse_image_options, parse_png_options
from tensorpng._record import mapping_record, record_text
from tensorpng.convert import prepare
from tensorpng.png import FilteredPNG, finish_png


def _values() -> np.ndarray:
    rng = np.random.default_rng(7)
    x = rng.random((9, 3, 11, 13), dtype=np.float32)
    x[1, 0, 2, 3] = np.nan
    x[2] *= 3  # outside 0..1: clamped
    x[3, 1, 4, 4] = np.inf
    x[4] = 0.25  # constant
    x[5, :, 0, 0] = -np.inf
    x[6] = np.nan  # nothing finite
    x[7] = 1e7 + x[7]  # float32 is not enough for scale="image"
    return x


CASES: dict[str, tuple[Any, dict[str, Any]]] = {
    "nchw": (_values(), {}),
    "torch": (torch.from_numpy(_values()), {}),
    "nhwc": (np.ascontiguousarray(_values().transpose(0, 2, 3, 1)), {}),
    "mean_std": (_values(), {"mean": tensorpng.IMAGENET_MEAN, "std": tensorpng.IMAGENET_STD}),
    "scale_image": (_values(), {"scale": "image"}),
    "scale_batch": (_values(), {"scale": "batch"}),
    "bits16": (_values(), {"bits": 16}),
    "float16": (_values().astype(np.float16), {}),
    "float64": (_values().astype(np.float64), {}),
    "uint8_range": (
        (np.nan_to_num(_values(), posinf=1) * 200).clip(0, 255).astype(np.uint8),
        {"value_range": (5, 90)},
    ),
    "int16_scale": (
        (np.nan_to_num(_values(), posinf=1, neginf=0) * 100).astype(np.int16) - 50,
        {"scale": "image"},
    ),
    "cmap": (_values()[:, 0], {"cmap": "viridis", "layout": "NHW"}),
    "gray": (_values()[:, :1], {}),
    "rgba": (np.concatenate([_values(), _values()[:, :1]], axis=1), {}),
    "strided": (_values()[::2, :, ::2], {}),
    "user_metadata": (_values(), {"metadata": {"run": "7", "note": "ünïcode"}}),
    "no_metadata": (_values(), {"metadata": False}),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_a_chunk_converts_as_each_image_does(name: str) -> None:
    x, options = CASES[name]
    png_options = parse_png_options({key: options.pop(key) for key in ("metadata",) if key in options})
    batch = prepare(x, parse_image_options(options))
    count = batch.count
    for start, stop in [(0, count), (1, 4), (count - 1, count)]:
        chunk = convert_chunk(batch, start, stop)
        for offset, image in enumerate(chunk):
            alone = batch.image(start + offset)
            np.testing.assert_array_equal(image.samples, alone.samples)
            assert image.samples.dtype == alone.samples.dtype
            assert image.nans == alone.nans
            assert image.extremes == alone.extremes
            assert all(isinstance(v, float) for v in image.extremes or ())
        expected = [texts(png_options, batch, start + i, image.extremes) for i, image in enumerate(chunk)]
        assert chunk_texts(png_options, batch, start, [image.extremes for image in chunk]) == expected
        filtered = filtered_chunk(batch, start, stop, png_options)
        for offset, (item, nans) in enumerate(filtered):
            alone_item, alone_nans = filtered_image(batch, start + offset, png_options)
            assert item.head == alone_item.head and nans == alone_nans
            # the same sample bytes, whether held interleaved or (channels-first) as planes
            np.testing.assert_array_equal(interleaved(item), interleaved(alone_item))
            assert (item.native_bpp, item.bit_depth) == (alone_item.native_bpp, alone_item.bit_depth)
            assert png_content(finish_png(item)) == png_content(finish_png(alone_item))


def interleaved(item: FilteredPNG) -> np.ndarray:
    """A stage-1 result's scanline bytes, interleaved (see FilteredPNG.planar)."""
    if not item.planar:
        return item.scanlines
    return np.ascontiguousarray(item.scanlines.transpose(1, 2, 0)).reshape(item.scanlines.shape[1], -1)


def test_chunks_cover_the_batch_and_group_small_images() -> None:
    small = prepare(np.zeros((1000, 3, 32, 32), np.float32), parse_image_options({}))
    bounds = chunk_bounds(small, 2)
    assert bounds[0][0] == 0 and bounds[-1][1] == 1000
    assert all(a[1] == b[0] for a, b in itertools.pairwise(bounds))
    assert 1 < bounds[0][1] - bounds[0][0] <= 64
    large = prepare(np.zeros((4, 3, 512, 512), np.float32), parse_image_options({}))
    assert chunk_bounds(large, 2) == [(0, 1), (1, 2), (2, 3), (3, 4)]


def test_save_of_a_batch_equals_the_writer_and_the_pixels(tmp_path: Any) -> None:
    x = torch.from_numpy(_values())
    paths = tensorpng.save(x, tmp_path / "a" / "{index}.png")
    with tensorpng.Writer(tmp_path / "b") as writer:
        writer.save(x, "{index}.png")
    for index, path in enumerate(paths):
        assert png_content(path.read_bytes()) == png_content((tmp_path / "b" / f"{index}.png").read_bytes())
        from PIL import Image

        with Image.open(path) as image:
            np.testing.assert_array_equal(np.asarray(image), tensorpng.to_array(x[index]))


def test_small_images_stay_on_the_calling_thread_unless_workers_are_given() -> None:
    from tensorpng._chunks import ONE_THREAD_SAMPLES, pipeline_workers

    small = prepare(np.zeros((100, 3, 32, 32), np.float32), parse_image_options({}))
    assert ONE_THREAD_SAMPLES >= 3 * 32 * 32
    assert pipeline_workers(small, None) == 1
    assert pipeline_workers(small, 3) == 3  # the caller's choice stands
    large = prepare(np.zeros((4, 3, 128, 128), np.float32), parse_image_options({}))
    assert pipeline_workers(large, None) is None


@pytest.mark.parametrize("name", sorted(CASES))
def test_the_records_json_is_the_records(name: str) -> None:
    """record_text (what a file gets) is mapping_record(...).to_json() without the record: the
    same text for every kind of batch, grid, index and extremes."""
    x, options = CASES[name]
    options = {key: value for key, value in options.items() if key != "metadata"}
    for grid in (False, True):
        batch = prepare(x, parse_image_options({**options, "grid": grid}))
        for index in (None, 0, batch.count - 1):
            for extremes in (None, (-1.5, 2.0), (None, None), (float("nan"), 3.0)):
                expected = mapping_record(batch, index, extremes).to_json()
                assert record_text(batch, index, extremes) == expected, (grid, index, extremes)


def test_png_content_tells_files_apart_by_everything_but_their_deflate() -> None:
    """The oracle of the comparisons above: the same scanlines deflated otherwise compare equal;
    moved metadata, changed pixels and bytes after the zlib stream do not."""

    def chunk(tag: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + tag + body + struct.pack(">I", zlib.crc32(tag + body))

    encoded = tensorpng.encode(np.zeros((8, 8), np.uint8), metadata={"seed": 1})
    chunks = parse_chunks(encoded)
    ihdr, text = (b"".join(chunk(t, body) for t, body in chunks if t == tag) for tag in (b"IHDR", b"tEXt"))
    tags = [tag for tag, _ in chunks]
    assert tags[0] == b"IHDR" and set(tags[1:-2]) == {b"tEXt"} and tags[-2:] == [b"IDAT", b"IEND"]
    idat = chunks[-2][1]
    scanlines = zlib.decompress(idat)

    def file(idat: bytes, *, text_after: bool = False) -> bytes:
        body = ihdr + chunk(b"IDAT", idat) + text if text_after else ihdr + text + chunk(b"IDAT", idat)
        return encoded[:8] + body + chunk(b"IEND", b"")

    assert file(idat) == encoded
    assert png_content(file(zlib.compress(scanlines, 9))) == png_content(encoded)
    assert png_content(file(zlib.compress(scanlines), text_after=True)) != png_content(encoded)
    assert png_content(file(zlib.compress(scanlines[:-1] + b"\x01"))) != png_content(encoded)
    with pytest.raises(AssertionError, match="does not end"):
        png_content(file(zlib.compress(scanlines) + b"junk"))
