"""Internal module.

PNG encoding in two stages (:class:`FilteredPNG`): the row filters in NumPy
(:mod:`tensorpng._png_filters`), then the deflate in a maintained library
(:mod:`tensorpng._png_deflate`) or the native extension (:mod:`tensorpng._cpu_codec`).

The heavy work is two calls that release the GIL: NumPy's element-wise ufuncs (the row
filters) and the deflate of the filtered bytes. The framing around the deflate stream
(signature, IHDR, optional text chunks, PLTE for palette images, IDAT, IEND, CRC-32)
comes from :mod:`tensorpng._png_chunks`.
"""

from __future__ import annotations

import functools
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, TypeAlias, TypedDict, Unpack

import numpy as np

from . import _cpu_codec, _parallel_deflate
from ._png_chunks import MAX_DIMENSION, SIGNATURE, ihdr, plte, png_bytes
from ._png_deflate import FLAT_RESIDUAL, deflate_fast, deflate_small
from ._png_deflate import deflate_backend as deflate_backend
from ._png_filters import (
    FILTER_NONE,
    byte_planes,
    filtered_adaptive,
    filtered_fast,
    interleaved_bytes,
    scanlines_of,
)
from ._png_filters import choose_filter as choose_filter
from ._png_filters import filter_image as filter_image
from ._png_text import text_chunks
from .errors import DTypeError, OptionError, ShapeError, ValueRangeError

Compression: TypeAlias = Literal["fast", "small", "none"]
COMPRESSIONS: tuple[str, ...] = ("fast", "small", "none")


# PNG colour types by channel count: gray, gray+alpha, RGB, RGBA.
COLOR_TYPES: dict[int, int] = {1: 0, 2: 4, 3: 2, 4: 6}


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


@functools.lru_cache(maxsize=256)
def _file_header(width: int, height: int, bit_depth: int, color_type: int) -> bytes:
    """The signature and IHDR; images come in few sizes, and building IHDR (its checks, its
    CRC) cost more than a look-up: a few microseconds a file, after an encode left the
    caches cold."""
    return SIGNATURE + ihdr(width, height, bit_depth, color_type)


class StageKeywords(TypedDict, total=False):
    """The options of every encoding stage; defaults on the first stages' signatures."""

    compression: Compression
    text: Mapping[str, str] | None


def encode_png(image: np.ndarray, **options: Unpack[StageKeywords]) -> bytes:
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
    return finish_png(filter_png(image, **options))


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
    # H x n unfiltered sample bytes, which the extension filters and deflates in stage 2 (with
    # ``planar``: the bpp x H x W planes of channels-first samples, interleaved there).
    native_bpp: int = 0
    bit_depth: int = 8
    planar: bool = False


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
    bit_depth = 8 * image.dtype.itemsize
    header = _file_header(width, height, bit_depth, COLOR_TYPES[channels])
    return _filtered(*byte_planes(image), header, bit_depth, compression, text)


def finish_png(filtered: FilteredPNG) -> bytes:
    """The second stage of :func:`encode_png`: deflate, ``IDAT`` and ``IEND``."""
    return png_bytes((filtered.head,), deflate_png(filtered))


def deflate_png(filtered: FilteredPNG) -> bytes:
    """The zlib stream of the filtered scanlines (the image data without its chunks; APNG
    frames put it in ``fdAT``). Releases the GIL throughout."""
    lines, bpp = filtered.scanlines, filtered.native_bpp
    native = _native_deflate(lines, bpp, filtered.planar) if bpp and filtered.bit_depth <= 8 else None
    if native is not None:
        return native
    if bpp and filtered.bit_depth <= 8:  # mask-like: NumPy filters + ISA-L, here on this thread
        scanlines, residual = filtered_fast(*((lines, 1) if filtered.planar else (lines[None], bpp)))
        return deflate_fast(scanlines, residual)
    if filtered.compression == "fast" and filtered.bit_depth > 8:  # 16-bit: filters, libdeflate
        return _cpu_codec.deflate_deep(_cpu_codec.native_filter(lines, bpp) if bpp else lines)
    if filtered.compression == "fast":
        return deflate_fast(lines, filtered.residual)
    if filtered.compression == "small":
        return deflate_small(lines)
    return zlib.compress(lines.data, 0)


def _native_deflate(lines: np.ndarray, bpp: int, planar: bool = False) -> bytes | None:
    """The native encoder's zlib stream (None for a mask-like image); a big image with
    all-zero rows to cut after (a grid's padding) in slices on every core (channels-first
    ``planar`` samples interleaved first: slices are runs of rows)."""

    def deflate(rows: np.ndarray) -> bytes | None:
        return _cpu_codec.native_deflate(rows, bpp, FLAT_RESIDUAL)

    if _sliceable(lines):
        sliced = _parallel_deflate.native_sliced(interleaved_bytes(lines, 1)[0] if planar else lines, deflate)
        if sliced is not None:
            return sliced
    return _cpu_codec.native_deflate(lines, bpp, FLAT_RESIDUAL, True) if planar else deflate(lines)


def _sliceable(lines: np.ndarray) -> bool:
    """Whether an image is big enough for its rows to be deflated in slices on every core."""
    return lines.nbytes >= _parallel_deflate.PARALLEL_MIN_BYTES and _parallel_deflate.cpu_count() > 1


def encode_png_ranged(
    image: np.ndarray, text_for: Callable[[float, float], Mapping[str, str] | None]
) -> bytes | None:
    """``encode_png(image, text=text_for(low, high))`` with ``image``'s smallest and largest
    sample found by the native encoder as it codes them, not in passes over the image of their
    own (they go in the metadata record, before the image data). None where that encoder does
    not code this image (not 8-bit, another encoder, mask-like, sliced): encode it as usual."""
    check_image(image)
    if image.dtype.itemsize != 1 or not _native_filters("fast", 8):
        return None
    planes, distance = byte_planes(image)
    planar = planes.shape[0] > 1
    lines, bpp = (planes, planes.shape[0]) if planar else (planes[0], distance)
    if _sliceable(lines):
        return None
    stream, low, high = _cpu_codec.native_deflate_ranged(lines, bpp, FLAT_RESIDUAL, planar)
    if stream is None:
        return None
    height, width = image.shape[:2]
    header = _file_header(width, height, 8, COLOR_TYPES[1 if image.ndim == 2 else image.shape[2]])
    text = text_for(float(low), float(high))
    return png_bytes((b"".join((header, text_chunks(text))) if text else header,), stream)


def _native_filters(compression: Compression, bit_depth: int) -> bool:
    """Whether the extension filters (and deflates) these samples."""
    return compression == "fast" and _cpu_codec.method(bit_depth) == "native"


def _check_compression(compression: str) -> None:
    if compression not in COMPRESSIONS:
        raise OptionError(f"compression must be one of {COMPRESSIONS}, got {compression!r}")


def _filtered(
    planes: np.ndarray,
    distance: int,
    header: bytes,
    bit_depth: int,
    compression: Compression,
    text: Mapping[str, str] | None,
    before_idat: tuple[bytes, ...] = (),
) -> FilteredPNG:
    """Filter the sample bytes, given as ``K x H x w`` uint8 ``planes`` (see
    :func:`byte_planes`; ``distance`` is the filter's byte distance within a plane).

    ``header``: the signature and IHDR; ``before_idat`` are complete chunks (e.g. ``PLTE``)
    written after IHDR and the text chunks, before the image data.
    """
    residual, native_bpp, planar = 0.0, 0, False
    if _native_filters(compression, bit_depth):  # the extension filters (and interleaves) them
        planar = planes.shape[0] > 1
        lines, native_bpp = (planes, planes.shape[0]) if planar else interleaved_bytes(planes, distance)
    elif compression == "fast":
        lines, residual = filtered_fast(planes, distance)
    elif compression == "small":
        lines = filtered_adaptive(*interleaved_bytes(planes, distance))
    else:
        lines = scanlines_of(planes, FILTER_NONE)  # the samples as they are, one copy
    head = b"".join((header, text_chunks(text), *before_idat)) if text or before_idat else header
    return FilteredPNG(head, lines, compression, residual, native_bpp, bit_depth, planar)


def filter_pngs(
    images: Sequence[np.ndarray],
    *,
    compression: Compression = "fast",
    texts: Sequence[Mapping[str, str] | None],
) -> list[FilteredPNG]:
    """:func:`filter_png` of each of ``images`` with its ``texts``, for images of one shape,
    dtype and memory order (a batch's): the checks, the encoder's choice and the IHDR are
    made once, which for small images is a good part of the work."""
    first = images[0]
    check_image(first)
    _check_compression(compression)
    height, width = first.shape[:2]
    bit_depth = 8 * first.dtype.itemsize
    header = _file_header(width, height, bit_depth, COLOR_TYPES[1 if first.ndim == 2 else first.shape[2]])
    if (
        _native_filters(compression, bit_depth)
        and bit_depth == 8
        and all(image.flags.c_contiguous for image in images)
    ):
        # the extension takes the sample bytes as they lie (what byte_planes and
        # interleaved_bytes give for C-contiguous images, without their calls)
        bpp = 1 if first.ndim == 2 else int(first.shape[2])
        return [
            FilteredPNG(
                header + text_chunks(text) if text else header, image.reshape(height, -1), "fast", 0.0, bpp
            )
            for image, text in zip(images, texts, strict=True)
        ]
    return [
        _filtered(*byte_planes(image), header, bit_depth, compression, text)
        for image, text in zip(images, texts, strict=True)
    ]


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


def encode_indexed_png(labels: np.ndarray, palette: np.ndarray, **options: Unpack[StageKeywords]) -> bytes:
    """Encode a label map as an indexed-colour (palette) PNG: ``finish_png`` of
    :func:`filter_indexed_png` (same arguments)."""
    return finish_png(filter_indexed_png(labels, palette, **options))


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
    header = _file_header(width, height, depth, COLOR_TYPE_INDEXED)
    planes = np.ascontiguousarray(_pack_indices(labels, depth))[None]
    return _filtered(planes, 1, header, depth, compression, text, (palette_chunk,))
