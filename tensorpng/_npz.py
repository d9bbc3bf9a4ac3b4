"""``tensorpng pack-npz DIR -o samples.npz``: a folder of PNG samples as the ``.npz`` FID evaluators read.

The output holds one array, ``arr_0``: ``N x H x W x 3`` uint8, the PNGs under ``DIR`` (every
depth) in the order of their paths relative to ``DIR`` (plain string order, so zero-padded
numbers sort as numbers). This is the file that ADM's evaluator (``evaluations/evaluator.py``)
and the DiT/SiT-style ``create_npz_from_sample_folder`` produce and read. Conversion, as
Pillow's ``Image.convert("RGB")`` does it (which clean-fid, torch-fidelity and pytorch-fid apply
to a folder, so a folder and its ``.npz`` score alike): gray is repeated into R, G and B, alpha
is dropped (not composited), palettes are expanded; 16-bit samples are rounded to 8 bits
(``round(v / 257)``, as ``tensorpng.save(bits=8)`` does; Pillow truncates 16-bit color to
``v >> 8``, one level off at most, so write FID samples as 8-bit PNGs to leave no doubt).

Every file's header is read first, so a mixed size or a file that is no PNG is reported (naming
both files and sizes) before anything is written. The ``.npy`` member is then written into a
stored (uncompressed) zip entry one image at a time, so memory holds a few decoded images, not
the array; the output appears under its name only when complete (a temporary file in the same
folder, moved into place).
"""

from __future__ import annotations

import argparse
import os
import struct
import sys
import time
import warnings
import zipfile
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import suppress
from pathlib import Path
from typing import Any

import numpy as np

from ._decoders import MAX_IMAGE_PIXELS, check_max_pixels, check_pixels
from ._decoders import decode_png as decode
from ._names import file_path
from ._options import check_workers
from ._png_chunks import SIGNATURE
from ._walk import open_regular, regular_files, skipped_message
from .errors import DecodeError, OptionError, PathError, ShapeError, TensorPNGError, WriteError, warn_user
from .sinks import temporary_name


def png_files(folder: Path) -> tuple[list[Path], list[str]]:
    """Every regular ``*.png`` file under ``folder`` (any case; hidden files and folders
    skipped, as the temporary files of atomic writers are hidden), sorted by the relative
    POSIX path; and the entries skipped as no regular file (a pipe, a dangling link, ...)."""
    return regular_files(folder, (".png",))


def read_size(path: Path, max_pixels: int | None = MAX_IMAGE_PIXELS) -> tuple[int, int]:
    """Height and width from a PNG's IHDR (raises :class:`DecodeError` for anything else, or
    for more pixels than ``max_pixels``)."""
    with open_regular(path) as file:  # a pipe swapped in since the walk is refused, not waited on
        head = file.read(24)
    if len(head) < 24 or head[:8] != SIGNATURE or head[12:16] != b"IHDR":
        raise DecodeError(f"{path} is not a PNG file (its first bytes are {head[:16]!r})")
    width, height = struct.unpack(">II", head[16:24])
    check_pixels(path, width, height, max_pixels)
    return height, width


def as_rgb8(samples: np.ndarray) -> np.ndarray:
    """``H x W [x C]`` uint8/uint16 samples as ``H x W x 3`` uint8 (gray repeated, alpha dropped)."""
    if samples.dtype == np.uint16:
        samples = ((samples.astype(np.uint32) + 128) // 257).astype(np.uint8)  # round(v / 257)
    if samples.ndim == 2:
        samples = samples[..., None]
    channels = samples.shape[2]
    if channels <= 2:  # gray, gray+alpha
        return np.repeat(samples[..., :1], 3, axis=2)
    return np.ascontiguousarray(samples[..., :3])


def _decode_rgb(path: Path, size: tuple[int, int]) -> np.ndarray:
    with open_regular(path) as file:
        data = file.read()
    try:  # the size was checked against max_pixels; a file changed since fails the shape check
        image = as_rgb8(decode(data, max_pixels=size[0] * size[1], label=path))
    except DecodeError as error:
        raise DecodeError(f"{path}: {error}") from None
    if image.shape[:2] != size:  # the header was read before; the file changed since
        raise ShapeError(f"{path} decodes to {image.shape[:2]}, not the {size} its header gave")
    return image


def _images(paths: list[Path], size: tuple[int, int], workers: int) -> Iterator[np.ndarray]:
    """The files decoded to RGB in order, ``workers`` at a time (the decoders release the GIL);
    at most ``2 * workers`` decoded images are held."""
    with ThreadPoolExecutor(workers, thread_name_prefix="tensorpng-npz") as pool:
        window: deque[Future[np.ndarray]] = deque()
        pending = iter(paths)
        try:
            for path in pending:
                window.append(pool.submit(_decode_rgb, path, size))
                if len(window) >= 2 * workers:
                    yield window.popleft().result()
            while window:
                yield window.popleft().result()
        finally:
            for future in window:
                future.cancel()


def pack_npz(
    folder: str | os.PathLike[str],
    output: str | os.PathLike[str],
    *,
    count: int | None = None,
    workers: int | None = None,
    progress: bool = False,
    max_pixels: int | None = MAX_IMAGE_PIXELS,
) -> int:
    """Pack the PNGs under ``folder`` into ``output`` as ``arr_0`` (``N x H x W x 3`` uint8).

    Args:
        folder: searched recursively for ``*.png``; files sorted by relative path.
        output: the ``.npz`` file (replaced if it exists, only once the new one is complete).
        count: pack exactly the first ``count`` files (an error if there are fewer).
        workers: decoding threads (default: up to 4).
        progress: show a tqdm bar on stderr (when tqdm is installed).
        max_pixels: the most pixels (width x height) an image may declare, as in
            :func:`tensorpng.load` (checked from IHDR before decoding); ``None``: no limit.

    Returns:
        The number of images packed.

    Entries under ``folder`` that are no regular file (a named pipe, a socket, a dangling
    symbolic link) are skipped with a warning naming them; a symbolic link to a regular
    file is read.

    Raises:
        OptionError, PathError: bad options, or ``output`` is a folder.
        DecodeError, ShapeError, ReadError: an input file (named) cannot be packed.
        WriteError: ``output`` cannot be written (named with the reason).
    """
    check_max_pixels(max_pixels)
    target = Path(file_path(output, "samples.npz"))  # "out/" names a folder: refused before any I/O
    root = Path(folder)
    if not root.is_dir():
        raise OptionError(f"{root} is not a folder")
    if count is not None and (not isinstance(count, int) or isinstance(count, bool) or count < 1):
        raise OptionError(f"count must be an integer >= 1 or None, got {count!r}")
    check_workers(workers)
    if target.is_dir():
        raise PathError(f"the output {target} is a folder; name the .npz file, e.g. {target / 'samples.npz'}")
    paths, skipped = png_files(root)
    if skipped:  # a pipe would block the read forever; a dangling link has nothing to read
        warn_user(f"{skipped_message(root, skipped)}; they are not packed")
    if count is not None:
        if len(paths) < count:
            raise OptionError(f"{root} holds {len(paths)} PNG files, fewer than count={count}")
        paths = paths[:count]
    if not paths:
        raise OptionError(f"{root} holds no PNG file")
    size = read_size(paths[0], max_pixels)
    for path in paths[1:]:
        other = read_size(path)
        if other != size:
            raise ShapeError(
                f"{path} is {other[0]}x{other[1]} (H x W) but {paths[0]} is {size[0]}x{size[1]}: "
                "arr_0 holds images of one size; resize the samples, or pack each size apart"
            )
    workers = workers or min(4, os.cpu_count() or 1)
    header = {
        "descr": np.lib.format.dtype_to_descr(np.dtype(np.uint8)),
        "fortran_order": False,
        "shape": (len(paths), *size, 3),
    }
    temp = target.with_name(temporary_name(target.name))
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError) as error:  # a file where a folder should be
        blocker = next((p for p in target.parents if os.path.lexists(p)), target.parent)
        raise WriteError(
            f"cannot write {target}: {blocker} is a file, not a folder; move it away or choose another output"
        ) from error
    except OSError as error:
        raise WriteError(f"cannot write {target}: {error.strerror or error} ({error.filename})") from error
    bar = _bar(progress, len(paths))
    try:
        with (
            zipfile.ZipFile(temp, "w", zipfile.ZIP_STORED, allowZip64=True) as archive,
            archive.open("arr_0.npy", "w", force_zip64=True) as member,
        ):
            np.lib.format.write_array_header_1_0(member, header)
            for image in _images(paths, size, workers):
                member.write(image.data)
                if bar is not None:
                    bar.update(1)
        os.replace(temp, target)
    except TensorPNGError:  # ReadError is an OSError too: an input's error is not the output's
        raise
    except OSError as error:
        raise WriteError(
            f"writing {target} failed: {error.strerror or error} ({error.filename or target}); "
            "nothing was written under that name"
        ) from error
    finally:
        if bar is not None:
            bar.close()
        with suppress(OSError):  # gone already, or not ours to remove: the error above says why
            temp.unlink(missing_ok=True)
    return len(paths)


def _bar(enabled: bool, total: int) -> Any:
    if not enabled:
        return None
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm(total=total, unit="image", file=sys.stderr, dynamic_ncols=True)


# ------------------------------------------------------------------------------------ command line


def add_command(commands: Any) -> None:
    """Add ``pack-npz`` to the ``tensorpng`` command's subparsers."""
    parser = commands.add_parser(
        "pack-npz",
        help="pack a folder of PNG samples into an .npz (arr_0: N x H x W x 3 uint8) for FID",
        description="Pack every PNG under DIR, sorted by relative path, into OUTPUT as arr_0 "
        "(N x H x W x 3 uint8; gray to RGB, alpha dropped, 16-bit rounded to 8), the file ADM's "
        "FID evaluator reads. All images must have one size.",
    )
    parser.add_argument("folder", type=Path, metavar="DIR")
    # str, not Path: Path("out/") drops the "/" that shows OUTPUT names a folder
    parser.add_argument("-o", "--output", required=True, metavar="OUTPUT")
    parser.add_argument("--count", type=int, help="pack exactly the first N files (error if fewer)")
    parser.add_argument("--workers", type=int, help="decoding threads (default: up to 4)")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bar or summary")
    parser.add_argument(
        "--max-pixels",
        type=_pixel_limit,
        default=MAX_IMAGE_PIXELS,
        metavar="N",
        help=f"refuse images declaring more pixels (default {MAX_IMAGE_PIXELS:,}, as tensorpng.load; "
        "'none': no limit)",
    )


def _pixel_limit(text: str) -> int | None:
    if text.lower() == "none":
        return None
    value = int(text)  # argparse turns a ValueError into a clean usage error
    if value < 1:
        raise ValueError(text)
    return value


def run_command(args: argparse.Namespace) -> int:
    """Run ``tensorpng pack-npz``; returns the exit code (0 done, 1 failed)."""
    started = time.perf_counter()
    try:
        if args.workers is not None and args.workers < 1:
            raise OptionError(f"--workers must be at least 1, got {args.workers}")
        with warnings.catch_warnings(record=True) as caught:  # shown as lines of ours, even with -q
            warnings.simplefilter("always")
            try:
                count = pack_npz(
                    args.folder,
                    args.output,
                    count=args.count,
                    workers=args.workers,
                    max_pixels=args.max_pixels,
                    progress=not args.quiet and sys.stderr.isatty(),
                )
            finally:
                for warning in caught:
                    print(f"tensorpng pack-npz: warning: {warning.message}", file=sys.stderr)
    except TensorPNGError as error:
        print(f"tensorpng pack-npz: {error}", file=sys.stderr)
        return 1
    seconds = time.perf_counter() - started
    if not args.quiet:
        print(
            f"{count} images packed into {args.output} ({os.path.getsize(args.output):,} bytes) in "
            f"{seconds:.2f} s ({count / seconds if seconds else 0:.0f} images/s)",
            file=sys.stderr,
        )
    return 0
