"""The native encoder (tensorpng/_native.c) and its dispatch (tensorpng/_cpu_codec.py).

Every image is checked three ways: decoders we did not write (imagecodecs, pypng, pngcheck)
give back the input's pixels; the inflated scanlines equal the NumPy path's (same filter
choice, same residuals); the scalar and SIMD paths write identical bytes.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import time
import warnings
import zlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_png import gil_ratio

import tensorpng
import tensorpng._cpu_codec as codec
from conftest import decode_imagecodecs, decode_pypng, parse_chunks, pngcheck_bytes
from tensorpng._encode import filtered_image
from tensorpng._options import parse_image_options, parse_png_options
from tensorpng._png_deflate import FLAT_RESIDUAL
from tensorpng.convert import prepare
from tensorpng.errors import OptionError
from tensorpng.png import encode_indexed_png, encode_png, filter_png, finish_png

native = pytest.importorskip("tensorpng._native", reason="the C extension is not built (no compiler)")


@pytest.fixture(autouse=True)
def _native_path(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Every test here uses the native path unless it says otherwise, SIMD allowed."""
    monkeypatch.setenv(codec.ENV, "native")
    native.set_scalar(False)
    yield
    native.set_scalar(False)


def idat(data: bytes) -> bytes:
    return b"".join(body for tag, body in parse_chunks(data) if tag == b"IDAT")


def encode_with(image: np.ndarray, path: str, monkeypatch: pytest.MonkeyPatch, **kwargs: object) -> bytes:
    monkeypatch.setenv(codec.ENV, path)
    try:
        return encode_png(image, **kwargs)  # type: ignore[arg-type]
    finally:
        monkeypatch.setenv(codec.ENV, "native")


def check(image: np.ndarray, monkeypatch: pytest.MonkeyPatch, tmp_path: Path | None = None) -> bytes:
    """Encode natively; check pixels, scanlines against the NumPy path, scalar == SIMD."""
    encoded = encode_png(image)
    expected = image if image.ndim == 2 or image.shape[2] > 1 else image[..., 0]
    for decode in (decode_imagecodecs, decode_pypng):
        decoded = decode(encoded)
        assert decoded.dtype == np.uint8 and np.array_equal(decoded.reshape(expected.shape), expected)
    reference = encode_with(image, "numpy", monkeypatch)
    assert zlib.decompress(idat(encoded)) == zlib.decompress(idat(reference)), "filtering differs from NumPy"
    # Scalar and SIMD must write the same bytes: compared on the extension's own stream (flat
    # 0: never declined), since the file of a mask-like image comes from ISA-L, whose bytes
    # depend on where its buffers lie in memory (they differ between processes; the pixels never).
    samples = np.ascontiguousarray(image).reshape(image.shape[0], -1)
    bpp = 1 if image.ndim == 2 else image.shape[2]
    simd_stream = native.deflate_image(samples, samples.shape[0], samples.shape[1], bpp)
    simd_declines = (
        native.deflate_image(samples, samples.shape[0], samples.shape[1], bpp, FLAT_RESIDUAL) is None
    )
    native.set_scalar(True)
    try:
        assert native.deflate_image(samples, samples.shape[0], samples.shape[1], bpp) == simd_stream, (
            "scalar and SIMD paths differ"
        )
        scalar_declines = (
            native.deflate_image(samples, samples.shape[0], samples.shape[1], bpp, FLAT_RESIDUAL) is None
        )
        assert scalar_declines == simd_declines, "scalar and SIMD paths disagree on handing a mask to ISA-L"
        rescalar = encode_png(image)
    finally:
        native.set_scalar(False)
    scanlines = zlib.decompress(idat(encoded))
    assert zlib.decompress(simd_stream) == scanlines, "the extension's own stream decodes differently"
    assert zlib.decompress(idat(rescalar)) == scanlines, "scalar path filters differently"
    if tmp_path is not None:
        pngcheck_bytes(encoded, tmp_path)
    return encoded


def test_native_path_is_active() -> None:
    assert codec.method(8) == "native"
    assert codec.method(16) == "native"  # 16-bit: the extension filters, libdeflate deflates


SHAPES = [(1, 1), (1, 2), (2, 1), (1, 333), (333, 1), (37, 53), (64, 64), (257, 129)]


@pytest.mark.parametrize("channels", [1, 2, 3, 4])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_round_trip_every_channel_count(
    shape: tuple[int, int], channels: int, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    rng = np.random.default_rng(shape[0] * 1000 + shape[1] + channels)
    y, x = np.mgrid[0 : shape[0], 0 : shape[1]]
    smooth = (x * 3 + y * 2)[..., None] + np.arange(channels) * 40 + rng.integers(0, 6, (*shape, channels))
    image = (smooth % 256).astype(np.uint8)
    check(image if channels > 1 else image[..., 0], monkeypatch, tmp_path)


@pytest.mark.parametrize(
    "kind", ["noise", "constant", "zeros", "mask", "stripes", "sparse"], ids=lambda kind: kind
)
@pytest.mark.parametrize("channels", [1, 3, 4])
def test_round_trip_contents(
    kind: str, channels: int, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    rng = np.random.default_rng(7)
    shape = (96, 131, channels)
    if kind == "noise":
        image = rng.integers(0, 256, shape, dtype=np.uint8)
    elif kind == "constant":
        image = np.full(shape, 77, dtype=np.uint8)
    elif kind == "zeros":
        image = np.zeros(shape, dtype=np.uint8)
    elif kind == "mask":
        image = np.zeros(shape, dtype=np.uint8)
        for _ in range(12):
            top, left = rng.integers(0, 90), rng.integers(0, 120)
            image[top : top + rng.integers(3, 40), left : left + rng.integers(3, 60)] = rng.integers(0, 21)
    elif kind == "stripes":
        image = np.broadcast_to((np.arange(131) // 9 % 2 * 255).astype(np.uint8)[None, :, None], shape).copy()
    else:
        image = np.where(rng.random(shape) < 0.02, rng.integers(0, 256, shape), 0).astype(np.uint8)
    encoded = check(image, monkeypatch, tmp_path)
    stream = idat(encoded)
    raw = image.shape[0] * (1 + image.shape[1] * channels)
    stored = 2 + raw + 5 * -(-raw // 65535) + 4
    assert len(stream) <= stored, "coded data larger than stored blocks"
    if kind in ("constant", "zeros", "mask", "stripes"):
        assert len(stream) < raw / 10, f"{kind}: {len(stream)} bytes of {raw}: zero runs not coded as matches"


def test_mask_like_images_go_to_an_lz77_deflate() -> None:
    """Under ``flat`` mean |residual| the extension declines; png.py then uses ISA-L."""
    rng = np.random.default_rng(9)
    mask = np.repeat(np.repeat(rng.integers(0, 21, (16, 16), dtype=np.uint8), 32, axis=0), 32, axis=1)
    assert native.deflate_image(mask, 512, 512, 1, 1.0) is None
    stream = native.deflate_image(mask, 512, 512, 1)  # without the limit: coded natively
    assert stream is not None
    assert zlib.decompress(stream)[: 1 + 512] == zlib.decompress(idat(encode_png(mask)))[: 1 + 512]
    assert len(idat(encode_png(mask))) < len(stream)
    photo_like = rng.integers(0, 256, (64, 64), dtype=np.uint8)
    assert native.deflate_image(photo_like, 64, 64, 1, 1.0) is not None


def test_noise_is_stored_and_never_larger_than_raw(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(1)
    for shape in [(1, 1, 1), (3, 5, 3), (512, 512, 3), (1, 70000, 1), (200, 400, 4)]:
        image = rng.integers(0, 256, shape, dtype=np.uint8)
        stream = idat(check(image, monkeypatch))
        raw = shape[0] * (1 + shape[1] * shape[2])
        assert len(stream) <= 2 + raw + 5 * -(-raw // 65535) + 4
        inflater = zlib.decompressobj()
        inflater.decompress(stream)
        assert inflater.eof


def test_huge_width_and_height(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    wide = np.repeat(rng.integers(0, 256, (2, 1000, 3), dtype=np.uint8), 900, axis=1)  # libpng: width <= 1M
    check(wide, monkeypatch, tmp_path)
    tall = (np.arange(300_000, dtype=np.uint32) % 251).astype(np.uint8)[:, None]  # 300000 x 1
    check(tall, monkeypatch, tmp_path)
    big = np.zeros((3000, 3000, 3), dtype=np.uint8)  # 27 MB
    big[::7] = 200
    check(big, monkeypatch, tmp_path)


def test_larger_than_the_kept_scratch_buffer(monkeypatch: pytest.MonkeyPatch) -> None:
    """Images over 64 MiB use a temporary buffer, freed after the call."""
    image = np.zeros((9000, 8000), dtype=np.uint8)  # 72 MB
    image[:, ::3] = np.arange(9000, dtype=np.uint32)[:, None] % 256
    encoded = encode_png(image)
    assert np.array_equal(decode_imagecodecs(encoded), image)


def test_channels_first_samples(monkeypatch: pytest.MonkeyPatch) -> None:
    """A C x H x W array viewed as H x W x C (as PyTorch holds images) gives the same file."""
    rng = np.random.default_rng(3)
    planes = rng.integers(0, 40, (3, 50, 70), dtype=np.uint8).cumsum(axis=2).astype(np.uint8)
    image = planes.transpose(1, 2, 0)
    assert encode_png(image) == encode_png(np.ascontiguousarray(image))
    check(image, monkeypatch)


@pytest.mark.parametrize("labels_max", [1, 3, 15, 200])
def test_palette_images(labels_max: int, tmp_path: Path) -> None:
    rng = np.random.default_rng(labels_max)
    labels = rng.integers(0, labels_max + 1, (45, 67), dtype=np.uint8)
    labels[10:30] = 0
    palette = rng.integers(0, 256, (256, 3), dtype=np.uint8)
    encoded = encode_indexed_png(labels, palette)
    pngcheck_bytes(encoded, tmp_path)
    decoded = decode_pypng(encoded)
    assert np.array_equal(decoded, labels)


def test_sixteen_bit_uses_the_deep_deflate(tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    image = (rng.integers(0, 2000, (60, 70, 3)).cumsum(axis=1) % 65536).astype(np.uint16)
    encoded = encode_png(image)
    pngcheck_bytes(encoded, tmp_path)
    assert np.array_equal(decode_imagecodecs(encoded), image)


@settings(max_examples=60, deadline=None)
@given(
    height=st.integers(1, 40),
    width=st.integers(1, 70),
    channels=st.integers(1, 4),
    kind=st.sampled_from(["random", "sparse", "runs", "smooth"]),
    seed=st.integers(0, 2**32 - 1),
)
def test_fuzz_shapes_and_contents(height: int, width: int, channels: int, kind: str, seed: int) -> None:
    rng = np.random.default_rng(seed)
    shape = (height, width, channels)
    if kind == "random":
        image = rng.integers(0, 256, shape, dtype=np.uint8)
    elif kind == "sparse":
        image = np.where(rng.random(shape) < 0.05, rng.integers(0, 256, shape), 0).astype(np.uint8)
    elif kind == "runs":
        image = np.repeat(rng.integers(0, 3, (height, -(-width // 9), channels)), 9, axis=1)[:, :width]
        image = image.astype(np.uint8)
    else:
        image = (rng.integers(0, 4, shape).cumsum(axis=1) % 256).astype(np.uint8)
    stream = native.deflate_image(image, height, width * channels, channels)
    native.set_scalar(True)
    assert native.deflate_image(image, height, width * channels, channels) == stream
    native.set_scalar(False)
    lines = np.frombuffer(zlib.decompress(stream), dtype=np.uint8).reshape(height, 1 + width * channels)
    assert np.array_equal(unfilter(lines, channels), image.reshape(height, -1))


def unfilter(lines: np.ndarray, bpp: int) -> np.ndarray:
    """Reference PNG reconstruction (spec 9.2), in plain Python integers."""
    height, width = lines.shape[0], lines.shape[1] - 1
    out = np.zeros((height, width), dtype=np.int64)
    for y in range(height):
        kind = int(lines[y, 0])
        assert kind in (0, 1, 2, 3), kind
        for x in range(width):
            left = int(out[y, x - bpp]) if x >= bpp else 0
            up = int(out[y - 1, x]) if y else 0
            prediction = (0, left, up, (left + up) // 2)[kind]
            out[y, x] = (int(lines[y, x + 1]) + prediction) % 256
    return out.astype(np.uint8)


@pytest.mark.parametrize("size", [0, 1, 31, 32, 33, 5551, 5552, 5553, 177 * 32, 100_003])
def test_adler32_matches_zlib(size: int) -> None:
    data = np.random.default_rng(size).integers(0, 256, size, dtype=np.uint8).tobytes()
    ones = b"\xff" * size  # the largest sums: overflow would show here
    for scalar in (False, True):
        native.set_scalar(scalar)
        assert native.adler32(data) == zlib.adler32(data)
        assert native.adler32(ones) == zlib.adler32(ones)
        assert native.adler32(data, 12345) == zlib.adler32(data, 12345)


def test_simd_path_is_exercised() -> None:
    """On x86-64 with AVX2 (the CI machines) the SIMD path must really be in use."""
    if "avx2" not in native.cpu_features():
        pytest.skip("this CPU has no AVX2: only the scalar path exists here")
    assert native.simd() == "avx2"
    native.set_scalar(True)
    assert native.simd() == "scalar"


def test_threads_share_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    """Per-thread scratch buffers: encodes in parallel give the serial results."""
    rng = np.random.default_rng(5)
    images = [
        rng.integers(0, 8, (rng.integers(1, 300), rng.integers(1, 300), 3), dtype=np.uint8) for _ in range(40)
    ]
    serial = [encode_png(image) for image in images]
    with ThreadPoolExecutor(4) as pool:
        assert list(pool.map(encode_png, images)) == serial


def test_bad_arguments_raise() -> None:
    with pytest.raises(ValueError, match="rows of"):
        native.deflate_image(b"abc", 2, 2, 1)
    with pytest.raises(ValueError, match="bpp"):
        native.deflate_image(b"abcd", 2, 2, 9)


# The dispatch.


def test_numpy_path_can_be_forced(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(codec.ENV, "numpy")
    assert codec.method(8) == "numpy"
    monkeypatch.setenv(codec.ENV, "bogus")
    with pytest.raises(OptionError, match=codec.ENV):
        encode_png(np.zeros((2, 2), dtype=np.uint8))


def test_missing_extension_warns_once_when_asked_for(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(codec, "_native", None)
    monkeypatch.setattr(codec, "_warned", False)
    image = np.arange(60, dtype=np.uint8).reshape(6, 10)
    with pytest.warns(RuntimeWarning, match="not available"):
        first = encode_png(image)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert encode_png(image) == first  # no second warning
        monkeypatch.setenv(codec.ENV, "auto")
        encode_png(image)  # auto: a silent fallback (tensorpng info says so)
    assert np.array_equal(decode_imagecodecs(first), image)
    assert any("not available" in line for line in codec.describe())


@pytest.mark.parametrize("path", ["native", "numpy"])
def test_info_command(path: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(codec.ENV, path)
    result = subprocess.run(
        [sys.executable, "-m", "tensorpng", "info"], capture_output=True, text=True, check=True
    )
    encoder = next(line for line in result.stdout.splitlines() if line.startswith("8-bit encoder"))
    assert encoder.split(":")[1].split()[0] == ("native" if path == "native" else "NumPy")
    assert "native extension: built" in result.stdout
    assert "16-bit encoder" in result.stdout


# The GIL.


def test_native_encode_releases_the_gil() -> None:
    """A large image (48 MB): the native encode is fast, and on a loaded machine the OS alone
    can stall the spinning main thread for 10-30 ms (seen with hashlib, which releases the GIL)."""
    y, x = np.mgrid[0:4000, 0:4000]
    waves = ((np.sin(x / 37) + np.cos(y / 53)) * 50 + 100).astype(np.uint8)
    image = waves[..., None] + np.random.default_rng(0).integers(0, 16, (4000, 4000, 3), dtype=np.uint8)
    ratio = gil_ratio(lambda: encode_png(image), attempts=6)  # the best of 6: OS stalls come and go
    assert ratio < 0.25, f"the main thread stalled for {ratio:.0%} of a native encode: GIL held"


def test_gil_probe_catches_a_native_call_that_holds_the_gil(monkeypatch: pytest.MonkeyPatch) -> None:
    """The same probe fails on a native deflate wrapped in a GIL-holding C loop."""
    image = np.random.default_rng(0).integers(0, 16, (2500, 2500, 3), dtype=np.uint8)
    real = codec.native_deflate
    start = time.perf_counter()
    real(image.reshape(2500, -1), 3)
    seconds = time.perf_counter() - start
    start = time.perf_counter()
    sum(range(1_000_000))
    count = int(1_000_000 * 2 * seconds / (time.perf_counter() - start))

    def holding(samples: np.ndarray, bpp: int, flat: float = 0.0) -> bytes | None:
        sum(range(count))
        return real(samples, bpp, flat)

    monkeypatch.setattr(codec, "native_deflate", holding)
    ratio = gil_ratio(lambda: encode_png(image), attempts=1)
    assert ratio > 0.25, f"the probe missed a GIL held for most of the encode ({ratio:.0%})"


@pytest.mark.parametrize("channels", [1, 3, 4])
def test_large_photo_like_images(channels: int, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Over 64 KiB the extension codes two literals per table lookup: the same stream rules."""
    rng = np.random.default_rng(channels)
    y, x = np.mgrid[0:400, 0:300]
    waves = ((np.sin(x / 17) + np.cos(y / 23)) * 60 + 120).astype(np.uint8)[..., None]
    image = waves + rng.integers(0, 12, (400, 300, channels), dtype=np.uint8)
    image[50:120, 30:200] = 0  # zero runs inside a large image
    check(image if channels > 1 else image[..., 0], monkeypatch, tmp_path)


def test_zero_runs_at_every_offset() -> None:
    """A run of 7, 8 or 9 zeros at every offset of a nonzero row (the SIMD run scan's block
    edges included): scalar and SIMD agree, and the stream inflates to the filtered row."""
    rng = np.random.default_rng(11)
    for length in (7, 8, 9):
        for offset in range(0, 100 - length):
            row = rng.integers(1, 256, (1, 100), dtype=np.uint8)
            row[0, offset : offset + length] = 0
            stream = native.deflate_image(row, 1, 100, 1)
            native.set_scalar(True)
            assert native.deflate_image(row, 1, 100, 1) == stream, (length, offset)
            native.set_scalar(False)
            lines = np.frombuffer(zlib.decompress(stream), dtype=np.uint8).reshape(1, 101)
            assert np.array_equal(unfilter(lines, 1), row)


def test_sixteen_bit_filtering_matches_numpy(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """16-bit images: the extension filters (then libdeflate): the NumPy path's scanlines."""
    rng = np.random.default_rng(12)
    for shape in [(1, 1), (1, 9, 3), (7, 1, 2), (61, 47, 4), (200, 150)]:
        image = (rng.integers(0, 300, shape).cumsum(axis=1) % 65536).astype(np.uint16)
        encoded = encode_png(image)
        reference = encode_with(image, "numpy", monkeypatch)
        assert zlib.decompress(idat(encoded)) == zlib.decompress(idat(reference))
        assert np.array_equal(decode_imagecodecs(encoded), image)
        pngcheck_bytes(encoded, tmp_path)


@settings(max_examples=60, deadline=None)
@given(
    height=st.integers(1, 40),
    width=st.integers(1, 90),
    channels=st.integers(2, 4),
    kind=st.sampled_from(["random", "runs", "smooth", "flat"]),
    seed=st.integers(0, 2**32 - 1),
)
def test_channels_first_planes_give_the_interleaved_stream(
    height: int, width: int, channels: int, kind: str, seed: int
) -> None:
    """Planes (C x H x W) are interleaved a row at a time in C: the stream of the interleaved
    copy, on both paths, and the smallest and largest byte found on the way."""
    rng = np.random.default_rng(seed)
    shape = (height, width, channels)
    if kind == "random":
        image = rng.integers(0, 256, shape, dtype=np.uint8)
    elif kind == "runs":
        image = np.repeat(rng.integers(0, 3, (height, -(-width // 9), channels)), 9, axis=1)[:, :width]
    elif kind == "smooth":
        image = rng.integers(0, 4, shape).cumsum(axis=1) % 256
    else:
        image = np.full(shape, rng.integers(0, 256))
    image = image.astype(np.uint8)
    planes = np.ascontiguousarray(image.transpose(2, 0, 1))
    args = (height, width * channels, channels)
    for flat in (0.0, 1.0):  # 1.0: flat images are left to the LZ77 deflate (None)
        expected = native.deflate_image(image, *args, flat)
        for scalar in (False, True):
            native.set_scalar(scalar)
            assert native.deflate_image(planes, *args, flat, True) == expected, (scalar, flat)
            for data, planar in ((image, False), (planes, True)):
                ranged = native.deflate_image(data, *args, flat, planar, True)
                assert ranged == (expected, image.min(), image.max()), (scalar, flat, planar)


@pytest.mark.parametrize("size", [1, 31, 32, 127, 128, 129, 255, 1000, 100_003])
def test_byte_range_matches_numpy(size: int) -> None:
    rng = np.random.default_rng(size)
    for low, high in ((0, 256), (7, 8), (100, 180)):
        data = rng.integers(low, high, size, dtype=np.uint8)
        data[rng.integers(0, size)] = rng.integers(0, 256)  # an outlier anywhere, tail included
        for scalar in (False, True):
            native.set_scalar(scalar)
            assert native.byte_range(data) == (data.min(), data.max()), scalar
    with pytest.raises(ValueError, match="empty"):
        native.byte_range(b"")


def test_channels_first_samples_reach_the_extension_uncopied() -> None:
    """Stage 1 keeps a C x H x W image's planes as they are (the extension interleaves them),
    instead of an interleaving copy that took as long as the encoding."""
    planes = (
        np.random.default_rng(8).integers(0, 9, (3, 40, 50), dtype=np.uint8).cumsum(axis=2, dtype=np.uint8)
    )
    filtered = filter_png(planes.transpose(1, 2, 0))
    assert filtered.planar and filtered.native_bpp == 3
    assert np.shares_memory(filtered.scanlines, planes)
    assert finish_png(filtered) == encode_png(np.ascontiguousarray(planes.transpose(1, 2, 0)))


@pytest.mark.parametrize("kind", ["hwc", "torch chw", "mask", "noise", "gray", "batch of one"])
def test_encode_finds_the_records_min_and_max_while_coding(kind: str, tmp_path: Path) -> None:
    """tensorpng.encode of 8-bit input takes the record's min and max from the native encoder
    (no pass of their own): the same file as the two stages write, with the right values."""
    import torch

    rng = np.random.default_rng(9)
    smooth = (rng.integers(0, 5, (60, 80, 3)).cumsum(axis=1) % 200 + 20).astype(np.uint8)
    x: object = {
        "hwc": smooth,
        "torch chw": torch.from_numpy(smooth).permute(2, 0, 1).contiguous(),
        "mask": np.kron(rng.integers(3, 6, (6, 8)), np.ones((10, 10), int)).astype(np.uint8),
        "noise": rng.integers(1, 250, (50, 50, 4), dtype=np.uint8),
        "gray": smooth[..., 0],
        "batch of one": smooth[None],
    }[kind]
    values = np.asarray(x)
    data = tensorpng.encode(x)
    options = parse_image_options({})
    png_options = parse_png_options({})
    batch = prepare(x, options)
    filtered, _ = filtered_image(batch, 0, png_options)
    assert data == finish_png(filtered)
    record = json.loads(dict(parse_chunks(data))[b"tEXt"].split(b"\0", 1)[1])
    assert (record["min"], record["max"]) == (values.min(), values.max())
    pngcheck_bytes(data, tmp_path)


# float32 values to 8-bit samples in one pass (convert_affine): the same bytes as NumPy's passes.


def _numpy_conversion(
    values: np.ndarray, gains: list[float], offsets: list[float], planar: bool
) -> np.ndarray:
    """``scaling._convert_affine``'s NumPy passes: float32 product, sum, clamp, NaN to 0, truncate."""
    shape = (len(gains), -1) if planar else (-1, len(gains))
    flat = values.reshape(shape)
    gain = np.asarray(gains, np.float32).reshape((-1, 1) if planar else (1, -1))
    offset = np.asarray(offsets, np.float32).reshape(gain.shape)
    with np.errstate(invalid="ignore", over="ignore"):
        mapped = flat * gain + offset
        mapped = np.clip(mapped, 0, 255)
    mapped[np.isnan(mapped)] = 0
    return mapped.astype(np.uint8).reshape(values.shape)


@pytest.mark.parametrize("channels", [1, 2, 3, 4])
@pytest.mark.parametrize("planar", [True, False])
@pytest.mark.parametrize("size", [1, 31, 32, 33, 64 * 4 + 7, 5000])
def test_convert_affine_matches_numpy_on_either_path(channels: int, planar: bool, size: int) -> None:
    """Hard values: exact halves of a step (where a fused multiply-add would round the other
    way), NaN, +-inf, both zeros, huge and tiny values; every length of tail after 32-value
    steps; scalar and SIMD alike, with the NaN count and the extremes."""
    rng = np.random.default_rng(size * 8 + channels)
    values = rng.standard_normal(size * channels).astype(np.float32) * 2
    special = np.array([np.nan, np.inf, -np.inf, 0.0, -0.0, 1e30, -1e30, 1e-40, 3.4e38], np.float32)
    halves = ((np.arange(256, dtype=np.float32) + 0.5) / 255).astype(np.float32)  # k + 1/2 after * 255
    values[: min(values.size, 256)] = halves[: min(values.size, 256)]
    if values.size > 300:
        values[rng.integers(0, values.size, 40)] = rng.choice(special, 40)
    values = values.reshape((channels, size) if planar else (size, channels))
    gains = [255.0 * g for g in (1.0, 0.229, 0.224, 0.225)[:channels]]
    offsets = [0.5 + 255.0 * m for m in (0.0, 0.485, 0.456, 0.406)[:channels]]
    expected = _numpy_conversion(values, gains, offsets, planar)
    nans = int(np.isnan(values).sum())
    finite = values[~np.isnan(values)]
    for scalar in (False, True):
        native.set_scalar(scalar)
        samples = np.empty(values.shape, np.uint8)
        counted, low, high, _ = native.convert_affine(values, samples, gains, offsets, planar)
        assert np.array_equal(samples, expected), f"scalar={scalar}: samples differ from NumPy's"
        assert counted == nans
        if finite.size:
            assert (low, high) == (float(finite.min()), float(finite.max()))


def test_convert_affine_reports_both_zeros_and_refuses_bad_arguments() -> None:
    out = np.empty(64, np.uint8)
    for scalar in (False, True):
        native.set_scalar(scalar)
        for zeros, both in (([0.0], False), ([-0.0], False), ([0.0, -0.0], True)):
            values = np.ones(64, np.float32)
            values[5 : 5 + len(zeros)] = zeros
            assert native.convert_affine(values, out, [1.0], [0.0], True)[3] is both
    with pytest.raises(ValueError, match="no conversion"):
        native.convert_affine(np.ones(64, np.float32), np.empty(63, np.uint8), [1.0], [0.0], True)
    with pytest.raises(ValueError, match="no conversion"):
        native.convert_affine(np.ones(64, np.float32), out, [1.0] * 5, [0.0] * 5, False)
    with pytest.raises(ValueError, match="no conversion"):
        native.convert_affine(np.ones(63, np.float32), np.empty(63, np.uint8), [1.0, 1.0], [0.0, 0.0], False)


def _conversion_inputs() -> Iterator[tuple[str, object, dict[str, object]]]:
    """Float batches (torch and NumPy; CHW, HWC and strided) with NaN, +-inf and both zeros, under
    every option that changes the conversion."""
    import torch  # a test dependency (requirements-dev.txt); imported here, where it is used

    rng = np.random.default_rng(11)
    values = rng.standard_normal((3, 3, 37, 45)).astype(np.float32)
    values[0, 0, 1, 2], values[1, 1, 3, 4], values[2, 2, 5, 6] = np.nan, np.inf, -np.inf
    values[1, :, 0, :4], values[2, :, 1, :4] = 0.0, -0.0  # zeros of both signs: record min/max
    zeros = np.abs(values[2:])
    zeros[np.isinf(zeros)] = 0.0
    zeros[:, 1, 0, :3] = -0.0
    normalize = {"mean": tensorpng.IMAGENET_MEAN, "std": tensorpng.IMAGENET_STD}
    options: list[dict[str, object]] = [
        {},
        normalize,
        {"value_range": (-2, 3)},
        {"scale": "image"},
        {"bits": 16, **normalize},
        {"grid": True, **normalize},
        {"metadata": False, "workers": 1, **normalize},
    ]
    for dtype in ("float32", "float16", "bfloat16", "float64"):
        tensor = torch.from_numpy(values).to(getattr(torch, dtype))
        inputs: dict[str, object] = {
            "torch": tensor,
            "one image": tensor[1],
            "zeros": torch.from_numpy(zeros),
        }
        if dtype != "bfloat16":
            array = values.astype(dtype)
            inputs.update(numpy=array, hwc=np.ascontiguousarray(array.transpose(0, 2, 3, 1)))
            inputs["strided"] = array.transpose(0, 2, 3, 1)[:, ::2, ::-1]
        for kind, x in inputs.items():
            for option in options:
                if not (option.get("grid") and kind == "one image"):
                    yield f"{dtype} {kind} {option}", x, option
    yield "gray", values[:, :1], {}
    # the smallest value is 0.0 and -0.0, in an order where a first-seen minimum and NumPy's differ
    signed_zeros = np.ones((1, 3, 37, 45), np.float32)
    signed_zeros[0, 0, 0, 37], signed_zeros[0, 0, 0, 39] = 0.0, -0.0
    yield "signed zeros", signed_zeros, {}
    yield (
        "rgba hwc",
        np.ascontiguousarray(np.concatenate([values, values[:, :1]], 1).transpose(0, 2, 3, 1)),
        {},
    )


def test_native_conversion_writes_the_numpy_passes_bytes(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """``save`` writes the same files (sha256) with the one-pass conversion as with NumPy's passes,
    for every float dtype, layout and conversion option; the one-pass path did run."""
    used = []
    real = codec.native_convert

    def counting(*args: object) -> object:
        used.append(1)
        return real(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(codec, "native_convert", counting)
    for number, (name, x, options) in enumerate(_conversion_inputs()):
        digests = []
        for native_conversion in (True, False):
            monkeypatch.setattr(codec, "native_conversion", lambda on=native_conversion: on)
            folder = tmp_path / f"{number}-{native_conversion}"
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # NaN warnings
                paths = tensorpng.save(x, folder / "{index:03d}.png", **options)  # type: ignore[arg-type]
            digests.append([hashlib.sha256(Path(path).read_bytes()).hexdigest() for path in paths])
        assert digests[0] == digests[1], f"{name}: the one-pass conversion wrote other bytes"
    assert len(used) > 100 or native.simd() != "avx2"  # without AVX2 NumPy converts (slower there)
