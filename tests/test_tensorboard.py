"""tensorpng.tensorboard: summaries written through a SummaryWriter, read back with
TensorBoard's own EventAccumulator and decoded by decoders we did not write."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch.utils.tensorboard import SummaryWriter

import tensorpng
from conftest import decode_imagecodecs, decode_pypng, pngcheck_bytes
from tensorpng import DTypeError, OptionError, ShapeError
from tensorpng.tensorboard import add_image, add_images

ROOT = Path(__file__).resolve().parents[1]


def read_images(logdir: Path, tag: str) -> list[Any]:
    accumulator = EventAccumulator(str(logdir), size_guidance={"images": 0})
    accumulator.Reload()
    assert tag in accumulator.Tags()["images"], accumulator.Tags()
    return list(accumulator.Images(tag))


def smooth_batch(count: int, channels: int, height: int, width: int, seed: int = 0) -> torch.Tensor:
    """Normalized-looking floats (mean 0.5, std 0.5 undone gives [0, 1] plus a few outliers)."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(count, channels, height, width, generator=generator) * 0.6


@pytest.mark.parametrize(
    ("shape", "options"),
    [
        ((6, 3, 20, 12), {"mean": 0.5, "std": 0.5, "nrow": 4, "padding": 3, "pad_value": 1.0}),
        ((5, 1, 9, 7), {"value_range": (-1.0, 1.0), "nrow": 2}),
        ((3, 4, 8, 8), {"scale": "batch", "padding": 0}),
        ((4, 1, 10, 10), {"scale": "image", "cmap": "viridis", "nrow": 3}),
        ((1, 3, 16, 24), {"mean": (0.1, 0.2, 0.3), "std": (0.9, 0.8, 0.7)}),
    ],
)
def test_add_images_equals_to_array(tmp_path: Path, shape: tuple[int, ...], options: dict[str, Any]) -> None:
    images = smooth_batch(*shape)
    with SummaryWriter(tmp_path) as writer:
        add_images(writer, "samples", images, 7, **options)
        add_images(writer, "samples", images * 0.5, 9, **options)
    events = read_images(tmp_path, "samples")
    assert [event.step for event in events] == [7, 9]
    for event, batch in zip(events, (images, images * 0.5), strict=True):
        expected = tensorpng.to_array(batch, grid=True, **options)
        data = event.encoded_image_string
        pngcheck_bytes(data, tmp_path)
        np.testing.assert_array_equal(decode_imagecodecs(data), expected)
        np.testing.assert_array_equal(decode_pypng(data), expected)
        assert (event.height, event.width) == expected.shape[:2]
        n, _, h, w = shape
        padding = options.get("padding", 2)
        nrow = options.get("nrow", 8)
        columns, rows = min(nrow, n), -(-n // min(nrow, n))
        grid = (h, w) if n == 1 else (rows * (h + padding) + padding, columns * (w + padding) + padding)
        assert (event.height, event.width) == grid


def test_record_lets_load_undo_the_mapping(tmp_path: Path) -> None:
    image = torch.rand(3, 12, 10) * 2 - 1  # values in [-1, 1] as a diffusion model makes them
    with SummaryWriter(tmp_path) as writer:
        add_image(writer, "x", image, 3, value_range=(-1, 1), bits=16)
    (event,) = read_images(tmp_path, "x")
    assert (event.step, event.width, event.height) == (3, 10, 12)
    exported = tmp_path / "exported.png"
    exported.write_bytes(event.encoded_image_string)  # as "download" in TensorBoard does
    assert decode_pypng(exported.read_bytes()).dtype == np.uint16
    restored = tensorpng.load(exported)
    assert restored.shape == image.shape
    np.testing.assert_allclose(np.asarray(restored), image.numpy(), atol=2 / 65535 + 1e-6)


def test_uint8_is_not_scaled_again(tmp_path: Path) -> None:
    """torch's add_image multiplies uint8 that looks like [0, 1] floats (pytorch#31459); here
    uint8 values are written as they are."""
    image = np.zeros((4, 5, 3), np.uint8)
    image[0, 0] = (1, 0, 1)
    image[1] = 200
    with SummaryWriter(tmp_path) as writer:
        add_image(writer, "u8", image, 0)
    (event,) = read_images(tmp_path, "u8")
    np.testing.assert_array_equal(decode_imagecodecs(event.encoded_image_string), image)


def test_walltime_and_colorspace(tmp_path: Path) -> None:
    gray = np.arange(30, dtype=np.uint8).reshape(5, 6)
    with SummaryWriter(tmp_path) as writer:
        add_image(writer, "gray", gray, 1, walltime=1234.5)
        add_images(writer, "rgba", np.full((2, 4, 4, 4), 9, np.uint8), 2)
    (gray_event,) = read_images(tmp_path, "gray")
    assert gray_event.wall_time == 1234.5
    np.testing.assert_array_equal(decode_imagecodecs(gray_event.encoded_image_string), gray)
    (rgba_event,) = read_images(tmp_path, "rgba")
    assert rgba_event.width == 2 * 4 + 3 * 2
    assert decode_imagecodecs(rgba_event.encoded_image_string).shape[-1] == 4


def test_writes_after_close_reopen_the_event_file(tmp_path: Path) -> None:
    writer = SummaryWriter(tmp_path)
    writer.close()
    add_image(writer, "late", np.zeros((2, 2), np.uint8), 5)
    writer.close()
    assert [event.step for event in read_images(tmp_path, "late")] == [5]


def test_errors(tmp_path: Path) -> None:
    with SummaryWriter(tmp_path) as writer:
        with pytest.raises(ShapeError, match=r"add_images.*\(2, 3, 4, 4\)|\(2, 3, 4, 4\).*add_images"):
            add_image(writer, "batch", torch.zeros(2, 3, 4, 4))
        with pytest.raises(OptionError, match="nrow"):
            add_images(writer, "bad", torch.zeros(2, 3, 4, 4), nrow=0)
        with pytest.raises(ShapeError, match=r"\(2, 7, 5, 6\)"):
            add_images(writer, "bad", torch.zeros(2, 7, 5, 6))
    with pytest.raises(DTypeError, match="SummaryWriter"):
        add_images(object(), "t", np.zeros((4, 4), np.uint8))
    accumulator = EventAccumulator(str(tmp_path))
    accumulator.Reload()
    assert accumulator.Tags()["images"] == []


def test_lazy_imports_and_install_hint() -> None:
    """import tensorpng (and tensorpng.tensorboard) imports no tensorboard; without the package,
    the error says how to install it."""
    code = (
        "import sys\n"
        "import numpy as np\n"
        "import tensorpng, tensorpng.tensorboard\n"
        "assert not {'tensorboard', 'lightning', 'torch'} & set(sys.modules), 'imported at import time'\n"
        "sys.modules['tensorboard'] = None\n"
        "try:\n"
        "    tensorpng.tensorboard.add_image(object(), 't', np.zeros((2, 2), np.uint8))\n"
        "except tensorpng.OptionError as error:\n"
        "    print(error)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert result.returncode == 0, result.stderr
    assert "pip install 'tensorpng[tensorboard]'" in result.stdout


def test_a_misspelled_option_is_a_tensorpng_error() -> None:
    import tensorpng
    from tensorpng.tensorboard import add_images

    with pytest.raises(tensorpng.UnknownOptionError, match="did you mean 'mean'"):
        add_images(object(), "t", torch.rand(2, 3, 4, 4), 0, meen=0.5)  # type: ignore[call-arg]
