"""Internal: the Writer's capture strategies, one small class each.

``Writer.save`` must return as soon as the caller may change or free its input, without
waiting for a device. Each strategy captures a prepared batch into a :class:`Job` and later,
on a worker thread, hands out the PNG bytes of each of its images:

- :class:`HostJob`: a CPU input, copied into a reused host buffer; workers convert, filter
  (one at a time) and deflate (all at once).
- :class:`PinnedJob`: a device input for the CPU encoder: converted on the caller's stream,
  copied ``non_blocking`` into reused pinned memory; workers wait for a CUDA event.
- :class:`DeviceJob`: a device input for the torch encoder: converted on the caller's
  stream; one worker encodes the whole batch on a stream of its own that waits for an event.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from ._chunks import chunk_around
from ._encode import Extremes, encode_device_samples, filtered_chunk, filtered_image
from ._misuse import applies, outside_share, warn_if_outside
from ._options import PNGOptions
from ._pipeline import default_workers
from ._record import device_extremes
from .arrays import torch_module
from .convert import Batch, warn_nans
from .layout import as_nhwc
from .png import FilteredPNG, finish_png


class BufferPool:
    """Reused host buffers (pinned for CUDA copies), keyed by (shape, dtype, pinned).

    Keeps at most ``limit`` bytes idle, dropping the oldest first: fresh buffers cost page
    faults (or cudaHostAlloc), but a writer fed many shapes must not hoard memory.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._idle: dict[tuple[Any, ...], list[Any]] = {}
        self._idle_bytes = 0
        self._lock = threading.Lock()

    def take(self, key: tuple[Any, ...], make: Callable[[], Any]) -> Any:
        with self._lock:
            idle = self._idle.get(key)
            if idle:
                buffer = idle.pop()
                if not idle:
                    del self._idle[key]
                self._idle_bytes -= nbytes(buffer)
                return buffer
        return make()

    def give(self, key: tuple[Any, ...], buffer: Any) -> None:
        size = nbytes(buffer)
        with self._lock:
            while self._idle and self._idle_bytes + size > self.limit:  # drop the oldest shape
                oldest = next(iter(self._idle))
                self._idle_bytes -= sum(nbytes(b) for b in self._idle.pop(oldest))
            if size <= self.limit:
                self._idle.setdefault(key, []).append(buffer)
                self._idle_bytes += size

    def clear(self) -> None:
        """Free every idle buffer (at ``Writer.close``)."""
        with self._lock:
            self._idle.clear()
            self._idle_bytes = 0

    @property
    def idle_bytes(self) -> int:
        with self._lock:
            return self._idle_bytes


def nbytes(buffer: Any) -> int:
    if isinstance(buffer, np.ndarray):
        return int(buffer.nbytes)
    return int(buffer.numel() * buffer.element_size())


@dataclass
class Job:
    """One captured ``save``: its batch, names and bookkeeping. Subclasses capture and encode."""

    batch: Batch
    names: list[str]
    png_options: PNGOptions
    overwrite: bool
    nbytes: int
    remaining: int
    release: Callable[[], None] = lambda: None
    # images filtered with others of their chunk (see _chunks), until their worker takes them
    filtered: dict[int, tuple[FilteredPNG, int]] = field(default_factory=dict, repr=False)

    def encoded(self, index: int, filter_lock: threading.Lock) -> tuple[bytes, int]:
        """PNG bytes of image ``index`` and its NaN count (on a worker thread)."""
        filtered, nans = self._filtered(index, filter_lock, None)
        return finish_png(filtered), nans

    def wait_ready(self) -> None:
        """Wait until the captured samples may be read (only pinned copies wait)."""

    def _filtered(
        self, index: int, filter_lock: threading.Lock, extremes: list[Extremes] | None
    ) -> tuple[FilteredPNG, int]:
        # One worker at a time converts and filters (NumPy's short calls, which take the GIL
        # back each time); the deflate that follows runs on all of them (see _pipeline).
        # Small images are converted and filtered a chunk at a time, by the first of its
        # images' workers; the others find theirs done.
        with filter_lock:
            batch = self.batch
            if batch.writes_grid:
                return filtered_image(batch, index, self.png_options, extremes[index] if extremes else None)
            done = self.filtered.pop(index, None)
            if done is None:
                start, stop = chunk_around(batch, index, default_workers())
                items = filtered_chunk(batch, start, stop, self.png_options, extremes)
                self.filtered.update(zip(range(start, stop), items, strict=True))
                done = self.filtered.pop(index)
            return done


@dataclass
class HostJob(Job):
    """A CPU input, copied so that the caller may reuse its array at once."""

    check_range: bool = False  # whether image 0's worker samples the batch for the range warning

    def encoded(self, index: int, filter_lock: threading.Lock) -> tuple[bytes, int]:
        if index == 0 and self.check_range:
            # On a worker, not in save: sampling a 50 MB batch took 2.5 ms of the caller's
            # 6 ms. The buffer is held until image 0 is written; the warning (deferred, see
            # _workers) is issued at the caller's next save, flush or close.
            with filter_lock:
                share = outside_share(self.batch.plan, self.batch.images)
            warn_if_outside(share, self.batch.options.scaling, self.batch.source.description)
        return super().encoded(index, filter_lock)

    @classmethod
    def capture(cls, job: Job, buffers: BufferPool) -> HostJob:
        batch = job.batch
        source = batch.source.data
        key = (source.shape, source.dtype.str, False)
        buffer = buffers.take(key, lambda: np.empty(source.shape, source.dtype))
        np.copyto(buffer, source)  # on this thread: no OpenMP threads left spinning on cores
        captured = replace(
            batch, source=replace(batch.source, data=buffer), images=as_nhwc(buffer, batch.layout)
        )
        return cls(
            **{**vars(job), "batch": captured, "release": lambda: buffers.give(key, buffer)},
            check_range=applies(batch.plan, batch.options.scaling),
        )


@dataclass
class PinnedJob(Job):
    """A device input converted on the caller's stream, copied to pinned memory."""

    event: Any = None  # the CUDA event the copy completes at
    device_nans: Any = None  # pinned 0-d tensors: NaN count, share of values out of range
    outside: Any = None
    host_extremes: Any = None  # pinned per-image min and max of the values (for the record)
    extremes: list[Extremes] | None = None
    ready: bool = False
    ready_lock: threading.Lock = field(default_factory=threading.Lock)

    @classmethod
    def capture(cls, job: Job, buffers: BufferPool) -> PinnedJob:
        torch = torch_module()
        batch = job.batch
        samples, nans = batch.convert_on_device()
        key = (tuple(samples.shape), str(samples.dtype), True)
        pinned = buffers.take(
            key, lambda: torch.empty(samples.shape, dtype=samples.dtype, pin_memory=samples.is_cuda)
        )
        pinned.copy_(samples, non_blocking=True)
        cuda = samples.is_cuda
        host_extremes = None
        if job.png_options.record:  # the record's min/max: of the values, gone once converted
            host_extremes = [to_host(value, cuda) for value in device_extremes(batch.images)]
        outside = (
            to_host(outside_share(batch.plan, batch.images), cuda)
            if applies(batch.plan, batch.options.scaling)
            else None
        )
        event = record_event(samples)
        if event is None and samples.device.type != "cpu":  # other accelerators: wait here
            getattr(torch, samples.device.type).synchronize()
        fields = {**vars(job), "batch": detached(batch).with_host_samples(pinned.numpy(), 0)}
        fields["release"] = lambda: buffers.give(key, pinned)
        return cls(
            **fields,
            event=event,
            device_nans=to_host(nans, cuda),
            outside=outside,
            host_extremes=host_extremes,
        )

    def encoded(self, index: int, filter_lock: threading.Lock) -> tuple[bytes, int]:
        self.wait_ready()
        filtered, nans = self._filtered(index, filter_lock, self.extremes)
        return finish_png(filtered), nans

    def wait_ready(self) -> None:
        """Once per job: wait for the copy, warn about NaNs and the range, read the min/max."""
        with self.ready_lock:
            if self.ready:
                return
            if self.event is not None:
                self.event.synchronize()  # releases the GIL while waiting
            warn_nans(int(self.device_nans.item()), self.batch.source.description)
            if self.outside is not None:
                warn_if_outside(
                    float(self.outside.item()), self.batch.options.scaling, self.batch.source.description
                )
            if self.host_extremes is not None:
                pairs = list(zip(self.host_extremes[0].tolist(), self.host_extremes[1].tolist(), strict=True))
                self.extremes = grid_extremes(pairs) if self.batch.writes_grid else pairs
            self.ready = True


@dataclass
class DeviceJob(Job):
    """A device input for the torch encoder: only compressed bytes cross to the host."""

    samples: Any = None
    device_nans: Any = None
    device_extremes: Any = None
    outside: Any = None
    event: Any = None
    files: list[bytes] | None = None

    @classmethod
    def capture(cls, job: Job) -> DeviceJob:
        batch = job.batch
        samples, nans = batch.convert_on_device()
        if samples.untyped_storage().data_ptr() == batch.images.untyped_storage().data_ptr():
            samples = samples.clone()  # uint8/uint16 input as it was: snapshot it, on this stream
        extremes = device_extremes(batch.images) if job.png_options.record else None
        outside = (
            outside_share(batch.plan, batch.images) if applies(batch.plan, batch.options.scaling) else None
        )
        return cls(
            **{**vars(job), "batch": detached(batch)},
            samples=samples,
            device_nans=nans,
            device_extremes=extremes,
            outside=outside,
            event=record_event(samples),
        )

    def encode_all(self) -> None:
        """On one worker: encode the whole batch with the torch encoder (its own stream)."""
        torch = torch_module()
        low, high = self.device_extremes or (None, None)
        tensors = (self.samples, self.device_nans, self.outside, low, high)
        if self.event is None:
            self._encode(low, high)
            return
        stream = torch.cuda.Stream(self.samples.device)
        stream.wait_event(self.event)
        for tensor in tensors:
            if tensor is not None:  # the caller's stream may reuse them only after us
                tensor.record_stream(stream)
        with torch.cuda.stream(stream):
            self._encode(low, high)

    def _encode(self, low: Any, high: Any) -> None:
        self.files = encode_device_samples(self.batch, self.samples, self.png_options, low, high)
        self.samples = None
        description = self.batch.source.description
        warn_nans(int(self.device_nans.item()), description)
        if self.outside is not None:
            warn_if_outside(float(self.outside.item()), self.batch.options.scaling, description)

    def encoded(self, index: int, filter_lock: threading.Lock) -> tuple[bytes, int]:
        assert self.files is not None, "encode_all() runs first"
        return self.files[index], 0


def grid_extremes(pairs: list[Extremes]) -> list[Extremes]:
    """One (min, max) pair for a grid from the per-image pairs."""
    lows = [low for low, _ in pairs if low is not None and math.isfinite(low)]
    highs = [high for _, high in pairs if high is not None and math.isfinite(high)]
    return [(min(lows, default=None), max(highs, default=None))]


def record_event(samples: Any) -> Any:
    """A CUDA event recorded on the current stream after ``samples`` were made (None off CUDA);
    blocking, so that a worker waiting on it sleeps instead of spinning on a core."""
    if not samples.is_cuda:
        return None
    torch = torch_module()
    event = torch.cuda.Event(blocking=True)
    event.record(torch.cuda.current_stream(samples.device))
    return event


def to_host(value: Any, pinned: bool) -> Any:
    """A ``non_blocking`` copy of a device tensor into (pinned) host memory."""
    torch = torch_module()
    return torch.empty(value.shape, dtype=value.dtype, pin_memory=pinned).copy_(value, non_blocking=True)


def detached(batch: Batch) -> Batch:
    """``batch`` without references to the caller's device tensor: meta tensors of the same
    shape and dtype stand in (they hold no memory), so queued jobs hold only what they count."""
    torch = torch_module()
    stand_in = torch.empty(batch.source.data.shape, dtype=batch.source.data.dtype, device="meta")
    images = torch.empty(batch.images.shape, dtype=batch.images.dtype, device="meta")
    return replace(batch, source=replace(batch.source, data=stand_in), images=images)


def capture_size(batch: Any) -> int:
    """Bytes a capture of ``batch`` holds: host inputs as given, device ones converted."""
    if batch.on_device:
        shape = batch.images.shape
        return int(shape[0] * shape[1] * shape[2] * shape[3]) * (batch.plan.bits // 8)
    return int(batch.source.data.nbytes)


def capture(job: Job, buffers: BufferPool, *, device_encoder: bool, on_device: bool) -> Job:
    """``job`` captured by the strategy its input needs: the torch encoder's (the batch stays
    on the device), pinned host buffers of device samples, or host copies of CPU input."""
    if device_encoder:
        return DeviceJob.capture(job)
    if on_device:
        return PinnedJob.capture(job, buffers)
    return HostJob.capture(job, buffers)
