"""Benchmark tensorpng's PNG encoder against Pillow, OpenCV and imagecodecs.

Run with ``python benchmarks/encode.py``. For every image it prints the single-thread
throughput in MB/s of raw pixel bytes (median of several runs) and the output size as a
percentage of the raw bytes, for:

* ours ``compression="fast"`` and ``compression="small"``,
* Pillow ``compress_level=6`` (its default) and ``compress_level=1``,
* OpenCV ``cv2.imencode(".png", ...)`` with its default parameters (RGB is turned into BGR
  before timing starts),
* imagecodecs ``png_encode`` with its default parameters.

Then it prints ours ("fast") against Pillow level 6 and OpenCV (throughput ratios) and the
size ratio ours/Pillow-6, with a summary row over the four photos (total bytes over total
time), the targets the project sets, and a 2-thread vs 1-thread scaling figure for ours.
"""

from __future__ import annotations

import io
import os
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import cv2
import imagecodecs
import skimage.data
from PIL import Image

from photos import thread_scaling
from tensorpng.png import deflate_backend, encode_png

PHOTOS = ("astronaut", "coffee", "chelsea", "camera")
# Timing: rounds in which every encoder runs for about ROUND_SECONDS (at least once), about
# IMAGE_SECONDS in all per image, between MIN_ROUNDS and MAX_ROUNDS rounds.
ROUND_SECONDS = 0.02
IMAGE_SECONDS = 2.5
MIN_ROUNDS = 7
MAX_ROUNDS = 41

Encoder = Callable[[np.ndarray], bytes]


def _pillow(level: int) -> Encoder:
    def encode(image: np.ndarray) -> bytes:
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, format="PNG", compress_level=level)
        return buffer.getvalue()

    return encode


def _opencv(image: np.ndarray) -> bytes:
    ok, encoded = cv2.imencode(".png", image)
    assert ok
    return encoded.tobytes()


def _to_bgr(image: np.ndarray) -> np.ndarray:
    """RGB(A) to BGR(A) for OpenCV, done once outside the timed region."""
    if image.ndim == 3 and image.shape[2] == 3:
        return np.ascontiguousarray(image[..., ::-1])
    if image.ndim == 3 and image.shape[2] == 4:
        return np.ascontiguousarray(image[..., [2, 1, 0, 3]])
    return image


ENCODERS: dict[str, Encoder] = {
    "ours fast": lambda image: encode_png(image, compression="fast"),
    "ours small": lambda image: encode_png(image, compression="small"),
    "pillow 6": _pillow(6),
    "pillow 1": _pillow(1),
    "opencv": _opencv,
    "imagecodecs": lambda image: bytes(imagecodecs.png_encode(image)),
}


@dataclass
class Result:
    seconds: float  # median time of one encode
    size: int  # encoded bytes


def _segmentation_mask(rng: np.random.Generator) -> np.ndarray:
    """512x512 labels 0..20 in blocky regions, like a semantic segmentation map."""
    mask = np.zeros((512, 512), dtype=np.uint8)
    for _ in range(60):
        top, left = rng.integers(0, 480, size=2)
        height, width = rng.integers(16, 160, size=2)
        mask[top : top + height, left : left + width] = rng.integers(0, 21)
    return mask


def images() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    out = {name: np.ascontiguousarray(getattr(skimage.data, name)()) for name in PHOTOS}
    out["mask"] = _segmentation_mask(rng)
    out["noise"] = rng.integers(0, 256, size=(512, 512, 3), dtype=np.uint8)
    camera = skimage.data.camera().astype(np.uint16)
    out["camera16"] = camera * 256 + rng.integers(0, 256, size=camera.shape, dtype=np.uint16)
    return out


def measure(encoders: dict[str, Encoder], inputs: dict[str, np.ndarray]) -> dict[str, Result]:
    """Median single-thread time of every encoder on its input, measured round-robin.

    Every round times each encoder in turn (repeated to fill ``ROUND_SECONDS`` when it is
    fast), so that a machine that slows down or speeds up during the run (other processes,
    clock changes) affects every encoder alike and the ratios stay meaningful.
    """
    sizes, repeats = {}, {}
    for label, encode in encoders.items():
        encode(inputs[label])  # warm up (imports, first-call allocations)
        t0 = time.perf_counter()
        sizes[label] = len(encode(inputs[label]))
        repeats[label] = max(1, int(ROUND_SECONDS / max(time.perf_counter() - t0, 1e-6)))
    per_round = sum(1 for _ in encoders) * ROUND_SECONDS
    rounds = min(MAX_ROUNDS, max(MIN_ROUNDS, int(IMAGE_SECONDS / per_round)))
    samples: dict[str, list[float]] = {label: [] for label in encoders}
    for _ in range(rounds):
        for label, encode in encoders.items():
            image, count = inputs[label], repeats[label]
            t0 = time.perf_counter()
            for _ in range(count):
                encode(image)
            samples[label].append((time.perf_counter() - t0) / count)
    return {label: Result(statistics.median(samples[label]), sizes[label]) for label in encoders}


def _check_round_trip(name: str, image: np.ndarray) -> None:
    """Guard against benchmarking a broken encoder: both of ours must decode exactly."""
    for compression in ("fast", "small"):
        decoded = np.asarray(imagecodecs.png_decode(encode_png(image, compression=compression)))
        if decoded.dtype != image.dtype or not np.array_equal(decoded, image):
            raise SystemExit(f"{name}: compression={compression!r} does not round-trip")


def main() -> None:
    cv2.setNumThreads(1)
    data = images()
    results: dict[str, dict[str, Result]] = {}
    for name, image in data.items():
        _check_round_trip(name, image)
        bgr = _to_bgr(image)
        results[name] = measure(ENCODERS, {label: bgr if label == "opencv" else image for label in ENCODERS})

    cpu = os.cpu_count()
    print(f"tensorpng PNG encode benchmark: deflate backend {deflate_backend()!r}, {cpu} CPUs, single thread")
    print("cells: MB/s of raw pixel bytes (median) / output size as % of raw\n")
    label_width = 20
    header = f"{'image':<{label_width}}" + "".join(f"{label:>18}" for label in ENCODERS)
    print(header)
    print("-" * len(header))
    for name, row in results.items():
        image = data[name]
        shape = "x".join(map(str, image.shape))
        cells = []
        for result in row.values():
            rate = image.nbytes / result.seconds / 1e6
            cells.append(f"{rate:9.1f} {100 * result.size / image.nbytes:6.1f}%")
        print(f"{name + ' ' + shape:<{label_width}}"[:label_width] + "".join(f"{c:>18}" for c in cells))
    photo_bytes = sum(data[name].nbytes for name in PHOTOS)
    cells = []
    for label in ENCODERS:
        seconds = sum(results[name][label].seconds for name in PHOTOS)
        size = sum(results[name][label].size for name in PHOTOS)
        cells.append(f"{photo_bytes / seconds / 1e6:9.1f} {100 * size / photo_bytes:6.1f}%")
    print(f"{'PHOTOS (all)':<{label_width}}" + "".join(f"{c:>18}" for c in cells))

    print("\nours fast vs others: throughput ratios (higher is better), size ratio (lower is better)")
    print(f"{'image':<14}{'x pillow 6':>12}{'x opencv':>12}{'x pillow 1':>12}{'size/pil6':>12}")

    def ratios(names: tuple[str, ...]) -> tuple[float, float, float, float]:
        def total_time(label: str) -> float:
            return sum(results[n][label].seconds for n in names)

        def total_size(label: str) -> int:
            return sum(results[n][label].size for n in names)

        ours = total_time("ours fast")
        return (
            total_time("pillow 6") / ours,
            total_time("opencv") / ours,
            total_time("pillow 1") / ours,
            total_size("ours fast") / total_size("pillow 6"),
        )

    for name in results:
        p6, cv, p1, size = ratios((name,))
        print(f"{name:<14}{p6:>11.1f}x{cv:>11.1f}x{p1:>11.1f}x{size:>12.3f}")
    p6, cv, p1, size = ratios(PHOTOS)
    print(f"{'PHOTOS (all)':<14}{p6:>11.1f}x{cv:>11.1f}x{p1:>11.1f}x{size:>12.3f}")
    mask_p6 = ratios(("mask",))[0]

    print("\ntargets:")
    checks = [
        ("photos: >= 25x pillow 6 throughput", p6 >= 25, f"{p6:.2f}x"),
        ("photos: >= 3x opencv throughput", cv >= 3, f"{cv:.2f}x"),
        ("photos: size <= 1.10x pillow 6", size <= 1.10, f"{size:.3f}x"),
        ("mask: >= 10x pillow 6 throughput", mask_p6 >= 10, f"{mask_p6:.2f}x"),
    ]
    for text, ok, value in checks:
        print(f"  [{'met' if ok else 'MISSED'}] {text}: {value}")

    one, two = thread_scaling(data["astronaut"])
    print(
        f"\nthread scaling, ours fast on astronaut (medians of 5 alternating runs): 1 thread "
        f"{one:.0f} MB/s, 2 threads {two:.0f} MB/s -> {two / one:.2f}x (machine has {cpu} CPUs)"
    )


if __name__ == "__main__":
    main()
