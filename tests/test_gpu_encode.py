"""The torch (GPU) PNG encoder, run on CPU tensors: exact round trips and valid streams."""

from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import tensorpng
import tensorpng.writer
from conftest import decode_imagecodecs, decode_pillow, decode_pypng, pngcheck_bytes
from tensorpng import gpu_encode
from tensorpng.gpu_encode import (
    MAX_BITS,
    canonical_codes,
    code_lengths,
    deflate_batch,
    encode_batch,
    filtered_scanlines,
    kraft_units,
)
from tensorpng.png import encode_png


def roundtrip(image: np.ndarray, tmp_path: Path) -> bytes:
    data = gpu_encode.encode_image(image)
    assert np.array_equal(decode_imagecodecs(data), image)
    assert np.array_equal(decode_pypng(data), image)
    pngcheck_bytes(data, tmp_path)
    return data


@pytest.mark.parametrize("channels", [1, 2, 3, 4])
@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
@pytest.mark.parametrize("shape", [(1, 1), (1, 17), (17, 1), (3, 5), (40, 33)])
def test_every_color_type_and_depth(
    tmp_path: Path, channels: int, dtype: type, shape: tuple[int, int]
) -> None:
    rng = np.random.default_rng(channels * 100 + shape[0])
    top = np.iinfo(dtype).max
    image = rng.integers(0, top, (*shape, channels), dtype=dtype, endpoint=True)
    image[: shape[0] // 2] //= 7  # some structure, some noise
    if channels == 1:
        image = image[..., 0]
    roundtrip(image, tmp_path)


@pytest.mark.parametrize("value", [0, 1, 255])
def test_constant_images(tmp_path: Path, value: int) -> None:
    data = roundtrip(np.full((300, 500, 3), value, np.uint8), tmp_path)
    assert len(data) < 2000  # long runs become matches: a 450 KB image in a few hundred bytes


def test_long_runs_of_zeros_and_other_bytes(tmp_path: Path) -> None:
    image = np.zeros((64, 1000), np.uint8)
    image[10, 100:900] = 9  # a run of equal non-zero bytes
    image[20, ::37] = 200  # runs of 36 zeros between spikes
    image[30, 500:503] = 3  # a run of exactly three
    for length in (1, 2, 3, 4, 10, 34, 35, 257, 258, 259, 516, 517):  # match-length edge cases
        image[40 + length % 20, 0:length] = 77
    roundtrip(image, tmp_path)
    roundtrip(np.zeros((1, 259), np.uint8), tmp_path)


def test_noise_is_incompressible_but_valid(tmp_path: Path) -> None:
    image = np.random.default_rng(3).integers(0, 256, (128, 128, 3), dtype=np.uint8)
    data = roundtrip(image, tmp_path)
    assert len(data) < image.nbytes * 1.03


def test_real_photo_and_size_against_cpu_encoder(tmp_path: Path, photo: np.ndarray) -> None:
    data = roundtrip(photo, tmp_path)
    assert np.array_equal(decode_pillow(data), photo)
    assert len(data) <= 1.10 * len(encode_png(photo))


def test_segmentation_mask_size(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    mask = rng.integers(0, 21, (16, 16)).repeat(32, 0).repeat(32, 1).astype(np.uint8)
    data = roundtrip(mask, tmp_path)
    assert len(data) <= 2 * len(encode_png(mask))


def test_batch_of_different_images_in_one_call(tmp_path: Path, photo: np.ndarray) -> None:
    rng = np.random.default_rng(1)
    crops = [
        photo[:96, :128],
        np.zeros((96, 128, 3), np.uint8),
        rng.integers(0, 256, (96, 128, 3), dtype=np.uint8),
    ]
    crops.append(np.ascontiguousarray(photo[200:296, 300:428, ::-1]))
    batch = torch.from_numpy(np.stack(crops))
    files = encode_batch(batch)
    assert len(files) == 4
    for index, data in enumerate(files):
        assert np.array_equal(decode_imagecodecs(data), crops[index])
        pngcheck_bytes(data, tmp_path, f"{index}.png")


def test_sixteen_bit_photo(tmp_path: Path, photo: np.ndarray) -> None:
    image = photo.astype(np.uint16) * 257 + np.random.default_rng(2).integers(0, 200, photo.shape).astype(
        np.uint16
    )
    roundtrip(image, tmp_path)


def test_text_chunks(tmp_path: Path) -> None:
    data = gpu_encode.encode_image(np.zeros((4, 4), np.uint8), text={"Software": "tensorpng", "Comment": "π"})
    assert decode_pillow(data).shape == (4, 4)
    pngcheck_bytes(data, tmp_path)
    assert b"tEXtSoftware\x00tensorpng" in data and b"iTXtComment" in data


def test_filter_choice_per_image() -> None:
    gradient = np.tile(np.arange(64, dtype=np.uint8), (8, 1))  # Sub is all zeros after the first byte
    base = np.random.default_rng(4).integers(0, 100, 64, dtype=np.uint8)
    vertical = base[None, :] + np.arange(8, dtype=np.uint8)[:, None] * 9  # Up is all 9s below row 0
    batch = torch.from_numpy(np.stack([gradient, vertical])[..., None])
    lines = filtered_scanlines(batch)
    assert lines[0, :, 0].tolist() == [1] * 8
    assert lines[1, :, 0].tolist() == [2] * 8
    assert lines[1, 1:, 1:].unique().tolist() == [9]


@pytest.mark.parametrize(
    "frequencies",
    [
        [1, 1],
        [1000, 1],
        [int(1.618**k) + 1 for k in range(40)],  # Fibonacci-like: Huffman would go past 15 bits
        list(range(1, 287)),
        [5] * 286,
        [10**9, *([1] * 285)],
    ],
)
def test_code_lengths_are_complete_and_limited(frequencies: list[int]) -> None:
    counts = torch.zeros(1, 286, dtype=torch.int64)
    counts[0, : len(frequencies)] = torch.tensor(frequencies)
    lengths = code_lengths(counts)
    used = counts > 0
    assert bool(((lengths > 0) | ~used).all()), "every used symbol has a code"
    assert int(lengths.max()) <= MAX_BITS
    assert int(kraft_units(lengths)[0]) == 2**MAX_BITS, "the code is complete"


def test_code_lengths_near_optimal_on_photo_statistics(photo: np.ndarray) -> None:
    lines = filtered_scanlines(torch.from_numpy(photo)[None]).reshape(1, -1)
    counts = torch.bincount(lines[0].long(), minlength=286)[None]
    lengths = code_lengths(counts)
    bits = float((counts * lengths).sum())
    probabilities = counts[counts > 0].double() / counts.sum()
    entropy_bits = float(-(counts[counts > 0] * torch.log2(probabilities)).sum())
    assert bits <= entropy_bits * 1.02  # within 2% of the entropy bound


def test_canonical_codes_match_rfc_example() -> None:
    # RFC 1951 3.2.2: lengths (3, 3, 3, 3, 3, 2, 4, 4) give codes 010 011 100 101 110 00 1110 1111.
    lengths = torch.tensor([[3, 3, 3, 3, 3, 2, 4, 4]])
    expected = ["010", "011", "100", "101", "110", "00", "1110", "1111"]
    codes = canonical_codes(lengths)[0].tolist()
    for code, length, text in zip(codes, lengths[0].tolist(), expected, strict=True):
        assert format(code, f"0{length}b")[::-1] == text  # stored bit-reversed


def test_deflate_stream_and_adler_against_zlib() -> None:
    rng = np.random.default_rng(9)
    rows = [
        rng.integers(0, 4, 5000, dtype=np.uint8),
        np.zeros(5000, np.uint8),
        rng.integers(0, 256, 5000, dtype=np.uint8),
    ]
    stream = torch.from_numpy(np.stack(rows))
    packed, byte_counts, adler = deflate_batch(stream)
    for index, row in enumerate(rows):
        raw = packed[index, : int(byte_counts[index])].numpy().tobytes()
        assert zlib.decompress(raw, wbits=-15) == row.tobytes()
        assert int(adler[index]) == zlib.adler32(row.tobytes())


@settings(max_examples=60, deadline=None)
@given(
    hnp.arrays(
        dtype=st.sampled_from([np.uint8, np.uint16]),
        shape=st.tuples(st.integers(1, 12), st.integers(1, 40), st.sampled_from([1, 2, 3, 4])),
        elements=st.integers(0, 3) | st.integers(0, 255),
    )
)
def test_property_round_trip(image: np.ndarray) -> None:
    data = gpu_encode.encode_image(image)
    expected = image[..., 0] if image.shape[2] == 1 else image
    assert np.array_equal(decode_imagecodecs(data), expected)
    assert np.array_equal(decode_pypng(data), expected)


# ---------------------------------------------------------------------------------------------
# The torch encoder inside save, encode and Writer (encoder="device" on CPU tensors)


def normalized(photo: np.ndarray) -> torch.Tensor:
    pixels = torch.from_numpy(photo).permute(2, 0, 1).float() / 255
    mean = torch.tensor(tensorpng.IMAGENET_MEAN)[:, None, None]
    std = torch.tensor(tensorpng.IMAGENET_STD)[:, None, None]
    return (pixels - mean) / std


def test_save_and_encode_with_the_device_encoder(tmp_path: Path, photo: np.ndarray) -> None:
    batch = torch.stack([normalized(photo), normalized(photo[::-1].copy())]).requires_grad_()
    options = {"mean": tensorpng.IMAGENET_MEAN, "std": tensorpng.IMAGENET_STD, "encoder": "device"}
    paths = tensorpng.save(batch, tmp_path / "{index}.png", **options)
    assert np.array_equal(decode_imagecodecs(paths[0].read_bytes()), photo)
    assert np.array_equal(decode_pypng(paths[1].read_bytes()), photo[::-1])
    data = tensorpng.encode(batch[1].bfloat16(), bits=16, encoder="device")
    expected = tensorpng.to_array(batch[1].bfloat16(), bits=16)
    assert np.array_equal(decode_imagecodecs(data), expected)
    pngcheck_bytes(data, tmp_path)


def test_device_encoder_counts_nans(tmp_path: Path) -> None:
    x = torch.zeros(1, 8, 8)
    x[0, 0, :3] = float("nan")
    with pytest.warns(RuntimeWarning, match="3 NaN"):
        tensorpng.save(x, tmp_path / "n.png", encoder="device")
    assert decode_imagecodecs((tmp_path / "n.png").read_bytes()).max() == 0


def test_writer_with_the_device_encoder(tmp_path: Path, photo: np.ndarray) -> None:
    x = normalized(photo)
    with tensorpng.Writer(tmp_path, mean=tensorpng.IMAGENET_MEAN, std=tensorpng.IMAGENET_STD) as writer:
        writer.save(torch.stack([x, x]), "dev/{index}.png", encoder="device")
        x.fill_(0)  # the conversion already ran: the files show the photo
        writer.save(x, "zero.png", encoder="device", text="unused field")
    assert np.array_equal(decode_imagecodecs((tmp_path / "dev/1.png").read_bytes()), photo)
    stats = writer.stats
    assert (stats.images_written, stats.errors, stats.images_pending) == (3, 0, 0)


def test_writer_device_encoder_errors_reach_the_caller(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(samples: torch.Tensor, *, text: object = None) -> list[bytes]:
        raise RuntimeError("device encoder failed")

    monkeypatch.setattr(gpu_encode, "encode_batch", broken)
    writer = tensorpng.Writer(tmp_path)
    writer.save(torch.zeros(2, 1, 4, 4), "{index}.png", encoder="device")
    with pytest.raises(tensorpng.TensorPNGError, match="device encoder failed"):
        writer.close()
    assert writer.stats.errors == 2 and not list(tmp_path.iterdir())


def test_auto_encoder_keeps_cpu_tensors_on_the_cpu_encoder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(*args: object, **kwargs: object) -> list[bytes]:
        raise AssertionError("the torch encoder was used for a CPU tensor")

    monkeypatch.setattr(gpu_encode, "encode_batch", refuse)
    tensorpng.save(torch.rand(2, 3, 8, 8), tmp_path / "{index}.png")
    assert len(list(tmp_path.iterdir())) == 2


@pytest.mark.parametrize(
    ("x", "options", "match"),
    [
        (np.zeros((8, 8), np.uint8), {}, "torch tensors"),
        (torch.zeros(2, 3, 8, 8), {"grid": True}, "grids"),
        (torch.zeros(3, 8, 8), {"compression": "small"}, "compression='fast'"),
        (torch.zeros(3, 8, 8), {"encoder": "gpu"}, "encoder must be one of"),
    ],
)
def test_device_encoder_option_errors(
    tmp_path: Path, x: object, options: dict[str, object], match: str
) -> None:
    options = {"encoder": "device", **options}
    with pytest.raises(tensorpng.OptionError, match=match):
        tensorpng.save(x, tmp_path / "x.png", **options)
    assert not list(tmp_path.iterdir())


def test_large_batches_are_encoded_in_bounded_passes(
    monkeypatch: pytest.MonkeyPatch, photo: np.ndarray
) -> None:
    crops = np.stack([photo[i * 20 : i * 20 + 40, :50] for i in range(5)])
    whole = encode_batch(torch.from_numpy(crops))
    monkeypatch.setattr(gpu_encode, "MAX_ELEMENTS_PER_PASS", 2 * 40 * 151)  # two images a pass
    passes = encode_batch(torch.from_numpy(crops))
    assert passes == whole
    assert [decode_imagecodecs(data).tolist() for data in passes] == crops.tolist()


@pytest.mark.parametrize("shape", [(1, 8, 9), (2, 1, 8, 9)])
def test_sixteen_bit_gray_from_channels_first(tmp_path: Path, shape: tuple[int, ...]) -> None:
    x = torch.rand(*shape)
    data = tensorpng.encode(x[0] if len(shape) == 4 else x, bits=16, encoder="device")
    expected = tensorpng.to_array(x[0] if len(shape) == 4 else x, bits=16)
    assert np.array_equal(decode_imagecodecs(data), expected)
    pngcheck_bytes(data, tmp_path)
