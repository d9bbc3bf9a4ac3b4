"""Internal: the Writer's worker side. Captured jobs are queued on a thread pool, one task per
image (a whole batch for the torch encoder); workers encode each image, write it through the
sink and report its fate to the admission, which counts it and keeps its error."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

from ._admission import Admission
from ._capture import BufferPool, DeviceJob, Job, capture
from ._pipeline import yield_to_caller
from .convert import warn_nans
from .errors import PendingWarnings, WriteError, defer_warnings, replay_warnings
from .sinks import Sink


class Workers:
    """``count`` worker threads (at a lower priority than the caller's) writing to ``sink``."""

    def __init__(self, sink: Sink, admission: Admission, buffers: BufferPool, count: int) -> None:
        self.sink, self.admission, self.buffers = sink, admission, buffers
        # Warnings noticed on a worker (NaNs, values out of range) wait in _pending_warnings
        # for the caller's next save, flush or close, which issues them at its own line.
        self._pending_warnings: PendingWarnings = []
        self._issued_warnings: set[tuple[str, type[Warning]]] = set()
        self.pool = ThreadPoolExecutor(
            count, thread_name_prefix="tensorpng-writer", initializer=self._start_thread
        )
        self.filter_lock = threading.Lock()  # filtering holds the GIL: one worker at a time

    def _start_thread(self) -> None:
        yield_to_caller()
        defer_warnings(self._pending_warnings)

    def replay_warnings(self) -> None:
        """Issue the warnings the workers deferred, at the caller's line (each text once)."""
        replay_warnings(self._pending_warnings, self._issued_warnings)

    def shutdown(self) -> None:
        """Wait for the queued tasks, then stop the threads."""
        self.pool.shutdown(wait=True)

    def capture(self, job: Job, device_encoder: bool, on_device: bool) -> Job:
        """``job`` captured by its strategy (cancelled if that raises)."""
        try:
            return capture(job, self.buffers, device_encoder=device_encoder, on_device=on_device)
        except BaseException:
            self.admission.cancel(job, job.remaining)
            raise

    def queue(self, job: Job, device_encoder: bool, on_device: bool) -> None:
        """Capture ``job`` with its strategy and queue a task per image."""
        captured = self.capture(job, device_encoder, on_device)
        if isinstance(captured, DeviceJob):
            self.pool.submit(self._encode_on_device, captured)
            return
        submitted = 0
        try:
            for index in range(len(captured.names)):
                self.pool.submit(self._run, captured, index)
                submitted += 1
        finally:
            if submitted < len(captured.names):  # interrupted (KeyboardInterrupt): never to run
                self.admission.cancel(captured, len(captured.names) - submitted)

    def _encode_on_device(self, job: DeviceJob) -> None:
        """Worker: encode a whole batch with the torch encoder, then write its files."""
        try:
            job.encode_all()
        except BaseException as error:
            self.admission.finish(job, job.remaining, error, 0, (0.0, 0.0))
            return
        for index in range(len(job.names)):  # here: a pool shutting down takes no new tasks
            self._run(job, index)

    def _run(self, job: Job, index: int) -> None:
        """Worker: encode image ``index`` of ``job`` and write it."""
        written, error = 0, None
        start = middle = time.perf_counter()
        try:
            data, nans = job.encoded(index, self.filter_lock)
            warn_nans(nans, job.batch.source.description)
            middle = time.perf_counter()
            written = self.sink.write(job.names[index], data, job.overwrite)
            if not isinstance(written, int) or isinstance(written, bool) or written < 0:  # a sink's slip
                written, bad = 0, written
                raise WriteError(
                    f"{type(self.sink).__name__}.write returned {bad!r} for {job.names[index]!r}; a sink "
                    "returns the number of bytes it wrote (the image counts as failed)"
                )
        except BaseException as caught:
            error = caught
        end = time.perf_counter()
        self.admission.finish(job, 1, error, written, (middle - start, end - middle))
