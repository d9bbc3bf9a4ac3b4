"""Animated PNG (APNG): frames streamed to a temporary file, finished into place atomically.

An APNG is a PNG whose ``acTL`` chunk (frame count, loop count) announces the animation;
each frame has an ``fcTL`` chunk (its rectangle on the canvas, delay, dispose and blend
operations) and its image data: ``IDAT`` for the first frame, which is also the default
image that viewers without APNG support show, ``fdAT`` (a sequence number, then the same
zlib stream as ``IDAT``) for the others. ``fcTL`` and ``fdAT`` share one sequence starting at
0. See https://wiki.mozilla.org/APNG_Specification and the PNG 3rd edition, section 11.3.6.

Frames after the first are written as the smallest rectangle holding every pixel that
differs from the previous frame, with dispose op NONE (the canvas keeps the previous frame)
and blend op SOURCE (the rectangle replaces what is under it), which is exact for any
pixels. For images with alpha whose changed pixels are all opaque, the rectangle is also
tried with its unchanged pixels made fully transparent and blend op OVER (a transparent
pixel keeps the one below, an opaque one replaces it: exact too), and the smaller one kept.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from types import TracebackType

import numpy as np

from ._png_chunks import IDAT_SPLIT as _IDAT_SPLIT
from ._png_chunks import SIGNATURE as PNG_SIGNATURE
from ._png_chunks import chunk
from ._png_text import text_chunk
from .errors import DTypeError, OptionError, ShapeError, TargetExistsError
from .png import (
    COLOR_TYPES,
    COMPRESSIONS,
    Compression,
    FilteredPNG,
    check_image,
    deflate_png,
    filter_png,
)
from .sinks import TempFile, lexists

DISPOSE_NONE = 0
BLEND_SOURCE, BLEND_OVER = 0, 1
_MAX_LOOP = 2**31 - 1
_ACTL_OFFSET = len(PNG_SIGNATURE) + 12 + 13  # the acTL chunk follows the signature and IHDR
# Try OVER only when at least this share of the changed rectangle is unchanged pixels.
_OVER_MIN_UNCHANGED = 0.1


def check_fps(fps: float) -> float:
    """``fps`` as a Python number (NumPy numbers converted), or :class:`OptionError`."""
    given = fps
    if isinstance(fps, (np.integer, np.floating)):
        fps = fps.item()
    number = isinstance(fps, (int, Fraction)) or (isinstance(fps, float) and abs(fps) < float("inf"))
    if isinstance(fps, bool) or not number or fps <= 0:  # first: Fraction(NaN or inf) raises raw errors
        raise OptionError(f"fps is a positive, finite number of frames a second (e.g. 10), got {given!r}")
    if fps > 65535:  # a delay under 1/65535 s would be stored as 1/65535 s: not what was asked
        raise OptionError(f"fps={given!r} is faster than an APNG can store (at most 65535 frames a second)")
    return fps


def frame_delay(fps: float) -> tuple[int, int]:
    """``fcTL``'s ``delay_num`` / ``delay_den`` for ``fps`` frames a second: ``1 / fps`` as the
    nearest fraction with a denominator up to 65535 (exact for integer rates up to 65535 and
    for 30000/1001-style rates given as a Fraction)."""
    delay = (1 / Fraction(check_fps(fps))).limit_denominator(65535)
    if delay.numerator > 65535 or delay.numerator == 0:
        raise OptionError(f"fps={fps!r} gives a frame delay an APNG cannot store (1/65535 s .. 65535 s)")
    return delay.numerator, delay.denominator


def check_loop(loop: int) -> int:
    """Validate ``loop`` (0: forever, else the number of plays)."""
    if isinstance(loop, np.integer):
        loop = int(loop)
    if isinstance(loop, bool) or not isinstance(loop, int) or not 0 <= loop <= _MAX_LOOP:
        raise OptionError(f"loop is 0 (forever) or a number of plays up to 2**31-1, got {loop!r}")
    return loop


@dataclass(frozen=True)
class FilteredFrame:
    """A frame after the in-order stage: candidate encodings of one rectangle, filtered.

    ``region`` is ``(x, y, width, height)`` on the canvas. Each candidate is a blend op and
    the filtered rectangle; :meth:`deflate` keeps the smallest.
    """

    index: int
    region: tuple[int, int, int, int]
    candidates: tuple[tuple[int, FilteredPNG], ...]

    def deflate(self) -> EncodedFrame:
        """Deflate every candidate (any thread: the deflate releases the GIL)."""
        best: tuple[int, bytes] | None = None
        for blend, filtered in self.candidates:
            data = deflate_png(filtered)
            if best is None or len(data) < len(best[1]):
                best = blend, data
        assert best is not None
        return EncodedFrame(self.index, self.region, best[0], best[1])


@dataclass(frozen=True)
class EncodedFrame:
    """A frame ready to append: its rectangle, blend op and zlib stream."""

    index: int
    region: tuple[int, int, int, int]
    blend: int
    data: bytes


class AnimationStream(AbstractContextManager["AnimationStream"]):
    """An APNG written frame by frame to a temporary file beside ``path``.

    Frames go through three stages, so that the deflate can run on other threads:
    :meth:`filter_frame` (in frame order: compares with the previous frame, filters),
    :meth:`FilteredFrame.deflate` (any thread), :meth:`write_frame` (in frame order).
    :meth:`add` does all three. Only the previous frame is held, never the whole clip.

    The file is created at the first frame under a temporary name
    (:func:`~tensorpng.sinks.temporary_name`) in ``path``'s folder (dot-prefixed, so readers
    skip it) with a frame count of 0 in ``acTL``; :meth:`finish` writes ``IEND``, patches the
    count and moves the file into place (``os.replace``, or a hard link for
    ``overwrite=False``). Until then nothing exists under ``path``: a process that dies
    mid-stream leaves at most the temporary file (``tensorpng clean`` removes it).
    :meth:`abort` removes it. As a context manager the stream finishes on success and aborts
    on an exception.

    Args:
        path: the target file.
        fps: frames a second (stored per frame as ``delay_num / delay_den``).
        loop: plays of the animation, 0 for forever.
        compression: as for :func:`tensorpng.encode_png`.
        text: text chunks written before the first frame (e.g. tensorpng's record).
        overwrite: with ``False``, raise :class:`TargetExistsError` now and at :meth:`finish`
            when ``path`` exists.
        dir_fd: a descriptor of ``path``'s folder, opened by the caller (and closed by it after
            :meth:`finish` or :meth:`abort`): the temporary file is made and moved in that
            folder (openat-style, as the Writer's confined writes; ``path`` then only names it
            in messages).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        fps: float = 10,
        loop: int = 0,
        compression: Compression = "fast",
        text: Mapping[str, str] | None = None,
        overwrite: bool = True,
        dir_fd: int | None = None,
    ) -> None:
        if compression not in COMPRESSIONS:
            raise OptionError(f"compression must be one of {COMPRESSIONS}, got {compression!r}")
        self.path = Path(path)
        self.delay = frame_delay(fps)
        self.loop = check_loop(loop)
        self.compression: Compression = compression
        self.texts = [text_chunk(key, value) for key, value in (text or {}).items()]  # validated now
        self.overwrite = overwrite
        self._dir_fd = dir_fd
        self._target = self.path.name if dir_fd is not None else os.fspath(self.path)
        if not overwrite and lexists(self._target, dir_fd):
            raise TargetExistsError(f"{self.path} exists and overwrite=False")
        self._previous: np.ndarray | None = None  # the last filtered frame, H x W x C, contiguous
        self._filtered = 0  # frames through filter_frame
        self._written = 0  # frames through write_frame
        self._sequence = 0  # the next fcTL/fdAT sequence number
        self._file: TempFile | None = None
        self._closed = False

    # -- the three stages ------------------------------------------------------------------

    def filter_frame(self, samples: np.ndarray) -> FilteredFrame:
        """Check a frame (``H x W`` or ``H x W x C`` uint8/uint16 samples, any strides) against
        the first one and filter it. Call in frame order.

        Raises:
            ShapeError: the frame's size or channel count differs from the first frame's.
            DTypeError: its dtype differs from the first frame's (or is not uint8/uint16).
        """
        self._check_open()
        check_image(samples)
        image = samples[..., None] if samples.ndim == 2 else samples
        previous = self._previous
        candidates: tuple[tuple[int, FilteredPNG], ...]
        if previous is None:
            self._start(image)
            region = (0, 0, image.shape[1], image.shape[0])
            candidates = ((BLEND_SOURCE, self._filter(image)),)
        else:
            _check_like_first(image, previous, self._filtered, self.path)
            region, candidates = self._changed_rectangle(previous, image)
        self._previous = np.ascontiguousarray(image)
        index = self._filtered
        self._filtered += 1
        return FilteredFrame(index, region, candidates)

    def write_frame(self, frame: EncodedFrame) -> int:
        """Append an encoded frame (``fcTL`` and its data); the bytes written. Call in frame order."""
        self._check_open()
        if frame.index != self._written:
            raise OptionError(
                f"frames are written in order: expected frame {self._written}, got {frame.index}"
            )
        assert self._file is not None
        x, y, width, height = frame.region
        numerator, denominator = self.delay
        control = struct.pack(
            ">IIIIIHHBB",
            self._next_sequence(),
            width,
            height,
            x,
            y,
            numerator,
            denominator,
            DISPOSE_NONE,
            frame.blend,
        )
        parts = [chunk(b"fcTL", control)]
        view = memoryview(frame.data)
        for start in range(0, max(len(view), 1), _IDAT_SPLIT - 4):
            piece = view[start : start + _IDAT_SPLIT - 4]
            if frame.index == 0:
                parts.append(chunk(b"IDAT", piece))
            else:
                parts.append(chunk(b"fdAT", struct.pack(">I", self._next_sequence()) + piece))
        data = b"".join(parts)
        self._write(data)
        self._written += 1
        return len(data)

    def add(self, samples: np.ndarray) -> None:
        """Filter, deflate and append one frame (see :meth:`filter_frame` for ``samples``)."""
        self.write_frame(self.filter_frame(samples).deflate())

    @property
    def frames(self) -> int:
        """Frames written so far."""
        return self._written

    # -- the end ---------------------------------------------------------------------------

    def finish(self) -> Path:
        """Write ``IEND``, patch the frame count into ``acTL`` and move the file into place.

        Raises:
            OptionError: no frame was written (the temporary file, if any, is removed).
            TargetExistsError: ``overwrite=False`` and ``path`` exists now.
            WriteError: the write failed; nothing is left under ``path``.
        """
        self._check_open()
        if self._written == 0 or self._written != self._filtered:
            self.abort()
            raise OptionError(
                f"an animation needs every filtered frame written and at least one; "
                f"{self._filtered} filtered, {self._written} written"
            )
        assert self._file is not None
        try:
            self._file.write(chunk(b"IEND"))
            self._file.write(chunk(b"acTL", struct.pack(">II", self._written, self.loop)), _ACTL_OFFSET)
            self._file.move_into_place(self.overwrite)
        except BaseException:
            self.abort()
            raise
        self._closed = True
        return self.path

    def abort(self) -> None:
        """Drop the animation: close and remove the temporary file. Safe to call twice."""
        self._closed = True
        if self._file is not None:
            self._file.remove()
        self._file = self._previous = None

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        if kind is None:
            if not self._closed:
                self.finish()
        else:
            self.abort()

    # -- helpers ---------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise OptionError(f"the animation {self.path} is finished or aborted; start a new one")

    def _filter(self, image: np.ndarray) -> FilteredPNG:
        return filter_png(image[..., 0] if image.shape[2] == 1 else image, compression=self.compression)

    def _changed_rectangle(
        self, previous: np.ndarray, image: np.ndarray
    ) -> tuple[tuple[int, int, int, int], tuple[tuple[int, FilteredPNG], ...]]:
        """The rectangle of pixels that differ from ``previous``, and its candidates."""
        height, width, channels = image.shape
        differs = np.empty(image.shape, dtype=bool)  # C order, so that rows are one run
        np.not_equal(previous, image, out=differs)
        # reductions over long runs: np.any over the short channel axis is ~10x slower
        flat = differs.reshape(height, width * channels)
        rows = np.flatnonzero(flat.any(axis=1))
        columns = np.flatnonzero(flat.any(axis=0).reshape(width, channels).any(axis=1))
        if rows.size == 0:  # an unchanged frame: one pixel, rewritten as it is
            return (0, 0, 1, 1), ((BLEND_SOURCE, self._filter(image[:1, :1])),)
        top, bottom, left, right = int(rows[0]), int(rows[-1]) + 1, int(columns[0]), int(columns[-1]) + 1
        region = (left, top, right - left, bottom - top)
        rectangle = image[top:bottom, left:right]
        candidates = [(BLEND_SOURCE, self._filter(rectangle))]
        if channels in (2, 4):
            inside: np.ndarray = np.any(differs[top:bottom, left:right], axis=2)
            opaque = np.iinfo(image.dtype).max
            if 1 - inside.mean() >= _OVER_MIN_UNCHANGED and bool(
                np.all(rectangle[..., -1][inside] == opaque)
            ):
                sparse = np.where(inside[..., None], rectangle, np.zeros((), image.dtype))
                candidates.append((BLEND_OVER, self._filter(sparse)))
        return region, tuple(candidates)

    def _start(self, image: np.ndarray) -> None:
        """Create the temporary file and write the signature, IHDR, acTL and text chunks."""
        height, width, channels = image.shape
        header = struct.pack(
            ">IIBBBBB", width, height, 8 * image.dtype.itemsize, COLOR_TYPES[channels], 0, 0, 0
        )
        directory, name = os.path.split(self._target)
        # unbuffered (os.write): each frame is in the page cache once write_frame returns
        self._file = TempFile(directory, name, dir_fd=self._dir_fd, label=str(self.path), lock=True)
        placeholder = chunk(b"acTL", struct.pack(">II", 0, self.loop))  # 0 frames until finish
        self._write(b"".join([PNG_SIGNATURE, chunk(b"IHDR", header), placeholder, *self.texts]))

    def _write(self, data: bytes) -> None:
        assert self._file is not None
        try:
            self._file.write(data)
        except BaseException:  # WriteError (the file is removed): the animation is lost
            self.abort()
            raise

    def _next_sequence(self) -> int:
        self._sequence += 1
        return self._sequence - 1


def _check_like_first(image: np.ndarray, first: np.ndarray, index: int, path: Path) -> None:
    """Frame ``index`` of the animation at ``path`` has the first frame's size, channels, bits."""
    if image.shape[:2] != first.shape[:2]:
        raise ShapeError(
            f"frame {index} is {image.shape[0]} x {image.shape[1]} (H x W) but the animation "
            f"{path} is {first.shape[0]} x {first.shape[1]}: every frame has the first "
            "frame's size (resize or pad it)"
        )
    if image.shape[2] != first.shape[2]:
        raise ShapeError(
            f"frame {index} has {image.shape[2]} channels but the animation {path} has "
            f"{first.shape[2]}: every frame has the first frame's channels"
        )
    if image.dtype.itemsize != first.dtype.itemsize:
        raise DTypeError(
            f"frame {index} has {8 * image.dtype.itemsize}-bit samples but the animation "
            f"{path} is {8 * first.dtype.itemsize}-bit: pass the same bits= for every frame"
        )
