"""Files: PNG bytes for an input (``encode``), and files written atomically (``save``).

Every file is written to a dot-prefixed temporary file in the target's folder and moved into
place with ``os.replace`` (or hard-linked, for ``overwrite=False``, so that an existing file
is never clobbered), so a crash or a full disk never leaves a truncated PNG under the final
name and a failed write leaves an older file intact.
"""

from __future__ import annotations

import errno
import inspect
import itertools
import math
import os
import queue
import secrets
import string
import threading
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from . import gpu_encode
from ._png_text import text_chunk
from .arrays import describe, is_torch_tensor
from .convert import Batch, ImageOptions, prepare, warn_nans
from .errors import OptionError, PathError, TargetExistsError, WriteError
from .metadata import METADATA_KEY, device_extremes, mapping_record, text_chunks
from .png import (
    COMPRESSIONS,
    Compression,
    FilteredPNG,
    filter_indexed_png,
    filter_png,
    finish_png,
)

Extremes = tuple[float | None, float | None]

TEMP_SUFFIX = ".tmp"


@dataclass(frozen=True)
class PNGOptions:
    """Validated encoding options: ``compression``, text ``metadata`` and ``encoder``.

    ``encoder``: ``"auto"`` encodes tensors on an accelerator with the torch encoder (only
    compressed bytes leave the device) when ``compression="fast"`` and no grid is asked,
    and everything else on the CPU; ``"cpu"`` always uses the CPU encoder; ``"device"``
    uses the torch encoder for every torch tensor, CPU tensors included.
    """

    compression: Compression = "fast"
    metadata: Mapping[str, str] | None = None
    encoder: str = "auto"
    record: bool = True  # write the mapping record (see tensorpng.metadata)

    @classmethod
    def parse(
        cls,
        *,
        compression: str = "fast",
        metadata: Mapping[str, str] | bool | None = None,
        encoder: str = "auto",
    ) -> PNGOptions:
        if compression not in COMPRESSIONS:
            raise OptionError(f"compression must be one of {COMPRESSIONS}, got {compression!r}")
        if encoder not in ENCODERS:
            raise OptionError(f"encoder must be one of {ENCODERS}, got {encoder!r}")
        record = metadata is not False
        if isinstance(metadata, bool):
            metadata = None
        if metadata is not None:
            if not isinstance(metadata, Mapping):
                raise OptionError(f"metadata must be a mapping of str to str, or False, got {metadata!r}")
            metadata = {str(key): str(value) for key, value in metadata.items()}
            if METADATA_KEY in metadata:
                raise OptionError(
                    f"the metadata key {METADATA_KEY!r} is tensorpng's own record; pick another"
                )
            for key, value in metadata.items():
                text_chunk(key, value)  # validate keys and values now, before any file is touched
        return cls(compression, metadata, encoder, record)  # type: ignore[arg-type]

    def texts(
        self, batch: Batch, index: int | None, extremes: Extremes | None = None
    ) -> dict[str, str] | None:
        """The text chunks of image ``index`` of ``batch`` (None: its grid or only image)."""
        entry = mapping_record(batch, index, extremes) if self.record else None
        return text_chunks(self.metadata, entry, self.record)


ENCODERS = ("auto", "cpu", "device")
_PNG_OPTION_NAMES = frozenset(inspect.signature(PNGOptions.parse).parameters)
# every option of save and encode but overwrite and workers (the names of both parsers)
OPTION_NAMES = frozenset(inspect.signature(ImageOptions.parse).parameters) | _PNG_OPTION_NAMES


def prepare_for(x: object, image_options: ImageOptions, png_options: PNGOptions) -> tuple[Batch, bool]:
    """Prepare ``x`` and say whether the torch encoder encodes it (see :class:`PNGOptions`)."""
    if png_options.encoder == "device":
        if not is_torch_tensor(x):
            raise OptionError(f"encoder='device' encodes torch tensors; got {describe(x)}")
        if png_options.compression != "fast":
            raise OptionError("encoder='device' has one compression setting; pass compression='fast'")
        batch = prepare(x, image_options, keep_torch=True)
        if batch.writes_grid or batch.palette_table is not None:
            raise OptionError(
                "encoder='device' writes one RGB/gray file per image; "
                "grids and palette PNGs use encoder='cpu'"
            )
        return batch, True
    batch = prepare(x, image_options)
    device = (
        png_options.encoder == "auto"
        and batch.on_device
        and png_options.compression == "fast"
        and not batch.writes_grid
        and batch.palette_table is None
        and _scanline_bytes(batch) <= DEVICE_ENCODER_MAX_IMAGE_BYTES
    )
    return batch, device


# The torch encoder needs about 170 bytes of device memory per scanline byte of one image
# (it splits batches, not images): above this, "auto" encodes on the CPU (32 MiB: ~5.5 GB).
DEVICE_ENCODER_MAX_IMAGE_BYTES = 1 << 25


def _scanline_bytes(batch: Batch) -> int:
    """Bytes of one image's PNG scanlines (filter bytes included)."""
    _, height, width, channels = (int(d) for d in batch.images.shape)
    channels = 3 if batch.colormap is not None else channels
    return height * (1 + width * channels * batch.plan.bits // 8)


def encode_on_device(batch: Batch, png_options: PNGOptions) -> tuple[list[bytes], int]:
    """PNG bytes of every image of a torch batch by the torch encoder, and the NaN count."""
    samples, nans = batch.convert_on_device()
    low, high = device_extremes(batch.images) if png_options.record else (None, None)
    return encode_device_samples(batch, samples, png_options, low, high), int(nans.item())


def encode_device_samples(
    batch: Batch, samples: Any, png_options: PNGOptions, low: Any, high: Any
) -> list[bytes]:
    """The torch encoder on converted ``samples``, with each image's text chunks."""
    count = int(samples.shape[0])
    if png_options.record:  # extremes were computed on the device; their copy waits for it
        pairs = list(zip(low.tolist(), high.tolist(), strict=True))
        texts = [
            png_options.texts(batch, i if batch.layout.batched else None, pairs[i]) for i in range(count)
        ]
    else:
        texts = [png_options.texts(batch, None)] * count
    return gpu_encode.encode_batch(samples, text=texts)


def host_extremes(batch: Batch) -> list[Extremes] | None:
    """For a batch on a device that the CPU encoder will write: per-image (or, for a grid,
    whole-batch) finite min and max, read before the samples replace the values."""
    if not batch.on_device:
        return None
    low, high = device_extremes(batch.images)
    pairs = list(zip(low.tolist(), high.tolist(), strict=True))
    if batch.writes_grid:
        lows = [p[0] for p in pairs if p[0] is not None and math.isfinite(p[0])]
        highs = [p[1] for p in pairs if p[1] is not None and math.isfinite(p[1])]
        return [(min(lows) if lows else None, max(highs) if highs else None)]
    return pairs


def split_options(options: Mapping[str, Any]) -> tuple[ImageOptions, PNGOptions]:
    """Parse keyword options into conversion and encoding options (unknown names raise)."""
    png = {k: v for k, v in options.items() if k in _PNG_OPTION_NAMES}
    image = {k: v for k, v in options.items() if k not in _PNG_OPTION_NAMES}
    try:
        return ImageOptions.parse(**image), PNGOptions.parse(**png)
    except TypeError as error:  # an unexpected keyword argument
        raise OptionError(f"unknown option: {error}") from None


def encode(x: object, **options: Any) -> bytes:
    """Encode one image, or a batch as a grid, to PNG bytes.

    Takes the options of :func:`save` except ``overwrite`` and ``workers``; a batch needs
    ``grid=True`` (use :func:`save` or :func:`to_array` for one image at a time).
    """
    image_options, png_options = split_options(options)
    batch, on_device = prepare_for(x, image_options, png_options)
    if batch.layout.batched and not batch.writes_grid and batch.count != 1:
        raise OptionError(
            f"encode makes one PNG but got a batch of {batch.count} ({batch.source.description}); "
            "pass grid=True, or encode x[i] for each image"
        )
    if on_device:
        (data,), nans = encode_on_device(batch, png_options)
        warn_nans(nans, batch.source.description)
        return data
    extremes = host_extremes(batch) if png_options.record else None
    batch = batch.to_host()
    data, nans = encode_image(batch, 0, png_options, extremes[0] if extremes else None)
    warn_nans(nans + batch.nan_count, batch.source.description)
    return data


# ---------------------------------------------------------------------------------------------
# Paths


def template_fields(template: str) -> set[str]:
    """The field names used in a ``str.format`` template (raises PathError when malformed)."""
    try:
        return {
            name.split(".")[0].split("[")[0]
            for _, name, _, _ in string.Formatter().parse(template)
            if name is not None
        }
    except ValueError as error:
        raise PathError(f"malformed name template {template!r}: {error}") from None


def format_template(template: str, fields: Mapping[str, Any]) -> str:
    """``template.format(**fields)`` with errors that say which field is missing or wrong."""
    used = template_fields(template)
    if "" in used:
        raise PathError(f"name template {template!r} has a positional field {{}}; name it, e.g. {{index}}")
    missing = used - set(fields)
    if missing:
        raise PathError(
            f"name template {template!r} uses unknown field(s) {sorted(missing)}; available: {sorted(fields)}"
        )
    try:
        return template.format(**fields)
    except (ValueError, TypeError, IndexError, AttributeError, KeyError) as error:
        raise PathError(f"cannot format name template {template!r}: {error}") from None


def batch_paths(path: str | os.PathLike[str], count: int, batched: bool) -> list[Path]:
    """The file of each image of a ``count``-image input saved to ``path``.

    ``path`` may hold ``{index}`` (with a format spec such as ``{index:04d}``). A batch saved
    to a path without ``{index}`` gets ``_{index}`` before the suffix, zero-padded to the
    width of the largest index (``out.png`` -> ``out_00.png`` ... ``out_63.png``), so no two
    images share a file. One image (not a batch) is written to ``path`` itself.

    ``path`` is a ``str.format`` template for one image and for a batch alike: ``{{`` and
    ``}}`` stand for literal braces, and fields other than ``index`` are errors.
    """
    text = os.fspath(path)
    if not isinstance(text, str):
        raise PathError(f"path must be a str or os.PathLike[str], got {path!r}")
    if batched and "index" not in template_fields(text):
        # Insert the field into the template as it is (no re-escaping of its braces), so a
        # batch reads ``path`` exactly as one image does.
        stem, suffix = os.path.splitext(text)
        text = f"{stem}_{{index:0{len(str(count - 1))}d}}{suffix}"
    paths = [Path(format_template(text, {"index": index})) for index in range(count)]
    if len(set(paths)) != len(paths):
        raise PathError(f"path {os.fspath(path)!r} gives two images the same file name; use {{index}} in it")
    return paths


# ---------------------------------------------------------------------------------------------
# Atomic writes


def _describe_os_error(error: OSError) -> str:
    if error.errno in (errno.ENOSPC, errno.EDQUOT):
        return "the disk is full"
    if error.errno == errno.EFBIG:
        return "the file is larger than this process may write (RLIMIT_FSIZE)"
    return error.strerror or str(error)


def write_atomic(path: str | os.PathLike[str], data: bytes | memoryview, *, overwrite: bool = True) -> int:
    """Write ``data`` to ``path`` so that ``path`` is either complete or untouched.

    The bytes go to ``.NAME.RANDOM.tmp`` beside ``path`` (dot-prefixed, so readers skip it;
    it is removed on failure), then the file is moved into place. Returns the bytes written.

    Raises:
        TargetExistsError: ``overwrite=False`` and ``path`` exists.
        WriteError: the write failed (disk full, permissions, ...); nothing is left behind.
    """
    target = os.fspath(path)  # strings, not pathlib: this runs once a file, on the caller
    directory, name = os.path.split(target)
    # at most ~150 bytes of the name: NAME_MAX (255) must hold the tag and the dots too
    temp = os.path.join(directory, f".{name[:120]}.{_temp_tag()}{TEMP_SUFFIX}")
    try:
        try:
            descriptor = os.open(temp, _WRITE_FLAGS, 0o666)
        except FileNotFoundError:  # the folder is missing: make it (once, not per file)
            os.makedirs(directory or os.curdir, exist_ok=True)
            descriptor = os.open(temp, _WRITE_FLAGS, 0o666)
    except OSError as error:
        raise WriteError(f"cannot write {path}: {_describe_os_error(error)}") from error
    try:
        try:
            view = memoryview(data)
            while view:  # os.write may write less than asked
                view = view[os.write(descriptor, view) :]
        finally:
            os.close(descriptor)
        if overwrite:
            os.replace(temp, target)
        else:
            _link_no_clobber(temp, target)
    except FileExistsError:
        _remove(temp)
        raise TargetExistsError(f"{path} exists and overwrite=False") from None
    except OSError as error:
        _remove(temp)
        raise WriteError(
            f"cannot write {path}: {_describe_os_error(error)}; no partial file was left"
        ) from error
    except BaseException:
        _remove(temp)
        raise
    return len(data)


_WRITE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
_temp_counter = itertools.count()
_PROCESS_TAG = secrets.token_hex(4)


def _temp_tag() -> str:
    """A name part unique to this write: a random tag per process, pid and a counter.

    (``O_EXCL`` still refuses a name that exists, so a clash could fail, never overwrite.)
    """
    return f"{_PROCESS_TAG}{os.getpid():x}.{next(_temp_counter)}"


def _link_no_clobber(temp: str, path: str) -> None:
    try:
        os.link(temp, path)  # atomic, and fails if path exists
    except OSError as error:
        if error.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK):
            raise
        if os.path.lexists(path):  # a file system without hard links: check, then replace
            raise FileExistsError(path) from None
        os.replace(temp, path)
        return
    _remove(temp)


def _remove(path: str) -> None:
    with suppress(OSError):
        os.unlink(path)


def check_targets(paths: Iterable[Path], overwrite: bool) -> None:
    """Raise :class:`TargetExistsError` before anything is written when a target exists."""
    if overwrite:
        return
    existing = [str(p) for p in paths if p.exists()]
    if existing:
        more = f" and {len(existing) - 3} more" if len(existing) > 3 else ""
        raise TargetExistsError(f"{', '.join(existing[:3])}{more} exist(s) and overwrite=False")


# ---------------------------------------------------------------------------------------------
# The shared thread pool: the encoder releases the GIL, so threads use every core.

_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def default_workers() -> int:
    """Worker threads used when ``workers=None``: the CPUs this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not on Linux
        return max(1, os.cpu_count() or 1)


def shared_pool() -> ThreadPoolExecutor:
    """A process-wide pool of :func:`default_workers` threads, created on first use."""
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(default_workers(), thread_name_prefix="tensorpng")
        return _pool


def _forget_pool_after_fork() -> None:
    """A forked child has none of the parent's threads: it makes its own pool (and lock)."""
    global _pool, _pool_lock
    _pool, _pool_lock = None, threading.Lock()


os.register_at_fork(after_in_child=_forget_pool_after_fork)


Prepared = TypeVar("Prepared")
Processed = TypeVar("Processed")
Result = TypeVar("Result")


def run_pipeline(
    count: int,
    prepare: Callable[[int], Prepared],
    process: Callable[[int, Prepared], Processed],
    complete: Callable[[int, Processed], Result],
    workers: int | None,
) -> list[Result]:
    """``complete(i, process(i, prepare(i)))`` for every ``i`` in ``range(count)`` on
    ``workers`` threads (default: one per CPU); the results of ``complete``, in order.

    ``prepare`` and ``complete`` run on the calling thread (``prepare`` in order); ``process``
    on ``workers - 1`` pool threads, and on the caller too whenever more than ``2 * workers``
    prepared items wait (which bounds the memory they hold) and once everything is prepared.
    Made for ``save``: preparing (converting and filtering) is NumPy's short calls, which
    take the GIL back each time, so two threads doing it hand the GIL to and fro and on two
    cores ran slower together than one alone; processing (the deflate) releases the GIL
    throughout and scales; completing (writing the file) goes fastest from one thread, since
    files created at once in one folder wait for each other in the kernel.

    Every item runs even if others fail; the first failure by index is raised at the end.
    An exception that is not an ``Exception`` (KeyboardInterrupt, SystemExit), on the caller
    or on a helper, stops the work: items not done yet are dropped, running ones are waited
    for, and it is raised.
    """
    if workers is not None and (not isinstance(workers, int) or workers < 1):
        raise OptionError(f"workers must be an integer >= 1 or None, got {workers!r}")
    threads = max(1, min(default_workers() if workers is None else workers, count))
    results: list[Any] = [None] * count
    failures: list[Exception | None] = [None] * count
    waiting: queue.SimpleQueue[tuple[int, Any] | None] = queue.SimpleQueue()
    processed: queue.SimpleQueue[tuple[int, Any, bool] | None] = queue.SimpleQueue()
    stopped = threading.Event()
    fatal: list[BaseException] = []  # a helper's KeyboardInterrupt or SystemExit, for the caller

    def process_one(index: int, item: Any) -> tuple[int, Any, bool]:
        try:
            return index, process(index, item), True
        except Exception as error:  # raised below, after the others ran
            failures[index] = error
            return index, None, False

    def complete_one(index: int, value: Any, ok: bool) -> None:
        if ok:
            try:
                results[index] = complete(index, value)
            except Exception as error:
                failures[index] = error

    def help_process() -> None:
        while True:
            try:
                entry = waiting.get(timeout=_WAIT_SECONDS)
            except queue.Empty:
                if stopped.is_set():  # the caller left without its stop markers (a 2nd Ctrl-C)
                    return
                continue
            if entry is None:
                return
            if stopped.is_set():
                continue
            try:
                processed.put(process_one(*entry))
            except BaseException as error:
                fatal.append(error)
                stopped.set()
                processed.put(None)  # wake the caller if it waits
            del entry  # do not hold the last item while waiting for the next

    pool: ThreadPoolExecutor | None = None
    helpers: list[Future[None]] = []
    if threads > 1:
        pool = shared_pool() if workers is None else ThreadPoolExecutor(threads - 1, "tensorpng")
        helpers = [pool.submit(help_process) for _ in range(threads - 1)]
    outstanding = 0  # prepared, not completed yet

    def complete_ready(block: bool) -> None:
        """Complete what the helpers processed (waiting for one item when ``block``)."""
        nonlocal outstanding
        while outstanding and not stopped.is_set():
            try:
                entry = processed.get(timeout=_WAIT_SECONDS) if block else processed.get_nowait()
            except queue.Empty:
                if block:
                    continue
                return
            if entry is not None:
                outstanding -= 1
                complete_one(*entry)
            block = False

    def process_here() -> bool:
        """Process and complete one waiting item on this thread; False when none waits."""
        nonlocal outstanding
        try:
            entry = waiting.get_nowait()
        except queue.Empty:
            return False
        assert entry is not None  # the stop markers go in only after the caller is done
        outstanding -= 1
        complete_one(*process_one(*entry))
        return True

    try:
        for index in range(count):
            if stopped.is_set():
                break
            try:
                item = prepare(index)
            except Exception as error:
                failures[index] = error
                continue
            if not helpers:
                complete_one(*process_one(index, item))
                continue
            waiting.put((index, item))
            outstanding += 1
            complete_ready(block=False)
            while waiting.qsize() > 2 * threads and not stopped.is_set():  # helpers fall behind
                process_here()
        while outstanding and not stopped.is_set():  # everything prepared
            if not process_here():
                complete_ready(block=True)
    finally:
        stopped.set()  # done, or interrupted: helpers drop what waits and leave
        for _ in helpers:
            waiting.put(None)
        for helper in helpers:
            if not helper.cancel():  # a helper that never started has nothing to finish
                helper.exception()
        if pool is not None and pool is not _pool:
            pool.shutdown(wait=True)
    if fatal:
        raise fatal[0]
    for failure in failures:
        if failure is not None:
            raise failure
    return results


_WAIT_SECONDS = 0.1  # how often a waiting caller (or helper) checks that the other side still runs


def filtered_image(
    batch: Batch, index: int, png_options: PNGOptions, extremes: Extremes | None = None
) -> tuple[FilteredPNG, int]:
    """Convert and filter image ``index`` of a host batch (the grid when the batch is one):
    the first stage of its encoding (see :class:`~tensorpng.png.FilteredPNG`), and its
    NaN count.

    ``extremes``: the image's finite min and max for the record, when ``batch`` holds
    converted samples rather than the caller's values.
    """
    image = batch.grid_image() if batch.writes_grid else batch.image(index)
    position = index if batch.layout.batched and not batch.writes_grid else None
    text = png_options.texts(batch, position, extremes if extremes is not None else image.extremes)
    if batch.palette_table is not None:
        labels = image.samples[..., 0]
        return filter_indexed_png(
            labels, batch.palette_table, compression=png_options.compression, text=text
        ), image.nans
    return filter_png(image.samples, compression=png_options.compression, text=text), image.nans


def encode_image(
    batch: Batch, index: int, png_options: PNGOptions, extremes: Extremes | None = None
) -> tuple[bytes, int]:
    """PNG bytes of image ``index`` of a host batch (see :func:`filtered_image`), and its
    NaN count."""
    filtered, nans = filtered_image(batch, index, png_options, extremes)
    return finish_png(filtered), nans


def save(
    x: object,
    path: str | os.PathLike[str],
    *,
    overwrite: bool = True,
    workers: int | None = None,
    **options: Any,
) -> list[Path]:
    """Save a tensor or array as PNG: one file per image, or one grid.

    Args:
        x: ``torch.Tensor`` (any device; float, int, bool dtypes; ``requires_grad`` is fine),
            ``numpy.ndarray``, or an object with ``__dlpack__``/``__array__``. Shapes:
            ``H x W``, ``C x H x W``, ``H x W x C``, ``N x H x W``, ``N x C x H x W`` or
            ``N x H x W x C`` with C = 1 (gray), 2 (gray+alpha), 3 (RGB) or 4 (RGBA).
        path: target file. For a batch, ``{index}`` (format specs allowed: ``{index:04d}``)
            names each image's file; without it ``_{index}`` is added before the suffix.
        overwrite: with ``False``, raise :class:`TargetExistsError` if any target exists,
            before anything is written.
        workers: threads for a batch (default: one per CPU).
        **options: ``layout``, ``mean``, ``std``, ``value_range``, ``scale``, ``bits``,
            ``grid``, ``nrow``, ``padding``, ``pad_value``, ``compression``, ``metadata``,
            ``encoder`` (see the README's option table).

    Returns:
        The paths written, in batch order.
    """
    image_options, png_options = split_options(options)
    batch, on_device = prepare_for(x, image_options, png_options)
    paths = target_paths(batch, path)
    write_batch(batch, on_device, paths, png_options, overwrite=overwrite, workers=workers)
    return paths


def target_paths(batch: Batch, path: str | os.PathLike[str]) -> list[Path]:
    """The files :func:`save` writes for a prepared batch (one, for a grid)."""
    count = 1 if batch.writes_grid else batch.count
    return batch_paths(path, count, batch.layout.batched and not batch.writes_grid)


def write_batch(
    batch: Batch,
    on_device: bool,
    paths: list[Path],
    png_options: PNGOptions,
    *,
    overwrite: bool = True,
    workers: int | None = None,
) -> None:
    """Convert, encode and write a prepared batch to ``paths`` (see :func:`prepare_for`)."""
    check_targets(paths, overwrite)
    count = len(paths)
    if on_device:
        files, device_nans = encode_on_device(batch, png_options)
        run_pipeline(
            count,
            files.__getitem__,
            lambda i, data: data,
            lambda i, data: write_atomic(paths[i], data, overwrite=overwrite),
            workers,
        )
        warn_nans(device_nans, batch.source.description)
        return
    extremes = host_extremes(batch) if png_options.record else None
    batch = batch.to_host()

    def convert_and_filter(index: int) -> tuple[FilteredPNG, int]:  # on the calling thread
        return filtered_image(batch, index, png_options, extremes[index] if extremes else None)

    def deflate(index: int, filtered: tuple[FilteredPNG, int]) -> tuple[bytes, int]:  # any thread
        return finish_png(filtered[0]), filtered[1]

    def write(index: int, encoded: tuple[bytes, int]) -> int:  # on the calling thread
        write_atomic(paths[index], encoded[0], overwrite=overwrite)
        return encoded[1]

    nans = run_pipeline(count, convert_and_filter, deflate, write, workers)
    warn_nans(sum(nans) + batch.nan_count, batch.source.description)
