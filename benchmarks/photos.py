"""Benchmark data shared by the scripts here: crops of scikit-image's bundled photos."""

from __future__ import annotations

import statistics
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

import tensorpng
from tensorpng.png import encode_png

PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry", "hubble_deep_field", "cat")


def photo_crops(count: int, size: int, seed: int = 0, names: tuple[str, ...] = PHOTOS) -> np.ndarray:
    """``count x size x size x 3`` uint8: random crops of scikit-image's RGB photos (photos
    smaller than ``size`` are scaled up first)."""
    import skimage.data
    from skimage.transform import resize

    rng = np.random.default_rng(seed)
    photos = []
    for name in names:
        photo = getattr(skimage.data, name)()
        if min(photo.shape[:2]) < size:
            scale = size / min(photo.shape[:2])
            shape = (int(photo.shape[0] * scale) + 1, int(photo.shape[1] * scale) + 1)
            photo = (resize(photo, shape) * 255).astype(np.uint8)
        photos.append(photo)
    crops = []
    for _ in range(count):
        photo = photos[rng.integers(len(photos))]
        top = rng.integers(0, photo.shape[0] - size + 1)
        left = rng.integers(0, photo.shape[1] - size + 1)
        crops.append(photo[top : top + size, left : left + size])
    return np.stack(crops)


def imagenet_batch(crops: np.ndarray, device: str | torch.device = "cpu") -> torch.Tensor:
    """``ToTensor`` then ``Normalize(IMAGENET_MEAN, IMAGENET_STD)`` in float32: N x 3 x H x W."""
    mean = torch.tensor(tensorpng.IMAGENET_MEAN, dtype=torch.float32, device=device).view(1, 3, 1, 1)
    std = torch.tensor(tensorpng.IMAGENET_STD, dtype=torch.float32, device=device).view(1, 3, 1, 1)
    pixels = torch.from_numpy(crops).to(device).permute(0, 3, 1, 2).contiguous().to(torch.float32).div(255)
    return pixels.sub(mean).div(std)


def thread_scaling(image: np.ndarray, jobs: int = 24, repeats: int = 5) -> tuple[float, float]:
    """Throughput (MB/s) of ours "fast" on ``jobs`` encodes with 1 thread and with 2 threads.

    The two runs alternate ``repeats`` times and the medians are returned, so that a change
    in machine load affects both alike.
    """
    rates: dict[int, list[float]] = {1: [], 2: []}
    with ThreadPoolExecutor(2) as pool:
        list(pool.map(encode_png, [image] * 2))  # start the threads
        for _ in range(repeats):
            t0 = time.perf_counter()
            for _ in range(jobs):
                encode_png(image)
            rates[1].append(image.nbytes * jobs / (time.perf_counter() - t0) / 1e6)
            t0 = time.perf_counter()
            list(pool.map(encode_png, [image] * jobs))
            rates[2].append(image.nbytes * jobs / (time.perf_counter() - t0) / 1e6)
    return statistics.median(rates[1]), statistics.median(rates[2])


def deflate_scaling(crops: np.ndarray, repeats: int = 5) -> tuple[float, float]:
    """MB/s of ISA-L deflating the filtered scanlines of ``crops`` on 1 and on 2 threads.

    The deflate holds no GIL, so the ratio shows how much of a second core the machine gives
    right now (alternating runs, medians).
    """
    from tensorpng.png import filter_png, finish_png

    filtered = [filter_png(crop) for crop in crops]
    raw = sum(f.scanlines.nbytes for f in filtered)
    halves = [filtered[0::2], filtered[1::2]]
    rates: dict[int, list[float]] = {1: [], 2: []}
    with ThreadPoolExecutor(2) as pool:
        for _ in range(repeats):
            t0 = time.perf_counter()
            for item in filtered:
                finish_png(item)
            rates[1].append(raw / (time.perf_counter() - t0) / 1e6)
            t0 = time.perf_counter()
            list(pool.map(lambda half: [finish_png(item) for item in half], halves))
            rates[2].append(raw / (time.perf_counter() - t0) / 1e6)
    return statistics.median(rates[1]), statistics.median(rates[2])
