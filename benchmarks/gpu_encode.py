"""PNG encoding of a normalized CUDA batch: the torch (GPU) encoder against the CPU paths.

A 64x3x512x512 batch of ImageNet-normalized real photos (crops of scikit-image's bundled
photos) on the device. Timed in one run, medians of several repetitions:

- ``gpu``: tensorpng's device path, from the float batch to PNG bytes ready to write
  (conversion, filter, Huffman coding, packing on the GPU; only compressed bytes copied).
- ``cpu``: conversion on the GPU, copy of uint8 samples, tensorpng's CPU encoder on all cores.
- ``recipe``: the popular recipe per image (denormalize, clamp, x255, uint8, HWC, ``.cpu()``,
  Pillow's default PNG) on a few images, scaled to the batch.

Printed: raw GB/s (pixels in), output size as % of raw, and ratios. Targets (issue 6): the
GPU path at least 10 GB/s of raw pixels on an H100/H200, output at most 1.10x the CPU
encoder's on photos and at most 2x on masks.

    python benchmarks/gpu_encode.py                 # needs CUDA
    python benchmarks/gpu_encode.py --device cpu --batch 4 --size 128   # a smoke run anywhere
"""

from __future__ import annotations

import argparse
import io
import statistics
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
from PIL import Image

import tensorpng
from photos import imagenet_batch, photo_crops
from tensorpng import gpu_encode
from tensorpng._options import parse_image_options
from tensorpng._pipeline import default_workers
from tensorpng.convert import prepare
from tensorpng.png import encode_png

PHOTOS_512 = (
    "astronaut",
    "coffee",
    "chelsea",
    "rocket",
    "immunohistochemistry",
    "hubble_deep_field",
    "retina",
)


def mask_batch(count: int, size: int) -> np.ndarray:
    rng = np.random.default_rng(1)
    masks = np.zeros((count, size, size), np.uint8)
    for mask in masks:
        for _ in range(30):
            top, left = rng.integers(0, size, 2)
            mask[top : top + rng.integers(8, size // 2), left : left + rng.integers(8, size // 2)] = (
                rng.integers(0, 21)
            )
    return masks[..., None]


def timed(function, repeat: int, sync) -> float:  # type: ignore[no-untyped-def]
    times = []
    for _ in range(repeat):
        sync()
        start = time.perf_counter()
        function()
        sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    device = torch.device(args.device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    pixels = photo_crops(args.batch, args.size, names=PHOTOS_512)
    mean = torch.tensor(tensorpng.IMAGENET_MEAN, device=device)[:, None, None]
    std = torch.tensor(tensorpng.IMAGENET_STD, device=device)[:, None, None]
    batch = imagenet_batch(pixels, device)
    options = parse_image_options(mean=tensorpng.IMAGENET_MEAN, std=tensorpng.IMAGENET_STD)
    raw = pixels.nbytes
    pool = ThreadPoolExecutor(default_workers())

    def gpu_path() -> list[bytes]:
        samples, _ = prepare(batch, options, keep_torch=True).convert_on_device()
        return gpu_encode.encode_batch(samples)

    def cpu_path() -> list[bytes]:
        samples, _ = prepare(batch, options, keep_torch=True).convert_on_device()
        host = samples.cpu().numpy()
        return list(pool.map(encode_png, host))

    def recipe(count: int) -> list[bytes]:
        files = []
        for index in range(count):
            image = ((batch[index] * std + mean).clamp(0, 1) * 255).round().to(torch.uint8)
            buffer = io.BytesIO()
            Image.fromarray(image.permute(1, 2, 0).cpu().numpy()).save(buffer, format="PNG")
            files.append(buffer.getvalue())
        return files

    gpu_files, cpu_files = gpu_path(), cpu_path()
    for data, expected in zip(gpu_files[:4], pixels[:4], strict=False):  # the GPU files are exact
        import imagecodecs

        assert np.array_equal(imagecodecs.png_decode(data), expected)
    gpu_seconds = timed(gpu_path, args.repeat, sync)
    cpu_seconds = timed(cpu_path, args.repeat, sync)
    few = min(4, args.batch)
    recipe_seconds = timed(lambda: recipe(few), 2, sync) * args.batch / few
    recipe_size = sum(len(f) for f in recipe(few)) * args.batch / few

    masks = torch.from_numpy(mask_batch(args.batch, args.size)).to(device)
    gpu_mask = sum(len(f) for f in gpu_encode.encode_batch(masks))
    cpu_mask = sum(len(encode_png(m)) for m in masks.cpu().numpy())

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(
        f"{args.batch}x3x{args.size}x{args.size} normalized photos on {name}, {default_workers()} CPU workers"
    )
    rows = [
        ("gpu (tensorpng torch encoder)", gpu_seconds, sum(map(len, gpu_files))),
        ("cpu (GPU convert + CPU encoder)", cpu_seconds, sum(map(len, cpu_files))),
        ("popular recipe (Pillow level 6)", recipe_seconds, recipe_size),
    ]
    print(f"{'path':<34}{'seconds':>9}{'raw GB/s':>10}{'images/s':>10}{'size % raw':>12}")
    for label, seconds, size in rows:
        print(
            f"{label:<34}{seconds:9.4f}{raw / seconds / 1e9:10.2f}{args.batch / seconds:10.0f}{100 * size / raw:11.1f}%"
        )
    print(
        f"gpu vs cpu path: {cpu_seconds / gpu_seconds:.1f}x faster; vs recipe: {recipe_seconds / gpu_seconds:.0f}x"
    )
    print(f"size gpu/cpu encoder: photos {sum(map(len, gpu_files)) / sum(map(len, cpu_files)):.3f} (target <= 1.10), "
          f"masks {gpu_mask / cpu_mask:.3f} (target <= 2)")  # fmt: skip
    print(f"target >= 10 GB/s raw on the GPU path: {'met' if raw / gpu_seconds >= 10e9 else 'MISSED'}")


if __name__ == "__main__":
    main()
