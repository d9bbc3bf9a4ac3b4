"""The native encoder on slices of a big image, cut after all-zero rows, spliced into one
zlib stream (``_parallel_deflate.native_sliced``): decoders we did not write read the pixels."""

from __future__ import annotations

import io
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

import tensorpng
from conftest import decode_imagecodecs, decode_pypng, parse_chunks, pngcheck, pngcheck_bytes
from tensorpng import _cpu_codec
from tensorpng import png as png_module
from tensorpng._parallel_deflate import PARALLEL_MIN_BYTES, _blocks, _dynamic_block_end, native_sliced
from tensorpng._png_chunks import SIGNATURE, ihdr, png_bytes
from tensorpng.png import FLAT_RESIDUAL

COLOR_TYPES = {1: 0, 2: 4, 3: 2, 4: 6}


def image_with_zero_rows(
    seed: int, height: int, width: int, channels: int, kind: str, zero: float
) -> np.ndarray:
    rng = np.random.default_rng(seed)
    shape = (height, width, channels)
    if kind == "noise":  # the native encoder writes stored blocks
        image = rng.integers(0, 256, shape, dtype=np.uint8)
    elif kind == "smooth":  # one dynamic Huffman block
        image = (np.cumsum(rng.integers(-3, 4, shape), axis=1) % 256).astype(np.uint8)
    else:  # a few levels
        image = (rng.integers(0, 4, shape) * 60).astype(np.uint8)
    image[rng.random(height) < zero] = 0
    return image


def sliced_png(image: np.ndarray, slices: int) -> bytes | None:
    height, width, channels = image.shape
    lines = image.reshape(height, -1)
    stream = native_sliced(
        lines, lambda rows: _cpu_codec.native_deflate(rows, channels, FLAT_RESIDUAL), slices=slices
    )
    if stream is None:
        return None
    return png_bytes((SIGNATURE + ihdr(width, height, 8, COLOR_TYPES[channels]),), stream)


def check_decodes(data: bytes, image: np.ndarray) -> None:
    idat = b"".join(body for tag, body in parse_chunks(data) if tag == b"IDAT")
    zlib.decompress(idat)  # checks the combined Adler-32
    expected = image[..., 0] if image.shape[2] == 1 else image
    np.testing.assert_array_equal(decode_imagecodecs(data).reshape(expected.shape), expected)
    with Image.open(io.BytesIO(data)) as decoded:
        np.testing.assert_array_equal(np.asarray(decoded).reshape(expected.shape), expected)


@settings(max_examples=150, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    height=st.integers(2, 70),
    width=st.integers(1, 40),
    channels=st.sampled_from([1, 2, 3, 4]),
    kind=st.sampled_from(["noise", "smooth", "levels"]),
    zero=st.sampled_from([0.05, 0.2, 0.5]),
    slices=st.integers(2, 7),
)
def test_spliced_streams_decode_to_the_image(
    seed: int, height: int, width: int, channels: int, kind: str, zero: float, slices: int
) -> None:
    image = image_with_zero_rows(seed, height, width, channels, kind, zero)
    data = sliced_png(image, slices)
    if data is not None:
        check_decodes(data, image)


def test_every_form_of_splice_is_met_and_decodes() -> None:
    """Stored blocks, and Huffman blocks whose end leaves 3+ or fewer than 3 padding bits."""
    forms: dict[str, int] = {
        "stored": 0,
        "huffman, room for the stored header": 0,
        "huffman, one more byte": 0,
    }
    spliced = 0
    for seed in range(120):
        kind = ("noise", "smooth", "levels")[seed % 3]
        image = image_with_zero_rows(seed, 40 + seed % 30, 5 + seed % 31, 1 + seed % 4, kind, 0.25)
        lines = image.reshape(image.shape[0], -1)
        stream = _cpu_codec.native_deflate(lines, image.shape[2], FLAT_RESIDUAL)
        if stream is not None:
            data = memoryview(stream)[2:-4]
            end = _dynamic_block_end(data) if (data[0] >> 1) & 3 == 2 else None
            if (data[0] >> 1) & 3 == 0:
                forms["stored"] += 1
            elif end is not None:
                forms[
                    "huffman, room for the stored header"
                    if end + 3 <= 8 * len(data)
                    else "huffman, one more byte"
                ] += 1
            assert _blocks(stream, last=True) is not None  # every native stream is understood
        png = sliced_png(image, 3)
        if png is not None:
            check_decodes(png, image)
            spliced += 1
    assert all(forms.values()), forms
    assert spliced > 60


def test_other_deflate_streams_are_not_spliced() -> None:
    data = bytes(range(256)) * 4
    assert _blocks(zlib.compress(data, 9), last=False) is None  # zlib: not one final block we parse
    assert _blocks(zlib.compress(b"abc", 1), last=False) is None  # fixed Huffman codes
    assert _blocks(b"\x78\x01\x01\x00", last=False) is None  # too short


def test_no_zero_row_means_one_stream() -> None:
    image = image_with_zero_rows(1, 50, 20, 3, "smooth", 0.0)
    image[image.sum(axis=(1, 2)) == 0, 0, 0] = 1
    assert sliced_png(image, 4) is None


def test_a_big_grid_is_sliced_and_decodes_everywhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    x = torch.rand(64, 3, 160, 160, generator=torch.Generator().manual_seed(5))
    x[:, :, 40:60] = 0  # black bands inside the images too
    # The module objects the encoder itself uses (not this file's imports of them).
    codec, parallel = png_module._cpu_codec, png_module._parallel_deflate
    monkeypatch.setenv(codec.ENV, "native")  # also in CI's run with TENSORPNG_CPU_ENCODER=numpy
    assert codec.method(8) == "native", codec.describe()
    monkeypatch.setattr(parallel, "cpu_count", lambda: 4)  # as on a 4-core machine
    calls: list[int] = []
    real = codec.native_deflate

    def spy(rows: np.ndarray, bpp: int, flat: float = 0.0) -> bytes | None:
        calls.append(int(rows.shape[0]))
        return real(rows, bpp, flat)

    monkeypatch.setattr(codec, "native_deflate", spy)
    path = tmp_path / "grid.png"
    tensorpng.save_image(x, path)
    assert PARALLEL_MIN_BYTES <= 1298 * 1298 * 3
    assert len(calls) == 4 and sum(calls) == 1298, calls  # four slices of rows, every row once
    pngcheck(path)
    expected = x.mul(255).add_(0.5).clamp_(0, 255).to(torch.uint8)
    pixels = np.asarray(Image.open(path))
    for index in range(64):
        top, left = (index // 8) * 162 + 2, (index % 8) * 162 + 2
        np.testing.assert_array_equal(
            pixels[top : top + 160, left : left + 160], expected[index].permute(1, 2, 0)
        )
    assert (pixels[:2] == 0).all() and (pixels[:, 162:164] == 0).all()
    data = path.read_bytes()
    np.testing.assert_array_equal(decode_imagecodecs(data), pixels)
    np.testing.assert_array_equal(decode_pypng(data), pixels)
    pngcheck_bytes(data, tmp_path)
