"""Internal: the Writer's admission and accounting.

Queued work may hold at most ``max_pending`` bytes of captured data; what happens past that
is the ``on_full`` policy. Every image handed to ``Writer.save`` ends in exactly one of
``images_written``, ``images_dropped`` (never queued: a full queue with ``on_full="drop"``,
or an interrupted ``save``) and ``images_failed`` (its encode or write raised); until then
it counts as pending. Worker errors wait here for the caller's next ``save``, ``flush`` or
``close``.
"""

from __future__ import annotations

import threading
import warnings
from dataclasses import dataclass
from typing import Any, Literal

from .errors import QueueFullError, TensorPNGError

OnFull = Literal["block", "drop", "error"]


@dataclass(frozen=True)
class WriterStats:
    """A snapshot of a :class:`~tensorpng.Writer`'s counters.

    ``images_written + images_dropped + images_failed + images_pending`` is the number of
    images passed to ``save`` (a grid counts as one image).
    """

    images_written: int
    images_dropped: int
    images_failed: int
    images_pending: int
    bytes_written: int
    bytes_pending: int
    encode_seconds: float
    write_seconds: float
    errors: int


class Admission:
    """Bounds the captured bytes of queued work and counts every image's fate."""

    def __init__(self, max_pending: int, on_full: OnFull) -> None:
        self.max_pending = max_pending
        self.on_full = on_full
        self.lock = threading.Condition()
        self.closing = False
        self._pending_bytes = self._pending_images = 0
        self._written = self._dropped = self._failed = self._bytes_written = 0
        self._encode_seconds = self._write_seconds = 0.0
        self._errors: list[BaseException] = []
        self._error_count = 0
        self._warned_drop = False

    def stats(self) -> WriterStats:
        with self.lock:
            return WriterStats(
                self._written, self._dropped, self._failed, self._pending_images, self._bytes_written,
                self._pending_bytes, self._encode_seconds, self._write_seconds, self._error_count,
            )  # fmt: skip

    def reserve(self, nbytes: int, count: int) -> bool:
        """Room for ``count`` images holding ``nbytes``: True once reserved, False when dropped.
        A save larger than ``max_pending`` still goes through when nothing is queued."""
        with self.lock:
            while (
                not self.closing and self._pending_images and self._pending_bytes + nbytes > self.max_pending
            ):
                if self.on_full == "drop":
                    self._dropped += count
                    self._warn_drop()
                    return False
                if self.on_full == "error":
                    raise QueueFullError(
                        f"tensorpng.Writer queue is full ({self._pending_bytes} bytes pending, "
                        f"max_pending={self.max_pending}); raise max_pending, add workers, or "
                        "use on_full='block' or 'drop'"
                    )
                self.lock.wait()
            if self.closing:
                raise TensorPNGError("this Writer is closed")
            self._pending_bytes += nbytes
            self._pending_images += count
        return True

    def _warn_drop(self) -> None:
        if not self._warned_drop:
            self._warned_drop = True
            warnings.warn(
                f"tensorpng.Writer dropped a save: {self._pending_bytes} bytes pending, "
                f"max_pending={self.max_pending}; further drops are counted in stats",
                RuntimeWarning,
                stacklevel=4,
            )

    def cancel(self, job: Any, images: int) -> None:
        """``images`` of ``job`` will never run (an interrupted ``save``): count them dropped."""
        with self.lock:
            self._dropped += images
            done = self._settle(job, images)
        if done:
            job.release()

    def finish(
        self, job: Any, images: int, error: BaseException | None, written: int, seconds: tuple[float, float]
    ) -> None:
        """Account for ``images`` finished images of ``job``: written, or failed with ``error``;
        ``seconds`` spent encoding and writing them."""
        with self.lock:
            if error is not None:
                self._errors.append(error)
                self._error_count += images
                self._failed += images
            else:
                self._written += images
            self._bytes_written += written
            self._encode_seconds += seconds[0]
            self._write_seconds += seconds[1]
            done = self._settle(job, images)
        if done:
            job.release()  # its capture buffer goes back to the pool

    def lost(self, images: int, error: BaseException | None) -> None:
        """``images`` counted written were lost after all (an animation dropped, or not moved
        into place): count them failed; ``error``, if given, is raised at the next call."""
        with self.lock:
            self._written -= images
            self._failed += images
            self._error_count += images
            if error is not None:
                self._errors.append(error)

    def _settle(self, job: Any, images: int) -> bool:
        """Under the lock: ``images`` of ``job`` left the queue; True when it has no more."""
        job.remaining -= images
        self._pending_images -= images
        done = bool(job.remaining == 0)
        if done:
            self._pending_bytes -= job.nbytes
        self.lock.notify_all()
        return done

    def wait_idle(self) -> None:
        with self.lock:
            while self._pending_images:
                self.lock.wait()

    def close(self) -> bool:
        """Refuse new work; True if this call closed it (False: closed already)."""
        with self.lock:
            already, self.closing = self.closing, True
            self.lock.notify_all()
        return not already

    def take_errors(self) -> list[BaseException]:
        """The worker errors since the last call (to raise later with :meth:`raise_errors`)."""
        with self.lock:
            errors, self._errors = self._errors, []
        return errors

    def raise_errors(self, errors: list[BaseException] | None = None) -> None:
        """Raise the first of ``errors`` (default: those since the last call) as a TensorPNGError."""
        errors = self.take_errors() if errors is None else errors
        if not errors:
            return
        first = errors[0]
        more = f" (and {len(errors) - 1} more failed)" if len(errors) > 1 else ""
        if isinstance(first, TensorPNGError):
            raise type(first)(f"{first}{more}") from first
        raise TensorPNGError(f"a tensorpng.Writer worker failed: {first!r}{more}") from first
