"""Internal module: the Writer's animations, one per name given to ``Writer.add_frame``.

The first frame of a name makes an :class:`Animation`: it fixes the frames' size, channels,
bit depth, ``fps`` and ``loop``, opens the folder (no symlinks below the root, as for any
Writer file) and, with ``overwrite=False``, checks that the name is free. Every later frame
is checked against it on the caller's thread, before it is queued. Frames are captured as
any ``save`` (a host copy, or converted on the device and copied to pinned memory), counted
by the admission as images, and numbered. One worker task per frame then

1. waits for its turn (frame order), converts the frame and filters it against the previous
   one (``AnimationStream.filter_frame``: only the changed rectangle), under the Writer's
   filter lock like any image; the first frame creates the temporary file;
2. deflates, in parallel with the other workers;
3. waits for its turn again and appends the frame to the temporary file.

The tasks of one animation are submitted in frame order under its lock, and the pool starts
tasks first in, first out: the task a worker waits for has always started, so the waits
never deadlock, whatever the number of workers.

The torch encoder is not used for frames: a frame after the first stores only the rectangle
that differs from the previous frame, which needs the previous frame's samples on the host
anyway. So device frames are converted on the device and copied to pinned memory (the
``PinnedJob`` path of ``save``), and filtered and deflated by the CPU encoder.

A failure (a full disk) drops its animation: the temporary file is removed, the frames it
held count as failed, later frames fail too, and nothing is written under its name. At
``Writer.close`` every other animation is finished: ``IEND`` written, the frame count patched
into ``acTL``, the file moved into place.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator, Mapping
from concurrent.futures import Executor
from contextlib import contextmanager, suppress
from dataclasses import dataclass, replace
from typing import NamedTuple

import numpy as np

from ._admission import Admission
from ._apng import AnimationStream, EncodedFrame, FilteredFrame, check_fps, check_loop, frame_delay
from ._capture import Job, PinnedJob
from ._confined import open_parent
from ._options import ImageOptions, PNGOptions
from ._record import mapping_record, text_chunks
from .arrays import is_torch_tensor
from .convert import Batch, prepare, warn_nans
from .errors import DTypeError, OptionError, PathError, ShapeError, TensorPNGError
from .grid import grid_shape
from .scaling import ConvertedImage
from .sinks import LocalSink, Sink

DEFAULT_FPS = 10
DEFAULT_LOOP = 0
_FILTER, _APPEND = 0, 1  # the two in-order stages of a frame


@dataclass(frozen=True)
class FrameShape:
    """A frame as the PNG holds it, and the input it came from (for messages)."""

    height: int
    width: int
    channels: int
    bits: int
    source: str

    def __str__(self) -> str:
        return f"{self.height} x {self.width} (H x W), {self.channels} channel(s), {self.bits}-bit"


def prepare_frame(x: object, image_options: ImageOptions, png_options: PNGOptions) -> Batch:
    """Prepare one frame: an image, a batch of one, or a batch with ``grid=True``.

    ``encoder="device"`` converts torch tensors with torch operations even on the CPU; every
    frame is deflated by the CPU encoder (see the module doc).
    """
    keep_torch = png_options.encoder == "device" and is_torch_tensor(x)
    batch = prepare(x, image_options, keep_torch=keep_torch)
    if batch.palette_table is not None:
        raise OptionError(
            "add_frame writes gray or RGB(A) frames; palette= is for single PNGs (use cmap=, or "
            "save each label map with Writer.save)"
        )
    if batch.layout.batched and not batch.writes_grid and batch.count != 1:
        raise ShapeError(
            f"add_frame appends one frame, got a batch of {batch.count}: {batch.source.description} "
            f"read as layout {batch.layout.name!r}; pass grid=True to tile it into one frame, or "
            "call add_frame once per frame"
        )
    return batch


def frame_shape(batch: Batch) -> FrameShape:
    """The frame ``batch`` gives, computed before converting it."""
    count, height, width, channels = (int(d) for d in batch.images.shape)
    if batch.writes_grid:
        height, width = grid_shape(count, height, width, batch.options.nrow, batch.options.padding)
    channels = 3 if batch.colormap is not None else channels
    return FrameShape(height, width, channels, batch.plan.bits, batch.source.description)


def local_root(sink: Sink) -> str:
    """The folder of a Writer's local sink; animations are written to local folders only."""
    if type(sink) is not LocalSink:
        raise OptionError(
            f"Writer.add_frame streams an animation to a temporary file and renames it at close, "
            f"which needs a local folder; this Writer writes to {sink.root!r} through "
            f"{type(sink).__name__}. Write the clip with tensorpng.save_animation to a local "
            "path and upload the file, or use a Writer on a local folder"
        )
    return sink.root or os.curdir


class FixedOptions(NamedTuple):
    """The options an animation's first frame sets for the file: later frames must agree."""

    compression: str
    metadata: Mapping[str, str] | None
    record: bool
    overwrite: bool

    @classmethod
    def of(cls, png_options: PNGOptions, overwrite: bool) -> FixedOptions:
        return cls(png_options.compression, png_options.metadata, png_options.record, overwrite)


class Animation:
    """One animation of a Writer: its first frame's shape and options, the stream (made at
    the first frame), the turns of its frames and its first failure."""

    def __init__(
        self, name: str, root: str, first: FrameShape, fps: float, loop: int, fixed: FixedOptions
    ) -> None:
        self.name = name
        self.label = os.path.join(root, name)
        self.first, self.fps, self.loop, self.fixed = first, fps, loop, fixed
        self.overwrite = fixed.overwrite
        self.delay = frame_delay(fps)
        self.dir_fd, _ = open_parent(root, name)  # held until close: writes stay in this folder
        self.numbering = threading.Lock()  # the caller's: numbers follow the pool's order
        self.queued = 0
        self._state = threading.Lock()  # the workers': the stream, ``error``, ``appended``
        self.stream: AnimationStream | None = None
        self.error: BaseException | None = None
        self.appended = 0  # frames in the temporary file
        self._next = [0, 0]  # the next frame to filter, to append
        self._turns = threading.Condition()

    def check(self, shape: FrameShape, fps: float | None, loop: int | None, fixed: FixedOptions) -> None:
        """Raise unless a later frame fits the first (before it is queued)."""
        first = self.first
        if (shape.height, shape.width, shape.channels) != (first.height, first.width, first.channels):
            raise ShapeError(
                f"add_frame: {shape.source} makes a frame of {shape}, but the animation "
                f"{self.name!r} has frames of {first} (its first frame: {first.source}); every "
                "frame has the first frame's size and channels: resize or pad it, or start "
                "another name"
            )
        if shape.bits != first.bits:
            raise DTypeError(
                f"add_frame: {shape.source} makes a {shape.bits}-bit frame, but the animation "
                f"{self.name!r} is {first.bits}-bit: pass the same bits= for every frame"
            )
        if fps is not None and frame_delay(fps) != self.delay:
            raise OptionError(
                f"the animation {self.name!r} plays at fps={self.fps!r} (set by its first frame); "
                f"got fps={fps!r}: leave fps out after the first frame"
            )
        if loop is not None and check_loop(loop) != self.loop:
            raise OptionError(
                f"the animation {self.name!r} has loop={self.loop!r} (set by its first frame); "
                f"got loop={loop!r}: leave loop out after the first frame"
            )
        for key, first_value, value in zip(FixedOptions._fields, self.fixed, fixed, strict=True):
            if value != first_value:
                raise OptionError(
                    f"the animation {self.name!r} has {key}={first_value!r} (set by its first frame, "
                    f"which the file holds once); got {key}={value!r}: pass the same for every frame"
                )

    @contextmanager
    def turn(self, stage: int, number: int) -> Iterator[None]:
        """Wait until frame ``number`` is next at ``stage``; pass the turn on when done."""
        with self._turns:
            self._turns.wait_for(lambda: self._next[stage] == number)
        try:
            yield
        finally:
            with self._turns:
                self._next[stage] += 1
                self._turns.notify_all()

    def filter(self, image: ConvertedImage, job: Job) -> FilteredFrame:
        """Filter a frame in its turn; the first one creates the temporary file."""
        with self._state:
            if self.error is not None:
                raise TensorPNGError(
                    f"a frame of the animation {self.label} was not written: an earlier frame "
                    f"failed ({self.error}), so the animation was dropped"
                )
            if self.stream is None:
                self.stream = AnimationStream(
                    self.label,
                    fps=self.fps,
                    loop=self.loop,
                    compression=job.png_options.compression,
                    text=_record(job, image, self.fps, self.loop),
                    overwrite=self.overwrite,
                    dir_fd=self.dir_fd,
                )
            samples = image.samples
            if np.may_share_memory(samples, job.batch.images):  # a view of the capture buffer,
                samples = samples.copy()  # reused once this frame is done: the stream keeps it
            return self.stream.filter_frame(samples)

    def append(self, frame: EncodedFrame) -> int:
        """Append a deflated frame in its turn; the bytes written."""
        with self._state:
            assert self.stream is not None and self.error is None
            written = self.stream.write_frame(frame)
            self.appended += 1
        return written

    def drop(self, error: BaseException) -> int:
        """A frame failed: drop the animation (once); the frames lost with its file."""
        with self._state:
            if self.error is not None:
                return 0
            self.error = error
            if self.stream is not None:
                self.stream.abort()
            lost, self.appended = self.appended, 0
        return lost

    def finish(self) -> None:
        """Move the animation into place (unless dropped or empty); close its folder."""
        try:
            if self.error is None and self.stream is not None:
                self.stream.finish()  # removes its temporary file if it fails
        finally:
            with suppress(OSError):
                os.close(self.dir_fd)

    def abandon(self) -> None:
        """Remove the temporary file and close the folder (a close interrupted midway)."""
        if self.stream is not None:
            self.stream.abort()
        with suppress(OSError):
            os.close(self.dir_fd)


def _record(job: Job, image: ConvertedImage, fps: float, loop: int) -> dict[str, str] | None:
    """The text chunks: the first frame's mapping record, with ``fps`` and ``loop``."""
    batch, options = job.batch, job.png_options
    if not options.record:
        return text_chunks(options.metadata, None, False)
    extremes: tuple[float | None, float | None] | None = image.extremes
    if isinstance(job, PinnedJob) and job.extremes:  # the values' range, read on the device
        extremes = job.extremes[0]
    position = 0 if batch.layout.batched and not batch.writes_grid else None
    entry = replace(mapping_record(batch, position, extremes), fps=float(fps), loop=loop)
    return text_chunks(options.metadata, entry)


class Animations:
    """A Writer's open animations, by name."""

    def __init__(self, admission: Admission, filter_lock: threading.Lock) -> None:
        self._admission = admission
        self._filter_lock = filter_lock
        self._by_name: dict[str, Animation] = {}
        self._lock = threading.Lock()

    def check_not_open(self, names: list[str]) -> None:
        """``Writer.save`` to a name an animation streams to would be replaced at close."""
        with self._lock:
            taken = [name for name in names if name in self._by_name]
        if taken:
            raise PathError(
                f"{taken[0]!r} is an animation this Writer is streaming (add_frame), which close() "
                "moves into place over anything saved there; save the still under another name"
            )

    def get(
        self, sink: Sink, name: str, batch: Batch, fps: float | None, loop: int | None, fixed: FixedOptions
    ) -> Animation:
        """The animation at ``name``, made at its first frame; raises if ``batch`` does not fit."""
        shape = frame_shape(batch)
        with self._lock:
            animation = self._by_name.get(name)
            if animation is None:
                root = local_root(sink)
                fps = DEFAULT_FPS if fps is None else check_fps(fps)  # before any folder is made
                loop = DEFAULT_LOOP if loop is None else check_loop(loop)
                if not fixed.overwrite:
                    sink.check_absent([name])
                animation = Animation(name, root, shape, fps, loop, fixed)
                self._by_name[name] = animation
                return animation
        animation.check(shape, fps, loop, fixed)
        return animation

    def queue(self, animation: Animation, job: Job, pool: Executor) -> None:
        """Number a captured frame and submit its task (see the module doc for the order)."""
        try:
            with animation.numbering:
                pool.submit(self._run, animation, job, animation.queued)
                animation.queued += 1
        except BaseException:
            self._admission.cancel(job, 1)
            raise

    def _run(self, animation: Animation, job: Job, number: int) -> None:
        """Worker: filter frame ``number`` in turn, deflate, append in turn."""
        error: BaseException | None = None
        written = 0
        start = time.perf_counter()
        encoded: EncodedFrame | None = None
        try:
            with animation.turn(_FILTER, number):
                job.wait_ready()
                with self._filter_lock:
                    batch = job.batch
                    image = batch.grid_image() if batch.writes_grid else batch.image(0)
                    filtered = animation.filter(image, job)
            warn_nans(image.nans, job.batch.source.description)
            encoded = filtered.deflate()  # in parallel with the other workers
        except BaseException as caught:
            error = caught
        middle = time.perf_counter()
        with animation.turn(_APPEND, number):
            try:
                if encoded is not None:
                    written = animation.append(encoded)
            except BaseException as caught:
                error = caught
            if error is not None:
                self._admission.lost(animation.drop(error), None)
        self._admission.finish(job, 1, error, written, (middle - start, time.perf_counter() - middle))

    def finish_all(self) -> None:
        """At close, once no frame is queued: finish every animation; an error is counted
        (its frames as failed) and raised by close, and never stops the others."""
        with self._lock:
            pending, self._by_name = list(self._by_name.values()), {}
        try:
            while pending:
                animation = pending.pop(0)
                try:
                    animation.finish()
                except Exception as error:
                    self._admission.lost(animation.appended, error)
        finally:
            for animation in pending:  # interrupted (KeyboardInterrupt): leave no temporary file
                animation.abandon()
