"""How long does a training loop wait inside ``Writer.save``?

A loop saves a 64x3x256x256 ImageNet-normalized float32 batch every step. Between saves it
"trains" for a fixed time (a sleep: a GPU step leaves the CPU idle). Printed, in one run:
the median time of a synchronous ``tensorpng.save`` of the batch, the median time inside
``writer.save``, their ratio (target: <= 0.15), and the sustained images/s of a loop that
does nothing but save (the writer's throughput).

    python benchmarks/loop_stall.py [--steps 20] [--device cpu|cuda] [--size 256] [--dir /dev/shm]

``--dir`` picks where the files go (default: the system's temporary folder). Files are kept
until the end, as a training run keeps them: once the disk's writeback falls behind, the
kernel throttles writes (on the 2-core dev VM, from about 40 MB of dirty data on, to about
135 MB/s). So the synchronous save is timed over as many saves as the loop makes (its median
is the reference; the median of the first few, before any throttling, is printed beside it),
and the loop's step is 1.25x that median. The peak number of images waiting in the writer is
printed, so a run in which the writer fell behind is seen for what it is; a RAM-backed
folder (``/dev/shm``) leaves the disk out.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

import tensorpng
from photos import imagenet_batch, photo_crops


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--dir", default=None, help="where to make the temporary folder")
    args = parser.parse_args()
    options = {"mean": tensorpng.IMAGENET_MEAN, "std": tensorpng.IMAGENET_STD}
    batch = imagenet_batch(photo_crops(args.batch, args.size), args.device)
    sync = lambda: torch.cuda.synchronize() if args.device.startswith("cuda") else None  # noqa: E731

    with tempfile.TemporaryDirectory(dir=args.dir) as folder:
        root = Path(folder)
        # The synchronous save, as a loop that calls it every step would pay for it: as many
        # saves as the loop makes, files kept (so the disk's writeback limits both alike).
        sync_times = []
        for step in range(args.steps):
            start = time.perf_counter()
            tensorpng.save(batch, root / f"sync{step}" / "{index:03d}.png", **options)
            sync_times.append(time.perf_counter() - start)
        sync_median = statistics.median(sync_times)
        first_median = statistics.median(sync_times[: max(3, args.steps // 4)])
        step_seconds = 1.25 * sync_median  # a step the writer can keep up with

        save_times = []
        peak_pending = 0
        with tensorpng.Writer(root / "loop", workers=args.workers, **options) as writer:
            for step in range(args.steps):
                batch.mul_(1.0)  # "training" touches the batch
                sync()
                start = time.perf_counter()
                writer.save(batch, "step{step:04d}/{index:03d}.png", step=step)
                save_times.append(time.perf_counter() - start)
                peak_pending = max(peak_pending, writer.stats.images_pending)
                time.sleep(step_seconds)
        save_median = statistics.median(save_times)

        with tensorpng.Writer(root / "burst", workers=args.workers, **options) as writer:
            start = time.perf_counter()
            for step in range(args.steps):
                writer.save(batch, "step{step:04d}/{index:03d}.png", step=step)
            writer.flush()
            burst_seconds = time.perf_counter() - start
        sustained = args.steps * args.batch / burst_seconds

    shape = "x".join(map(str, batch.shape))
    print(
        f"batch {shape} float32 on {args.device}, {args.steps} steps, step = {step_seconds * 1e3:.1f} ms sleep, "
        f"files in {args.dir or tempfile.gettempdir()}"
    )
    print(
        f"synchronous tensorpng.save        median {sync_median * 1e3:8.2f} ms  ({args.batch / sync_median:7.0f} images/s; "
        f"first {max(3, args.steps // 4)} saves {first_median * 1e3:.2f} ms)"
    )
    print(
        f"writer.save inside the loop       median {save_median * 1e3:8.2f} ms  (max {max(save_times) * 1e3:.2f} ms)"
    )
    print(f"ratio writer.save / sync save     {save_median / sync_median:8.3f}   (target <= 0.15)")
    kept_up = "kept up" if peak_pending <= 2 * args.batch else "fell behind: saves waited for room"
    print(f"writer queue peak                 {peak_pending:8d} images  ({kept_up})")
    print(f"sustained writer throughput       {sustained:8.0f} images/s (saving every step, no training)")


if __name__ == "__main__":
    main()
