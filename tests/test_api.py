"""The public API: ``tensorpng.save``, ``encode`` and ``to_array`` end to end.

Real photos go through ImageNet normalization (as torchvision's ``ToTensor`` + ``Normalize``
compute it, in float32) and must come back from the PNG files bit-exact, read by two
independent decoders. Every error is raised before any file or folder is created.
"""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import skimage.data
import torch

import tensorpng
import tensorpng._pipeline
import tensorpng.sinks
from conftest import (
    decode_imagecodecs,
    decode_opencv,
    decode_pillow,
    decode_pypng,
    pngcheck,
    pngcheck_bytes,
)
from tensorpng import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    DTypeError,
    OptionError,
    PathError,
    ShapeError,
    TargetExistsError,
    TensorPNGError,
    ValueRangeError,
    WriteError,
)

PHOTO_NAMES = ("astronaut", "coffee", "chelsea")
CROP = (300, 451)  # the smallest of the three photos (chelsea)


def load_photo(name: str) -> np.ndarray:
    return getattr(skimage.data, name)()


def imagenet_normalize(photo: np.ndarray) -> torch.Tensor:
    """``Normalize(IMAGENET_MEAN, IMAGENET_STD)(ToTensor()(photo))``, as torchvision computes it."""
    x = torch.from_numpy(photo).permute(2, 0, 1).contiguous().to(torch.float32).div(255)
    mean = torch.as_tensor(IMAGENET_MEAN, dtype=torch.float32).view(-1, 1, 1)
    std = torch.as_tensor(IMAGENET_STD, dtype=torch.float32).view(-1, 1, 1)
    return x.sub(mean).div(std)


def decode_both(path: Path) -> np.ndarray:
    """Decode a file with imagecodecs and pypng; they must agree."""
    data = path.read_bytes()
    first = decode_imagecodecs(data)
    second = decode_pypng(data)
    assert first.dtype == second.dtype
    np.testing.assert_array_equal(first, second)
    return first


def listing(folder: Path) -> list[str]:
    """Every entry of ``folder``, dot-files (temporary files) included."""
    return sorted(os.listdir(folder))


def assert_no_temp_files(folder: Path) -> None:
    for root, _, files in os.walk(folder):
        leftovers = [f for f in files if f.startswith(".") or f.endswith(tensorpng.sinks.TEMP_SUFFIX)]
        assert not leftovers, f"temporary files left in {root}: {leftovers}"


@pytest.fixture(scope="module")
def photos() -> dict[str, np.ndarray]:
    return {name: load_photo(name) for name in PHOTO_NAMES}


@pytest.fixture(scope="module")
def crops(photos: dict[str, np.ndarray]) -> np.ndarray:
    """The three photos cropped to a common size: ``3 x H x W x 3`` uint8."""
    return np.stack([p[: CROP[0], : CROP[1]] for p in photos.values()])


# ---------------------------------------------------------------------------------------------
# Real photos, ImageNet-normalized, come back exactly


@pytest.mark.parametrize("name", PHOTO_NAMES)
def test_normalized_photo_round_trips_exactly(
    name: str, photos: dict[str, np.ndarray], tmp_path: Path
) -> None:
    photo = photos[name]
    x = imagenet_normalize(photo)
    assert x.dtype == torch.float32 and x.shape == (3, *photo.shape[:2])
    paths = tensorpng.save(x, tmp_path / f"{name}.png", mean=IMAGENET_MEAN, std=IMAGENET_STD)
    assert paths == [tmp_path / f"{name}.png"]
    pngcheck(*paths)
    np.testing.assert_array_equal(decode_both(paths[0]), photo)
    # encode and to_array agree with the file; NumPy input (inferred CHW) too.
    data = tensorpng.encode(x, mean=IMAGENET_MEAN, std=IMAGENET_STD)
    np.testing.assert_array_equal(decode_imagecodecs(data), photo)
    np.testing.assert_array_equal(tensorpng.to_array(x, mean=IMAGENET_MEAN, std=IMAGENET_STD), photo)
    np.testing.assert_array_equal(tensorpng.to_array(x.numpy(), mean=IMAGENET_MEAN, std=IMAGENET_STD), photo)


def test_normalized_batch_round_trips_exactly(crops: np.ndarray, tmp_path: Path) -> None:
    batch = torch.stack([imagenet_normalize(c) for c in crops])
    assert batch.shape == (3, 3, *CROP)
    paths = tensorpng.save(batch, tmp_path / "out" / "{index:04d}.png", mean=IMAGENET_MEAN, std=IMAGENET_STD)
    assert paths == [tmp_path / "out" / f"{i:04d}.png" for i in range(3)]
    assert listing(tmp_path / "out") == ["0000.png", "0001.png", "0002.png"]
    pngcheck(*paths)
    for path, crop in zip(paths, crops, strict=True):
        np.testing.assert_array_equal(decode_both(path), crop)
        np.testing.assert_array_equal(decode_pillow(path.read_bytes()), crop)
        np.testing.assert_array_equal(decode_opencv(path.read_bytes()), crop)
    out = tensorpng.to_array(batch, mean=IMAGENET_MEAN, std=IMAGENET_STD)
    assert out.shape == (3, *CROP, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(out, crops)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float16, torch.bfloat16])
def test_normalized_photo_in_other_float_dtypes(dtype: torch.dtype, photos: dict[str, np.ndarray]) -> None:
    # ImageNet-normalized values need fewer than 8 significant bits per 1/255 step, so even
    # bfloat16 holds each pixel to within half a level: the photo comes back exactly.
    photo = photos["chelsea"]
    x = imagenet_normalize(photo).to(dtype)
    np.testing.assert_array_equal(tensorpng.to_array(x, mean=IMAGENET_MEAN, std=IMAGENET_STD), photo)


def test_normalized_photo_at_16_bits(photos: dict[str, np.ndarray], tmp_path: Path) -> None:
    photo = photos["coffee"]
    x = imagenet_normalize(photo).double()
    paths = tensorpng.save(x, tmp_path / "coffee16.png", mean=IMAGENET_MEAN, std=IMAGENET_STD, bits=16)
    pngcheck(*paths)
    decoded = decode_both(paths[0])
    assert decoded.dtype == np.uint16
    np.testing.assert_array_equal(decoded, photo.astype(np.uint16) * 257)


def test_photo_grid_matches_manual_layout(crops: np.ndarray, tmp_path: Path) -> None:
    batch = torch.stack([imagenet_normalize(c) for c in crops])
    paths = tensorpng.save(
        batch,
        tmp_path / "grid.png",
        grid=True,
        nrow=2,
        padding=3,
        pad_value=1.0,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
    )
    assert paths == [tmp_path / "grid.png"]
    pngcheck(*paths)
    height, width = CROP
    expected = np.full((2 * (height + 3) + 3, 2 * (width + 3) + 3, 3), 255, np.uint8)
    for index, crop in enumerate(crops):
        top = (index // 2) * (height + 3) + 3
        left = (index % 2) * (width + 3) + 3
        expected[top : top + height, left : left + width] = crop
    np.testing.assert_array_equal(decode_both(paths[0]), expected)
    data = tensorpng.encode(
        batch, grid=True, nrow=2, padding=3, pad_value=1.0, mean=IMAGENET_MEAN, std=IMAGENET_STD
    )
    np.testing.assert_array_equal(decode_imagecodecs(data), expected)


# ---------------------------------------------------------------------------------------------
# to_array shapes and dtypes


@pytest.mark.parametrize(
    ("shape", "layout", "expected"),
    [
        ((5, 7), None, (5, 7)),
        ((1, 5, 7), None, (5, 7)),
        ((5, 7, 1), None, (5, 7)),
        ((2, 5, 7), "CHW", (5, 7, 2)),
        ((3, 5, 7), None, (5, 7, 3)),
        ((5, 7, 4), "HWC", (5, 7, 4)),
        ((6, 5, 7), "NHW", (6, 5, 7)),
        ((6, 1, 5, 7), None, (6, 5, 7)),
        ((6, 3, 5, 7), None, (6, 5, 7, 3)),
        ((6, 5, 7, 2), "NHWC", (6, 5, 7, 2)),
        ((1, 3, 5, 7), None, (1, 5, 7, 3)),
    ],
)
@pytest.mark.parametrize("bits", [8, 16])
def test_to_array_shapes_and_dtypes(
    shape: tuple[int, ...], layout: str | None, expected: tuple[int, ...], bits: int
) -> None:
    out = tensorpng.to_array(torch.rand(shape), layout=layout, bits=bits)
    assert out.shape == expected
    assert out.dtype == (np.uint8 if bits == 8 else np.uint16)
    assert out.flags.c_contiguous


# ---------------------------------------------------------------------------------------------
# File names


def test_batch_without_index_gets_zero_padded_suffix(tmp_path: Path) -> None:
    x = torch.rand(12, 3, 4, 5)
    paths = tensorpng.save(x, tmp_path / "out.png")
    assert paths == [tmp_path / f"out_{i:02d}.png" for i in range(12)]
    assert listing(tmp_path) == [f"out_{i:02d}.png" for i in range(12)]
    pngcheck(*paths)
    expected = tensorpng.to_array(x)
    for path, image in zip(paths, expected, strict=True):
        np.testing.assert_array_equal(decode_both(path), image)


@pytest.mark.parametrize(
    ("count", "names"),
    [
        (1, ["img.png"]),  # a batch of one: the path itself
        (3, ["img_0.png", "img_1.png", "img_2.png"]),
        (10, [f"img_{i}.png" for i in range(10)]),
        (11, [f"img_{i:02d}.png" for i in range(11)]),
        (101, [f"img_{i:03d}.png" for i in range(101)]),
    ],
)
def test_index_padding_follows_the_largest_index(count: int, names: list[str], tmp_path: Path) -> None:
    paths = tensorpng.save(np.zeros((count, 2, 2), np.uint8), tmp_path / "img.png", layout="NHW")
    assert [p.name for p in paths] == names
    assert listing(tmp_path) == sorted(names)


@pytest.mark.parametrize(
    ("template", "names"),
    [
        ("{index}.png", ["0.png", "1.png", "2.png"]),
        ("{index:04d}.png", ["0000.png", "0001.png", "0002.png"]),
        ("frame-{index:03d}-rgb.png", ["frame-000-rgb.png", "frame-001-rgb.png", "frame-002-rgb.png"]),
        ("{index:>3}.png", ["  0.png", "  1.png", "  2.png"]),
    ],
)
def test_index_templates(template: str, names: list[str], tmp_path: Path) -> None:
    paths = tensorpng.save(torch.rand(3, 1, 4, 4), str(tmp_path / template))
    assert all(isinstance(p, Path) for p in paths)
    assert [p.name for p in paths] == names
    assert listing(tmp_path) == sorted(names)
    pngcheck(*paths)


def test_index_in_a_folder_name(tmp_path: Path) -> None:
    paths = tensorpng.save(np.zeros((2, 4, 4, 3), np.uint8), tmp_path / "run_{index}" / "image.png")
    assert paths == [tmp_path / "run_0" / "image.png", tmp_path / "run_1" / "image.png"]
    assert all(p.is_file() for p in paths)


def test_doubled_braces_are_literal_for_one_image_and_for_a_batch(tmp_path: Path) -> None:
    image = np.zeros((4, 4, 3), np.uint8)
    folder = tmp_path / "exp{lr=0.1}"
    assert tensorpng.save(image, tmp_path / "exp{{lr=0.1}}" / "{{x}}.png") == [folder / "{x}.png"]
    batch = tensorpng.save(np.stack([image] * 2), tmp_path / "exp{{lr=0.1}}" / "x.png")
    assert batch == [folder / "x_0.png", folder / "x_1.png"]
    templated = tensorpng.save(np.stack([image] * 2), tmp_path / "exp{{lr=0.1}}" / "{{y}}{index}.png")
    assert templated == [folder / "{y}0.png", folder / "{y}1.png"]
    assert listing(folder) == ["x_0.png", "x_1.png", "{x}.png", "{y}0.png", "{y}1.png"]
    # With {index}, a single image's path is formatted too (index 0).
    assert tensorpng.save(image, tmp_path / "one_{index:02d}.png") == [tmp_path / "one_00.png"]


@pytest.mark.parametrize("batched", [False, True])
@pytest.mark.parametrize(
    ("template", "match"),
    [("{}.png", r"positional field"), ("{step}.png", r"unknown field\(s\) \['step'\]")],
)
def test_unknown_fields_are_errors_for_one_image_and_for_a_batch(
    template: str, match: str, batched: bool, tmp_path: Path
) -> None:
    x = np.zeros((2, 4, 4, 3) if batched else (4, 4, 3), np.uint8)
    with pytest.raises(PathError, match=match):
        tensorpng.save(x, tmp_path / "out" / template)
    assert not (tmp_path / "out").exists()


def test_single_image_is_saved_to_the_path_itself(tmp_path: Path) -> None:
    image = np.zeros((4, 4, 3), np.uint8)
    assert tensorpng.save(image, tmp_path / "one.png") == [tmp_path / "one.png"]
    assert tensorpng.save(image, str(tmp_path / "two.png")) == [tmp_path / "two.png"]
    # A batch of one is written to the path itself too (one name rule for save and Writer).
    assert tensorpng.save(image[None], tmp_path / "three.png") == [tmp_path / "three.png"]
    assert listing(tmp_path) == ["one.png", "three.png", "two.png"]


def test_parent_folders_are_created(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b" / "c" / "{index:02d}.png"
    paths = tensorpng.save(torch.rand(2, 3, 4, 4), target)
    assert paths == [tmp_path / "a" / "b" / "c" / "00.png", tmp_path / "a" / "b" / "c" / "01.png"]
    pngcheck(*paths)
    assert_no_temp_files(tmp_path)


@pytest.mark.parametrize(
    ("template", "match"),
    [
        ("{index}-{}.png", r"positional field"),
        ("{index}-{step}.png", r"unknown field\(s\) \['step'\].*available: \['index'\]"),
        ("{index:q}.png", r"cannot format name template"),
        ("{index.real.x}.png", r"cannot format name template"),
        ("{index.png", r"malformed name template"),
        ("img}.png", r"malformed name template"),
    ],
)
def test_bad_templates_write_nothing(template: str, match: str, tmp_path: Path) -> None:
    with pytest.raises(PathError, match=match):
        tensorpng.save(np.zeros((2, 4, 4, 3), np.uint8), tmp_path / "out" / template)
    assert not (tmp_path / "out").exists()


def test_attribute_access_in_a_template_is_refused_and_writes_nothing(tmp_path: Path) -> None:
    with pytest.raises(PathError, match=r"\{index\.imag\} is not a plain name"):
        tensorpng.save(np.zeros((2, 4, 4, 3), np.uint8), tmp_path / "out" / "{index.imag}.png")
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------------------------------------
# overwrite


def test_overwrite_true_replaces_files(tmp_path: Path) -> None:
    target = tmp_path / "x.png"
    tensorpng.save(np.zeros((4, 4), np.uint8), target)
    tensorpng.save(np.full((4, 4), 200, np.uint8), target)
    np.testing.assert_array_equal(decode_both(target), np.full((4, 4), 200, np.uint8))
    assert listing(tmp_path) == ["x.png"]


def test_overwrite_false_raises_before_writing_anything(tmp_path: Path) -> None:
    existing = tmp_path / "img_2.png"
    existing.write_bytes(b"old contents")
    with pytest.raises(TargetExistsError, match=r"img_2\.png exist\(s\) and overwrite=False"):
        tensorpng.save(np.zeros((4, 4, 4, 3), np.uint8), tmp_path / "img.png", overwrite=False)
    assert listing(tmp_path) == ["img_2.png"]  # images 0, 1 and 3 were not written either
    assert existing.read_bytes() == b"old contents"
    # TargetExistsError is a FileExistsError (an OSError) and a TensorPNGError.
    with pytest.raises(FileExistsError):
        tensorpng.save(np.zeros((4, 4), np.uint8), existing, overwrite=False)
    with pytest.raises(TensorPNGError):
        tensorpng.save(np.zeros((4, 4), np.uint8), existing, overwrite=False)
    assert existing.read_bytes() == b"old contents"


def test_overwrite_false_lists_many_existing_targets(tmp_path: Path) -> None:
    for i in range(5):
        (tmp_path / f"{i}.png").write_bytes(b"old")
    with pytest.raises(TargetExistsError, match=r"and 2 more exist\(s\)"):
        tensorpng.save(np.zeros((5, 4, 4), np.uint8), tmp_path / "{index}.png", layout="NHW", overwrite=False)


def test_overwrite_false_writes_new_files(tmp_path: Path) -> None:
    paths = tensorpng.save(np.zeros((2, 4, 4), np.uint8), tmp_path / "new.png", layout="NHW", overwrite=False)
    assert listing(tmp_path) == ["new_0.png", "new_1.png"]
    pngcheck(*paths)


def test_overwrite_false_never_clobbers_a_file_that_appears_late(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Another process creates the target between the check and the write: the hard link
    # (not a rename) refuses to replace it.
    target = tmp_path / "race.png"
    monkeypatch.setattr(
        tensorpng.sinks, "check_targets", lambda paths, overwrite: target.write_bytes(b"theirs")
    )
    with pytest.raises(TargetExistsError, match=r"race\.png exists and overwrite=False"):
        tensorpng.save(np.zeros((4, 4), np.uint8), target, overwrite=False)
    assert target.read_bytes() == b"theirs"
    assert listing(tmp_path) == ["race.png"]


# ---------------------------------------------------------------------------------------------
# Atomic writes and failures


def test_no_temporary_files_are_left(tmp_path: Path) -> None:
    tensorpng.save(torch.rand(9, 3, 8, 8), tmp_path / "{index}.png")
    tensorpng.save(torch.rand(3, 8, 8), tmp_path / "single.png")
    tensorpng.save(torch.rand(9, 3, 8, 8), tmp_path / "grid.png", grid=True)
    assert listing(tmp_path) == sorted([f"{i}.png" for i in range(9)] + ["single.png", "grid.png"])
    pngcheck(*(tmp_path / name for name in listing(tmp_path)))


def test_disk_full_leaves_the_old_file_intact(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "x.png"
    tensorpng.save(np.full((4, 4), 7, np.uint8), target)
    old = target.read_bytes()

    def disk_full(src: Any, dst: Any) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "replace", disk_full)
    with pytest.raises(
        WriteError, match=r"cannot write .*x\.png: the disk is full; no partial file was left"
    ) as info:
        tensorpng.save(np.full((4, 4), 9, np.uint8), target)
    assert isinstance(info.value, OSError) and isinstance(info.value, TensorPNGError)
    assert isinstance(info.value.__cause__, OSError) and info.value.__cause__.errno == errno.ENOSPC
    assert target.read_bytes() == old
    assert listing(tmp_path) == ["x.png"]


def test_disk_full_in_a_batch_leaves_no_partial_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def disk_full(src: Any, dst: Any) -> None:
        raise OSError(errno.EDQUOT, os.strerror(errno.EDQUOT))

    monkeypatch.setattr(os, "replace", disk_full)
    with pytest.raises(WriteError, match="the disk is full"):
        tensorpng.save(np.zeros((6, 4, 4), np.uint8), tmp_path / "{index}.png", layout="NHW")
    assert listing(tmp_path) == []


def test_target_that_is_a_directory_raises_write_error(tmp_path: Path) -> None:
    target = tmp_path / "taken.png"
    target.mkdir()
    (target / "keep.txt").write_text("keep")
    with pytest.raises(WriteError, match=r"cannot write .*taken\.png: .*no partial file was left"):
        tensorpng.save(np.zeros((4, 4), np.uint8), target)
    assert target.is_dir() and listing(target) == ["keep.txt"]
    assert listing(tmp_path) == ["taken.png"]


def test_parent_that_is_a_file_raises_write_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_bytes(b"not a folder")
    with pytest.raises(WriteError, match=r"cannot write .*file/x\.png"):
        tensorpng.save(np.zeros((4, 4), np.uint8), tmp_path / "file" / "x.png")
    assert (tmp_path / "file").read_bytes() == b"not a folder"
    assert listing(tmp_path) == ["file"]


def test_interrupted_write_removes_the_temporary_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def interrupted(src: Any, dst: Any) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", interrupted)
    with pytest.raises(KeyboardInterrupt):
        tensorpng.save(np.zeros((4, 4), np.uint8), tmp_path / "x.png")
    assert listing(tmp_path) == []


# ---------------------------------------------------------------------------------------------
# Every error is raised before any file or folder exists


ERROR_CASES: list[tuple[str, Any, dict[str, Any], type[Exception], str]] = [
    ("complex", np.zeros((4, 4), np.complex128), {}, DTypeError, r"dtype complex128"),
    ("complex torch", torch.zeros(3, 4, 4, dtype=torch.complex64), {}, DTypeError, r"dtype complex64"),
    ("string", "not an image", {}, DTypeError, r"builtins\.str"),
    ("object", np.array([[None, 1]], dtype=object), {}, DTypeError, r"shape \(1, 2\), dtype object"),
    ("1-D", np.zeros(16, np.float32), {}, ShapeError, r"shape \(16,\)"),
    ("5-D", torch.zeros(1, 2, 3, 4, 4), {}, ShapeError, r"shape \(1, 2, 3, 4, 4\)"),
    ("ambiguous", np.zeros((8, 8, 8), np.float32), {}, ShapeError, r"shape \(8, 8, 8\).*layout="),
    ("5 channels", torch.zeros(5, 8, 8), {"layout": "CHW"}, ShapeError, r"shape \(5, 8, 8\).*select some"),
    ("empty", np.zeros((0, 3, 8, 8), np.float32), {}, ShapeError, r"nothing to save.*shape \(0, 3, 8, 8\)"),
    ("rank vs layout", np.zeros((8, 8), np.float32), {"layout": "NHWC"}, ShapeError, r"'NHWC' needs a 4-D"),
    ("layout name", np.zeros((8, 8), np.float32), {"layout": "WH"}, OptionError, r"layout must be one of"),
    (
        "unknown option",
        np.zeros((8, 8), np.float32),
        {"colour": "red"},
        OptionError,
        r"unknown option.*colour",
    ),
    (
        "mean length",
        torch.zeros(3, 8, 8),
        {"mean": (0.5, 0.5)},
        OptionError,
        r"mean has 2 values.*3 channels",
    ),
    ("std zero", torch.zeros(3, 8, 8), {"std": 0.0}, OptionError, r"std must not be 0"),
    ("bits", torch.zeros(3, 8, 8), {"bits": 32}, OptionError, r"bits must be 8 or 16, got 32"),
    ("scale", torch.zeros(3, 8, 8), {"scale": "images"}, OptionError, r"scale must be"),
    ("nrow", torch.zeros(2, 3, 8, 8), {"grid": True, "nrow": -1}, OptionError, r"nrow must be"),
    ("compression", torch.zeros(3, 8, 8), {"compression": "max"}, OptionError, r"compression must be one of"),
    ("workers", torch.zeros(2, 3, 8, 8), {"workers": 0}, OptionError, r"workers must be an integer >= 1"),
    (
        "negative ints",
        torch.tensor([[-1, 2], [3, 4]]),
        {},
        ValueRangeError,
        r"dtype int64.*negative values \(min -1\)",
    ),
    ("big ints", np.array([[0, 70000]], np.int64), {}, ValueRangeError, r"dtype int64.*values up to 70000"),
    (
        "ints bits=8",
        np.array([[0, 700]], np.int32),
        {"bits": 8},
        ValueRangeError,
        r"dtype int32.*pass bits=16",
    ),
]


@pytest.mark.parametrize(
    ("x", "options", "error", "match"),
    [case[1:] for case in ERROR_CASES],
    ids=[case[0] for case in ERROR_CASES],
)
def test_errors_write_nothing(
    x: Any, options: dict[str, Any], error: type[Exception], match: str, tmp_path: Path
) -> None:
    assert issubclass(error, TensorPNGError) and issubclass(error, (ValueError, TypeError))
    root = tmp_path / "new"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no warning before the error either
        with pytest.raises(error, match=match):
            tensorpng.save(x, root / "deeper" / "x.png", **options)
        with pytest.raises(error, match=match):
            tensorpng.save(x, root / "{index}.png", overwrite=False, **options)
    assert not root.exists()
    assert listing(tmp_path) == []
    if "workers" not in options:
        with pytest.raises(error, match=match):
            tensorpng.encode(x, **options)
        if "compression" not in options:
            with pytest.raises(error, match=match):
                tensorpng.to_array(x, **options)


def test_errors_are_value_or_type_errors() -> None:
    with pytest.raises(ValueError):
        tensorpng.to_array(np.zeros((8, 8, 8)))
    with pytest.raises(TypeError):
        tensorpng.to_array(np.zeros((8, 8), np.complex64))
    with pytest.raises(ValueError):
        tensorpng.to_array(np.zeros((8, 8)), scale="nope")


def test_encode_of_a_batch_needs_grid(tmp_path: Path) -> None:
    with pytest.raises(OptionError, match=r"batch of 4 \(torch\.Tensor, shape \(4, 3, 8, 8\).*grid=True"):
        tensorpng.encode(torch.rand(4, 3, 8, 8))
    # A batch of one is one image.
    one = torch.rand(1, 3, 8, 8)
    np.testing.assert_array_equal(decode_imagecodecs(tensorpng.encode(one)), tensorpng.to_array(one)[0])
    with pytest.raises(OptionError, match=r"unknown option.*overwrite"):
        tensorpng.encode(one, overwrite=False)


# ---------------------------------------------------------------------------------------------
# Encoding options through the API


@pytest.mark.parametrize("compression", ["fast", "small", "none"])
@pytest.mark.parametrize("channels", [1, 2, 3, 4])
@pytest.mark.parametrize("bits", [8, 16])
def test_encode_every_channel_count(
    compression: str, channels: int, bits: int, photos: dict[str, np.ndarray], tmp_path: Path
) -> None:
    photo = photos["astronaut"][:64, :80]
    gray_alpha = np.concatenate([photo, photo[..., :1] // 2 + 60], axis=-1)  # an alpha plane
    image = {1: photo[..., 1], 2: gray_alpha[..., [0, 3]], 3: photo, 4: gray_alpha}[channels]
    x = torch.from_numpy(np.ascontiguousarray(np.moveaxis(image, -1, 0) if image.ndim == 3 else image[None]))
    data = tensorpng.encode(x.float() / 255, bits=bits, compression=compression)
    pngcheck_bytes(data, tmp_path)
    expected = image.astype(np.uint16) * 257 if bits == 16 else image
    np.testing.assert_array_equal(decode_imagecodecs(data), expected)
    np.testing.assert_array_equal(decode_pypng(data), expected)


def test_metadata_is_written(tmp_path: Path) -> None:
    paths = tensorpng.save(
        np.zeros((4, 4), np.uint8), tmp_path / "m.png", metadata={"step": "100", "Comment": "héllo ✓"}
    )
    pngcheck(*paths)
    import png

    chunks = {tag: data for tag, data in png.Reader(filename=str(paths[0])).chunks()}
    assert chunks[b"tEXt"] == b"step\x00100"
    assert b"\xe2\x9c\x93" in chunks[b"iTXt"]


@pytest.mark.parametrize("workers", [None, 1, 3])
def test_workers_give_the_same_files(workers: int | None, tmp_path: Path) -> None:
    x = torch.rand(7, 3, 16, 16, generator=torch.Generator().manual_seed(7))
    paths = tensorpng.save(x, tmp_path / "{index}.png", workers=workers)
    expected = tensorpng.to_array(x)
    for path, image in zip(paths, expected, strict=True):
        np.testing.assert_array_equal(decode_both(path), image)
    assert_no_temp_files(tmp_path)


def test_run_pipeline_runs_every_item_once_and_raises_the_first_failure() -> None:
    prepared: list[int] = []
    processed: list[int] = []
    completed: list[int] = []

    def prepare(index: int) -> int:
        prepared.append(index)
        if index == 5:
            raise ValueError("prepare 5")
        return index * 10

    def process(index: int, item: int) -> int:
        processed.append(index)
        if index == 3:
            raise ValueError("process 3")
        return item + 1

    def complete(index: int, item: int) -> int:
        completed.append(index)
        if index == 7:
            raise ValueError("complete 7")
        return item * 2

    run_pipeline = tensorpng._pipeline.run_pipeline
    for workers in (1, 2, 3):
        for log in (prepared, processed, completed):
            log.clear()
        with pytest.raises(ValueError, match="process 3"):
            run_pipeline(9, prepare, process, complete, workers)
        assert prepared == list(range(9)), "prepare runs on the caller, in order"
        assert sorted(processed) == [i for i in range(9) if i != 5], workers
        assert sorted(completed) == [i for i in range(9) if i not in (3, 5)], workers
        assert run_pipeline(
            9, lambda i: i * 10, lambda i, item: item + i, lambda i, item: -item, workers
        ) == [-i * 11 for i in range(9)]


def test_run_pipeline_prepares_and_completes_on_the_caller_and_processes_on_the_pool_too() -> None:
    """Processing items that meet in pairs only gets done when two threads run them together."""
    import threading

    barrier = threading.Barrier(2, timeout=10)
    threads: dict[str, set[int]] = {"prepare": set(), "process": set(), "complete": set()}

    def stage(name: str) -> Any:
        def run(*args: Any) -> Any:
            threads[name].add(threading.get_ident())
            if name == "process":
                barrier.wait()
            return args[-1]

        return run

    tensorpng._pipeline.run_pipeline(6, stage("prepare"), stage("process"), stage("complete"), 2)
    caller = threading.get_ident()
    assert threads["prepare"] == threads["complete"] == {caller}
    assert caller in threads["process"] and len(threads["process"]) == 2


def test_run_pipeline_bounds_the_items_in_flight() -> None:
    import threading
    import time

    lock = threading.Lock()
    alive, most = 0, 0

    def prepare(index: int) -> int:
        nonlocal alive, most
        with lock:
            alive += 1
            most = max(most, alive)
        return index

    def process(index: int, item: int) -> int:
        time.sleep(0.002)  # slower than preparing: without a bound, everything would wait
        return item

    def complete(index: int, item: int) -> None:
        nonlocal alive
        with lock:
            alive -= 1

    tensorpng._pipeline.run_pipeline(100, prepare, process, complete, 2)
    assert alive == 0
    assert most <= 2 * 2 + 3, most


def test_run_pipeline_raises_what_stops_a_helper() -> None:
    """A SystemExit (or KeyboardInterrupt) raised by ``process`` on a pool thread is not lost:
    the caller raises it once the helpers are done."""
    import threading
    import time

    def process(index: int, item: int) -> int:
        time.sleep(0.005)
        if threading.current_thread() is not threading.main_thread():
            raise SystemExit("the helper stopped")
        return item

    with pytest.raises(SystemExit, match="the helper stopped"):
        tensorpng._pipeline.run_pipeline(20, lambda i: i, process, lambda i, item: item, 2)


def test_run_pipeline_stops_when_the_caller_is_interrupted() -> None:
    import time

    interrupted: list[float] = []
    starts: list[float] = []

    def prepare(index: int) -> int:
        if index == 10:
            interrupted.append(time.perf_counter())
            raise KeyboardInterrupt
        return index

    def process(index: int, item: int) -> int:
        starts.append(time.perf_counter())
        time.sleep(0.01)  # slower than preparing: items wait in the queue when the interrupt comes
        return item

    with pytest.raises(KeyboardInterrupt):
        tensorpng._pipeline.run_pipeline(200, prepare, process, lambda i, item: item, 2)
    late = [start for start in starts if start > interrupted[0]]
    # at most the one a helper took just as the interrupt came; the waiting ones are dropped
    assert len(late) <= 1, f"{len(late)} items were started after the interrupt"


# ---------------------------------------------------------------------------------------------
# Input kinds


def test_requires_grad_tensors(tmp_path: Path) -> None:
    leaf = torch.rand(3, 6, 5, requires_grad=True)
    derived = leaf * 1.0  # a non-leaf with a grad_fn
    expected = tensorpng.to_array(leaf.detach())
    np.testing.assert_array_equal(tensorpng.to_array(leaf), expected)
    np.testing.assert_array_equal(tensorpng.to_array(derived), expected)
    paths = tensorpng.save(torch.nn.Parameter(leaf.detach()), tmp_path / "p.png")
    np.testing.assert_array_equal(decode_both(paths[0]), expected)
    assert leaf.grad is None


def test_non_contiguous_and_negative_stride_numpy(photos: dict[str, np.ndarray], tmp_path: Path) -> None:
    photo = photos["chelsea"]
    flipped = photo[::-1, ::-1]  # negative strides on both spatial axes
    assert flipped.strides[0] < 0
    paths = tensorpng.save(flipped, tmp_path / "flipped.png")
    np.testing.assert_array_equal(decode_both(paths[0]), np.ascontiguousarray(flipped))
    bgr = photo[..., ::-1]  # negative stride on the channel axis
    np.testing.assert_array_equal(tensorpng.to_array(bgr), np.ascontiguousarray(bgr))
    strided = photo[::2, 1::3]
    np.testing.assert_array_equal(tensorpng.to_array(strided), np.ascontiguousarray(strided))
    chw = np.transpose(photo.astype(np.float32) / 255, (2, 0, 1))[:, ::-1]  # a CHW view, flipped
    np.testing.assert_array_equal(tensorpng.to_array(chw), np.ascontiguousarray(photo[::-1]))
    fortran = np.asfortranarray(photo)
    np.testing.assert_array_equal(tensorpng.to_array(fortran), photo)
    # Zero strides (broadcast views) in every position.
    column = np.arange(5, dtype=np.float32) / 4
    broadcast = np.broadcast_to(column[:, None, None], (5, 6, 3))
    np.testing.assert_array_equal(
        tensorpng.to_array(broadcast),
        np.broadcast_to([[0], [64], [128], [191], [255]], (5, 6))[..., None].repeat(3, -1),
    )
    expanded = torch.from_numpy(column).view(1, 1, 5, 1).expand(2, 3, 5, 4)
    np.testing.assert_array_equal(tensorpng.to_array(expanded)[1, :, 0, 2], [0, 64, 128, 191, 255])


def test_non_contiguous_torch(photos: dict[str, np.ndarray]) -> None:
    photo = photos["chelsea"]
    hwc = torch.from_numpy(photo)
    chw = hwc.permute(2, 0, 1)  # a non-contiguous CHW view
    assert not chw.is_contiguous()
    np.testing.assert_array_equal(tensorpng.to_array(chw), photo)
    np.testing.assert_array_equal(tensorpng.to_array(chw[:, ::3, 1::2]), photo[::3, 1::2])
    np.testing.assert_array_equal(tensorpng.to_array(chw.flip(0)), photo[..., ::-1])
    batch = torch.stack([hwc.permute(2, 0, 1).float() / 255] * 2).contiguous(
        memory_format=torch.channels_last
    )
    np.testing.assert_array_equal(tensorpng.to_array(batch), np.stack([photo] * 2))


def test_negated_and_conj_views_are_resolved() -> None:
    x = torch.tensor([[0.25, 0.5], [0.75, 1.0]])
    neg = (-x).neg()  # may be a lazy negative view
    np.testing.assert_array_equal(tensorpng.to_array(neg), [[64, 128], [191, 255]])
    np.testing.assert_array_equal(tensorpng.to_array(torch.tensor([[-0.25, -0.5]])._neg_view()), [[64, 128]])


def test_non_native_byte_order() -> None:
    values = np.array([[0.0, 0.5], [1.0, 0.25]])
    np.testing.assert_array_equal(tensorpng.to_array(values.astype(">f4")), [[0, 128], [255, 64]])
    u16 = np.array([[1, 256], [65535, 4660]], ">u2")
    out = tensorpng.to_array(u16)
    assert out.dtype == np.uint16
    np.testing.assert_array_equal(out, [[1, 256], [65535, 4660]])
    np.testing.assert_array_equal(decode_pypng(tensorpng.encode(u16)), [[1, 256], [65535, 4660]])


class ArrayOnly:
    """Exposes only ``__array__`` (like many array libraries' host arrays)."""

    def __init__(self, array: np.ndarray) -> None:
        self._array = array

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        return self._array if dtype is None else self._array.astype(dtype)


class DLPackOnly:
    """Exposes only ``__dlpack__`` and ``__dlpack_device__`` (host memory)."""

    def __init__(self, array: Any) -> None:
        self._array = array

    def __dlpack__(self, **kwargs: Any) -> Any:
        return self._array.__dlpack__(**kwargs)

    def __dlpack_device__(self) -> tuple[int, int]:
        return self._array.__dlpack_device__()


def test_objects_with_only_array(photos: dict[str, np.ndarray], tmp_path: Path) -> None:
    photo = photos["coffee"]
    paths = tensorpng.save(ArrayOnly(photo), tmp_path / "a.png")
    np.testing.assert_array_equal(decode_both(paths[0]), photo)
    normalized = imagenet_normalize(photo).numpy()
    np.testing.assert_array_equal(
        tensorpng.to_array(ArrayOnly(normalized), mean=IMAGENET_MEAN, std=IMAGENET_STD), photo
    )
    # Errors name the array's shape and dtype even though the object has neither attribute.
    with pytest.raises(ShapeError, match=r"ArrayOnly.*shape \(7, 8, 9\), dtype float32.*layout="):
        tensorpng.save(ArrayOnly(np.zeros((7, 8, 9), np.float32)), tmp_path / "new" / "x.png")
    with pytest.raises(DTypeError, match=r"ArrayOnly.*dtype complex64"):
        tensorpng.to_array(ArrayOnly(np.zeros((7, 8), np.complex64)))
    assert not (tmp_path / "new").exists()


def test_objects_with_dlpack(photos: dict[str, np.ndarray], tmp_path: Path) -> None:
    photo = photos["astronaut"]
    paths = tensorpng.save(DLPackOnly(photo), tmp_path / "d.png")
    np.testing.assert_array_equal(decode_both(paths[0]), photo)
    normalized = imagenet_normalize(photo)
    np.testing.assert_array_equal(
        tensorpng.to_array(DLPackOnly(normalized), mean=IMAGENET_MEAN, std=IMAGENET_STD), photo
    )
    mask = np.zeros((4, 6), bool)
    mask[1, 2] = True
    np.testing.assert_array_equal(tensorpng.to_array(DLPackOnly(mask)), mask * np.uint8(255))
    # Not a torch tensor: the tie breaks channels last.
    tie = np.arange(3 * 5 * 4, dtype=np.uint8).reshape(3, 5, 4)
    np.testing.assert_array_equal(tensorpng.to_array(DLPackOnly(tie)), tie)
    with pytest.raises(ShapeError, match=r"DLPackOnly.*shape \(9,\)"):
        tensorpng.to_array(DLPackOnly(np.zeros(9, np.float32)))
    with pytest.raises(ValueRangeError, match=r"DLPackOnly.*negative"):
        tensorpng.to_array(DLPackOnly(np.array([[-1, 1]], np.int16)))


def test_nested_lists() -> None:
    np.testing.assert_array_equal(tensorpng.to_array([[0, 255], [128, 64]]), [[0, 255], [128, 64]])
    np.testing.assert_array_equal(tensorpng.to_array([[0.0, 1.0], [0.5, 0.25]]), [[0, 255], [128, 64]])
    np.testing.assert_array_equal(tensorpng.to_array([[True, False]]), [[255, 0]])


def test_torch_is_not_imported_for_numpy_inputs(tmp_path: Path) -> None:
    script = textwrap.dedent(
        f"""
        import sys
        import numpy as np
        import tensorpng

        x = np.random.default_rng(0).random((2, 8, 8, 3), dtype=np.float32)
        paths = tensorpng.save(x, {str(tmp_path / "{index}.png")!r}, mean=0.5, std=0.25)
        tensorpng.encode(x[0])
        tensorpng.to_array(x, scale="image")
        tensorpng.save(x, {str(tmp_path / "grid.png")!r}, grid=True)

        class Device:
            def __dlpack__(self, **kwargs):
                raise AssertionError("must not be read")

            def __dlpack_device__(self):
                return (2, 0)  # CUDA memory

        try:
            tensorpng.to_array(Device())
        except tensorpng.DTypeError as error:
            assert "import torch first" in str(error), error
        else:
            raise AssertionError("no error for device memory without torch")
        assert "torch" not in sys.modules, "tensorpng imported torch"
        print(len(paths))
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == "2"
    assert listing(tmp_path) == ["0.png", "1.png", "grid.png"]
    pngcheck(*(tmp_path / name for name in listing(tmp_path)))
