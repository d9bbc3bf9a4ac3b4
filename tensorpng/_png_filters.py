"""Internal module.

PNG row filters (spec section 9) in NumPy: the five filters, the cheap per-image filter
choice of ``compression="fast"``, the per-row adaptive choice of ``"small"``, and the
filtered scanlines (each row's filter byte, then its bytes) that :mod:`tensorpng.png`
deflates. The filters work on ``K x H x w`` uint8 byte planes (see :func:`byte_planes`)
in a few long NumPy passes: short calls hold the GIL, long element-wise ones release it.
"""

from __future__ import annotations

import math
import threading

import numpy as np

# PNG filter types (spec section 9.2).
FILTER_NONE, FILTER_SUB, FILTER_UP, FILTER_AVERAGE, FILTER_PAETH = 0, 1, 2, 3, 4


def byte_planes(image: np.ndarray) -> tuple[np.ndarray, int]:
    """The image's sample bytes as C-contiguous ``K x H x w`` uint8 planes, and the filter's
    byte distance within a plane (bytes from a byte to the same byte of the pixel on its left).

    PNG filters predict each byte from the same byte of the pixel to the left and of the row
    above, so every channel of 8-bit samples can be filtered on its own. For 8-bit samples
    stored channels-first (a ``C x H x W`` array viewed as ``H x W x C``, as PyTorch holds
    images), the planes are the channels: ``K = C``, ``w = W``, distance 1, and the bytes are
    interleaved once, when the filtered planes are written into the scanlines. Otherwise the
    one plane is the scanline bytes in PNG (big-endian) order: ``K = 1``, ``w = W*C*bytes``,
    distance ``C*bytes``. Both give the same filtered bytes.
    """
    if image.ndim == 3 and image.dtype.itemsize == 1 and image.shape[2] > 1 and not image.flags.c_contiguous:
        planes = image.transpose(2, 0, 1)
        if planes.flags.c_contiguous:
            return planes, 1
    # One pass at most: a copy only when the input is strided or (16-bit) not big-endian.
    image = np.ascontiguousarray(image, dtype=">u2" if image.dtype.itemsize == 2 else np.uint8)
    bpp = (image.shape[2] if image.ndim == 3 else 1) * image.dtype.itemsize
    return image.reshape(1, image.shape[0], -1).view(np.uint8), bpp


def interleaved_bytes(planes: np.ndarray, distance: int) -> tuple[np.ndarray, int]:
    """``H x n`` scanline bytes (no filter bytes) and bytes per pixel of :func:`byte_planes`'s
    result."""
    count, height, _ = planes.shape
    if count == 1:
        return planes[0], distance
    return np.ascontiguousarray(planes.transpose(1, 2, 0)).reshape(height, -1), count


def _paeth_into(left: np.ndarray, up: np.ndarray, up_left: np.ndarray, out: np.ndarray) -> None:
    """The Paeth predictor (spec 9.4), vectorized, written into ``out`` (uint8).

    With ``p = a + b - c``: ``|p - a| = |b - c|``, ``|p - b| = |a - c|`` and
    ``|p - c| = |(a - c) + (b - c)|``, in int16. The prediction starts as ``c`` and is
    overwritten by ``b`` then ``a`` where the spec's order of preference picks them.
    """
    pa = np.subtract(up, up_left, dtype=np.int16)
    pb = np.subtract(left, up_left, dtype=np.int16)
    pc = np.add(pa, pb)
    np.abs(pa, out=pa)
    np.abs(pb, out=pb)
    np.abs(pc, out=pc)
    np.copyto(out, up_left)
    mask = np.less_equal(pb, pc)
    np.copyto(out, up, where=mask)
    np.less_equal(pa, pb, out=mask)
    mask &= np.less_equal(pa, pc)
    np.copyto(out, left, where=mask)


def _residual_into(
    kind: int,
    current: np.ndarray,
    left: np.ndarray | None,
    up: np.ndarray | None,
    up_left: np.ndarray | None,
    out: np.ndarray,
) -> None:
    """``out = current - prediction`` (mod 256) for filter ``kind`` over one region of bytes.

    ``left``, ``up`` and ``up_left`` are the bytes each prediction reads (spec 9.2), or None
    where they lie outside the image and count as 0. ``out`` shares no memory with the rest.
    """
    if kind == FILTER_SUB:
        predictor = left
    elif kind == FILTER_UP:
        predictor = up
    elif kind == FILTER_AVERAGE:
        if left is not None and up is not None:
            # floor((left + up) / 2) in uint8 without overflow: (l ^ u) >> 1 plus l & u.
            np.bitwise_xor(left, up, out=out)
            np.right_shift(out, 1, out=out)
            out += np.bitwise_and(left, up, out=_scratch("average", out.shape))
            np.subtract(current, out, out=out)
            return
        nearest = left if up is None else up
        predictor = None if nearest is None else np.right_shift(nearest, 1)
    elif kind == FILTER_PAETH:
        if left is not None and up is not None:
            assert up_left is not None
            _paeth_into(left, up, up_left, out)
            np.subtract(current, out, out=out)
            return
        predictor = left if up is None else up  # with two of the three zero, Paeth picks the third
    else:
        predictor = None
    if predictor is None:
        np.copyto(out, current)
    else:
        np.subtract(current, predictor, out=out)


def _filter_planes(planes: np.ndarray, distance: int, kind: int, out: np.ndarray) -> None:
    """Filter C-contiguous ``K x H x w`` byte planes with ``kind`` into ``out`` (same shape,
    C-contiguous); ``distance``: bytes from a byte to the same byte of the pixel on its left.

    Works on each plane as one flat run of bytes, where the byte above is ``w`` back and the
    byte on the left ``distance`` back: a few long NumPy passes (row-by-row views cost 3x
    more), then the first ``distance`` bytes of each row, which have nothing on their left,
    are redone on their own.
    """
    count, height, width = planes.shape
    if kind == FILTER_NONE:
        np.copyto(out, planes)
        return
    flat, result = planes.reshape(count, -1), out.reshape(count, -1)
    total = flat.shape[1]
    step = min(distance, width)
    # The first row: nothing above.
    np.copyto(result[:, :step], flat[:, :step])
    _residual_into(kind, flat[:, step:width], flat[:, : width - step], None, None, result[:, step:width])
    if height == 1:
        return
    _residual_into(
        kind,
        flat[:, width + step :],
        flat[:, width : total - step],
        flat[:, step : total - width],
        flat[:, : total - width - step],
        result[:, width + step :],
    )
    # The first bytes of the later rows: nothing on their left.
    _residual_into(kind, planes[:, 1:, :step], None, planes[:, :-1, :step], None, out[:, 1:, :step])


def filter_image(data: np.ndarray, bpp: int, kind: int, out: np.ndarray) -> None:
    """Filter every row of ``data`` (``H x n`` uint8 sample bytes) with ``kind`` into ``out``
    (``H x n``, any strides, sharing no memory with ``data``); ``bpp`` is the bytes per complete
    pixel (at least 1)."""
    planes = np.ascontiguousarray(data)[None]
    if out.flags.c_contiguous:
        _filter_planes(planes, bpp, kind, out[None])
    else:
        filtered = np.empty_like(planes)
        _filter_planes(planes, bpp, kind, filtered)
        out[...] = filtered[0]


def _cost(filtered: np.ndarray) -> np.ndarray:
    """Per-row sum of absolute values of filtered bytes read as signed (the spec's heuristic).

    ``abs`` of the int8 view wraps ``-128`` to ``-128``, which read back as uint8 is the
    right magnitude, 128: no widening copy. The row sums are accumulated in int32 (twice as
    fast as int64 in NumPy) whenever a row cannot overflow it.
    """
    magnitude = np.abs(filtered.view(np.int8)).view(np.uint8)
    accumulator = np.int32 if 128 * filtered.shape[-1] < 2**31 else np.int64
    return np.add.reduce(magnitude, axis=-1, dtype=accumulator)


_FAST_CANDIDATES = (FILTER_NONE, FILTER_SUB, FILTER_UP, FILTER_AVERAGE)
_SAMPLE_ROWS = 16


def choose_filter(data: np.ndarray, bpp: int) -> int:
    """Pick one filter for the whole image from a sample of its rows (cheap: a few % of the work).

    ``data`` is the ``H x n`` uint8 sample bytes. Candidates are None, Sub, Up and Average;
    the one with the smallest sum of absolute signed residuals over the sampled rows wins
    (the earlier candidate on a tie).
    """
    return _choose_filter(np.ascontiguousarray(data)[None], bpp)[0]


def _sampled_rows(planes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Up to ``_SAMPLE_ROWS`` rows of ``K x H x w`` planes (``H >= 2``), evenly spaced from
    row 1, and the rows above them: strided views, not copies."""
    height = planes.shape[1]
    step = max(1, (height - 1) // _SAMPLE_ROWS)
    count = min(_SAMPLE_ROWS, (height - 2) // step + 1)
    return planes[:, 1 : 1 + step * count : step], planes[:, : step * count : step]


def _choose_filter(planes: np.ndarray, distance: int) -> tuple[int, float]:
    """The filter :func:`choose_filter` picks for ``K x H x w`` byte planes (see
    :func:`byte_planes`), and its mean absolute residual per byte.

    The candidates' residuals of the sampled rows are computed in uint8, with the bytes on
    the left as a zero-padded copy (so the first bytes of a row need no pass of their own),
    and scored together: on small samples the per-call overhead, spent holding the GIL, is
    what costs (and what keeps threads from scaling), not the arithmetic.
    """
    height, width = planes.shape[1:]
    step = min(distance, width)
    if height < 2:
        rows, prior = planes[:, :1], None
        candidates: tuple[int, ...] = (FILTER_NONE, FILTER_SUB)
    else:
        rows, prior = _sampled_rows(planes)
        candidates = _FAST_CANDIDATES
    residuals = np.empty((len(candidates), *rows.shape), dtype=np.uint8)
    left = residuals[0]  # the None slot holds the bytes on the left until the end
    left[..., :step] = 0
    left[..., step:] = rows[..., : width - step]
    np.subtract(rows, left, out=residuals[1])  # Sub
    if prior is not None:
        np.subtract(rows, prior, out=residuals[2])  # Up
        average = residuals[3]  # floor((left + up) / 2) = (left & up) + ((left ^ up) >> 1)
        np.bitwise_xor(left, prior, out=average)
        np.right_shift(average, 1, out=average)
        np.bitwise_and(left, prior, out=left)
        average += left
        np.subtract(rows, average, out=average)
    np.copyto(residuals[0], rows)  # None
    costs = _cost(residuals.reshape(len(candidates), -1))
    best = int(np.argmin(costs))
    return candidates[best], float(costs[best]) / max(1, rows.size)


def scanlines_of(filtered: np.ndarray, kind: int) -> np.ndarray:
    """``H x (1 + K*w)`` scanlines: filter byte ``kind``, then the ``K x H x w`` planes'
    bytes interleaved (a new array: it may be deflated on another thread)."""
    count, height, width = filtered.shape
    lines = np.empty((height, 1 + count * width), dtype=np.uint8)
    lines[:, 0] = kind
    samples = lines[:, 1:].reshape(height, width, count)
    for plane in range(count):
        samples[:, :, plane] = filtered[plane]
    return lines


def filtered_fast(planes: np.ndarray, distance: int) -> tuple[np.ndarray, float]:
    """``H x (1+n)`` filtered scanlines with one filter for every row, and the mean absolute
    residual per byte of the sampled rows."""
    kind, residual = _choose_filter(planes, distance)
    filtered = planes
    if kind != FILTER_NONE:
        filtered = _scratch("filtered", planes.shape)
        _filter_planes(planes, distance, kind, filtered)
    return scanlines_of(filtered, kind), residual


ADAPTIVE_BLOCK_BYTES = 1 << 17


def filtered_adaptive(data: np.ndarray, bpp: int) -> np.ndarray:
    """``H x (1+n)`` filtered scanlines, each row with the filter of smallest cost (all five).

    Works through blocks of about 128 KiB of rows (each with the row above it, which Up,
    Average and Paeth read), so that the five candidates and the Paeth temporaries stay in
    cache and are reused (large temporaries made afresh for every image cost a page fault
    per 4 KiB).
    """
    height, width = data.shape
    kinds = (FILTER_NONE, FILTER_SUB, FILTER_UP, FILTER_AVERAGE, FILTER_PAETH)
    block = max(1, ADAPTIVE_BLOCK_BYTES // width)
    candidates = np.empty((len(kinds), min(block, height) + 1, width), dtype=np.uint8)
    out = np.empty((height, width + 1), dtype=np.uint8)
    for start in range(0, height, block):
        stop = min(start + block, height)
        first = max(start - 1, 0)
        rows = data[first:stop][None]
        for slot, kind in enumerate(kinds):
            _filter_planes(rows, bpp, kind, candidates[slot, : stop - first][None])
        scratch = candidates[:, start - first : stop - first]
        best = np.argmin(_cost(scratch), axis=0)
        out[start:stop, 0] = best
        out[start:stop, 1:] = scratch[best, np.arange(stop - start)]
    return out


_thread_scratch = threading.local()
_SCRATCH_KEPT_BYTES = 1 << 23


def _scratch(name: str, shape: tuple[int, ...]) -> np.ndarray:
    """A ``shape`` uint8 array from this thread's buffer ``name``, reused across calls.

    Filtered bytes and scanlines live only until they are deflated; reusing their memory
    saves a page fault per 4 KiB (a few % of the encode). Never returned to callers.
    Buffers above 8 MiB (a 1600 x 1600 RGB image) are not kept: a thread that filters holds
    at most two of those, 16 MiB.
    """
    size = math.prod(shape)
    if size > _SCRATCH_KEPT_BYTES:
        return np.empty(shape, dtype=np.uint8)
    buffers: dict[str, np.ndarray] | None = getattr(_thread_scratch, "buffers", None)
    if buffers is None:
        buffers = _thread_scratch.buffers = {}
    buffer = buffers.get(name)
    if buffer is None or buffer.size < size:
        buffer = buffers[name] = np.empty(max(size, 1 << 16), dtype=np.uint8)
    return buffer[:size].reshape(shape)
