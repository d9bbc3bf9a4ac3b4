"""The parallel deflate: one zlib stream from slices deflated on several threads."""

from __future__ import annotations

import itertools
import zlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import decode_imagecodecs, decode_pypng, parse_chunks, pngcheck_bytes
from tensorpng import _parallel_deflate
from tensorpng._parallel_deflate import PARALLEL_MIN_BYTES, adler32_combine, deflate_parallel, slice_bounds
from tensorpng.png import encode_png


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=3000), st.binary(max_size=3000))
def test_adler32_combine_equals_adler32_of_the_concatenation(first: bytes, second: bytes) -> None:
    combined = adler32_combine(zlib.adler32(first), zlib.adler32(second), len(second))
    assert combined == zlib.adler32(first + second)


def test_adler32_combine_with_long_runs_of_0xff() -> None:
    # Sums reach the modulus many times over: the reductions must hold.
    first, second = b"\xff" * 100_003, b"\xff" * 70_001
    assert adler32_combine(zlib.adler32(first), zlib.adler32(second), len(second)) == zlib.adler32(
        first + second
    )


def test_slices_cover_the_buffer_at_unit_multiples() -> None:
    bounds = slice_bounds(10_000, 7, 1000)
    assert bounds[0][0] == 0 and bounds[-1][1] == 10_000
    assert all(stop == start for (_, stop), (start, _) in itertools.pairwise(bounds))
    assert all(start % 7 == 0 for start, _ in bounds)
    assert slice_bounds(0, 7) == [(0, 0)]
    assert slice_bounds(5, 7, 1) == [(0, 5)]  # a slice is never smaller than one unit


def _noisy_rows(rows: int, width: int, seed: int = 0) -> np.ndarray:
    """Compressible but not trivial bytes: a smooth ramp plus noise."""
    rng = np.random.default_rng(seed)
    ramp = np.add.outer(np.arange(rows), np.arange(width)) // 3
    return ((ramp + rng.integers(0, 8, (rows, width))) % 256).astype(np.uint8)


@pytest.mark.parametrize("window_bits", [9, 12, 15])
@pytest.mark.parametrize("workers", [1, 2, None])
@pytest.mark.parametrize("level", [0, 1, 3])
def test_stream_inflates_with_zlib(window_bits: int, workers: int | None, level: int) -> None:
    data = _noisy_rows(300, 1001)
    stream = deflate_parallel(
        data.data, unit=1001, level=level, window_bits=window_bits, workers=workers, slice_bytes=50_000
    )
    assert zlib.decompress(stream) == data.tobytes()  # checks the header and the Adler-32 too
    # The same through a streaming decompressor with the window the header announces.
    assert zlib.decompressobj(window_bits).decompress(stream) == data.tobytes()


@pytest.mark.parametrize("size", [0, 1, 999, 1000, 1001, 54_321])
def test_any_size_and_slice_count(size: int) -> None:
    data = bytes(_noisy_rows(1, max(size, 1))[0][:size])
    stream = deflate_parallel(data, slice_bytes=1000, workers=2)
    assert zlib.decompress(stream) == data


def test_header_is_valid_for_every_window_and_level() -> None:
    for window_bits in range(9, 16):
        for level in range(4):
            header = _parallel_deflate._zlib_header(level, window_bits)
            assert (header[0] * 256 + header[1]) % 31 == 0
            assert header[0] >> 4 == window_bits - 8 and header[0] & 0x0F == 8
            assert not header[1] & 0x20  # no preset dictionary


def test_zlib_without_isal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_parallel_deflate, "_isal_zlib", None)
    data = _noisy_rows(200, 777)
    stream = deflate_parallel(data.data, unit=777, level=6, slice_bytes=20_000, workers=2)
    assert zlib.decompress(stream) == data.tobytes()


def _big_photo_like(height: int, width: int) -> np.ndarray:
    rng = np.random.default_rng(1)
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([(x + y) // 4, (x * 2) // 5, (y * 3) // 7], axis=-1)
    return ((base + rng.integers(0, 6, base.shape)) % 256).astype(np.uint8)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_big_png_is_sliced_and_decodes(tmp_path: Path, dtype: type, monkeypatch: pytest.MonkeyPatch) -> None:
    image = _big_photo_like(1200, 1300).astype(dtype)
    if dtype is np.uint16:
        image = image * np.uint16(257)
    assert image.shape[0] * (1 + image.shape[1] * 3 * image.itemsize) >= PARALLEL_MIN_BYTES
    monkeypatch.setattr(_parallel_deflate, "cpu_count", lambda: 2)
    # Slicing serves the NumPy + ISA-L path (the native encoder deflates a whole image itself).
    monkeypatch.setenv("TENSORPNG_CPU_ENCODER", "numpy")
    calls: list[int] = []
    real = _parallel_deflate.deflate_parallel

    def spy(data: memoryview, **options: int) -> bytes:
        calls.append(memoryview(data).nbytes)
        return real(data, **options)

    monkeypatch.setattr(_parallel_deflate, "deflate_parallel", spy)
    data = encode_png(image)
    idat = b"".join(body for tag, body in parse_chunks(data) if tag == b"IDAT")
    if dtype is np.uint8:
        assert calls, "the big image did not take the parallel path"
        assert len(zlib.decompress(idat)) == calls[0]
    else:  # 16-bit "fast" deflates with libdeflate, one stream: its size was chosen by measurement
        assert not calls
    pngcheck_bytes(data, tmp_path)
    np.testing.assert_array_equal(decode_imagecodecs(data), image)
    np.testing.assert_array_equal(decode_pypng(data), image)


def test_small_png_keeps_one_stream(monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(*args: object, **kwargs: object) -> bytes:
        raise AssertionError("a small image must not be sliced")

    monkeypatch.setattr(_parallel_deflate, "deflate_parallel", fail)
    image = _big_photo_like(64, 64)
    np.testing.assert_array_equal(decode_imagecodecs(encode_png(image)), image)


def test_a_forked_child_deflates_in_parallel() -> None:
    import multiprocessing

    data = _noisy_rows(100, 999)
    deflate_parallel(data.data, unit=999, slice_bytes=10_000)  # the parent's pool exists
    context = multiprocessing.get_context("fork")
    with context.Pool(1) as pool:
        stream = pool.apply_async(_deflate_in_child, (data.tobytes(),)).get(timeout=60)
    assert zlib.decompress(stream) == data.tobytes()


def _deflate_in_child(data: bytes) -> bytes:
    return deflate_parallel(data, unit=999, slice_bytes=10_000)
