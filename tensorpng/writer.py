"""Writer: save from inside a training loop without stalling it.

``Writer.save`` validates its input, captures it (a copy into a reused host buffer; for CUDA
tensors the conversion to uint8/uint16 on the caller's stream and a ``non_blocking`` copy
into reused pinned memory, with an event), queues it and returns. Worker threads convert,
encode and write each image; the encoder releases the GIL. Memory held by queued work is
bounded by ``max_pending`` bytes; errors from workers are raised in the caller at the next
``save``, ``flush`` or ``close``; ``close`` runs at interpreter exit.
"""

from __future__ import annotations

import atexit
import contextlib
import math
import os
import re
import sys
import threading
import time
import warnings
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import PurePosixPath
from types import TracebackType
from typing import Any, Literal

import numpy as np

from .arrays import torch_module
from .convert import Batch, warn_nans
from .errors import OptionError, PathError, QueueFullError, TensorPNGError
from .files import (
    OPTION_NAMES,
    PNGOptions,
    default_workers,
    encode_device_samples,
    filtered_image,
    format_template,
    prepare_for,
    split_options,
    template_fields,
)
from .layout import as_nhwc
from .metadata import device_extremes
from .png import finish_png
from .sinks import Sink, open_sink

OnFull = Literal["block", "drop", "error"]
DEFAULT_MAX_PENDING = 1 << 30  # 1 GiB of captured data (host copies or pinned buffers)

_SAVE_OPTION_NAMES = OPTION_NAMES | {"overwrite"}
_CONTROL = re.compile(r"[\x00-\x1f\x7f/\\]")


@dataclass(frozen=True)
class WriterStats:
    """A snapshot of a :class:`Writer`'s counters."""

    images_written: int
    images_dropped: int
    images_pending: int
    bytes_written: int
    bytes_pending: int
    encode_seconds: float
    write_seconds: float
    errors: int


def sanitize_field(value: Any) -> Any:
    """A field value safe to put in a file name: numbers as they are, anything else as text
    with path separators and control characters replaced by ``_`` and ``.``/``..`` refused."""
    if isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool):
        return value
    text = _CONTROL.sub("_", str(value))
    if text in ("", ".", ".."):
        return "_"
    return text.replace("..", "__")


def current_rank() -> int:
    """This process's rank in ``torch.distributed`` when initialized, else 0."""
    torch = torch_module()
    if torch is not None:
        distributed = getattr(torch, "distributed", None)
        if distributed is not None and distributed.is_available() and distributed.is_initialized():
            return int(distributed.get_rank())
    return 0


def relative_name(name: str) -> str:
    """Check that a formatted name stays inside the root; return it in POSIX form."""
    if "\x00" in name:
        raise PathError(f"file name {name!r} contains a NUL character")
    path = PurePosixPath(name.replace(os.sep, "/"))
    if path.is_absolute() or name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name):
        raise PathError(f"file name {name!r} is absolute; names are relative to the writer's root")
    if any(part == ".." for part in path.parts):
        raise PathError(f"file name {name!r} would resolve outside the writer's root")
    if not path.parts or path.name in ("", "."):
        raise PathError(f"file name {name!r} names no file")
    return str(path)


class _BufferPool:
    """Reused host buffers (pinned for CUDA copies), keyed by (shape, dtype, pinned).

    Keeps at most ``limit`` bytes idle; fresh buffers cost page faults (or cudaHostAlloc).
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._idle: dict[tuple[Any, ...], list[Any]] = {}
        self._idle_bytes = 0
        self._lock = threading.Lock()

    def take(self, key: tuple[Any, ...], make: Any) -> Any:
        with self._lock:
            idle = self._idle.get(key)
            if idle:
                buffer = idle.pop()
                self._idle_bytes -= _nbytes(buffer)
                return buffer
        return make()

    def give(self, key: tuple[Any, ...], buffer: Any) -> None:
        with self._lock:
            if self._idle_bytes + _nbytes(buffer) <= self.limit:
                self._idle.setdefault(key, []).append(buffer)
                self._idle_bytes += _nbytes(buffer)


def _nbytes(buffer: Any) -> int:
    return (
        int(buffer.nbytes) if isinstance(buffer, np.ndarray) else int(buffer.numel() * buffer.element_size())
    )


@dataclass
class _Job:
    """One captured ``save``: its batch (host samples or source copy), names and bookkeeping."""

    batch: Batch
    names: list[str]
    png_options: PNGOptions
    overwrite: bool
    nbytes: int
    remaining: int
    release: Any  # callable returning the capture buffer to the pool
    event: Any = None  # CUDA event the copy to pinned memory completes at
    device_nans: Any = None  # pinned 0-d tensor with the NaN count (CUDA)
    ready: bool = False
    ready_lock: Any = None
    device_samples: Any = None  # converted samples on the device, for the torch encoder
    files: list[bytes] | None = None  # PNG bytes made by the torch encoder
    host_extremes: Any = None  # pinned copies of a device batch's per-image min and max
    extremes: Any = None  # per-file (min, max) pairs for the mapping record
    device_extremes: Any = None  # per-image min and max on the device (torch encoder)
    encode_share: float = 0.0  # the torch encoder's seconds per image


class Writer:
    """Save tensors from a loop without stalling it.

    Args:
        root: folder (created on demand) or fsspec URL (``s3://bucket/run``, ``memory://x``;
            needs ``pip install 'tensorpng[s3]'``) under which names are resolved.
        workers: encoding threads (default: one per CPU this process may use).
        max_pending: bytes of captured data that queued work may hold (default 1 GiB): host
            copies of CPU inputs (their size as given, e.g. 50 MB for a 64x3x256x256 float32
            batch) or pinned buffers of converted CUDA samples (12.6 MB for the same batch at
            8 bits). A single save larger than this is still accepted when nothing is queued.
        on_full: what ``save`` does when the queue is full: ``"block"`` waits for room,
            ``"drop"`` skips the save (counted in ``stats``, one warning per writer),
            ``"error"`` raises :class:`QueueFullError`.
        rank_zero_only: make ``save`` a no-op on every ``torch.distributed`` rank but 0.
        storage_options: passed to fsspec for URL roots.
        **default_options: options of :func:`tensorpng.save` used by every ``save`` call.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        *,
        workers: int | None = None,
        max_pending: int | None = None,
        on_full: OnFull = "block",
        rank_zero_only: bool = False,
        storage_options: dict[str, Any] | None = None,
        **default_options: Any,
    ) -> None:
        if on_full not in ("block", "drop", "error"):
            raise OptionError(f"on_full must be 'block', 'drop' or 'error', got {on_full!r}")
        if workers is not None and (not isinstance(workers, int) or workers < 1):
            raise OptionError(f"workers must be an integer >= 1 or None, got {workers!r}")
        if max_pending is not None and (not isinstance(max_pending, int) or max_pending < 1):
            raise OptionError(f"max_pending is a number of bytes >= 1, got {max_pending!r}")
        unknown = set(default_options) - _SAVE_OPTION_NAMES
        if unknown:
            raise OptionError(f"unknown option(s) {sorted(unknown)}; known: {sorted(_SAVE_OPTION_NAMES)}")
        self._check_options(default_options)
        self.root = os.fspath(root)
        self.on_full: OnFull = on_full
        self.max_pending = max_pending or DEFAULT_MAX_PENDING
        self.rank_zero_only = rank_zero_only
        self._defaults = dict(default_options)
        self._sink: Sink = open_sink(root, storage_options)
        self._workers = workers or default_workers()
        self._pool = ThreadPoolExecutor(
            self._workers, thread_name_prefix="tensorpng-writer", initializer=_yield_to_caller
        )
        self._buffers = _BufferPool(self.max_pending)
        self._lock = threading.Condition()
        self._filter_lock = threading.Lock()
        self._pending_bytes = 0
        self._pending_images = 0
        self._written = 0
        self._dropped = 0
        self._bytes_written = 0
        self._encode_seconds = 0.0
        self._write_seconds = 0.0
        self._errors: list[BaseException] = []
        self._error_count = 0
        self._warned_drop = False
        self._closed = False
        self._closing = False
        atexit.register(self._close_at_exit)

    @staticmethod
    def _check_options(options: Mapping[str, Any]) -> None:
        split_options({k: v for k, v in options.items() if k != "overwrite"})
        overwrite = options.get("overwrite", True)
        if not isinstance(overwrite, bool):
            raise OptionError(f"overwrite must be True or False, got {overwrite!r}")

    # ------------------------------------------------------------------------------ public

    @property
    def stats(self) -> WriterStats:
        """Counters: images written, dropped and pending, bytes, seconds, errors."""
        with self._lock:
            return WriterStats(
                images_written=self._written,
                images_dropped=self._dropped,
                images_pending=self._pending_images,
                bytes_written=self._bytes_written,
                bytes_pending=self._pending_bytes,
                encode_seconds=self._encode_seconds,
                write_seconds=self._write_seconds,
                errors=self._error_count,
            )

    def save(self, x: object, name: str, **options_and_fields: Any) -> None:
        """Capture ``x`` and queue it for writing; returns once ``x`` may be changed or freed.

        Args:
            x: as for :func:`tensorpng.save` (one image or a batch).
            name: a ``str.format`` template relative to ``root``. Fields: ``index`` (position
                in the batch; 0 for one image or a grid), ``step``, ``rank``, and every keyword
                here that is not an option. Text field values are sanitized (no separators,
                ``..`` or control characters); a name resolving outside ``root`` raises.
            **options_and_fields: options of :func:`tensorpng.save` (override the writer's
                defaults) and name fields.

        Raises:
            TensorPNGError: bad input or name (before anything is queued), an error from a
                worker since the last call, or a full queue with ``on_full="error"``.
        """
        self._raise_worker_error()
        if self._closing:
            raise TensorPNGError("this Writer is closed")
        options = {**self._defaults}
        fields: dict[str, Any] = {}
        for key, value in options_and_fields.items():
            (options if key in _SAVE_OPTION_NAMES else fields)[key] = value
        rank = current_rank()
        if self.rank_zero_only and rank != 0:
            return
        overwrite = options.pop("overwrite", True)
        image_options, png_options = split_options(options)
        batch, device_encoder = prepare_for(x, image_options, png_options)
        count = 1 if batch.writes_grid else batch.count
        names = self._names(name, count, batch.layout.batched and not batch.writes_grid, rank, fields)
        if not overwrite:
            self._sink.check_absent(names)
        nbytes = self._capture_size(batch)
        if not self._reserve(nbytes, count):
            return
        job = _Job(batch, names, png_options, bool(overwrite), nbytes, count, release=lambda: None)
        try:
            if device_encoder:
                self._capture_for_device_encoder(job)
                self._pool.submit(self._encode_on_device, job)
            elif batch.on_device:
                self._capture_pinned(job)
            else:
                self._capture_host(job)
        except BaseException:
            self._unreserve(nbytes, count)
            raise
        if device_encoder:
            return
        submitted = 0
        try:
            for index in range(count):
                self._pool.submit(self._run, job, index)
                submitted += 1
        finally:
            if submitted < count:  # interrupted (KeyboardInterrupt): these will never run
                self._abandon(job, count - submitted)

    def flush(self) -> None:
        """Wait until everything queued is written; raise the first worker error, if any."""
        with self._lock:
            while self._pending_images:
                self._lock.wait()
        self._raise_worker_error()

    def close(self) -> None:
        """Flush, stop the workers and raise the first worker error, if any. Idempotent."""
        with self._lock:
            already, self._closing = self._closing, True  # no save is queued after this
            self._lock.notify_all()
        if already:
            if not self._closed:  # another thread is closing: wait for it
                self.flush()
            self._raise_worker_error()
            return
        try:
            self.flush()
        finally:
            self._closed = True
            self._pool.shutdown(wait=True)
            atexit.unregister(self._close_at_exit)

    def __enter__(self) -> Writer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if exc is None:
            self.close()
            return
        # An exception (KeyboardInterrupt included) is leaving the block: still write what
        # was queued, and do not hide the exception behind a worker error.
        try:
            self.close()
        except TensorPNGError as error:
            note = f"tensorpng.Writer also failed while closing: {error}"
            if hasattr(exc, "add_note"):  # Python 3.11+
                exc.add_note(note)
            else:  # pragma: no cover - Python 3.10
                warnings.warn(note, RuntimeWarning, stacklevel=2)

    # ------------------------------------------------------------------------------ internals

    def _close_at_exit(self) -> None:
        try:
            self.close()
        except TensorPNGError as error:
            print(f"tensorpng.Writer({self.root!r}) at exit: {error}", file=sys.stderr)

    def _names(
        self, template: str, count: int, batched: bool, rank: int, fields: dict[str, Any]
    ) -> list[str]:
        used = template_fields(template)
        if batched and count > 1 and "index" not in used:
            raise PathError(
                f"name {template!r} has no {{index}} field but the input is a batch of {count}; "
                "add {index} (e.g. 'step{step:06d}/{index:03d}.png') or pass grid=True"
            )
        values = {key: sanitize_field(value) for key, value in fields.items()}
        values.setdefault("rank", rank)
        names = [relative_name(format_template(template, {**values, "index": i})) for i in range(count)]
        if len(set(names)) != len(names):
            raise PathError(f"name {template!r} gives two images the same file; use {{index}} in it")
        return names

    @staticmethod
    def _capture_size(batch: Batch) -> int:
        if batch.on_device:
            return math.prod(batch.images.shape) * (batch.plan.bits // 8)
        return int(batch.source.data.nbytes)

    def _reserve(self, nbytes: int, count: int) -> bool:
        with self._lock:
            if self._closing:
                raise TensorPNGError("this Writer is closed")
            while self._pending_images and self._pending_bytes + nbytes > self.max_pending:
                if self.on_full == "drop":
                    self._dropped += count
                    if not self._warned_drop:
                        self._warned_drop = True
                        warnings.warn(
                            f"tensorpng.Writer dropped a save: {self._pending_bytes} bytes pending, "
                            f"max_pending={self.max_pending}; further drops are counted in stats",
                            RuntimeWarning,
                            stacklevel=3,
                        )
                    return False
                if self.on_full == "error":
                    raise QueueFullError(
                        f"tensorpng.Writer queue is full ({self._pending_bytes} bytes pending, "
                        f"max_pending={self.max_pending}); raise max_pending, add workers, or "
                        "use on_full='block' or 'drop'"
                    )
                self._lock.wait()
                if self._closing:
                    raise TensorPNGError("this Writer is closed")
                if self._errors:
                    break
            self._pending_bytes += nbytes
            self._pending_images += count
        return True

    def _abandon(self, job: _Job, images: int) -> None:
        """Count ``images`` of ``job`` that were never queued as dropped."""
        with self._lock:
            self._dropped += images
            job.remaining -= images
            self._pending_images -= images
            done = job.remaining == 0
            if done:
                self._pending_bytes -= job.nbytes
            self._lock.notify_all()
        if done:
            job.release()

    def _unreserve(self, nbytes: int, images: int) -> None:
        with self._lock:
            self._pending_bytes -= nbytes
            self._pending_images -= images
            self._lock.notify_all()

    def _capture_host(self, job: _Job) -> None:
        """CPU input: copy it into a reused buffer (the job must not keep the caller's array)."""
        batch = job.batch
        source = batch.source.data
        key = (source.shape, source.dtype.str, False)
        buffer = self._buffers.take(key, lambda: np.empty(source.shape, source.dtype))
        _copy(buffer, source)
        job.batch = replace(
            batch, source=replace(batch.source, data=buffer), images=as_nhwc(buffer, batch.layout)
        )
        job.release = lambda: self._buffers.give(key, buffer)

    def _capture_pinned(self, job: _Job) -> None:
        """Device input for the CPU encoder: convert on the caller's current stream, then a
        ``non_blocking`` copy into reused pinned memory that the workers read after an event."""
        torch = torch_module()
        batch = job.batch
        samples, nans = batch.convert_on_device()
        key = (tuple(samples.shape), str(samples.dtype), True)
        pinned = self._buffers.take(
            key, lambda: torch.empty(samples.shape, dtype=samples.dtype, pin_memory=samples.is_cuda)
        )
        pinned.copy_(samples, non_blocking=True)
        job.device_nans = _to_host(nans, samples.is_cuda)
        if job.png_options.record:  # the record's min/max: of the values, gone once converted
            job.host_extremes = [_to_host(value, samples.is_cuda) for value in device_extremes(batch.images)]
        job.event = _record_event(samples)
        if job.event is None and samples.device.type != "cpu":  # other accelerators: wait here
            getattr(torch, samples.device.type).synchronize()
        job.batch = _detached(batch).with_host_samples(pinned.numpy(), 0)
        job.release = lambda: self._buffers.give(key, pinned)
        job.ready_lock = threading.Lock()

    def _capture_for_device_encoder(self, job: _Job) -> None:
        """Convert on the caller's stream and mark it with an event; the torch encoder runs in
        a worker, on a stream of its own that waits for that event."""
        batch = job.batch
        samples, nans = batch.convert_on_device()
        if samples.untyped_storage().data_ptr() == batch.images.untyped_storage().data_ptr():
            samples = samples.clone()  # uint8/uint16 input as it was: snapshot it, on this stream
        job.device_samples, job.device_nans = samples, nans
        job.device_extremes = device_extremes(batch.images) if job.png_options.record else None
        job.batch = _detached(batch)
        job.event = _record_event(samples)

    def _encode_on_device(self, job: _Job) -> None:
        """Worker: encode a whole batch with the torch encoder, then write its files."""
        torch = torch_module()
        try:
            start = time.perf_counter()
            samples = job.device_samples
            low, high = job.device_extremes or (None, None)
            if job.event is not None:
                stream = torch.cuda.Stream(samples.device)
                stream.wait_event(job.event)
                for tensor in (samples, job.device_nans, low, high):
                    if tensor is not None:  # the caller's stream may reuse them only after us
                        tensor.record_stream(stream)
                with torch.cuda.stream(stream):
                    files = encode_device_samples(job.batch, samples, job.png_options, low, high)
                    nans = int(job.device_nans.item())
            else:
                files = encode_device_samples(job.batch, samples, job.png_options, low, high)
                nans = int(job.device_nans.item())
            job.files, job.device_samples = files, None
            job.encode_share = (time.perf_counter() - start) / len(files)
            if nans:
                warn_nans(nans, job.batch.source.description)
        except BaseException as error:
            self._finish(job, [error] * job.remaining, written=0, encode_seconds=0.0, write_seconds=0.0)
            return
        for index in range(len(job.names)):  # here: a pool shutting down takes no new tasks
            self._run(job, index)

    def _wait_ready(self, job: _Job) -> None:
        """Device jobs, once: wait for the copy to host memory, then warn about NaNs and read
        the min/max for the records. Host jobs have nothing to wait for."""
        if job.ready_lock is None:
            return
        with job.ready_lock:
            if job.ready:
                return
            if job.event is not None:
                job.event.synchronize()  # releases the GIL while waiting
            nans = int(job.device_nans.item())
            if nans:
                warn_nans(nans, job.batch.source.description)
            self._read_extremes(job)
            job.ready = True

    @staticmethod
    def _read_extremes(job: _Job) -> None:
        """Turn the pinned copies of a device batch's min/max into per-file pairs."""
        if job.host_extremes is None:
            return
        pairs = list(zip(job.host_extremes[0].tolist(), job.host_extremes[1].tolist(), strict=True))
        if job.batch.writes_grid:
            lows = [low for low, _ in pairs if low is not None and math.isfinite(low)]
            highs = [high for _, high in pairs if high is not None and math.isfinite(high)]
            pairs = [(min(lows, default=None), max(highs, default=None))]
        job.extremes = pairs

    def _run(self, job: _Job, index: int) -> None:
        written = 0
        encode_seconds = write_seconds = 0.0
        error: BaseException | None = None
        try:
            start = time.perf_counter()
            if job.files is not None:  # encoded already, by the torch encoder
                data, nans = job.files[index], 0
                encode_seconds = job.encode_share
            else:
                self._wait_ready(job)
                start = time.perf_counter()
                extremes = job.extremes[index] if job.extremes else None
                # One worker at a time converts and filters (NumPy's short calls, which take
                # the GIL back each time); the deflate that follows runs on all of them. See
                # tensorpng.files.run_pipeline.
                with self._filter_lock:
                    filtered, nans = filtered_image(job.batch, index, job.png_options, extremes)
                data = finish_png(filtered)
                encode_seconds = time.perf_counter() - start
            middle = time.perf_counter()
            written = self._sink.write(job.names[index], data, job.overwrite)
            write_seconds = time.perf_counter() - middle
            if nans:
                warn_nans(nans, job.batch.source.description)
        except BaseException as caught:
            error = caught
        self._finish(job, [error] if error else [], written, encode_seconds, write_seconds, images=1)

    def _finish(
        self,
        job: _Job,
        errors: list[BaseException],
        written: int,
        encode_seconds: float,
        write_seconds: float,
        images: int | None = None,
    ) -> None:
        """Account for ``images`` finished images of ``job`` (all that remain by default)."""
        with self._lock:
            images = job.remaining if images is None else images
            job.remaining -= images
            done = job.remaining == 0
            self._errors.extend(errors)
            self._error_count += len(errors)
            self._written += images - len(errors)
            self._bytes_written += written
            self._encode_seconds += encode_seconds
            self._write_seconds += write_seconds
            self._pending_images -= images
            if done:
                self._pending_bytes -= job.nbytes
            self._lock.notify_all()
        if done:
            job.release()

    def _raise_worker_error(self) -> None:
        with self._lock:
            if not self._errors:
                return
            errors, self._errors = self._errors, []
        first = errors[0]
        more = f" (and {len(errors) - 1} more failed)" if len(errors) > 1 else ""
        if isinstance(first, TensorPNGError):
            raise type(first)(f"{first}{more}") from first
        raise TensorPNGError(f"a tensorpng.Writer worker failed: {first!r}{more}") from first


WORKER_NICENESS = 5


def _yield_to_caller() -> None:
    """Lower this worker thread's CPU priority (Linux: per thread) so that the loop that
    feeds the writer keeps its cores; idle cores still go to the workers."""
    with contextlib.suppress(AttributeError, OSError):  # not Linux, or not permitted
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), WORKER_NICENESS)


def _record_event(samples: Any) -> Any:
    """A CUDA event recorded on the current stream after ``samples`` were made (None off CUDA);
    blocking, so that a worker waiting on it sleeps instead of spinning on a core."""
    if not samples.is_cuda:
        return None
    torch = torch_module()
    event = torch.cuda.Event(blocking=True)
    event.record(torch.cuda.current_stream(samples.device))
    return event


def _to_host(value: Any, pinned: bool) -> Any:
    """A ``non_blocking`` copy of a device tensor into (pinned) host memory."""
    torch = torch_module()
    return torch.empty(value.shape, dtype=value.dtype, pin_memory=pinned).copy_(value, non_blocking=True)


def _detached(batch: Batch) -> Batch:
    """``batch`` without references to the caller's device tensor: meta tensors of the same
    shape and dtype stand in (they hold no memory), so queued jobs hold only what they count."""
    torch = torch_module()
    stand_in = torch.empty(batch.source.data.shape, dtype=batch.source.data.dtype, device="meta")
    images = torch.empty(batch.images.shape, dtype=batch.images.dtype, device="meta")
    return replace(batch, source=replace(batch.source, data=stand_in), images=images)


def _copy(buffer: np.ndarray, source: np.ndarray) -> None:
    """Copy ``source`` into ``buffer`` on this thread (NumPy: no OpenMP threads left spinning
    on cores the encoding workers need)."""
    np.copyto(buffer, source)
