"""Internal module; its public names are re-exported by ``tensorpng``.

The Writer: save from inside a training loop without stalling it.

``Writer.save`` validates its input and name, captures it (a capture strategy from
``_capture``), queues one task per image and returns. Worker threads (``_workers``) encode
and write each image through a sink (``sinks``: atomic local files or fsspec). ``_admission`` bounds the
memory that queued work holds and counts every image's fate. Errors from workers are raised
in the caller at the next ``save``, ``flush`` or ``close``; ``close`` runs at interpreter exit.
``Writer.add_frame`` captures and counts frames the same way; ``_frames`` streams them into
animations, which ``close`` finishes.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import sys
import weakref
from collections.abc import Callable, Mapping, Sequence
from types import TracebackType
from typing import Any, Unpack, final

from ._admission import Admission, OnFull, WriterStats
from ._capture import BufferPool, Job, capture_size
from ._encode import prepare_for
from ._frames import Animations, FixedOptions, prepare_frame
from ._names import path_text, writer_names
from ._options import (
    Compression,
    Encoder,
    ImageOptions,
    PNGOptions,
    Scale,
    WriterKeywords,
    check_bool,
    check_workers,
    parse_image_options,
    parse_png_options,
    takes_options,
)
from ._pipeline import default_workers
from ._workers import Workers
from .arrays import current_rank
from .errors import ForkedWriterError, OptionError, TensorPNGError, names_memory_errors
from .palettes import PaletteSpec
from .sinks import Sink, open_sink

DEFAULT_MAX_PENDING = 1 << 30  # 1 GiB of captured data (host copies or pinned buffers)
# Idle capture buffers kept for reuse (min with max_pending): a steady loop's shapes, no hoard.
MAX_IDLE_BUFFER_BYTES = 64 << 20
OPTIONS = tuple(WriterKeywords.__annotations__)  # a Writer's defaults, which Writer.save overrides


_LIVE_WRITERS: weakref.WeakSet[Writer] = weakref.WeakSet()


def _forget_writers_after_fork() -> None:
    """In a forked child, inherited Writers have no worker threads: their queued work is the
    parent's, so the child's exit must not wait for it (it would hang in the atexit flush)."""
    for writer in list(_LIVE_WRITERS):
        atexit.unregister(writer._close_at_exit)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_writers_after_fork)


@final
class Default:
    """The type of :data:`DEFAULT`: an option of ``Writer.save`` left to the Writer's default."""

    def __repr__(self) -> str:
        return "<the Writer's default>"


DEFAULT = Default()


class Writer(contextlib.AbstractContextManager["Writer"]):
    """Save tensors from a loop without stalling it.

    Args:
        root: folder (created on demand) or fsspec URL (``s3://bucket/run``, ``memory://x``;
            needs ``pip install 'tensorpng[s3]'``) under which names are resolved.
        workers: encoding threads (default: one per CPU this process may use).
        max_pending: bytes of captured data that queued work may hold (default 1 GiB): host
            copies of CPU inputs, or pinned buffers of converted CUDA samples. A single save
            larger than this is still accepted when nothing is queued.
        on_full: what ``save`` does when the queue is full: ``"block"`` waits for room,
            ``"drop"`` skips the save (counted in ``stats``, one warning per writer),
            ``"error"`` raises :class:`QueueFullError`.
        rank_zero_only: make ``save`` a no-op on every ``torch.distributed`` rank but 0.
        storage_options: passed to fsspec for URL roots.
        sink: where files go, instead of ``root``'s default (an object with
            ``write(name, data, overwrite) -> int`` and ``check_absent(names)``).
        layout, mean, std, value_range, scale, bits, grid, nrow, padding, pad_value, cmap,
        palette, compression, metadata, encoder, overwrite: defaults for every ``save``
            (see :func:`tensorpng.save`).

    Every image passed to ``save`` ends in exactly one of ``stats.images_written`` (its file
    is complete under its name), ``images_dropped`` (never queued, nothing written:
    ``on_full="drop"`` and a full queue, or a ``save`` interrupted while queueing, e.g. by
    ``KeyboardInterrupt``) or ``images_failed`` (encoding or writing raised in a worker; the
    error is raised at the next ``save``/``flush``/``close``, after that call's own images
    were queued), and is ``images_pending`` until then. A ``save`` that raises before
    queueing (bad input or name, ``QueueFullError``) and one skipped by ``rank_zero_only``
    count nothing. Writes below ``root`` never follow a symlink (``PathError``). A forked
    child must make its own Writer: the inherited one raises :class:`ForkedWriterError`.
    :meth:`add_frame` streams frames into animated PNGs (local roots), which :meth:`close`
    finishes and moves into place; each frame counts as an image in ``stats``, written
    once it is in the animation's temporary file (failed if the animation is lost after).
    """

    @takes_options(WriterKeywords)
    def __init__(
        self,
        root: str | os.PathLike[str],
        *,
        workers: int | None = None,
        max_pending: int | None = None,
        on_full: OnFull = "block",
        rank_zero_only: bool = False,
        storage_options: dict[str, Any] | None = None,
        sink: Sink | None = None,
        **options: Unpack[WriterKeywords],
    ) -> None:
        if on_full not in ("block", "drop", "error"):
            raise OptionError(f"on_full must be 'block', 'drop' or 'error', got {on_full!r}")
        check_workers(workers)
        if max_pending is not None and (not isinstance(max_pending, int) or max_pending < 1):
            raise OptionError(f"max_pending is a number of bytes >= 1, got {max_pending!r}")
        check_bool("rank_zero_only", rank_zero_only)
        self._defaults = dict(options)
        _parse(self._defaults)  # every default checked now, before any save
        self.root = path_text(root)
        self.rank_zero_only = rank_zero_only
        self._sink: Sink = sink if sink is not None else open_sink(self.root, storage_options)
        self._admission = Admission(max_pending or DEFAULT_MAX_PENDING, on_full)
        self._buffers = BufferPool(min(self._admission.max_pending, MAX_IDLE_BUFFER_BYTES))
        self._pid = os.getpid()  # a forked child inherits this Writer but not its threads
        self._workers = Workers(self._sink, self._admission, self._buffers, workers or default_workers())
        self._animations = Animations(self._admission, self._workers.filter_lock)
        self._closed = False
        atexit.register(self._close_at_exit)
        _LIVE_WRITERS.add(self)

    @property
    def idle_buffer_bytes(self) -> int:
        """Bytes of capture buffers idle for reuse: ``<= min(max_pending, 64 MiB)``, 0 once closed."""
        return self._buffers.idle_bytes

    def _check_process(self) -> None:
        if os.getpid() != self._pid:
            raise ForkedWriterError(
                f"this tensorpng.Writer({self.root!r}) was made in process {self._pid} and inherited by "
                f"fork into process {os.getpid()}, which has none of its worker threads; make a new "
                "Writer in the child (the parent still writes what it queued)"
            )

    @property
    def stats(self) -> WriterStats:
        """Counters: images written, dropped, failed and pending, bytes, seconds, errors."""
        return self._admission.stats()

    @names_memory_errors("tensorpng.Writer.save")
    def save(
        self,
        x: object,
        name: str,
        *,
        layout: str | Default | None = DEFAULT,
        mean: float | Sequence[float] | Default | None = DEFAULT,
        std: float | Sequence[float] | Default | None = DEFAULT,
        value_range: tuple[float, float] | Default | None = DEFAULT,
        scale: Scale | Default | None = DEFAULT,
        bits: int | Default | None = DEFAULT,
        grid: bool | Default = DEFAULT,
        nrow: int | Default = DEFAULT,
        padding: int | Default = DEFAULT,
        pad_value: float | Default = DEFAULT,
        cmap: str | Default | None = DEFAULT,
        palette: PaletteSpec | bool | Default | None = DEFAULT,
        compression: Compression | Default = DEFAULT,
        metadata: Mapping[str, str] | bool | Default | None = DEFAULT,
        encoder: Encoder | Default = DEFAULT,
        overwrite: bool | Default = DEFAULT,
        **fields: Any,
    ) -> None:
        """Capture ``x`` and queue it for writing; returns once ``x`` may be changed or freed.

        Args:
            x: as for :func:`tensorpng.save` (one image or a batch).
            name: a name template relative to ``root``, ending in ``.png``, with the fields
                ``index`` (position in the batch), ``rank``, and every keyword in
                ``fields``; the same rule as :func:`tensorpng.save` (a larger batch without
                ``{index}`` gets ``_{index}`` before the suffix). Text field values are
                sanitized; a name resolving outside ``root`` raises.
            layout, mean, std, value_range, scale, bits, grid, nrow, padding, pad_value,
            cmap, palette, compression, metadata, encoder, overwrite: as for
                :func:`tensorpng.save`; left out, the Writer's default.
            **fields: name fields, such as ``step=100``.

        Raises:
            TensorPNGError: bad input or name (before anything is queued), a full queue with
                ``on_full="error"``, or an error from a worker since the last call (raised
                after this call's images were queued).
        """
        call = self._begin(locals())
        if call is None:
            return
        rank, image_options, png_options, overwrite_files = call
        batch, device_encoder = prepare_for(x, image_options, png_options)
        count = 1 if batch.writes_grid else batch.count
        batched = batch.layout.batched and not batch.writes_grid
        names = writer_names(name, count, batched, rank, fields, OPTIONS)
        self._animations.check_not_open(names)
        if not overwrite_files:
            self._sink.check_absent(names)
        self._enqueue(
            Job(batch, names, png_options, overwrite_files, capture_size(batch), count),
            lambda job: self._workers.queue(job, device_encoder, batch.on_device),
        )

    @takes_options(WriterKeywords, dict.fromkeys(OPTIONS, DEFAULT))
    def add_frame(
        self,
        x: object,
        name: str,
        *,
        fps: float | None = None,
        loop: int | None = None,
        fields: Mapping[str, Any] | None = None,
        **options: Unpack[WriterKeywords],
    ) -> None:
        """Append ``x`` as the next frame of the animated PNG (APNG) at ``name``.

        Frames are captured, queued and counted in ``stats`` like ``save``'s images; workers
        filter each against the previous frame, deflate it and append it, in order, to a
        temporary file ``.NAME.tpng-TAG-N.tmp`` beside the target (only the previous frame is
        held). :meth:`close` (also after a ``with`` block raised) patches the frame count into
        ``acTL`` and renames the file into place; :meth:`flush` waits for the frames, no more.
        A process that dies before ``close`` leaves nothing under ``name``, only the temporary
        file (``tensorpng clean`` removes it). A failed frame drops its animation only.

        Args:
            x: an image (as for :func:`tensorpng.save`), a batch of one, or a batch with
                ``grid=True``. A frame whose size, channels or bits differ from the first
                frame's raises :class:`ShapeError` (bits: ``DTypeError``) naming both, here.
            name: as for :meth:`save`, under a local root (else :class:`OptionError`).
            fps, loop: frames a second (default 10) and plays (default 0: forever), set by
                the first frame; another value later raises :class:`OptionError`.
            fields: the name's fields besides ``rank`` (``save`` takes them as keywords;
                here the keywords are the options), e.g. ``{"tag": "val"}``.
            **options: layout, mean, std, value_range, scale, bits, grid, nrow, padding,
                pad_value, cmap, compression, metadata, encoder, overwrite: as for
                :meth:`save`; left out, the Writer's default. ``compression``, ``metadata``
                (the record describes the first frame) and ``overwrite`` are set by the first
                frame, like fps and loop; ``palette`` is refused. Device tensors are converted on the device
                and copied to pinned memory, then deflated by the CPU encoder: a later frame
                stores the rectangle that changed, which needs the previous frame's samples
                on the host anyway.
        """
        call = self._begin(options)
        if call is None:
            return
        rank, image_options, png_options, overwrite_file = call
        batch = prepare_frame(x, image_options, png_options)
        [target] = writer_names(name, 1, False, rank, dict(fields or {}), OPTIONS)
        fixed = FixedOptions.of(png_options, overwrite_file)
        animation = self._animations.get(self._sink, target, batch, fps, loop, fixed)
        self._enqueue(
            Job(batch, [target], png_options, overwrite_file, capture_size(batch), 1),
            lambda job: self._animations.queue(
                animation, self._workers.capture(job, False, batch.on_device), self._workers.pool
            ),
        )

    def _enqueue(self, job: Job, submit: Callable[[Job], None]) -> None:
        """Reserve room for ``job`` (or drop it, or raise, as ``on_full`` says) and submit it.
        Errors from earlier work are raised after it is queued: a failure costs no later image."""
        earlier = self._admission.take_errors()
        try:
            if self._admission.reserve(job.nbytes, job.remaining):
                submit(job)
        finally:
            self._admission.raise_errors(earlier)

    def _begin(self, given: Mapping[str, Any]) -> tuple[int, Any, Any, bool] | None:
        """A call's rank and options (the Writer's defaults, overridden), parsed; None on a
        rank that ``rank_zero_only`` skips."""
        self._check_process()
        self._workers.replay_warnings()
        options = {**self._defaults, **{k: given[k] for k in OPTIONS if given[k] is not DEFAULT}}
        if self._admission.closing:
            raise TensorPNGError("this Writer is closed")
        rank = current_rank()
        if self.rank_zero_only and rank != 0:
            return None
        return rank, *_parse(options)

    def flush(self) -> None:
        """Wait until everything queued is written; raise the first worker error, if any."""
        self._check_process()
        self._admission.wait_idle()
        self._workers.replay_warnings()
        self._admission.raise_errors()

    def close(self) -> None:
        """Flush, stop the workers, free idle buffers and raise the first worker error, if
        any. Idempotent. In a forked child it does nothing: the parent writes its own queue."""
        if os.getpid() != self._pid:
            return
        if not self._admission.close():
            if not self._closed:  # another thread is closing: wait for it
                self._admission.wait_idle()
            self._admission.raise_errors()
            return
        try:
            self._admission.wait_idle()
        finally:
            self._closed = True
            self._workers.shutdown()
            self._animations.finish_all()  # every frame is in its file now
            self._buffers.clear()
            atexit.unregister(self._close_at_exit)
        self._workers.replay_warnings()
        self._admission.raise_errors()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        if exc is None:
            self.close()
            return
        # An exception (KeyboardInterrupt too) leaves the block: write what was queued, and
        # do not hide the exception behind a worker error.
        try:
            self.close()
        except TensorPNGError as error:
            exc.add_note(f"tensorpng.Writer also failed while closing: {error}")

    def _close_at_exit(self) -> None:
        try:
            self.close()
        except TensorPNGError as error:
            print(f"tensorpng.Writer({self.root!r}) at exit: {error}", file=sys.stderr)


def _parse(options: dict[str, Any]) -> tuple[ImageOptions, PNGOptions, bool]:
    overwrite = check_bool("overwrite", options["overwrite"])
    return parse_image_options(options), parse_png_options(options), overwrite
