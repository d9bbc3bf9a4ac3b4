"""``tensorpng.save_image`` against ``torchvision.utils.save_image``, on one grid of photos.

The batch: 64 x 3 x 256 x 256 float32 in 0..1 (``ToTensor`` of random 256 x 256 crops of
scikit-image's photos; fixed seed), saved as one 8 x 8 grid (2066 x 2066 RGB).

Compared, in one run, each writing the grid into a temporary folder:

- ``tensorpng``: ``tensorpng.save_image(batch, path)``.
- ``tensorpng.save(grid=True)``: the general path, for reference (its own rounding).
- ``torchvision``: torchvision's arithmetic (``make_grid``, then
  ``grid.mul(255).add_(0.5).clamp_(0, 255).permute(1, 2, 0).to("cpu", torch.uint8)``),
  then ``PIL.Image.fromarray(..).save(path)`` with Pillow's defaults: what
  ``torchvision.utils.save_image`` does. torchvision cannot be installed next to this torch,
  so its two steps are written here from its public ``utils.py``.

Before timing, the script asserts that both files decode (Pillow, and imagecodecs for ours)
to the same pixels. It prints the median seconds of each and the ratio (target: >= 15x).

    python benchmarks/save_image.py [--repeat 7] [--batch 64] [--size 256] [--dir /dev/shm]
"""

from __future__ import annotations

import argparse
import math
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image

import tensorpng
from photos import photo_crops


def torchvision_make_grid(
    tensor: torch.Tensor, nrow: int = 8, padding: int = 2, pad_value: float = 0.0
) -> torch.Tensor:
    """torchvision.utils.make_grid for a float N x 3 x H x W batch without normalize."""
    count = tensor.size(0)
    columns = min(nrow, count)
    rows = math.ceil(count / columns)
    height, width = tensor.size(2) + padding, tensor.size(3) + padding
    grid = tensor.new_full((tensor.size(1), height * rows + padding, width * columns + padding), pad_value)
    for k in range(count):
        y, x = divmod(k, columns)
        grid.narrow(1, y * height + padding, height - padding).narrow(
            2, x * width + padding, width - padding
        ).copy_(tensor[k])
    return grid


def torchvision_save_image(tensor: torch.Tensor, path: Path) -> None:
    """torchvision.utils.save_image: its arithmetic, then Pillow's default PNG save."""
    with torch.no_grad():
        grid = torchvision_make_grid(tensor)
        ndarr = grid.mul(255).add_(0.5).clamp_(0, 255).permute(1, 2, 0).to("cpu", torch.uint8).numpy()
    Image.fromarray(ndarr).save(path)


def tensorpng_save_image(tensor: torch.Tensor, path: Path) -> None:
    tensorpng.save_image(tensor, path)


def median_seconds(function: Callable[[], None], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--dir", default=None, help="folder for the temporary files (e.g. /dev/shm)")
    args = parser.parse_args()

    crops = photo_crops(args.batch, args.size)
    batch = torch.from_numpy(crops).permute(0, 3, 1, 2).contiguous().to(torch.float32).div(255)
    with tempfile.TemporaryDirectory(dir=args.dir) as folder:
        ours, theirs = Path(folder) / "ours.png", Path(folder) / "theirs.png"
        tensorpng_save_image(batch, ours)
        torchvision_save_image(batch, theirs)
        with Image.open(ours) as a, Image.open(theirs) as b:
            mine, reference = np.asarray(a), np.asarray(b)
        import imagecodecs

        assert np.array_equal(mine, reference), "tensorpng.save_image wrote other pixels than torchvision"
        assert np.array_equal(imagecodecs.png_decode(ours.read_bytes()), reference)
        sizes = ours.stat().st_size, theirs.stat().st_size

        # Alternate the two so that a change in machine load affects both alike.
        general = Path(folder) / "general.png"
        times: dict[str, list[float]] = {"tensorpng": [], "save": [], "torchvision": []}
        for _ in range(args.repeat):
            times["tensorpng"].append(median_seconds(lambda: tensorpng_save_image(batch, ours), 1))
            times["save"].append(median_seconds(lambda: tensorpng.save(batch, general, grid=True), 1))
            times["torchvision"].append(median_seconds(lambda: torchvision_save_image(batch, theirs), 1))

    grid = f"{args.batch}x3x{args.size}x{args.size} -> {mine.shape[1]}x{mine.shape[0]} RGB grid"
    print(f"save_image of a {grid}, pixels equal; medians of {args.repeat} runs")
    ours_s, theirs_s = statistics.median(times["tensorpng"]), statistics.median(times["torchvision"])
    print(f"  tensorpng.save_image          {ours_s * 1e3:8.1f} ms  {sizes[0] / 1e6:6.2f} MB")
    general_s = statistics.median(times["save"])
    print(f"  tensorpng.save(grid=True)     {general_s * 1e3:8.1f} ms  ({theirs_s / general_s:.1f}x)")
    print(f"  torchvision arithmetic + PIL  {theirs_s * 1e3:8.1f} ms  {sizes[1] / 1e6:6.2f} MB")
    print(f"  ratio: {theirs_s / ours_s:.1f}x (target >= 15x)")


if __name__ == "__main__":
    main()
