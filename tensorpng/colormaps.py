"""Internal module.

Colormaps: 256-entry RGB lookup tables for single-channel uint8 images.

The colours come from a maintained package rather than tables kept here: the dependency-free
``cmap`` package (``pip install 'tensorpng[colormaps]'``) first, matplotlib when ``cmap`` is
not installed. Both turn their float colours into bytes the same way (``uint8(c * 255)``,
truncating), so the tables match matplotlib's ``cmap(index, bytes=True)``. ``"gray"`` is
generated (entry ``i`` is ``(i, i, i)``) and needs neither.

Torch is never imported here: :func:`apply_colormap_torch` uses the module the caller
imported.
"""

from __future__ import annotations

import threading
from functools import cache
from typing import Any

import numpy as np

from .arrays import is_torch_tensor, torch_module
from .errors import DTypeError, OptionError, ShapeError

COLORMAPS: tuple[str, ...] = ("viridis", "magma", "inferno", "plasma", "cividis", "turbo", "gray")
TABLE_SIZE = 256
INSTALL_HINT = "install the cmap package (pip install cmap, or pip install 'tensorpng[colormaps]')"


def _canonical(name: str) -> str:
    if not isinstance(name, str):
        raise OptionError(f"a colormap name is a string, one of {COLORMAPS}; got {name!r}")
    key = name.lower()
    if key not in COLORMAPS:
        raise OptionError(f"unknown colormap {name!r}: choose one of {', '.join(COLORMAPS)}")
    return key


def _table_from_packages(name: str) -> np.ndarray:
    """``256 x 3`` uint8 from ``cmap``, else matplotlib, else :class:`OptionError`."""
    indices = np.arange(TABLE_SIZE)  # integer input indexes the 256-entry LUT directly
    try:
        from cmap import Colormap
    except ImportError:
        pass
    else:
        return np.asarray(Colormap(name)(indices, N=TABLE_SIZE, bytes=True))[:, :3]
    try:
        import matplotlib
    except ImportError:
        raise OptionError(f"colormap {name!r} needs a colormap package: {INSTALL_HINT}") from None
    colormap = matplotlib.colormaps[name]
    if colormap.N != TABLE_SIZE:
        colormap = colormap.resampled(TABLE_SIZE)
    return np.asarray(colormap(indices, bytes=True))[:, :3]


@cache
def _table(name: str) -> np.ndarray:
    if name == "gray":
        table = np.repeat(np.arange(TABLE_SIZE, dtype=np.uint8)[:, None], 3, axis=1)
    else:
        table = np.array(_table_from_packages(name), dtype=np.uint8)
    if table.shape != (TABLE_SIZE, 3):  # pragma: no cover - a package changed its API
        raise AssertionError(f"colormap {name!r} gave a table of shape {table.shape}")
    table.flags.writeable = False
    return table


def colormap_table(name: str) -> np.ndarray:
    """The ``256 x 3`` uint8 RGB lookup table of colormap ``name`` (case-insensitive).

    ``name`` is one of :data:`COLORMAPS`. The table is cached and read-only. Raises
    :class:`OptionError` for an unknown name, or when neither ``cmap`` nor matplotlib is
    installed (``"gray"`` needs neither).
    """
    return _table(_canonical(name))


def _output_shape(shape: tuple[int, ...]) -> tuple[int, ...]:
    """The leading shape of the colours for samples of ``shape``, checked.

    ``H x W``, ``N x H x W`` or either with a trailing axis of 1. A 3-D input whose last
    axis is 1 is read as ``H x W x 1`` (a channel axis), not as a batch of width-1 images.
    """
    if len(shape) >= 3 and shape[-1] == 1:
        shape = shape[:-1]
    if len(shape) not in (2, 3):
        raise ShapeError(
            f"colormap samples are H x W or N x H x W (optionally with a trailing axis of 1), "
            f"got shape {shape}"
        )
    return shape


def apply_colormap(samples: np.ndarray, name: str) -> np.ndarray:
    """Colour uint8 ``samples`` with colormap ``name``: ``table[samples]``.

    ``samples`` is ``H x W`` or ``N x H x W``, optionally with a trailing channel axis of 1
    (dropped); returns the same leading shape ``x 3`` as a new uint8 array.
    """
    if not isinstance(samples, np.ndarray):
        raise DTypeError(
            f"apply_colormap takes a numpy.ndarray, got {type(samples).__name__}; "
            "use apply_colormap_torch for tensors"
        )
    if samples.dtype != np.uint8:
        raise DTypeError(
            f"colormap samples are uint8, got dtype {samples.dtype} and shape {tuple(samples.shape)}"
        )
    shape = _output_shape(tuple(samples.shape))
    table = colormap_table(name)
    return table[samples.reshape(shape)]


_torch_tables: dict[tuple[str, Any], Any] = {}
_torch_lock = threading.Lock()


def _torch_table(name: str, device: Any) -> Any:
    """The table as a uint8 tensor on ``device``, made once per (colormap, device)."""
    key = (name, device)
    table = _torch_tables.get(key)
    if table is None:
        torch = torch_module()
        table = torch.from_numpy(np.array(_table(name))).to(device)
        with _torch_lock:
            table = _torch_tables.setdefault(key, table)
    return table


def apply_colormap_torch(samples: Any, name: str) -> Any:
    """:func:`apply_colormap` for a uint8 ``torch.Tensor`` on any device; the result stays there.

    Indexes a copy of the table kept on ``samples.device`` (cached per device). Never imports
    torch: it must be the caller's tensor.
    """
    if not is_torch_tensor(samples):
        raise DTypeError(
            f"apply_colormap_torch takes a torch.Tensor, got {type(samples).__name__}; "
            "use apply_colormap for NumPy arrays"
        )
    torch = torch_module()
    if samples.dtype != torch.uint8:
        raise DTypeError(
            f"colormap samples are uint8, got a tensor of dtype {samples.dtype} and shape "
            f"{tuple(samples.shape)}"
        )
    shape = _output_shape(tuple(samples.shape))
    table = _torch_table(_canonical(name), samples.device)
    # Index with int64: a uint8 index tensor would be read as a boolean mask.
    return table[samples.reshape(shape).long()]
