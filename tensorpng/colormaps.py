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
from typing import Any, NamedTuple

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


# Undoing a colormap (load). A file tensorpng wrote holds only table colours; an edited one
# (resized, re-encoded) holds others, each mapped to its nearest table colour. Finding that
# costs a pass over the table per colour, so only this many distinct colours outside the table
# are looked up; past it the file is not a colormap image (``load`` ignores its record).
MAX_OFF_TABLE_COLORS = 1 << 16
_SEARCH_BLOCK = 1 << 10  # off-table colours per step of the nearest search (1024 x 256 int32)
_HASH_SHIFT = 16  # table colours are found in 2**16 hash slots


class NotAColormapImage(ValueError):
    """Pixels with more colours outside a colormap's table than :data:`MAX_OFF_TABLE_COLORS`
    (internal: ``load`` ignores the record that says they are a colormap image)."""


def _keys(pixels: np.ndarray) -> np.ndarray:
    """RGB bytes (``P x 3`` or more channels, uint8) packed into uint32 keys ``0xRRGGBB``."""
    keys = pixels[:, 0].astype(np.uint32) << 16
    keys |= pixels[:, 1].astype(np.uint32) << 8
    keys |= pixels[:, 2]
    return keys


class _Inverse(NamedTuple):
    """A table's colours by a multiplicative hash (``key * multiplier >> 16``, no collisions),
    their positions (the middle of a colour's entries), and the table for nearest searches."""

    multiplier: np.uint32
    slot_keys: np.ndarray  # 65536 uint32: the colour in each slot, or 2**32 - 1 (no pixel's key)
    slot_positions: np.ndarray  # 65536 float64
    table: np.ndarray  # 256 x 3 int32
    middle: np.ndarray  # 256 float64: each entry's colour's position


@cache
def _inverse(name: str) -> _Inverse:
    table = _table(name)
    colors, which = np.unique(_keys(table), return_inverse=True)
    middle = np.bincount(which, weights=np.arange(TABLE_SIZE)) / np.bincount(which)
    # A random odd multiplier spreads 256 colours over 65536 slots without a collision about
    # half the time; the candidates are fixed, so each table gets the same one every run.
    for multiplier in np.random.default_rng(0).integers(0, 1 << 31, 64, dtype=np.uint32) * 2 + 1:
        slots = (colors * multiplier) >> _HASH_SHIFT
        if len(np.unique(slots)) == len(colors):
            break
    else:  # pragma: no cover - 64 failures in a row: odds below 2**-60
        raise AssertionError(f"no collision-free hash for colormap {name!r}")
    slot_keys = np.full(1 << (32 - _HASH_SHIFT), 0xFFFFFFFF, np.uint32)
    slot_keys[slots] = colors
    slot_positions = np.zeros(len(slot_keys))
    slot_positions[slots] = middle
    return _Inverse(multiplier, slot_keys, slot_positions, table.astype(np.int32), middle[which])


class TablePositions:
    """The position in colormap ``name``'s table of RGB pixels, block by block (``load``).

    A colour the table holds more than once (neighbouring entries that round to the same
    bytes) maps to the mean of its positions, the middle of the values it stands for; a colour
    it lacks to its nearest table colour's. Time and memory are linear in the pixels of a
    block: table colours through a hash table, other colours through the ones already found
    (a binary search), and at most :data:`MAX_OFF_TABLE_COLORS` nearest searches in all.
    """

    def __init__(self, name: str) -> None:
        self.name = _canonical(name)
        self.inverse = _inverse(self.name)
        self.known = np.empty(0, np.uint32)  # off-table colours found so far, sorted
        self.known_positions = np.empty(0, np.float64)

    def __call__(self, pixels: np.ndarray) -> np.ndarray:
        """Positions (float64, ``P``) of ``P x C`` uint8 pixels (C >= 3: alpha is ignored).

        Raises :class:`NotAColormapImage` past :data:`MAX_OFF_TABLE_COLORS` colours outside
        the table.
        """
        keys = _keys(pixels)
        slots = keys * self.inverse.multiplier  # wraps around: uint32 arithmetic
        slots >>= _HASH_SHIFT
        positions = self.inverse.slot_positions[slots]
        missing = np.flatnonzero(self.inverse.slot_keys[slots] != keys)
        if missing.size:
            positions[missing] = self._off_table(keys[missing])
        return positions

    def _off_table(self, keys: np.ndarray) -> np.ndarray:
        slots = np.minimum(np.searchsorted(self.known, keys), max(len(self.known) - 1, 0))
        new = keys if not len(self.known) else keys[self.known[slots] != keys]
        if new.size:
            self._learn(np.unique(new))
            slots = np.searchsorted(self.known, keys)
        return self.known_positions[slots]

    def _learn(self, colors: np.ndarray) -> None:
        """Find the nearest table colour of each of ``colors`` (sorted, none known yet)."""
        if len(self.known) + len(colors) > MAX_OFF_TABLE_COLORS:
            raise NotAColormapImage(
                f"its pixels hold more than {MAX_OFF_TABLE_COLORS:,} colours that are not in "
                f"{self.name}'s table (not a colormap image)"
            )
        found = np.empty(len(colors), np.float64)
        for start in range(0, len(colors), _SEARCH_BLOCK):
            block = colors[start : start + _SEARCH_BLOCK]
            distances = np.zeros((len(block), TABLE_SIZE), np.int32)  # at most 3 x 255**2
            for channel, shift in enumerate((16, 8, 0)):
                values = ((block >> shift) & 255).astype(np.int32)
                difference = values[:, None] - self.inverse.table[None, :, channel]
                difference *= difference
                distances += difference
            found[start : start + len(block)] = self.inverse.middle[np.argmin(distances, axis=1)]
        known = np.concatenate([self.known, colors])
        order = np.argsort(known, kind="stable")
        self.known = known[order]
        self.known_positions = np.concatenate([self.known_positions, found])[order]
