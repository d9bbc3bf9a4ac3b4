"""Encoding a 300-frame 3 x 256 x 256 clip: tensorpng's APNG vs Pillow's APNG vs imageio's GIF.

Two clips of 300 frames, 256 x 256 RGB uint8, from scikit-image's photos (fixed):

- ``pan``: a camera panning across a photo, one pixel a frame: every pixel changes in every
  frame (the changed rectangle is the whole frame).
- ``sprite``: a still photo with a 48 x 48 patch moving over it: a small rectangle changes.

Compared, in one run, on the same ``T x H x W x 3`` uint8 frames, each writing one file:

- ``tensorpng``: ``tensorpng.save_animation(frames, path, fps=10)`` (``compression="fast"``).
- ``tensorpng float``: the same clip as a ``T x 3 x H x W`` float32 tensor in [0, 1] (conversion
  included).
- ``Writer.add_frame``: the uint8 frames one call each, on the Writer's workers (until ``close``).
- ``Pillow APNG``: ``Image.save(path, save_all=True, append_images=..., duration=100, loop=0)``
  (default ``compress_level=6``), and with ``compress_level=1``.
- ``imageio GIF``: ``imageio.v3.imwrite(path, frames, extension=".gif", duration=100, loop=0)``
  (256 colours a frame: lossy; its mean absolute error is shown).

Before timing, every frame of tensorpng's and Pillow's files is decoded by Pillow and compared
with the input. The table shows the median seconds of ``--repeat`` runs, frames/s, the file
size and the ratios against Pillow's APNG writer.

    python benchmarks/animation.py [--repeat 3] [--frames 300] [--size 256]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import torch
from PIL import Image, ImageSequence

import tensorpng


def pan_clip(frames: int, size: int) -> np.ndarray:
    import skimage.data

    photo = skimage.data.astronaut()  # 512 x 512 x 3
    rows = photo.shape[0] - size
    return np.stack(
        [photo[(t // 2) % rows : (t // 2) % rows + size, t % rows : t % rows + size] for t in range(frames)]
    )


def sprite_clip(frames: int, size: int) -> np.ndarray:
    import skimage.data

    background = skimage.data.coffee()[:size, :size]
    patch = skimage.data.chelsea()[100:148, 150:198]
    clip = np.repeat(background[None], frames, axis=0)
    for t in range(frames):
        y, x = (3 * t) % (size - 48), (5 * t) % (size - 48)
        clip[t, y : y + 48, x : x + 48] = patch
    return clip


def write_tensorpng(frames: np.ndarray, path: Path) -> None:
    tensorpng.save_animation(frames, path, fps=10)


def write_frames(frames: np.ndarray, path: Path) -> None:
    """One ``Writer.add_frame`` per frame, as from a training loop (finished at close)."""
    with tensorpng.Writer(path.parent) as writer:
        for frame in frames:
            writer.add_frame(frame, path.name, layout="HWC", fps=10)


def write_pillow(frames: np.ndarray, path: Path, level: int = 6) -> None:
    images = [Image.fromarray(frame) for frame in frames]
    images[0].save(
        path,
        format="PNG",
        save_all=True,
        append_images=images[1:],
        duration=100,
        loop=0,
        compress_level=level,
    )


def write_gif(frames: np.ndarray, path: Path) -> None:
    iio.imwrite(path, frames, extension=".gif", duration=100, loop=0)


def read_frames(path: Path) -> np.ndarray:
    return np.stack([np.asarray(frame.convert("RGB")) for frame in ImageSequence.Iterator(Image.open(path))])


def median_seconds(
    write: Callable[[Path], None], folder: Path, suffix: str, repeat: int
) -> tuple[float, int]:
    times, size = [], 0
    for attempt in range(repeat):
        path = folder / f"out{attempt}{suffix}"
        started = time.perf_counter()
        write(path)
        times.append(time.perf_counter() - started)
        size = path.stat().st_size
        path.unlink()
    return statistics.median(times), size


def run(name: str, clip: np.ndarray, repeat: int) -> None:
    tensor = torch.from_numpy(clip).permute(0, 3, 1, 2).float() / 255
    writers: dict[str, tuple[Callable[[Path], None], str]] = {
        "tensorpng": (lambda p: write_tensorpng(clip, p), ".png"),
        "tensorpng float": (lambda p: tensorpng.save_animation(tensor, p, fps=10), ".png"),
        "Writer.add_frame": (lambda p: write_frames(clip, p), ".png"),
        "Pillow APNG": (lambda p: write_pillow(clip, p), ".png"),
        "Pillow APNG, level 1": (lambda p: write_pillow(clip, p, 1), ".png"),
        "imageio GIF": (lambda p: write_gif(clip, p), ".gif"),
    }
    with tempfile.TemporaryDirectory() as directory:
        folder = Path(directory)
        gif_error = 0.0
        for label, (write, suffix) in writers.items():  # correctness first
            path = folder / f"check{suffix}"
            write(path)
            decoded = read_frames(path)
            assert decoded.shape == clip.shape, (label, decoded.shape)
            if suffix == ".gif":
                gif_error = float(np.abs(decoded.astype(np.int16) - clip).mean())
            else:
                assert np.array_equal(decoded, clip), f"{label}: frames differ"
            path.unlink()
        results = {label: median_seconds(w, folder, s, repeat) for label, (w, s) in writers.items()}
    base_time, base_size = results["Pillow APNG"]
    raw = clip.nbytes
    print(
        f"\n{name}: {clip.shape[0]} frames of {clip.shape[1]} x {clip.shape[2]} x 3 ({raw / 2**20:.1f} MiB raw)"
    )
    print(
        f"{'writer':<22} {'median s':>9} {'frames/s':>9} {'size KiB':>9} {'vs Pillow time':>15} {'size ratio':>11}"
    )
    for label, (seconds, size) in results.items():
        print(
            f"{label:<22} {seconds:>9.3f} {clip.shape[0] / seconds:>9.0f} {size / 1024:>9.0f}"
            f" {base_time / seconds:>14.2f}x {size / base_size:>10.2f}x"
        )
    print(f"(GIF is lossy: mean absolute error {gif_error:.2f} of 255)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--frames", type=int, default=300)
    parser.add_argument("--size", type=int, default=256)
    args = parser.parse_args()
    print(
        f"tensorpng {tensorpng.__version__}, deflate: {tensorpng.png.deflate_backend()}, median of {args.repeat}"
    )
    run("pan", pan_clip(args.frames, args.size), args.repeat)
    run("sprite", sprite_clip(args.frames, args.size), args.repeat)


if __name__ == "__main__":
    main()
