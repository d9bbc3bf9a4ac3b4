"""Exporting samples for FID: a sampling loop writing PNGs, then the folder packed into an .npz.

A sampling loop "generates" ``--count`` 3x256x256 float32 samples in [-1, 1] (crops of
scikit-image's photos, ``--batch`` at a time; generation is a ``--generate-ms`` sleep per batch,
as a GPU sampler leaves the CPU idle) and writes each as a PNG:

- the common recipe: ``torchvision.utils.save_image(sample, path, normalize=True,
  value_range=(-1, 1))`` per sample, reimplemented here (torchvision is not installed): the
  arithmetic of ``make_grid`` + ``save_image``, then Pillow's default PNG save;
- ``tensorpng.Writer.save(batch, "{rank}_{step:06d}_{index:03d}.png", value_range=(-1, 1))``.

Printed: images/s of the whole loop (the writer's ``close`` included) and the seconds the loop
was blocked (inside the save calls, plus the final ``close``), each the median of ``--repeat``
runs. Then the Writer's folder is packed into ``arr_0`` with ``tensorpng pack-npz``'s function
against DiT's ``create_npz_from_sample_folder`` recipe (Pillow opens, ``np.stack``,
``np.savez``): images/s and the peak of NumPy memory (tracemalloc).

    python benchmarks/fid_export.py [--count 2000] [--batch 50] [--generate-ms 100] [--dir /dev/shm]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image

import tensorpng
from photos import photo_crops
from tensorpng._npz import pack_npz


def save_image_recipe(sample: torch.Tensor, path: Path) -> None:
    """``torchvision.utils.save_image(sample, path, normalize=True, value_range=(-1, 1))`` for
    one 3 x H x W image: make_grid clones, clamps and rescales it (one image: no grid), then
    save_image's ``mul(255).add_(0.5).clamp_(0, 255)`` and ``Image.fromarray(...).save(path)``."""
    image = sample.clone().clamp_(min=-1, max=1).sub_(-1).div_(max(1 - (-1), 1e-5))
    array = image.mul(255).add_(0.5).clamp_(0, 255).permute(1, 2, 0).to("cpu", torch.uint8).numpy()
    Image.fromarray(array).save(path)


def create_npz_recipe(folder: Path, output: Path) -> int:
    """DiT's ``create_npz_from_sample_folder``, over the sorted files of ``folder``."""
    samples = []
    for path in sorted(folder.glob("*.png")):
        with Image.open(path) as image:
            samples.append(np.asarray(image).astype(np.uint8))
    array = np.stack(samples)
    np.savez(output, arr_0=array)
    return len(samples)


def run_loop(
    batches: list[torch.Tensor],
    generate_seconds: float,
    save: Callable[[int, torch.Tensor], None],
    finish: Callable[[], None],
) -> tuple[float, float]:
    """(wall seconds, blocked seconds) of a sampling loop that saves every batch."""
    blocked = 0.0
    start = time.perf_counter()
    for step, batch in enumerate(batches):
        time.sleep(generate_seconds)  # the sampler runs on the GPU
        samples = batch.clone()  # a fresh tensor each step, as a sampler returns
        before = time.perf_counter()
        save(step, samples)
        blocked += time.perf_counter() - before
    before = time.perf_counter()
    finish()
    blocked += time.perf_counter() - before
    return time.perf_counter() - start, blocked


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--count", type=int, default=2000)
    parser.add_argument("--batch", type=int, default=50)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--generate-ms", type=float, default=100.0, help="sampler time per batch (a sleep)")
    parser.add_argument("--repeat", type=int, default=1, help="runs of each loop (medians)")
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--dir", default=None, help="where to make the temporary folder")
    args = parser.parse_args()
    torch.set_num_threads(1)  # the loop's own tensor work on the caller's core, as in a sampler

    distinct = photo_crops(min(args.count, 200), args.size, seed=0)
    pool = torch.from_numpy(distinct).permute(0, 3, 1, 2).float().div(127.5).sub(1)  # [-1, 1]
    pool.add_(torch.randn(pool.shape, generator=torch.Generator().manual_seed(0)) * 0.02)  # sampler noise
    order = np.arange(args.count) % len(pool)
    batches = [pool[order[i : i + args.batch]].contiguous() for i in range(0, args.count, args.batch)]
    generate = args.generate_ms / 1e3

    with tempfile.TemporaryDirectory(dir=args.dir) as folder:
        root = Path(folder)
        recipe_runs, writer_runs = [], []
        for run in range(args.repeat):
            recipe_dir = root / f"recipe{run}"
            recipe_dir.mkdir()

            def recipe_save(step: int, samples: torch.Tensor, out: Path = recipe_dir) -> None:
                for index, sample in enumerate(samples):
                    save_image_recipe(sample, out / f"0_{step:06d}_{index:03d}.png")

            recipe_runs.append(run_loop(batches, generate, recipe_save, lambda: None))

            writer = tensorpng.Writer(root / f"writer{run}", workers=args.workers, value_range=(-1, 1))

            def writer_save(step: int, samples: torch.Tensor, w: tensorpng.Writer = writer) -> None:
                w.save(samples, "{rank}_{step:06d}_{index:03d}.png", step=step)

            writer_runs.append(run_loop(batches, generate, writer_save, writer.close))

        packed = root / "writer0"
        assert len(list(packed.glob("*.png"))) == args.count
        # Timed with tracemalloc on for both (its cost is lost in the run-to-run noise here):
        # NumPy reports its allocations to it, so the peak is the arrays' memory.
        npz_runs: dict[str, list[tuple[float, int]]] = {"ours": [], "recipe": []}
        for _ in range(args.repeat):
            for name, function in (("ours", pack_npz), ("recipe", create_npz_recipe)):
                tracemalloc.start()
                start = time.perf_counter()
                function(packed, root / f"{name}.npz")
                seconds = time.perf_counter() - start
                npz_runs[name].append((seconds, tracemalloc.get_traced_memory()[1]))
                tracemalloc.stop()
        with np.load(root / "ours.npz") as ours, np.load(root / "recipe.npz") as theirs:
            assert np.array_equal(ours["arr_0"], theirs["arr_0"]), "pack-npz differs from the recipe"
        # The recipe's files against ours, pixel by pixel (save_image's rounding is not ours).
        recipe_arrays = []
        for path in sorted((root / "recipe0").glob("*.png")):
            with Image.open(path) as image:
                recipe_arrays.append(np.asarray(image))
        with np.load(root / "ours.npz") as ours:
            level_diff = int(np.abs(ours["arr_0"].astype(np.int16) - np.stack(recipe_arrays)).max())
        del recipe_arrays
        npz_bytes = (root / "ours.npz").stat().st_size

    n = args.count
    recipe_wall = statistics.median(r[0] for r in recipe_runs)
    recipe_blocked = statistics.median(r[1] for r in recipe_runs)
    writer_wall = statistics.median(r[0] for r in writer_runs)
    writer_blocked = statistics.median(r[1] for r in writer_runs)
    print(
        f"{n} samples 3x{args.size}x{args.size} float32 in [-1, 1], batches of {args.batch}, "
        f"{args.generate_ms:.0f} ms of generation (sleep) per batch = {len(batches) * generate:.1f} s in all; "
        f"medians of {args.repeat} run(s); files in {args.dir or tempfile.gettempdir()}"
    )
    print(f"{'':34s}{'images/s':>10s}{'loop s':>9s}{'blocked s':>11s}")
    print(
        f"{'save_image per sample (Pillow)':34s}{n / recipe_wall:10.0f}{recipe_wall:9.2f}{recipe_blocked:11.2f}"
    )
    print(
        f"{'tensorpng.Writer.save per batch':34s}{n / writer_wall:10.0f}{writer_wall:9.2f}{writer_blocked:11.2f}"
    )
    print(
        f"ratios: loop {recipe_wall / writer_wall:.1f}x faster, blocked {recipe_blocked / writer_blocked:.1f}x less; "
        f"pixels differ from save_image's by at most {level_diff} level(s)"
    )
    ours_s, theirs_s = (statistics.median(run[0] for run in npz_runs[name]) for name in ("ours", "recipe"))
    peaks = [max(run[1] for run in npz_runs[name]) for name in ("ours", "recipe")]
    print(
        f"pack-npz                         {n / ours_s:10.0f} images/s ({npz_bytes / ours_s / 1e6:.0f} MB/s of arr_0), "
        f"peak NumPy memory {peaks[0] / 1e6:.1f} MB"
    )
    print(
        f"create_npz_from_sample_folder    {n / theirs_s:10.0f} images/s, peak NumPy memory {peaks[1] / 1e6:.1f} MB "
        f"(ratio {theirs_s / ours_s:.1f}x time, {peaks[1] / max(peaks[0], 1):.0f}x memory)"
    )


if __name__ == "__main__":
    main()
