"""tensorpng.save_image / make_grid against torchvision's arithmetic, pixel for pixel.

torchvision cannot be installed next to the CPU torch here, so the reference below is
written from torchvision's public ``torchvision/utils.py`` (``make_grid`` and
``save_image``), operation by operation, in torch.
"""

from __future__ import annotations

import inspect
import io
import itertools
import math
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

import tensorpng
from conftest import decode_imagecodecs, pngcheck
from tensorpng import DTypeError, OptionError, ShapeError
from tensorpng._torchvision import grid_samples


def reference_make_grid(
    tensor: Any,
    nrow: int = 8,
    padding: int = 2,
    normalize: bool = False,
    value_range: tuple[float, float] | None = None,
    scale_each: bool = False,
    pad_value: float = 0.0,
) -> torch.Tensor:
    """torchvision.utils.make_grid's steps, in torch."""
    if isinstance(tensor, list):
        tensor = torch.stack(tensor, dim=0)
    if tensor.dim() == 2:
        tensor = tensor.unsqueeze(0)
    if tensor.dim() == 3:
        if tensor.size(0) == 1:
            tensor = torch.cat((tensor, tensor, tensor), 0)
        tensor = tensor.unsqueeze(0)
    if tensor.dim() == 4 and tensor.size(1) == 1:
        tensor = torch.cat((tensor, tensor, tensor), 1)
    if normalize is True:  # torchvision tests "is True": a truthy 1 does not normalize
        tensor = tensor.clone()
        for part in tensor if scale_each is True else [tensor]:
            low, high = value_range if value_range is not None else (float(part.min()), float(part.max()))
            part.clamp_(min=low, max=high)
            part.sub_(low).div_(max(high - low, 1e-5))
    if tensor.size(0) == 1:
        return tensor.squeeze(0)
    count = tensor.size(0)
    columns = min(nrow, count)
    rows = math.ceil(count / columns)
    height, width = tensor.size(2) + padding, tensor.size(3) + padding
    grid = tensor.new_full((tensor.size(1), height * rows + padding, width * columns + padding), pad_value)
    for k in range(count):
        y, x = divmod(k, int(columns))  # torchvision: range(columns), which takes a 0-d tensor too
        grid.narrow(1, y * height + padding, height - padding).narrow(
            2, x * width + padding, width - padding
        ).copy_(tensor[k])
    return grid


def reference_pixels(tensor: Any, **options: Any) -> np.ndarray:
    """torchvision.utils.save_image's samples, H x W x C uint8, before Pillow writes them."""
    grid = reference_make_grid(tensor, **options)
    return grid.mul(255).add_(0.5).clamp_(0, 255).permute(1, 2, 0).to("cpu", torch.uint8).numpy()


def images(shape: tuple[int, ...], dtype: torch.dtype, seed: int = 0) -> torch.Tensor:
    """Values in -0.2..1.2 (so clamping matters), some of them on .5 boundaries after * 255."""
    generator = torch.Generator().manual_seed(seed)
    values = torch.rand(shape, generator=generator, dtype=torch.float64) * 1.4 - 0.2
    flat = values.view(-1)
    flat[::7] = torch.arange(flat[::7].numel(), dtype=torch.float64) % 511 / 510  # k/510: x*255 = k/2
    return values.to(dtype)


def inputs(kind: str, channels: int, dtype: torch.dtype) -> Any:
    if kind == "2d":
        return images((6, 7), dtype)
    if kind == "3d":
        return images((channels, 6, 7), dtype)
    if kind == "4d":
        return images((5, channels, 6, 7), dtype)
    if kind == "4d-one":
        return images((1, channels, 6, 7), dtype)
    return list(images((3, channels, 6, 7), dtype))  # a list of C x H x W


KINDS = ["2d", "3d", "4d", "4d-one", "list"]
SHAPES = [("2d", 1)] + [(kind, channels) for kind in KINDS[1:] for channels in (1, 3, 4)]
NORMALIZE_OPTIONS = [
    {"normalize": normalize, "value_range": value_range, "scale_each": scale_each}
    for normalize, value_range, scale_each in itertools.product(
        [False, True], [None, (-0.5, 1.5), (0.2, 0.7), (0, 1), (0.3, 0.3), (0.5, 0.500004)], [False, True]
    )
]
GRID_OPTIONS = [
    {"nrow": nrow, "padding": padding, "pad_value": pad_value}
    for nrow, padding, pad_value in itertools.product([1, 3, 8], [0, 2, 5], [0.0, 0.5, 1, 2.0, -1.0, 0.3])
]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize(("kind", "channels"), SHAPES)
def test_samples_equal_torchvision_for_every_option(kind: str, channels: int, dtype: torch.dtype) -> None:
    x = inputs(kind, channels, dtype)
    checked = 0
    for normalize_options, grid_options in itertools.product(NORMALIZE_OPTIONS, GRID_OPTIONS):
        options = {**normalize_options, **grid_options}
        expected = reference_pixels(x, **options)
        ours = grid_samples(x, **options).transpose(1, 2, 0)
        assert ours.dtype == np.uint8
        np.testing.assert_array_equal(ours, expected, err_msg=str(options))
        checked += 1
    assert checked == len(NORMALIZE_OPTIONS) * len(GRID_OPTIONS)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("kind", KINDS)
def test_numpy_input_gives_torchvisions_pixels(kind: str, dtype: type) -> None:
    x = inputs(kind, 3, torch.float64)
    as_numpy = [t.numpy().astype(dtype) for t in x] if isinstance(x, list) else x.numpy().astype(dtype)
    as_torch = (
        [torch.from_numpy(t) for t in as_numpy] if isinstance(as_numpy, list) else torch.from_numpy(as_numpy)
    )
    for options in NORMALIZE_OPTIONS:
        expected = reference_pixels(as_torch, **options, pad_value=0.3)
        ours = grid_samples(as_numpy, **options, pad_value=0.3).transpose(1, 2, 0)
        np.testing.assert_array_equal(ours, expected, err_msg=str(options))


def _decoders(data: bytes) -> list[np.ndarray]:
    with Image.open(io.BytesIO(data)) as image:
        pillow = np.asarray(image)
    return [pillow, decode_imagecodecs(data)]


@pytest.mark.parametrize(("kind", "channels"), SHAPES)
def test_files_decode_to_torchvisions_pixels(tmp_path: Path, kind: str, channels: int) -> None:
    x = inputs(kind, channels, torch.float32)
    options = {"nrow": 2, "padding": 3, "normalize": True, "pad_value": 0.5}
    expected = reference_pixels(x, **options)
    as_str, as_path, in_memory = str(tmp_path / "a.png"), tmp_path / "b.png", io.BytesIO()
    tensorpng.save_image(x, as_str, **options)
    tensorpng.save_image(x, as_path, "png", **options)
    tensorpng.save_image(x, in_memory, format="PNG", **options)
    pngcheck(as_str, as_path)
    assert Path(as_str).read_bytes() == as_path.read_bytes() == in_memory.getvalue()
    for decoded in _decoders(in_memory.getvalue()):
        np.testing.assert_array_equal(decoded, expected)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png", "b.png"]  # no temporary left


def test_a_big_grid_of_photos_through_every_decoder(tmp_path: Path) -> None:
    """A grid above the parallel-deflate threshold: the sliced stream decodes everywhere."""
    x = images((64, 3, 128, 160), torch.float32, seed=3)
    path = tmp_path / "grid.png"
    tensorpng.save_image(x, path, nrow=8)
    pngcheck(path)
    expected = reference_pixels(x, nrow=8)
    for decoded in _decoders(path.read_bytes()):
        np.testing.assert_array_equal(decoded, expected)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.uint8, torch.float16])
@pytest.mark.parametrize("kind", KINDS)
def test_make_grid_equals_torchvisions(kind: str, dtype: torch.dtype) -> None:
    x = inputs(kind, 1 if kind == "2d" else 3, torch.float32)
    x = (
        [(t * 255).to(dtype) if dtype == torch.uint8 else t.to(dtype) for t in x]
        if isinstance(x, list)
        else x
    )
    if not isinstance(x, list):
        x = (x * 255).to(dtype) if dtype == torch.uint8 else x.to(dtype)
    for options in GRID_OPTIONS:
        if dtype == torch.uint8 and not 0 <= options["pad_value"] <= 255:
            continue  # torchvision raises too: the padding cannot be held in uint8
        assert torch.equal(tensorpng.make_grid(x, **options), reference_make_grid(x, **options)), options
    if dtype.is_floating_point:
        for options in NORMALIZE_OPTIONS:
            assert torch.equal(tensorpng.make_grid(x, **options), reference_make_grid(x, **options)), options


def test_make_grid_of_numpy_returns_numpy() -> None:
    x = images((5, 1, 6, 7), torch.float64)
    grid = tensorpng.make_grid(x.numpy(), nrow=2, normalize=True, pad_value=0.25)
    assert isinstance(grid, np.ndarray)
    np.testing.assert_array_equal(
        grid, reference_make_grid(x, nrow=2, normalize=True, pad_value=0.25).numpy()
    )


def test_signatures_match_torchvision() -> None:
    # torchvision.utils: save_image(tensor, fp, format=None, **kwargs) with make_grid's options.
    grid_options = [
        ("nrow", 8),
        ("padding", 2),
        ("normalize", False),
        ("value_range", None),
        ("scale_each", False),
        ("pad_value", 0.0),
    ]
    grid = inspect.signature(tensorpng.make_grid).parameters
    assert [(p.name, p.default) for p in list(grid.values())[1:]] == grid_options
    save = inspect.signature(tensorpng.save_image).parameters
    names = list(save)
    assert names[:3] == ["tensor", "fp", "format"] and save["format"].default is None
    assert [(name, save[name].default) for name, _ in grid_options] == grid_options
    assert all(save[name].kind is inspect.Parameter.KEYWORD_ONLY for name in names[3:])


def test_every_argument_form_torchvision_takes() -> None:
    """NumPy and 0-d torch numbers, a value_range of tensors (x.min(), x.max()), and truthy
    flags that are not True (torchvision tests `is True`): the pixels are torchvision's."""
    x = images((5, 3, 6, 7), torch.float32) * 3 - 1
    forms: list[dict[str, Any]] = [
        {"normalize": True, "value_range": (x.min(), x.max())},
        {"normalize": True, "value_range": (x[0].min(), torch.tensor(1.5, dtype=torch.float64))},
        {"nrow": np.int64(2), "padding": np.int32(1), "pad_value": np.float32(1)},
        {"nrow": torch.tensor(3), "pad_value": torch.tensor(0.5)},
        {"normalize": 1},
        {"normalize": np.bool_(True), "scale_each": True},
        {"normalize": True, "scale_each": 1},
    ]
    for options in forms:
        np.testing.assert_array_equal(
            grid_samples(x, **options).transpose(1, 2, 0),
            reference_pixels(x, **options),
            err_msg=str(options),
        )
        expected_grid = reference_make_grid(x, **options)
        torch.testing.assert_close(tensorpng.make_grid(x, **options), expected_grid, rtol=0, atol=0)


@pytest.mark.parametrize("numpy_input", [False, True])
def test_nan_and_inf_give_torchvisions_pixels_silently(numpy_input: bool) -> None:
    x = images((2, 3, 6, 5), torch.float32)
    x[0, 0, 0, 0], x[1, 1, 1, 1], x[1, 2, 2, 2] = float("nan"), float("inf"), -float("inf")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # torchvision is silent: so is save_image
        samples = grid_samples(x.numpy() if numpy_input else x)
    np.testing.assert_array_equal(samples.transpose(1, 2, 0), reference_pixels(x))


def test_uint8_and_bool_are_written_as_they_are() -> None:
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (2, 3, 5, 4), dtype=np.uint8)
    samples = grid_samples(torch.from_numpy(pixels), padding=1, pad_value=1.0)
    np.testing.assert_array_equal(samples[:, 1:6, 1:5], pixels[0])
    np.testing.assert_array_equal(samples[:, 1:6, 6:10], pixels[1])
    assert (samples[:, 0] == 255).all()
    mask = pixels[0, 0] > 127
    data = io.BytesIO()
    tensorpng.save_image(torch.from_numpy(mask), data)
    for decoded in _decoders(data.getvalue()):
        np.testing.assert_array_equal(decoded, np.repeat((mask * 255).astype(np.uint8)[..., None], 3, axis=2))


def test_bits_16_keeps_precision() -> None:
    x = images((2, 3, 6, 7), torch.float32)
    data = io.BytesIO()
    tensorpng.save_image(x, data, bits=16, padding=0)
    grid = torch.cat(list(x), dim=2)  # two images side by side, no padding
    expected = grid.mul(65535).add_(0.5).clamp_(0, 65535).to(torch.float64).numpy().astype(np.uint16)
    decoded = decode_imagecodecs(data.getvalue())
    assert decoded.dtype == np.uint16
    np.testing.assert_array_equal(decoded, expected.transpose(1, 2, 0))
    # uint8 widens exactly to 16 bits; float16 is computed in float32 (65535 overflows float16).
    u8 = torch.arange(256, dtype=torch.uint8).view(1, 16, 16)
    np.testing.assert_array_equal(grid_samples(u8, bits=16)[0], u8[0].numpy().astype(np.uint16) * 257)
    half = grid_samples(x.half(), bits=16)
    assert half.max() <= 65535 and half.dtype == np.uint16


def test_two_channels_are_gray_with_alpha() -> None:
    x = images((2, 6, 7), torch.float32)
    data = io.BytesIO()
    tensorpng.save_image(x, data)
    with Image.open(data) as image:
        assert image.mode == "LA"
        np.testing.assert_array_equal(np.asarray(image), reference_pixels(x))


def test_requires_grad_and_noncontiguous_inputs() -> None:
    x = images((4, 3, 8, 6), torch.float32).transpose(2, 3).requires_grad_(True)
    np.testing.assert_array_equal(grid_samples(x).transpose(1, 2, 0), reference_pixels(x.detach()))


def test_metadata_is_written() -> None:
    data = io.BytesIO()
    tensorpng.save_image(images((3, 4, 4), torch.float32), data, metadata={"parameters": "a cat\nSteps: 20"})
    with Image.open(data) as image:
        assert image.text["parameters"] == "a cat\nSteps: 20"


@pytest.mark.parametrize(
    ("x", "kwargs", "error"),
    [
        (torch.zeros(3, 4, 4), {"format": "jpeg"}, OptionError),
        (torch.zeros(2, 3, 4, 4, dtype=torch.int64), {}, DTypeError),
        (torch.zeros(6, 4, 4), {}, ShapeError),
        (torch.zeros(4, 4, 3, 2, 2), {}, ShapeError),
        (torch.zeros(4), {}, ShapeError),
        (torch.zeros(3, 0, 4), {}, ShapeError),
        ([], {}, ShapeError),
        ([torch.zeros(3, 4, 4), torch.zeros(3, 4, 5)], {}, ShapeError),
        ([torch.zeros(3, 4, 4), np.zeros((3, 4, 4))], {}, DTypeError),
        ("a string", {}, DTypeError),
        (torch.zeros(3, 4, 4), {"nrow": 0}, OptionError),
        (torch.zeros(3, 4, 4), {"padding": -1}, OptionError),
        (torch.zeros(3, 4, 4), {"value_range": (0, 1, 2), "normalize": True}, OptionError),
        (torch.zeros(3, 4, 4), {"bits": 12}, OptionError),
        (torch.zeros(2, 3, 4, 4), {"pad_value": float("nan")}, OptionError),
        (torch.zeros(2, 3, 4, 4), {"pad_value": torch.ones(2)}, OptionError),
        (torch.zeros(2, 3, 4, 4), {"nrow": 2.0}, OptionError),
        (torch.zeros(2, 3, 4, 4), {"value_range": (0, "1"), "normalize": True}, OptionError),
    ],
)
def test_bad_input_raises_before_any_file_is_touched(
    tmp_path: Path, x: Any, kwargs: Any, error: type
) -> None:
    target = tmp_path / "out.png"
    with pytest.raises(error):
        tensorpng.save_image(x, target, **kwargs)
    assert list(tmp_path.iterdir()) == []


def test_wrong_targets(tmp_path: Path) -> None:
    with pytest.raises(OptionError, match="PNG only"):
        tensorpng.save_image(torch.zeros(3, 4, 4), tmp_path / "out.jpg")
    with pytest.raises(DTypeError, match="binary file"):
        tensorpng.save_image(torch.zeros(3, 4, 4), io.StringIO())
    with open(tmp_path / "opened.jpg", "wb") as file, pytest.raises(OptionError, match="PNG only"):
        tensorpng.save_image(torch.zeros(3, 4, 4), file)  # a file object's name counts too
    assert (tmp_path / "opened.jpg").read_bytes() == b""
    (tmp_path / "opened.jpg").unlink()
    assert list(tmp_path.iterdir()) == []
    # format="png" writes PNG bytes under any name, as Pillow would.
    tensorpng.save_image(torch.zeros(3, 4, 4), tmp_path / "out.bin", "png")
    pngcheck(tmp_path / "out.bin")
