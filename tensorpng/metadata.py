"""Internal: the mapping record. Every PNG records how its values were mapped, so
:func:`tensorpng.load` can undo it.

The record is one ``tEXt`` chunk with the keyword ``tensorpng`` holding JSON::

    {"version": "0.1.0", "framework": "torch", "dtype": "float32", "shape": [64, 3, 256, 256],
     "layout": "NCHW", "index": 5, "mapping": "affine", "bits": 8,
     "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225], "scale": null,
     "value_range": [0.0, 1.0], "min": -2.1, "max": 2.6}

``value_range`` holds the values (after ``x * std + mean``) written as 0 and as the
maximum sample: the option's, or the image's (batch's) own min and max with ``scale=``.
``min``/``max`` are the image's finite extremes as given (before any mapping). ``mapping``
is the plan's mode (``"affine"``, ``"copy"``, ``"bool"``, ``"widen"``, ``"narrow"``),
``"colormap"`` or ``"palette"``. Grids add ``"grid": {"count", "nrow", "padding"}``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from ._version import __version__

if TYPE_CHECKING:  # convert imports the options, which import this module's key
    from .convert import Batch

METADATA_KEY = "tensorpng"


def _finite_extremes(values: np.ndarray) -> tuple[float | None, float | None]:
    """Finite min and max of a host array (None when it holds no finite value)."""
    if values.dtype.kind == "b":
        values = values.astype(np.uint8)
    if values.dtype.kind != "f":
        return float(values.min()), float(values.max())
    low, high = float(values.min()), float(values.max())
    if math.isfinite(low) and math.isfinite(high):
        return low, high
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return None, None
    return float(finite.min()), float(finite.max())


def device_extremes(images: Any) -> tuple[Any, Any]:
    """Per-image finite min and max of an ``N x H x W x C`` torch batch, on its device."""
    import sys

    torch = sys.modules["torch"]
    values = images if images.is_floating_point() else images.to(torch.float64)
    finite = torch.isfinite(values)
    big = torch.full((), math.inf, dtype=values.dtype, device=values.device)
    low = torch.where(finite, values, big).amin(dim=(1, 2, 3))
    high = torch.where(finite, values, -big).amax(dim=(1, 2, 3))
    return low, high


def _number(value: float | None) -> float | None:
    return value if value is None or math.isfinite(value) else None


def _row_value(array: Any, index: int) -> float:
    row = array[index if array.shape[0] > 1 else 0]
    return float(row.reshape(-1)[0])


def mapping_record(
    batch: Batch,
    index: int | None,
    extremes: tuple[float | None, float | None] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """The mapping record of image ``index`` of ``batch`` (None: the grid or the only image).

    ``extremes`` are the image's finite min and max; computed here for host batches when
    not given.
    """
    options = batch.options.scaling
    plan = batch.plan
    position = index if index is not None else 0
    if extremes is None and isinstance(batch.images, np.ndarray):  # host batch: its own values
        extremes = _finite_extremes(batch.images if batch.writes_grid else batch.images[position])
    low = high = None
    if plan.mode == "affine" and batch.value_ends is not None:
        low_array, high_array = batch.value_ends
        if batch.writes_grid and low_array.shape[0] > 1:
            low, high = float(low_array.min()), float(high_array.max())
        else:
            low, high = _row_value(low_array, position), _row_value(high_array, position)
    entry: dict[str, Any] = {
        "version": __version__,
        "framework": batch.source.framework,
        "dtype": batch.source.input_dtype,
        "shape": list(batch.source.shape),
        "layout": batch.layout.name,
        "index": index,
        "mapping": plan.mode,
        "bits": plan.bits,
        "mean": list(options.mean) if options.mean else None,
        "std": list(options.std) if options.std else None,
        "scale": options.scale,
        "value_range": [_number(low), _number(high)] if low is not None else None,
        "min": _number(extremes[0]) if extremes else None,
        "max": _number(extremes[1]) if extremes else None,
    }
    if batch.colormap is not None:
        entry["mapping"], entry["cmap"] = "colormap", batch.colormap
    if batch.palette_table is not None:
        entry["mapping"] = "palette"  # the colors are in the file's PLTE chunk
    if batch.writes_grid:
        entry["grid"] = {"count": batch.count, "nrow": batch.options.nrow, "padding": batch.options.padding}
        entry["per_image_range"] = options.scale == "image" and batch.count > 1
    entry.update(extra)
    return entry


def text_chunks(
    user: Mapping[str, str] | None, entry: dict[str, Any] | None, enabled: bool = True
) -> dict[str, str] | None:
    """The text chunks of one file: the mapping record (unless disabled) and user entries."""
    chunks: dict[str, str] = {}
    if enabled and entry is not None:
        chunks[METADATA_KEY] = json.dumps(entry, separators=(",", ":"))
    if user:
        chunks.update(user)
    return chunks or None
