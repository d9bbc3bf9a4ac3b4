"""Internal module.

The deflate of filtered scanlines: ISA-L level 1 through ``isal`` (``zlib`` level 1 when
``isal`` cannot be imported) for ``compression="fast"``, on every core for big images
(:mod:`tensorpng._parallel_deflate`); libdeflate level 12 through ``deflate`` (``zlib``
level 9 without it) for ``"small"``. Each call releases the GIL throughout.
"""

from __future__ import annotations

import zlib
from types import ModuleType

import numpy as np

from . import _parallel_deflate

_igzip_lib: ModuleType | None
try:  # ISA-L: ~400 MB/s per core at level 1.
    from isal import igzip_lib as _igzip_lib
except ImportError:  # pragma: no cover - exercised by a subprocess test with isal hidden
    _igzip_lib = None


def deflate_backend() -> str:
    """Name of the library that deflates for ``compression="fast"``: ``"isal"`` or ``"zlib"``."""
    return "isal" if _igzip_lib is not None else "zlib"


def deflate_small(data: np.ndarray) -> bytes:
    """zlib stream of ``H x (1+n)`` filtered scanlines, libdeflate level 12 (zlib level 9
    without the ``deflate`` package)."""
    try:
        import deflate  # libdeflate: best ratio per second at high levels
    except ImportError:
        return zlib.compress(data.data, 9)
    return bytes(deflate.zlib_compress(data.data, 12))


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


def deflate_fast(data: np.ndarray, residual: float) -> bytes:
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
