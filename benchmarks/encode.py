"""Benchmark tensorpng's CPU encoders against fpng, Pillow and OpenCV, on one core.

Run with ``python benchmarks/encode.py [--quick] [--sets photos,...] [--clock cpu]``
(``--clock cpu`` times each round by this thread's CPU time, steadier on a busy machine; every
ratio to fpng is also given per round). Encoders, all timed through their public
call (``tensorpng.encode`` with its real per-call overhead), interleaved in every round so that
a machine that slows down or speeds up affects them alike:

* ``native``: tensorpng with the C extension (``TENSORPNG_CPU_ENCODER=auto``);
* ``native png``: the same encoder through ``tensorpng.png.encode_png``, without
  ``tensorpng.encode``'s per-call work (option parsing, the min/max and JSON of the metadata
  record): what the encoder itself does;
* ``numpy+isal``: tensorpng's NumPy filters + ISA-L (``TENSORPNG_CPU_ENCODER=numpy``);
* ``fpng`` (the ``fpng`` package; 8-bit RGB/RGBA only);
* Pillow at its default level (6) and at level 1;
* OpenCV ``imencode`` with its defaults (RGB turned into BGR before timing).

Image sets: five real photos (scikit-image), sixteen 256x256 crops of them, an RGBA photo, a
512x512 segmentation mask, and 16-bit gray (camera x 257, a smooth field). For every set and
encoder it prints MB/s of raw pixels (median over rounds, with the spread: lowest and highest
round) and the output size as % of raw; then native's ratios and the issue's targets, the
per-call time on a 64x64 image, and draws ``docs/encode-speed.png``.
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import cv2
import fpng
import imagecodecs
import skimage.data
from PIL import Image

import tensorpng
from photos import photo_crops
from tensorpng import _cpu_codec
from tensorpng.png import encode_png

PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry")
ROOT = Path(__file__).resolve().parents[1]
Encoder = Callable[[np.ndarray], bytes]


def _with_path(path: str) -> Encoder:
    def encode(image: np.ndarray) -> bytes:
        os.environ[_cpu_codec.ENV] = path
        return tensorpng.encode(image)

    return encode


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


def _bgr(image: np.ndarray) -> np.ndarray:
    if image.ndim == 3 and image.shape[2] == 3:
        return np.ascontiguousarray(image[..., ::-1])
    if image.ndim == 3 and image.shape[2] == 4:
        return np.ascontiguousarray(image[..., [2, 1, 0, 3]])
    return image


def _native_alone(image: np.ndarray) -> bytes:
    os.environ[_cpu_codec.ENV] = "auto"
    return encode_png(image)


ENCODERS: dict[str, Encoder] = {
    "native": _with_path("auto"),
    "native png": _native_alone,
    "numpy+isal": _with_path("numpy"),
    "fpng": fpng.from_ndarray,
    "pillow 6": _pillow(6),
    "pillow 1": _pillow(1),
    "opencv": _opencv,
}


def _mask(rng: np.random.Generator) -> np.ndarray:
    mask = np.zeros((512, 512), dtype=np.uint8)
    for _ in range(60):
        top, left = rng.integers(0, 480, size=2)
        height, width = rng.integers(16, 160, size=2)
        mask[top : top + height, left : left + width] = rng.integers(0, 21)
    return mask


SETS = ("photos", "crops 256", "rgba", "mask", "gray16")


def image_sets(names: list[str]) -> dict[str, list[np.ndarray]]:
    rng = np.random.default_rng(0)
    photos = [np.ascontiguousarray(getattr(skimage.data, name)()) for name in PHOTOS]
    astronaut = photos[0]
    alpha = (np.add.outer(np.arange(512), np.arange(512)) // 4 % 256).astype(np.uint8)
    y, x = np.mgrid[0:512, 0:512]
    smooth = (32767 + 30000 * np.cos(x / 40) * np.sin(y / 55)).astype(np.uint16)
    makers = {
        "photos": lambda: photos,
        "crops 256": lambda: list(photo_crops(16, 256)),
        "rgba": lambda: [np.dstack([astronaut, alpha])],
        "mask": lambda: [_mask(rng)],
        "gray16": lambda: [skimage.data.camera().astype(np.uint16) * 257, smooth],
    }
    return {name: makers[name]() for name in names}


def supported(label: str, images: list[np.ndarray]) -> bool:
    if label == "fpng":  # 8-bit RGB / RGBA only
        return all(
            image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] in (3, 4) for image in images
        )
    if label.startswith("pillow"):  # Pillow writes no 16-bit RGB
        return all(image.dtype == np.uint8 or image.ndim == 2 for image in images)
    return True


def measure(
    images: list[np.ndarray], rounds: int, clock: Callable[[], float] = time.perf_counter
) -> dict[str, tuple[list[float], int]]:
    """Per encoder: the seconds of each round (every image once), and the total output size.
    ``clock``: wall time, or this thread's CPU time (steadier on a busy machine; every encoder
    here works on the calling thread for these sizes)."""
    inputs = {label: [_bgr(image) for image in images] if label == "opencv" else images for label in ENCODERS}
    labels = [label for label in ENCODERS if supported(label, images)]
    sizes = {label: sum(len(ENCODERS[label](image)) for image in inputs[label]) for label in labels}
    for image in images:  # never benchmark a broken encoder
        for label in ("native", "native png", "numpy+isal"):
            decoded = np.asarray(imagecodecs.png_decode(ENCODERS[label](image)))
            assert np.array_equal(decoded, image), label
    repeats = {}
    for label in labels:  # repeat fast encoders within a round to about 30 ms
        t0 = time.perf_counter()
        for image in inputs[label]:
            ENCODERS[label](image)
        repeats[label] = max(1, int(0.03 / max(time.perf_counter() - t0, 1e-6)))
    seconds: dict[str, list[float]] = {label: [] for label in labels}
    for _ in range(rounds):
        for label in labels:
            encode, count = ENCODERS[label], repeats[label]
            t0 = clock()
            for _ in range(count):
                for image in inputs[label]:
                    encode(image)
            seconds[label].append((clock() - t0) / count)
    return {label: (seconds[label], sizes[label]) for label in labels}


def per_call(rounds: int) -> dict[str, float]:
    """Median microseconds per encode of a 64x64 RGB crop."""
    crop = np.ascontiguousarray(skimage.data.astronaut()[200:264, 200:264])
    calls = {"native": crop, "native png": crop, "numpy+isal": crop, "fpng": crop, "opencv": _bgr(crop)}
    samples: dict[str, list[float]] = {label: [] for label in calls}
    for _ in range(rounds):
        for label, image in calls.items():
            t0 = time.perf_counter()
            for _ in range(200):
                ENCODERS[label](image)
            samples[label].append((time.perf_counter() - t0) / 200 * 1e6)
    return {label: statistics.median(values) for label, values in samples.items()}


def draw_chart(table: dict[str, dict[str, tuple[float, float]]], path: Path) -> None:
    """A bar chart, drawn with OpenCV into a NumPy raster and written by tensorpng: MB/s (log
    scale) and size (% of raw) per encoder and image set."""
    labels = list(ENCODERS)
    colors = [
        (31, 119, 180),
        (120, 170, 210),
        (255, 127, 14),
        (44, 160, 44),
        (214, 39, 40),
        (148, 103, 189),
        (140, 86, 75),
    ]
    sets = list(table)
    width, panel = 1200, 330
    image = np.full((2 * panel + 110, width, 3), 255, dtype=np.uint8)
    font = cv2.FONT_HERSHEY_SIMPLEX
    group = (width - 120) / len(sets)
    bar = group * 0.8 / len(labels)
    for row, (title, index, top_value) in enumerate(
        (("MB/s of raw pixels, one core (log scale)", 0, 5000.0), ("output size, % of raw", 1, 100.0))
    ):
        y0, y1 = 40 + row * panel, 40 + row * panel + panel - 70
        cv2.putText(image, title, (60, y0 - 12), font, 0.6, (0, 0, 0), 1, cv2.LINE_AA)
        cv2.line(image, (60, y1), (width - 40, y1), (0, 0, 0), 1)
        for s, name in enumerate(sets):
            x0 = 70 + s * group
            if row == 1:
                cv2.putText(image, name, (int(x0), y1 + 22), font, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
            for k, label in enumerate(labels):
                if label not in table[name]:
                    continue
                value = table[name][label][index]
                if index == 0:
                    fraction = np.log10(max(value, 1.0)) / np.log10(top_value)
                else:
                    fraction = value / top_value
                left = int(x0 + k * bar)
                top = int(y1 - fraction * (y1 - y0 - 10))
                cv2.rectangle(image, (left, top), (int(left + bar - 2), y1), colors[k], -1)
                text = f"{value:.0f}"
                cv2.putText(image, text, (left, top - 4), font, 0.33, (0, 0, 0), 1, cv2.LINE_AA)
    for k, label in enumerate(labels):  # legend
        x = 60 + k * 160
        y = 2 * panel + 80
        cv2.rectangle(image, (x, y - 12), (x + 14, y + 2), colors[k], -1)
        cv2.putText(image, label, (x + 20, y), font, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensorpng.save(image, path, overwrite=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=9, help="interleaved rounds (median over them)")
    parser.add_argument("--quick", action="store_true", help="3 rounds, for a smoke test")
    parser.add_argument("--chart", type=Path, default=ROOT / "docs" / "encode-speed.png")
    parser.add_argument(
        "--sets",
        default=",".join(SETS),
        help=f"comma-separated image sets (default all: {','.join(SETS)}); the targets and the chart "
        "need them all",
    )
    parser.add_argument(
        "--clock",
        choices=("wall", "cpu"),
        default="wall",
        help="time rounds by the wall clock, or by this thread's CPU time (for a busy machine)",
    )
    parser.add_argument("--no-per-call", action="store_true", help="skip the 64x64 per-call timing")
    args = parser.parse_args()
    rounds = 3 if args.quick else args.rounds
    sets = [name.strip() for name in args.sets.split(",") if name.strip()]
    if unknown := set(sets) - set(SETS):
        parser.error(f"unknown sets {sorted(unknown)}; choose from {', '.join(SETS)}")
    cv2.setNumThreads(1)
    os.environ[_cpu_codec.ENV] = "auto"
    print(f"tensorpng encode benchmark, one thread, {os.cpu_count()} CPUs; {rounds} interleaved rounds")
    for line in _cpu_codec.describe():
        print(f"  {line}")
    print("cells: MB/s of raw pixels, median [lowest-highest round] / output size as % of raw\n")
    table: dict[str, dict[str, tuple[float, float]]] = {}
    rounds_by_label: dict[str, dict[str, list[float]]] = {}
    print(f"{'set':<11}" + "".join(f"{label:>24}" for label in ENCODERS))
    for name, images in image_sets(sets).items():
        raw = sum(image.nbytes for image in images)
        results = measure(images, rounds, time.thread_time if args.clock == "cpu" else time.perf_counter)
        rounds_by_label[name] = {label: seconds for label, (seconds, _) in results.items()}
        table[name] = {}
        cells = []
        for label in ENCODERS:
            if label not in results:
                cells.append("n/a")
                continue
            seconds, size = results[label]
            rate = raw / statistics.median(seconds) / 1e6
            low, high = raw / max(seconds) / 1e6, raw / min(seconds) / 1e6
            table[name][label] = (rate, 100 * size / raw)
            cells.append(f"{rate:.0f} [{low:.0f}-{high:.0f}] / {100 * size / raw:.1f}%")
        print(f"{name:<11}" + "".join(f"{cell:>24}" for cell in cells))

    print("\nnative against the others: speed ratio (x faster) / size ratio (native size / theirs)")
    print(f"{'set':<11}" + "".join(f"{label:>16}" for label in ENCODERS if label != "native"))
    for name, row in table.items():
        native_rate, native_size = row["native"]
        cells = [
            f"{native_rate / row[label][0]:.2f}x / {native_size / row[label][1]:.3f}"
            if label in row
            else "n/a"
            for label in ENCODERS
            if label != "native"
        ]
        print(f"{name:<11}" + "".join(f"{cell:>16}" for cell in cells))

    print("\nspeed ratio to fpng within each round: median [lowest-highest]")
    for name, by_label in rounds_by_label.items():
        if "fpng" in by_label:
            cells = []
            for label in ("native", "native png"):
                ratios = [f / n for n, f in zip(by_label[label], by_label["fpng"], strict=True)]
                cells.append(
                    f"{label} {statistics.median(ratios):.2f}x [{min(ratios):.2f}-{max(ratios):.2f}]"
                )
            print(f"  {name:<11}" + ", ".join(cells))

    calls = {} if args.no_per_call else per_call(rounds)
    if calls:
        print(
            "\nper call, 64x64 RGB: " + ", ".join(f"{label} {value:.0f} us" for label, value in calls.items())
        )
    if set(sets) != set(SETS) or not calls:
        return
    photos, gray16 = table["photos"], table["gray16"]
    checks = [
        ("photos: >= 1.3x fpng", photos["native"][0] / photos["fpng"][0], 1.3, ">="),
        (
            "photos, encoder alone (encode_png): >= 1.3x fpng",
            photos["native png"][0] / photos["fpng"][0],
            1.3,
            ">=",
        ),
        ("photos: >= 60x Pillow default", photos["native"][0] / photos["pillow 6"][0], 60, ">="),
        ("photos: size <= 1.10x Pillow default", photos["native"][1] / photos["pillow 6"][1], 1.10, "<="),
        ("gray16: size <= 1.02x Pillow default", gray16["native"][1] / gray16["pillow 6"][1], 1.02, "<="),
        ("gray16: > 10x Pillow default", gray16["native"][0] / gray16["pillow 6"][0], 10, ">="),
        ("64x64: per call no slower than OpenCV", calls["opencv"] / calls["native"], 1.0, ">="),
    ]
    print("\ntargets (issue 16):")
    for text, value, bound, sense in checks:
        ok = value >= bound if sense == ">=" else value <= bound
        print(f"  [{'met' if ok else 'MISSED'}] {text}: {value:.3f}")
    draw_chart(table, args.chart)
    print(f"\nchart: {args.chart}")


if __name__ == "__main__":
    main()
