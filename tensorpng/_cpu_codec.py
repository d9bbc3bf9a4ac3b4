"""The one place that decides how the CPU encoder deflates an image (``compression="fast"``).

* 8-bit images (palette ones included): the native extension ``tensorpng._native`` (filter
  choice, filtering, Huffman coding and Adler-32 in C, the GIL released) when it was built,
  else NumPy filters + ISA-L level 1 (zlib without ``isal``).
* 16-bit images: the extension's filters (NumPy's without it) + libdeflate level 1 (the
  ``deflate`` package), else ISA-L
  level 1 with its full 32 KiB window. Chosen by measurement (see README, "The native
  encoder"): byte pairs need LZ matches that Huffman-only coding lacks, and libdeflate 1 was
  the only one within 2% of Pillow's default size on every 16-bit test image, at 9-18x its speed.

The environment variable ``TENSORPNG_CPU_ENCODER`` forces a path: ``auto`` (default: native
where built), ``native`` (a one-time ``RuntimeWarning`` if the extension is missing, then the
fallback) or ``numpy``. It is read at every encode, so tests and benchmarks can switch paths.
``tensorpng info`` prints :func:`describe`.
"""

from __future__ import annotations

import importlib
import math
import os
import platform
import warnings
import zlib
from types import ModuleType
from typing import Literal, TypeAlias

import numpy as np

from .errors import OptionError

ENV = "TENSORPNG_CPU_ENCODER"
CHOICES: tuple[str, ...] = ("auto", "native", "numpy")
Method: TypeAlias = Literal["native", "numpy"]

_native: ModuleType | None
try:
    _native, _native_error = importlib.import_module("tensorpng._native"), ""
except ImportError as error:  # no compiler at install time, or a pure-Python install
    _native, _native_error = None, str(error)

_deflate: ModuleType | None
try:
    import deflate as _deflate  # libdeflate
except ImportError:
    _deflate = None

_igzip_lib: ModuleType | None
try:
    from isal import igzip_lib as _igzip_lib
except ImportError:
    _igzip_lib = None

_warned = False


def requested() -> str:
    """The value of ``TENSORPNG_CPU_ENCODER`` (``"auto"`` when unset)."""
    value = os.environ.get(ENV, "").strip().lower() or "auto"
    if value not in CHOICES:
        raise OptionError(f"environment variable {ENV} must be one of {CHOICES}, got {value!r}")
    return value


def method(bit_depth: int) -> Method:
    """The path that encodes an image of ``bit_depth`` (1..16) with ``compression="fast"``."""
    choice = requested()
    if choice == "numpy":
        return "numpy"
    if _native is not None:
        return "native"
    if choice == "native":
        _warn_once()
    return "numpy"


def _warn_once() -> None:
    global _warned
    if not _warned:
        _warned = True
        warnings.warn(
            f"{ENV}=native, but the extension tensorpng._native is not available ({_native_error}); "
            "encoding with NumPy + ISA-L instead. Reinstall tensorpng where a C compiler exists.",
            RuntimeWarning,
            stacklevel=3,
        )


def native_deflate(samples: np.ndarray, bpp: int, flat: float = 0.0, planar: bool = False) -> bytes | None:
    """zlib stream of ``H x n`` C-contiguous uint8 sample bytes (unfiltered), ``bpp`` bytes per
    pixel, by the extension (which filters); releases the GIL. None for a mask-like image
    (mean |residual| per byte of the sampled rows under ``flat``): Huffman coding with runs of
    zeros only makes masks about 3x larger than an LZ77 deflate does, at no gain in speed.
    ``planar``: ``samples`` are the ``bpp x H x W`` C-contiguous planes of channels-first
    samples (the same stream, interleaved a row at a time on the way, without a copy)."""
    assert _native is not None
    if planar:
        _, height, width = samples.shape
        return _native.deflate_image(samples, height, width * bpp, bpp, flat, True)
    height, row_bytes = samples.shape
    return _native.deflate_image(samples, height, row_bytes, bpp, flat)


def native_deflate_ranged(
    samples: np.ndarray, bpp: int, flat: float, planar: bool
) -> tuple[bytes | None, int, int]:
    """:func:`native_deflate`, and the smallest and largest sample byte, found on the way (the
    metadata record's min and max of 8-bit samples, without a pass of their own)."""
    assert _native is not None
    height, width = samples.shape[-2:]
    row_bytes = width * bpp if planar else width
    stream, low, high = _native.deflate_image(samples, height, row_bytes, bpp, flat, planar, True)
    return stream, low, high


def byte_range(values: np.ndarray) -> tuple[int, int] | None:
    """The smallest and largest value of a non-empty uint8 array in one pass by the extension
    (NumPy takes two: min, then max), or None without it or for memory it cannot read as one
    run (any order of a C-contiguous array is fine: min and max do not depend on it)."""
    if _native is None or values.dtype != np.uint8 or values.size == 0:
        return None
    if not values.flags.c_contiguous:  # a channels-first image viewed as H x W x C
        values = values.transpose(2, 0, 1) if values.ndim == 3 else values
        if not values.flags.c_contiguous:
            return None
    low, high = _native.byte_range(values)
    return low, high


def native_conversion() -> bool:
    """Whether :func:`native_convert` converts float32 values (the extension is built, with its
    AVX2 path: its scalar path is slower than NumPy's passes, which then convert instead)."""
    return _native is not None and _native.simd() == "avx2" and requested() != "numpy"


def native_convert(
    image: np.ndarray, gains: list[float], offsets: list[float]
) -> tuple[np.ndarray, int, tuple[float, float] | None]:
    """8-bit samples ``trunc(clamp(x * gain + offset, 0, 255))`` of an ``H x W x C`` float32 image,
    one gain and offset per channel, in one pass of the extension (GIL released) that makes the
    same float32 roundings as ``scaling._convert_affine``'s NumPy passes (NaN written as 0).

    Returns the samples (channels-first images stay planar, as there), the NaN count and the
    finite ``(min, max)`` of the values (None where they hold NaN or inf), as that function.
    """
    assert _native is not None
    channels = image.shape[2]
    planes = image.transpose(2, 0, 1)
    planar = planes.flags.c_contiguous
    values = planes if planar else np.ascontiguousarray(image)
    samples = np.empty(values.shape, dtype=np.uint8)
    nans, low, high, both_zeros = _native.convert_affine(values, samples, gains, offsets, planar)
    extremes = None
    if nans == 0 and math.isfinite(low) and math.isfinite(high):
        extremes = low, high
        if both_zeros and 0.0 in extremes:  # 0.0 or -0.0: as NumPy's min and max order them
            flat = values.reshape(channels if planar else 1, -1)
            extremes = float(min(flat.min(axis=1).tolist())), float(max(flat.max(axis=1).tolist()))
    return (samples.transpose(1, 2, 0) if planar else samples), nans, extremes


def native_filter(samples: np.ndarray, bpp: int) -> np.ndarray:
    """``H x (1+n)`` scanlines of ``H x n`` C-contiguous sample bytes, filtered by the extension
    as the NumPy path would filter them (same filter, same residuals); releases the GIL."""
    assert _native is not None
    height, row_bytes = samples.shape
    lines = np.empty((height, row_bytes + 1), dtype=np.uint8)
    _native.filter_image(samples, height, row_bytes, bpp, lines)
    return lines


def deflate_deep(scanlines: np.ndarray) -> bytes:
    """zlib stream of 16-bit filtered scanlines: libdeflate level 1, else ISA-L level 1 with a
    32 KiB window, else zlib level 1 (all release the GIL)."""
    if _deflate is not None:
        return bytes(_deflate.zlib_compress(scanlines.data, 1))
    if _igzip_lib is not None:
        return bytes(_igzip_lib.compress(scanlines.data, 1, _igzip_lib.COMP_ZLIB, hist_bits=15))
    return zlib.compress(scanlines.data, 1)


def deep_backend() -> str:
    """Name of the deflate library for 16-bit images."""
    if _deflate is not None:
        return "libdeflate level 1 (deflate package)"
    return "ISA-L level 1, 32 KiB window" if _igzip_lib is not None else "zlib level 1"


def describe() -> list[str]:
    """Lines saying which CPU encoder and deflate back ends are active, and why."""
    try:
        choice, problem = requested(), ""
    except OptionError as error:
        choice, problem = "auto", f" (ignored: {error})"
    shallow = "ISA-L level 1 (isal)" if _igzip_lib is not None else "zlib level 1 (isal not installed)"
    lines = [f"{ENV}: {os.environ.get(ENV, '(unset)')}{problem}"]
    if _native is None:
        lines.append(f"native extension: not available ({_native_error})")
    else:
        cpu = ", ".join(_native.cpu_features()) or "none usable"
        lines.append(f"native extension: built; CPU SIMD features: {cpu}; in use: {_native.simd()}")
    active = method(8) if choice != "native" or _native is not None else "numpy"
    if active == "native":
        why = "forced by the environment" if choice == "native" else "the extension is built"
        lines.append(f"8-bit encoder: native (filters + Huffman coding in C) - {why}")
    else:
        why = {"numpy": f"forced by {ENV}=numpy"}.get(choice, "the extension is not available")
        lines.append(f"8-bit encoder: NumPy filters + {shallow} - {why}")
    filters = "native" if active == "native" else "NumPy"
    lines.append(f"16-bit encoder: {filters} filters + {deep_backend()}")
    lines.append(f"machine: {platform.machine()}, Python {platform.python_version()}")
    return lines
