"""Internal module.

PNG encoding: row filters in NumPy, deflate in a maintained library, framing here.

The heavy work is two calls that release the GIL: NumPy's element-wise ufuncs (the row
filters) and the deflate of the filtered bytes (ISA-L through ``isal`` by default, the
standard ``zlib`` module when ``isal`` cannot be imported, libdeflate through ``deflate``
for ``compression="small"`` when installed). The framing around the deflate stream
(signature, IHDR, optional text chunks, PLTE for palette images, IDAT, IEND, CRC-32)
comes from :mod:`tensorpng._png_chunks`.
"""

from __future__ import annotations

import math
import threading
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from types import ModuleType
from typing import Literal, TypeAlias

import numpy as np

from . import _cpu_codec, _parallel_deflate
from ._png_chunks import (
    MAX_DIMENSION,
    SIGNATURE,
    ihdr,
    plte,
    png_bytes,
)
from ._png_text import text_chunks
from .errors import DTypeError, OptionError, ShapeError, ValueRangeError

_igzip_lib: ModuleType | None
try:  # ISA-L: ~400 MB/s per core at level 1.
    from isal import igzip_lib as _igzip_lib
except ImportError:  # pragma: no cover - exercised by a subprocess test with isal hidden
    _igzip_lib = None

Compression: TypeAlias = Literal["fast", "small", "none"]
COMPRESSIONS: tuple[str, ...] = ("fast", "small", "none")


# PNG colour types by channel count: gray, gray+alpha, RGB, RGBA.
COLOR_TYPES: dict[int, int] = {1: 0, 2: 4, 3: 2, 4: 6}

# PNG filter types (spec section 9.2).
FILTER_NONE, FILTER_SUB, FILTER_UP, FILTER_AVERAGE, FILTER_PAETH = 0, 1, 2, 3, 4


def deflate_backend() -> str:
    """Name of the library that deflates for ``compression="fast"``: ``"isal"`` or ``"zlib"``."""
    return "isal" if _igzip_lib is not None else "zlib"


def _byte_planes(image: np.ndarray) -> tuple[np.ndarray, int]:
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


def _interleaved_bytes(planes: np.ndarray, distance: int) -> tuple[np.ndarray, int]:
    """``H x n`` scanline bytes (no filter bytes) and bytes per pixel of :func:`_byte_planes`'s
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
    :func:`_byte_planes`), and its mean absolute residual per byte.

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


def _scanlines(filtered: np.ndarray, kind: int) -> np.ndarray:
    """``H x (1 + K*w)`` scanlines: filter byte ``kind``, then the ``K x H x w`` planes'
    bytes interleaved (a new array: it may be deflated on another thread)."""
    count, height, width = filtered.shape
    lines = np.empty((height, 1 + count * width), dtype=np.uint8)
    lines[:, 0] = kind
    samples = lines[:, 1:].reshape(height, width, count)
    for plane in range(count):
        samples[:, :, plane] = filtered[plane]
    return lines


def _filtered_fast(planes: np.ndarray, distance: int) -> tuple[np.ndarray, float]:
    """``H x (1+n)`` filtered scanlines with one filter for every row, and the mean absolute
    residual per byte of the sampled rows."""
    kind, residual = _choose_filter(planes, distance)
    filtered = planes
    if kind != FILTER_NONE:
        filtered = _scratch("filtered", planes.shape)
        _filter_planes(planes, distance, kind, filtered)
    return _scanlines(filtered, kind), residual


_ADAPTIVE_BLOCK_BYTES = 1 << 17


def _filtered_adaptive(data: np.ndarray, bpp: int) -> np.ndarray:
    """``H x (1+n)`` filtered scanlines, each row with the filter of smallest cost (all five).

    Works through blocks of about 128 KiB of rows (each with the row above it, which Up,
    Average and Paeth read), so that the five candidates and the Paeth temporaries stay in
    cache and are reused (large temporaries made afresh for every image cost a page fault
    per 4 KiB).
    """
    height, width = data.shape
    kinds = (FILTER_NONE, FILTER_SUB, FILTER_UP, FILTER_AVERAGE, FILTER_PAETH)
    block = max(1, _ADAPTIVE_BLOCK_BYTES // width)
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


def _deflate_small(data: np.ndarray) -> bytes:
    try:
        import deflate  # libdeflate: best ratio per second at high levels
    except ImportError:
        return zlib.compress(data.data, 9)
    return bytes(deflate.zlib_compress(data.data, 12))


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


FLAT_RESIDUAL = 1.0  # mean |residual| per byte below which an image is mask-like


BUSY_HISTORY_BITS = 9


def history_bits(row_bytes: int, residual: float) -> int:
    """ISA-L window (log2 bytes) for scanlines of ``row_bytes`` (filter byte included).

    Measured with ISA-L level 1 on four photos and a 16-bit image: a 512-byte window instead
    of 32 KiB was 5-15% faster and 2-3% smaller on every one (once rows are filtered,
    matches farther back are rare and short). Mask-like images (mean residual under
    ``FLAT_RESIDUAL``) find long matches far back and keep the full 32 KiB.
    """
    if residual < FLAT_RESIDUAL:
        return 15
    return BUSY_HISTORY_BITS


def _deflate_fast(data: np.ndarray, residual: float) -> bytes:
    """zlib stream of ``H x (1+n)`` filtered scanlines, ISA-L level 1 (zlib level 1 without it).

    Big images (one grid of a whole batch) are deflated in slices of rows on every core.
    """
    if data.nbytes >= _parallel_deflate.PARALLEL_MIN_BYTES and _parallel_deflate.cpu_count() > 1:
        window = history_bits(int(data.shape[1]), residual) if _igzip_lib is not None else 15
        return _parallel_deflate.deflate_parallel(data.data, unit=int(data.shape[1]), window_bits=window)
    if _igzip_lib is not None:
        window = history_bits(int(data.shape[1]), residual)
        return _igzip_lib.compress(data.data, 1, _igzip_lib.COMP_ZLIB, hist_bits=window)
    return zlib.compress(data.data, 1)


def check_image(image: np.ndarray) -> None:
    """Raise unless ``image`` is an ``H x W`` or ``H x W x C`` uint8/uint16 array PNG can hold."""
    if not isinstance(image, np.ndarray):
        raise DTypeError(
            f"encode_png takes a numpy.ndarray, got {type(image).__name__}; use tensorpng.encode for tensors"
        )
    # By kind and size, not ``in (np.uint8, np.uint16)``: a big-endian ``>u2`` is not equal
    # to the native ``np.uint16``, and it is the byte order PNG stores.
    if image.dtype.kind != "u" or image.dtype.itemsize not in (1, 2):
        raise DTypeError(
            f"PNG samples are uint8 or uint16, got an array of dtype {image.dtype} and shape "
            f"{tuple(image.shape)}; convert it with tensorpng.to_array first"
        )
    if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] not in COLOR_TYPES):
        raise ShapeError(f"a PNG image is H x W or H x W x C with C in 1..4, got shape {tuple(image.shape)}")
    height, width = image.shape[:2]
    if height == 0 or width == 0:
        raise ShapeError(f"a PNG image needs at least one pixel, got shape {tuple(image.shape)}")
    if height > MAX_DIMENSION or width > MAX_DIMENSION:
        raise ShapeError(f"PNG width and height are at most 2**31-1, got shape {tuple(image.shape)}")


def encode_png(
    image: np.ndarray,
    *,
    compression: Compression = "fast",
    text: Mapping[str, str] | None = None,
) -> bytes:
    """Encode one image as PNG bytes.

    Args:
        image: ``H x W`` or ``H x W x C`` NumPy array, C = 1 (gray), 2 (gray+alpha), 3 (RGB)
            or 4 (RGBA); dtype uint8 (bit depth 8) or uint16 (bit depth 16, any byte order);
            any strides. 8-bit samples held channels-first (``planes.transpose(1, 2, 0)`` of
            a C-contiguous ``C x H x W`` array) are filtered plane by plane, without an
            interleaving copy of their own.
        compression: ``"fast"`` (default): one filter per image chosen from a sample of rows,
            ISA-L level 1 deflate. ``"small"``: per-row adaptive filtering over all five
            filters and libdeflate level 12 (zlib level 9 without the ``deflate`` package).
            ``"none"``: no filter, stored deflate blocks.
        text: optional metadata, written as ``tEXt`` (Latin-1) or ``iTXt`` (other) chunks,
            compressed from 1 KiB on (see :mod:`tensorpng._png_chunks`).

    Returns:
        The bytes of a complete PNG file: ``finish_png(filter_png(image, ...))``.
    """
    return finish_png(filter_png(image, compression=compression, text=text))


@dataclass(frozen=True)
class FilteredPNG:
    """A PNG up to its image data: the chunks before it, and the filtered scanlines.

    Encoding runs in two stages. :func:`filter_png` (and :func:`filter_indexed_png`) does the
    NumPy work: many short calls, each taking the GIL back. :func:`finish_png` deflates the
    scanlines in one call that releases the GIL throughout, and adds the last chunks. Two
    threads that both filter hand the GIL to and fro between short calls (on two cores they
    filter slower together than one alone does); one thread that filters while others
    deflate keeps every core busy.
    """

    head: bytes  # signature, IHDR, text chunks and any chunk before the image data (PLTE)
    scanlines: np.ndarray  # H x (1 + n) uint8: each row's filter byte, then its filtered bytes
    compression: Compression
    residual: float  # mean |residual| per byte of the sampled rows (picks the deflate window)
    # With the native encoder (see _cpu_codec): bytes per pixel, and ``scanlines`` holds the
    # H x n unfiltered sample bytes, which the extension filters and deflates in stage 2.
    native_bpp: int = 0
    bit_depth: int = 8


def filter_png(
    image: np.ndarray,
    *,
    compression: Compression = "fast",
    text: Mapping[str, str] | None = None,
) -> FilteredPNG:
    """The first stage of :func:`encode_png` (same arguments; raises the same errors)."""
    check_image(image)
    _check_compression(compression)
    channels = 1 if image.ndim == 2 else image.shape[2]
    height, width = image.shape[:2]
    return _filter_scanlines(
        *_byte_planes(image),
        width=width,
        height=height,
        bit_depth=8 * image.dtype.itemsize,
        color_type=COLOR_TYPES[channels],
        compression=compression,
        text=text,
    )


def finish_png(filtered: FilteredPNG) -> bytes:
    """The second stage of :func:`encode_png`: deflate, ``IDAT`` and ``IEND``."""
    return png_bytes((filtered.head,), deflate_png(filtered))


def deflate_png(filtered: FilteredPNG) -> bytes:
    """The zlib stream of the filtered scanlines (the image data without its chunks; APNG
    frames put it in ``fdAT``). Releases the GIL throughout."""
    lines, bpp = filtered.scanlines, filtered.native_bpp
    native = _native_deflate(lines, bpp) if bpp and filtered.bit_depth <= 8 else None
    if native is not None:
        return native
    if bpp and filtered.bit_depth <= 8:  # mask-like: NumPy filters + ISA-L, here on this thread
        scanlines, residual = _filtered_fast(lines[None], bpp)
        return _deflate_fast(scanlines, residual)
    if filtered.compression == "fast" and filtered.bit_depth > 8:  # 16-bit: filters, libdeflate
        return _cpu_codec.deflate_deep(_cpu_codec.native_filter(lines, bpp) if bpp else lines)
    if filtered.compression == "fast":
        return _deflate_fast(lines, filtered.residual)
    if filtered.compression == "small":
        return _deflate_small(lines)
    return zlib.compress(lines.data, 0)


def _native_deflate(lines: np.ndarray, bpp: int) -> bytes | None:
    """The native encoder's zlib stream (None for a mask-like image); a big image with
    all-zero rows to cut after (a grid's padding) in slices on every core."""

    def deflate(rows: np.ndarray) -> bytes | None:
        return _cpu_codec.native_deflate(rows, bpp, FLAT_RESIDUAL)

    if lines.nbytes >= _parallel_deflate.PARALLEL_MIN_BYTES and _parallel_deflate.cpu_count() > 1:
        sliced = _parallel_deflate.native_sliced(lines, deflate)
        if sliced is not None:
            return sliced
    return deflate(lines)


def _check_compression(compression: str) -> None:
    if compression not in COMPRESSIONS:
        raise OptionError(f"compression must be one of {COMPRESSIONS}, got {compression!r}")


def _filter_scanlines(
    planes: np.ndarray,
    distance: int,
    *,
    width: int,
    height: int,
    bit_depth: int,
    color_type: int,
    compression: Compression,
    text: Mapping[str, str] | None,
    before_idat: tuple[bytes, ...] = (),
) -> FilteredPNG:
    """Filter the sample bytes, given as ``K x H x w`` uint8 ``planes`` (see
    :func:`_byte_planes`; ``distance`` is the filter's byte distance within a plane).

    The other keywords are the IHDR fields; ``before_idat`` are complete chunks (e.g.
    ``PLTE``) written after IHDR and the text chunks, before the image data.
    """
    residual, native_bpp = 0.0, 0
    if compression == "fast" and _cpu_codec.method(bit_depth) == "native":
        lines, native_bpp = _interleaved_bytes(planes, distance)  # the extension filters them
    elif compression == "fast":
        lines, residual = _filtered_fast(planes, distance)
    elif compression == "small":
        lines = _filtered_adaptive(*_interleaved_bytes(planes, distance))
    else:
        lines = _scanlines(planes, FILTER_NONE)  # the samples as they are, one copy
    head = b"".join((SIGNATURE, ihdr(width, height, bit_depth, color_type), text_chunks(text), *before_idat))
    return FilteredPNG(head, lines, compression, residual, native_bpp, bit_depth)


COLOR_TYPE_INDEXED = 3
INDEXED_BIT_DEPTHS: tuple[int, ...] = (1, 2, 4, 8)


def _indexed_bit_depth(labels_max: int) -> int:
    """The smallest PNG palette bit depth (1, 2, 4 or 8) whose indices reach ``labels_max``."""
    for depth in INDEXED_BIT_DEPTHS:
        if labels_max < 1 << depth:
            return depth
    raise ValueRangeError(f"palette PNGs hold labels 0..255, got a maximum label of {labels_max}")


def _pack_indices(labels: np.ndarray, depth: int) -> np.ndarray:
    """``H x W`` uint8 indices below ``2**depth`` as ``H x ceil(W*depth/8)`` scanline bytes.

    Pixels are packed most significant bits first, several to a byte for depths under 8;
    the last byte of each row is padded with zero bits (PNG spec 7.2).
    """
    if depth == 8:
        return np.ascontiguousarray(labels)
    if depth == 1:
        return np.packbits(labels, axis=1)  # nonzero -> 1; indices are 0 or 1 here
    per_byte = 8 // depth
    height, width = labels.shape
    padded = np.zeros((height, -(-width // per_byte) * per_byte), dtype=np.uint8)
    padded[:, :width] = labels
    groups = padded.reshape(height, -1, per_byte)
    packed = groups[:, :, 0] << np.uint8(8 - depth)
    for slot in range(1, per_byte):
        packed |= groups[:, :, slot] << np.uint8(8 - depth * (slot + 1))
    return packed


def encode_indexed_png(
    labels: np.ndarray,
    palette: np.ndarray,
    *,
    compression: Compression = "fast",
    text: Mapping[str, str] | None = None,
) -> bytes:
    """Encode a label map as an indexed-colour (palette) PNG: ``finish_png`` of
    :func:`filter_indexed_png` (same arguments)."""
    return finish_png(filter_indexed_png(labels, palette, compression=compression, text=text))


def filter_indexed_png(
    labels: np.ndarray,
    palette: np.ndarray,
    *,
    compression: Compression = "fast",
    text: Mapping[str, str] | None = None,
) -> FilteredPNG:
    """The first stage of encoding a label map as an indexed-colour (palette) PNG, colour type 3.

    Args:
        labels: ``H x W`` uint8 array of palette indices.
        palette: ``P x 3`` uint8 RGB array, 1 <= P <= 256 (see
            :func:`tensorpng.palettes.resolve_palette` for named palettes).
        compression: as for :func:`encode_png`; the filters work on the packed bytes.
        text: optional metadata, as for :func:`encode_png`.

    The bit depth is the smallest of 1, 2, 4, 8 that holds ``labels.max()``; rows are packed
    several pixels to a byte below depth 8. ``PLTE`` holds the first ``min(P, 2**depth)``
    palette entries; a label with no entry there raises :class:`ValueRangeError`.

    Returns:
        The filtered scanlines and the chunks before them, for :func:`finish_png`.
    """
    if not isinstance(labels, np.ndarray):
        raise DTypeError(f"encode_indexed_png takes labels as a numpy.ndarray, got {type(labels).__name__}")
    if labels.dtype != np.uint8:
        raise DTypeError(
            f"palette PNG labels are uint8 indices, got an array of dtype {labels.dtype} "
            f"and shape {tuple(labels.shape)}"
        )
    if labels.ndim != 2:
        raise ShapeError(f"palette PNG labels are an H x W array, got shape {tuple(labels.shape)}")
    height, width = labels.shape
    if height == 0 or width == 0:
        raise ShapeError(f"a PNG image needs at least one pixel, got labels of shape {tuple(labels.shape)}")
    if height > MAX_DIMENSION or width > MAX_DIMENSION:
        raise ShapeError(
            f"PNG width and height are at most 2**31-1, got labels of shape {tuple(labels.shape)}"
        )
    if not isinstance(palette, np.ndarray):
        raise DTypeError(
            f"encode_indexed_png takes the palette as a numpy.ndarray, got {type(palette).__name__}"
        )
    if palette.dtype != np.uint8:
        raise DTypeError(
            f"a palette is a P x 3 uint8 RGB array, got dtype {palette.dtype} "
            f"and shape {tuple(palette.shape)}"
        )
    if palette.ndim != 2 or palette.shape[1] != 3 or not 1 <= palette.shape[0] <= 256:
        raise ShapeError(
            f"a palette is a P x 3 RGB array with 1 <= P <= 256, got shape {tuple(palette.shape)}"
        )
    _check_compression(compression)
    labels_max = int(labels.max())
    depth = _indexed_bit_depth(labels_max)
    entries = min(palette.shape[0], 1 << depth)
    if labels_max >= entries:
        raise ValueRangeError(
            f"the labels reach {labels_max} but the palette has {palette.shape[0]} entries "
            f"(indices 0..{palette.shape[0] - 1})"
        )
    palette_chunk = plte(np.ascontiguousarray(palette[:entries]).tobytes())
    return _filter_scanlines(
        np.ascontiguousarray(_pack_indices(labels, depth))[None],
        1,
        width=width,
        height=height,
        bit_depth=depth,
        color_type=COLOR_TYPE_INDEXED,
        compression=compression,
        text=text,
        before_idat=(palette_chunk,),
    )
