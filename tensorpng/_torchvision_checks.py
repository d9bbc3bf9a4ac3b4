"""Internal: the numeric options of ``make_grid`` and ``save_image``, checked before any work.

torchvision passes ``pad_value`` and ``value_range`` to torch as Python numbers, and torch
raises raw errors for some (an int beyond int64, a value beyond the tensor's dtype) and
silently wraps others (300 in a uint8 grid). Here each is refused with an
:class:`~tensorpng.OptionError` naming the value and the range that would be taken, and a
value torch takes is passed on as given, so the pixels stay torchvision's.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np

from .arrays import plain_number, torch_module
from .errors import OptionError


class GridOptions(NamedTuple):
    nrow: int
    padding: int
    pad_value: float
    value_range: tuple[float, float, float] | None  # low, high and high - low, as torch takes them


def check_grid_options(nrow: Any, padding: Any, pad_value: Any, value_range: Any) -> GridOptions:
    """Check the grid's options: Python, NumPy or 0-d torch numbers, as torchvision takes them."""
    nrow, padding = _integer("nrow", nrow, 1), _integer("padding", padding, 0)
    pad = plain_number(pad_value)
    if pad is None or not _is_number(pad, infinite=True):
        raise OptionError(
            "pad_value must be a number, not NaN (1.0 is white for float images, 255 for uint8); "
            f"got {pad_value!r}"
        )
    if value_range is None:
        return GridOptions(nrow, padding, pad, None)
    if not isinstance(value_range, Sequence) or isinstance(value_range, str) or len(value_range) != 2:
        raise OptionError(f"value_range must be a pair (min, max), got {value_range!r}")
    low, high = (plain_number(v) for v in value_range)
    if not (_is_number(low, infinite=False) and _is_number(high, infinite=False)):
        raise OptionError(f"value_range must hold two finite numbers (min, max), got {value_range!r}")
    assert low is not None and high is not None
    span = high - low
    if any(hasattr(v, "item") for v in value_range):  # torchvision subtracts tensors (x.min(),
        span = plain_number(value_range[1] - value_range[0])  # x.max()) in their own dtype
    return GridOptions(nrow, padding, torch_scalar(pad), (torch_scalar(low), torch_scalar(high), span))


def _integer(name: str, value: Any, minimum: int) -> int:
    """``value`` as an int: a Python, NumPy or 0-d torch integer."""
    try:
        number = None if isinstance(value, bool) else operator.index(value)
    except TypeError:
        number = None
    if number is None or number < minimum:
        raise OptionError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return number


def _is_number(value: object, *, infinite: bool) -> bool:
    """Whether ``value`` is an int or float that float64 holds, not NaN (inf if ``infinite``)."""
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return False
    try:
        as_float = float(value)
    except OverflowError:  # an int beyond float64
        return False
    return not math.isnan(as_float) and (infinite or math.isfinite(as_float))


def torch_scalar(value: float) -> float:
    """``value`` as torch takes it: an int beyond int64 as a float (torch raises a raw
    OverflowError for it); other values as given, which torch rounds once, as torchvision's."""
    return float(value) if isinstance(value, int) and not -(2**63) <= value < 2**63 else value


def grid_fill(pad_value: float, dtype: Any, floating: bool) -> float:
    """``make_grid``'s padding value for a grid of ``dtype`` (a torch or NumPy dtype): an
    integer or bool grid cannot hold a value outside its range (torch would wrap it)."""
    if floating:
        return torch_scalar(pad_value)
    name = str(dtype).removeprefix("torch.")
    if name == "bool":
        low, high = 0, 1
    else:
        info = torch_module().iinfo(dtype) if str(dtype).startswith("torch.") else np.iinfo(dtype)
        low, high = int(info.min), int(info.max)
    if not low <= pad_value <= high:
        raise OptionError(
            f"pad_value={pad_value!r} does not fit the images' dtype {name} ({low}..{high}); "
            "pass a value in that range, or float images"
        )
    return pad_value


def check_span(low: float, high: float, dtype: Any) -> None:
    """``normalize`` computes in the images' float dtype: a ``value_range`` beyond it is refused
    (torch raises a raw error for it; NumPy makes it inf, and every sample 0 or NaN)."""
    name = str(dtype).removeprefix("torch.")
    info = torch_module().finfo(dtype) if str(dtype).startswith("torch.") else np.finfo(dtype)
    limit = float(info.max)
    if not (abs(low) <= limit and abs(high) <= limit):
        raise OptionError(
            f"value_range=({low!r}, {high!r}) is beyond {name}, in which normalize computes "
            f"(|v| <= {limit:g}); pass a range within it, or convert the images to float64"
        )
