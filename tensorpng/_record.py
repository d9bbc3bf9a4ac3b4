"""Internal: the mapping record of a prepared batch, as tensorpng writes it (the writing side
of :mod:`tensorpng.metadata`, which holds the record type and reads records back), and the
text chunks of one file."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from . import _cpu_codec
from ._version import __version__
from .metadata import METADATA_KEY, Extremes, MappingRecord, _json_entry, record_json

if TYPE_CHECKING:  # convert imports the options, which import metadata's key
    from .convert import Batch


def finite_extremes(values: np.ndarray) -> tuple[float | None, float | None]:
    """Finite min and max of a host array (None when it holds no finite value)."""
    if values.dtype.kind == "b":
        values = values.astype(np.uint8)
    fast = _cpu_codec.byte_range(values)  # 8-bit samples: one pass in C
    if fast is not None:
        return float(fast[0]), float(fast[1])
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


def _finite(value: float | None) -> float | None:
    return value if value is None or math.isfinite(value) else None


def _row_value(array: Any, index: int) -> float:
    row = array[index if array.shape[0] > 1 else 0]
    return float(row.reshape(-1)[0])


def mapping_record(batch: Batch, index: int | None, extremes: Extremes | None = None) -> MappingRecord:
    """The mapping record of image ``index`` of ``batch`` (None: the grid or the only image).

    ``extremes`` are the image's finite min and max; computed here for host batches when
    not given.
    """
    return MappingRecord(**_record_values(batch, index, extremes))


def record_text(batch: Batch, index: int | None, extremes: Extremes | None = None) -> str:
    """``mapping_record(...).to_json()`` without the record: the same values, made JSON by the
    same rules, microseconds sooner (a tenth of a small image's file)."""
    return record_json(_json_entry(_record_values(batch, index, extremes)))


def _record_values(batch: Batch, index: int | None, extremes: Extremes | None) -> dict[str, Any]:
    """The field values of :func:`mapping_record`'s record, in field order (up to ``loop``)."""
    options = batch.options.scaling
    plan = batch.plan
    position = index if index is not None else 0
    if extremes is None and isinstance(batch.images, np.ndarray):  # host batch: its own values
        extremes = finite_extremes(batch.images if batch.writes_grid else batch.images[position])
    low = high = None
    if plan.mode == "affine" and batch.value_ends is not None:
        low_array, high_array = batch.value_ends
        if batch.writes_grid and low_array.shape[0] > 1:
            low, high = float(low_array.min()), float(high_array.max())
        else:
            low, high = _row_value(low_array, position), _row_value(high_array, position)
    grid = None
    if batch.writes_grid:
        grid = (batch.count, batch.options.nrow, batch.options.padding)
    mapping = plan.mode
    if batch.colormap is not None:
        mapping = "colormap"
    if batch.palette_table is not None:
        mapping = "palette"  # the colors are in the file's PLTE chunk
    source = batch.source
    return {
        "version": __version__,
        "framework": source.framework,
        "dtype": source.input_dtype,
        "shape": tuple(source.shape),
        "layout": batch.layout.name,
        "index": index,
        "mapping": mapping,
        "bits": plan.bits,
        "mean": tuple(options.mean) if options.mean else None,
        "std": tuple(options.std) if options.std else None,
        "scale": options.scale,
        "value_range": (_finite(low), _finite(high)) if low is not None else None,
        "min": _finite(extremes[0]) if extremes else None,
        "max": _finite(extremes[1]) if extremes else None,
        "cmap": batch.colormap,
        "grid": grid,
        "per_image_range": (options.scale == "image" and batch.count > 1) if batch.writes_grid else None,
    }  # frames, fps and loop: animations set them (see _frames)


def text_chunks(
    user: Mapping[str, str] | None, entry: MappingRecord | str | None, enabled: bool = True
) -> dict[str, str] | None:
    """The text chunks of one file: the mapping record (unless disabled; a record, or its
    JSON from :func:`record_text`) and user entries."""
    chunks: dict[str, str] = {}
    if enabled and entry is not None:
        chunks[METADATA_KEY] = entry if isinstance(entry, str) else entry.to_json()
    if user:
        chunks.update(user)
    return chunks or None
