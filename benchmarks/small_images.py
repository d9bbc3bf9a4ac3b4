"""Small images: the cost per call (issue 16), CIFAR-size samples and tiny encodes.

The batch: ``--count`` float32 images of 3 x 32 x 32 in 0..1, in one ``N x 3 x 32 x 32`` CPU
tensor: 64 x 64 crops of scikit-image's photos averaged down 2 x 2 (fixed seed), so the
content is photo-like, as CIFAR's is.

Compared in one run, interleaved (each repeat runs every method once, in a rotating order),
each writing one file per image into a fresh folder under ``--dir``:

- ``recipe``: the popular loop, ``Image.fromarray((x[i].permute(1, 2, 0).numpy() * 255)
  .clip(0, 255).astype(np.uint8)).save(path)`` per image (Pillow's default compression);
- ``save(batch)``: one ``tensorpng.save(x, folder / "{index:04d}.png")``;
- ``save per image``: ``tensorpng.save(x[i], folder / f"{i:04d}.png")``, one call each;
- ``Writer``: ``tensorpng.Writer(folder).save(x, "{index:04d}.png")`` then ``close()``.

Printed first: how much a second thread adds right now (on a shared machine the pipeline's
helper threads may find no free core). Then the median images/s over ``--repeat`` runs with the min..max spread, and the ratio
of the medians to the recipe's (target for ``save(batch)``: >= 3x). Then per-call encode
times of one RGB uint8 image (``H x W x 3``) at 32 x 32 and 64 x 64: ``tensorpng.encode``
against ``cv2.imencode(".png", ...)`` and Pillow (both at their defaults), medians of
``--repeat`` runs of ``--calls`` calls each, interleaved as well (target: 64 x 64 no slower
than OpenCV).

    python benchmarks/small_images.py [--count 2000] [--repeat 5] [--calls 1000] [--dir /dev/shm]
"""

from __future__ import annotations

import argparse
import io
import shutil
import statistics
import tempfile
import threading
import time
import zlib
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import torch
from PIL import Image

import tensorpng
from photos import photo_crops


def cifar_like(count: int, seed: int = 0) -> torch.Tensor:
    """``count x 3 x 32 x 32`` float32 in 0..1: 64 x 64 photo crops averaged 2 x 2."""
    crops = photo_crops(count, 64, seed).astype(np.float32)
    small = crops.reshape(count, 32, 2, 32, 2, 3).mean(axis=(2, 4)) / 255
    return torch.from_numpy(np.ascontiguousarray(small.transpose(0, 3, 1, 2)))


def recipe(x: torch.Tensor, folder: Path) -> None:
    for i in range(x.shape[0]):
        array = (x[i].permute(1, 2, 0).numpy() * 255).clip(0, 255).astype(np.uint8)
        Image.fromarray(array).save(folder / f"{i:04d}.png")


def save_batch(x: torch.Tensor, folder: Path) -> None:
    tensorpng.save(x, folder / "{index:04d}.png")


def save_each(x: torch.Tensor, folder: Path) -> None:
    for i in range(x.shape[0]):
        tensorpng.save(x[i], folder / f"{i:04d}.png")


def writer(x: torch.Tensor, folder: Path) -> None:
    out = tensorpng.Writer(folder)
    out.save(x, "{index:04d}.png")
    out.close()


SAVES: dict[str, Callable[[torch.Tensor, Path], None]] = {
    "recipe (Pillow default)": recipe,
    "tensorpng.save(batch)": save_batch,
    "tensorpng.save per image": save_each,
    "tensorpng.Writer": writer,
}


def time_saves(x: torch.Tensor, root: Path, repeat: int) -> dict[str, list[float]]:
    """Images/s of every method in ``SAVES``, ``repeat`` interleaved runs each."""
    rates: dict[str, list[float]] = {name: [] for name in SAVES}
    names = list(SAVES)
    for run in range(repeat + 1):  # run 0 warms up (imports, thread pools, page cache)
        order = names[run % len(names) :] + names[: run % len(names)]
        for name in order:
            folder = root / f"{names.index(name)}"
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir()
            start = time.perf_counter()
            SAVES[name](x, folder)
            elapsed = time.perf_counter() - start
            if run:
                rates[name].append(x.shape[0] / elapsed)
    return rates


def check_pixels(x: torch.Tensor, root: Path) -> None:
    """Every method's files decode to the recipe's pixels (the recipe truncates, tensorpng
    rounds: at most one step apart)."""
    count = x.shape[0]
    for slot in range(1, len(SAVES)):
        for i in (0, count // 2, count - 1):
            ours = np.asarray(Image.open(root / f"{slot}" / f"{i:04d}.png"))
            theirs = np.asarray(Image.open(root / "0" / f"{i:04d}.png"))
            assert ours.shape == theirs.shape, (slot, i)
            assert int(np.abs(ours.astype(int) - theirs).max()) <= 1, (slot, i)


def pillow_encode(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


ENCODERS: dict[str, Callable[[np.ndarray], object]] = {
    "tensorpng.encode": tensorpng.encode,
    "cv2.imencode": lambda image: cv2.imencode(".png", image),
    "Pillow": pillow_encode,
}


def time_encodes(image: np.ndarray, calls: int, repeat: int) -> dict[str, list[float]]:
    """Microseconds per call of every encoder in ``ENCODERS``, ``repeat`` interleaved runs."""
    times: dict[str, list[float]] = {name: [] for name in ENCODERS}
    names = list(ENCODERS)
    for run in range(repeat + 1):
        order = names[run % len(names) :] + names[: run % len(names)]
        for name in order:
            encode = ENCODERS[name]
            start = time.perf_counter()
            for _ in range(calls):
                encode(image)
            elapsed = time.perf_counter() - start
            if run:
                times[name].append(elapsed / calls * 1e6)
    return times


def second_core() -> float:
    """How much a second thread adds to zlib (which releases the GIL) on this machine now:
    2.0 when a second core is free, 1.0 when other work holds it (the pipeline's helpers then
    cannot help)."""
    data = np.random.default_rng(0).integers(0, 64, 1 << 21, dtype=np.uint8).tobytes()

    def work() -> None:
        for _ in range(4):
            zlib.compress(data, 6)

    start = time.perf_counter()
    work()
    one = time.perf_counter() - start
    threads = [threading.Thread(target=work) for _ in range(2)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return 2 * one / (time.perf_counter() - start)


def spread(values: list[float], digits: int = 0) -> str:
    return f"{statistics.median(values):,.{digits}f} ({min(values):,.{digits}f}..{max(values):,.{digits}f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--count", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--calls", type=int, default=1000, help="encode calls per timed run")
    parser.add_argument("--dir", default=None, help="where the folders go (/dev/shm recommended)")
    parser.add_argument("--skip-saves", action="store_true")
    parser.add_argument("--skip-encodes", action="store_true")
    args = parser.parse_args()

    x = cifar_like(args.count)
    print(f"a second thread gives {second_core():.2f}x (2.00: a free second core)")
    if not args.skip_saves:
        with tempfile.TemporaryDirectory(dir=args.dir) as temp:
            root = Path(temp)
            rates = time_saves(x, root, args.repeat)
            check_pixels(x, root)
        base = statistics.median(rates["recipe (Pillow default)"])
        print(f"save: {args.count} float32 images of 3x32x32, {args.repeat} runs, img/s median (min..max)")
        for name, values in rates.items():
            print(f"  {name:26s} {spread(values):>28s}  {statistics.median(values) / base:5.2f}x recipe")
    if not args.skip_encodes:
        for size in (32, 64):
            image = np.ascontiguousarray(
                (x[:1].permute(0, 2, 3, 1).numpy()[0] * 255).astype(np.uint8)
                if size == 32
                else photo_crops(1, 64, seed=1)[0]
            )
            times = time_encodes(image, args.calls, args.repeat)
            base = statistics.median(times["cv2.imencode"])
            print(f"encode {size}x{size}x3 uint8, us per call median (min..max)")
            for name, values in times.items():
                print(f"  {name:26s} {spread(values, 1):>28s}  {statistics.median(values) / base:5.2f}x cv2")


if __name__ == "__main__":
    main()
