"""``save_animation``: a clip (``T x C x H x W`` tensor, ``T x H x W x C`` array, list of images)
as one animated PNG, converted in one plan so that ``scale="batch"`` means the whole clip."""

from __future__ import annotations

import math
import os
import sys
from collections import deque
from collections.abc import Mapping
from concurrent.futures import Future
from dataclasses import replace
from pathlib import Path
from typing import Any, Unpack

import numpy as np

from ._apng import AnimationStream, EncodedFrame, check_fps, check_loop
from ._misuse import check_range
from ._names import png_path
from ._options import AnimationKeywords, parse_image_options, parse_png_options, takes_options
from ._record import device_extremes, finite_extremes, mapping_record, text_chunks
from .arrays import describe, is_torch_tensor, plain_input
from .convert import Batch, prepare, warn_nans
from .errors import OptionError, ShapeError
from .metadata import METADATA_KEY


@takes_options(AnimationKeywords)
def save_animation(
    frames: object,
    path: str | os.PathLike[str],
    *,
    fps: float = 10,
    loop: int = 0,
    **options: Unpack[AnimationKeywords],
) -> Path:
    """Save a clip as an animated PNG (APNG), lossless, 8- or 16-bit.

    Args:
        frames: ``T x C x H x W`` (torch's layout) or ``T x H x W x C`` tensor or array,
            ``T x H x W`` for gray frames, or a list of ``T`` images of one shape (``C x H x W``,
            ``H x W x C`` or ``H x W``). C = 1 (gray), 2 (gray+alpha), 3 (RGB) or 4 (RGBA).
        path: the target file (``.png``; ``.apng`` works too).
        fps: frames a second; each frame's delay is ``1 / fps`` as a fraction with a
            denominator up to 65535.
        loop: plays of the animation, 0 (default) for forever.
        layout, mean, std, value_range, scale, bits, cmap: as for :func:`tensorpng.save`,
            with the whole clip as the batch (``layout`` names the batch layout, such as
            ``"NCHW"``; ``scale="batch"`` maps the clip's min and max, ``"image"`` each frame's).
        compression: as for :func:`tensorpng.save`.
        metadata: extra text chunks (a mapping of str to str), or ``False`` to leave out the
            tensorpng record (which holds the clip's shape, mapping, ``frames`` and ``fps``).
        overwrite: with ``False``, raise :class:`TargetExistsError` if ``path`` exists.

    The first frame is the PNG's default image (what viewers without APNG support show, and
    what :func:`tensorpng.load` returns). Later frames store the rectangle that changed. The
    file is written to a temporary file and moved into place.

    Returns:
        The path written.
    """
    path = png_path(path, "clip.png")
    fps, loop = check_fps(fps), check_loop(loop)  # as Python numbers, for the record too
    compression, metadata = parse_png_options(options).compression, options["metadata"]
    clip = _as_clip(frames)
    if options["layout"] is None and len(getattr(clip, "shape", ())) == 3:
        options["layout"] = "NHW"  # a 3-D clip is T gray frames, not one image
    batch = prepare(clip, parse_image_options(options))
    if not batch.layout.batched:
        raise ShapeError(
            f"an animation is T frames: T x C x H x W, T x H x W x C or T x H x W; got "
            f"{batch.source.description} read as layout {batch.layout.name!r} (pass layout=)"
        )
    check_range(batch)
    text = _texts(batch, fps, loop, metadata)
    batch = batch.to_host()
    stream = AnimationStream(
        path, fps=fps, loop=loop, compression=compression, text=text, overwrite=options["overwrite"]
    )
    with stream:
        nans = _encode_frames(batch, stream)
    warn_nans(nans + batch.nan_count, batch.source.description)
    return stream.path


def _as_clip(frames: object) -> object:
    """A list of images as one stacked clip (every image the first one's shape)."""
    if not isinstance(frames, (list, tuple)):
        return plain_input(frames)  # a nested tensor's .shape raises: refused here, by name
    if not frames:
        raise ShapeError("save_animation got an empty list of frames; pass at least one")
    items: list[Any] = [plain_input(frame) for frame in frames]  # np.asarray would drop a mask
    shapes = [tuple(getattr(frame, "shape", np.shape(frame))) for frame in items]
    for index, shape in enumerate(shapes):
        if shape != shapes[0]:
            raise ShapeError(
                f"frame {index} has shape {shape} but frame 0 has {shapes[0]}: every frame of an "
                "animation has the same shape (resize or pad them)"
            )
    if all(is_torch_tensor(frame) for frame in items):
        return sys.modules["torch"].stack(list(items))
    if any(is_torch_tensor(frame) for frame in items):
        raise OptionError(f"pass frames as all tensors or all arrays, got {describe(items[0])} and others")
    return np.stack([np.asarray(frame) for frame in items])


def _texts(
    batch: Batch, fps: float, loop: int, metadata: Mapping[str, str] | bool | None
) -> dict[str, str] | None:
    """The clip's text chunks: tensorpng's record (whole clip) and the caller's entries."""
    record = metadata is not False
    user = None if isinstance(metadata, bool) else metadata
    if user is not None:
        user = {str(key): str(value) for key, value in user.items()}
        if METADATA_KEY in user:
            raise OptionError(f"the metadata key {METADATA_KEY!r} is tensorpng's own record; pick another")
    entry = None
    if record:
        per_image = batch.options.scaling.scale == "image" and batch.count > 1  # the first frame's range
        entry = replace(
            mapping_record(batch, None, _clip_extremes(batch)),
            frames=batch.count,
            fps=float(fps),
            loop=loop,
            per_image_range=True if per_image else None,
        )
    return text_chunks(user, entry, record)


def _clip_extremes(batch: Batch) -> tuple[float | None, float | None]:
    """The clip's finite min and max, as given (before any mapping)."""
    if isinstance(batch.images, np.ndarray):
        return finite_extremes(batch.images)
    low, high = device_extremes(batch.images)
    lows = [v for v in low.tolist() if math.isfinite(v)]
    highs = [v for v in high.tolist() if math.isfinite(v)]
    return (min(lows) if lows else None, max(highs) if highs else None)


_PENDING_PER_WORKER = 2  # deflates in flight per pool thread (bounds the memory they hold)


def _encode_frames(batch: Batch, stream: AnimationStream) -> int:
    """Convert and filter each frame on this thread, deflate on the shared pool, append in
    order; the NaN count. The deflate releases the GIL, so the pool's threads overlap it
    with this thread's NumPy work."""
    from ._pipeline import default_workers, shared_pool  # the pool every save shares

    pool = shared_pool()
    limit = _PENDING_PER_WORKER * default_workers()
    pending: deque[Future[EncodedFrame]] = deque()
    nans = 0
    try:
        for index in range(batch.count):
            converted = batch.image(index)
            nans += converted.nans
            pending.append(pool.submit(stream.filter_frame(converted.samples).deflate))
            while len(pending) > limit or (pending and pending[0].done()):
                stream.write_frame(pending.popleft().result())
        while pending:
            stream.write_frame(pending.popleft().result())
    finally:
        for future in pending:
            future.cancel()
    return nans
