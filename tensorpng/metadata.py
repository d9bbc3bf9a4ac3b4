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
import re
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

METADATA_KEY = "tensorpng"
MAX_RECORD_BYTES = 1 << 16  # records are a few hundred bytes; more is not ours
MAX_NESTING = 3  # the record, "grid", its lists
MAX_NDIM = 8
MAX_EXTENT = 2**31 - 1
MAPPINGS = ("affine", "copy", "bool", "widen", "narrow", "colormap", "palette")
LAYOUT_NAMES = ("HW", "CHW", "HWC", "NHW", "NCHW", "NHWC")
# Every dtype name tensorpng writes (NumPy's and torch's; float96/float128: NumPy's longdouble
# on x86); NumPy lacks the torch ones, which load as float32.
DTYPES = (
    "bool", "uint8", "uint16", "uint32", "uint64", "int8", "int16", "int32", "int64",
    "float16", "float32", "float64", "float96", "float128", "bfloat16", "float8_e4m3fn", "float8_e5m2",
    "float8_e4m3fnuz", "float8_e5m2fnuz", "float8_e8m0fnu",
)  # fmt: skip
_FRAMEWORK = re.compile(r"[a-z_][a-z0-9_]{0,39}")  # a module name: only compared with "torch"
Extremes = tuple[float | None, float | None]  # an image's finite min and max


def _check_nesting(text: str) -> None:
    """Refuse JSON nested deeper than :data:`MAX_NESTING`, before json recurses into it: one
    pass (a regex that dropped strings first rescanned from every escaped quote: 11 s for a
    178-byte file), brackets inside strings not counted."""
    depth, in_string, escaped = 0, False, False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            if depth > MAX_NESTING:
                raise RecordError("it is nested too deeply")
        elif char in "]}":
            depth -= 1


class RecordError(ValueError):
    """A record that tensorpng did not write, or that does not fit its file (internal: load
    turns it into a :class:`~tensorpng.errors.RecordWarning`)."""


@dataclass(frozen=True)
class MappingRecord:
    """How one file's values were mapped to samples; written as JSON in the ``tensorpng``
    text chunk and read back by :func:`tensorpng.load` (see the module docstring)."""

    version: str
    framework: str
    dtype: str
    shape: tuple[int, ...]
    layout: str
    index: int | None
    mapping: str
    bits: int
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    scale: str | None = None
    value_range: tuple[float | None, float | None] | None = None
    min: float | None = None
    max: float | None = None
    cmap: str | None = None
    grid: tuple[int, int, int] | None = None  # count, nrow, padding
    per_image_range: bool | None = None
    frames: int | None = None  # animations: frame count, frames a second and plays
    fps: float | None = None
    loop: int | None = None

    def to_json(self) -> str:
        return record_json(self.json_entry())

    def json_entry(self) -> dict[str, Any]:
        """The record as the JSON object it is written as (a new dict, in field order)."""
        # getattr, not dataclasses.asdict: asdict deep-copies every value (4x slower)
        return _json_entry({name: getattr(self, name) for name in _FIELD_NAMES})

    @classmethod
    def from_json(cls, text: str) -> MappingRecord:
        """Parse an untrusted record: only values tensorpng writes (:class:`RecordError`)."""
        if len(text) > MAX_RECORD_BYTES:
            raise RecordError(f"it has {len(text):,} characters (records have at most {MAX_RECORD_BYTES:,})")
        _check_nesting(text)
        try:
            entry = json.loads(text)
        except (ValueError, RecursionError) as error:
            raise RecordError(f"it is not valid JSON ({error})") from None
        if not isinstance(entry, dict):
            raise RecordError("it is not a JSON object")
        return _parse(entry)

    def check(self, width: int, height: int, bit_depth: int, color_type: int) -> None:
        """Raise :class:`RecordError` unless the record fits the file's IHDR."""
        channels = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}[color_type]
        if self.mapping == "palette":
            if color_type != 3:
                raise RecordError(f"it says palette but the PNG has colour type {color_type}")
        elif self.mapping == "colormap":
            if (color_type, bit_depth) != (2, 8):
                raise RecordError("it says colormap but the PNG is not 8-bit RGB")
        elif color_type == 3 or bit_depth != self.bits:
            raise RecordError(f"it says {self.bits}-bit samples but the PNG holds {bit_depth}-bit ones")
        height_width = self.image_size()
        if self.grid is not None:
            height_width = _grid_size(self.grid, *height_width)
        if height_width != (height, width):
            what = "its grid is" if self.grid is not None else "it says"
            raise RecordError(
                f"{what} {height_width[0]} x {height_width[1]} but the PNG is {height} x {width}"
            )
        expected = dict(zip(self.layout, self.shape, strict=True)).get("C", 1)
        if self.mapping not in ("colormap", "palette") and expected != channels:
            raise RecordError(f"it says {expected} channels but the PNG has {channels}")

    def image_size(self) -> tuple[int, int]:
        """Height and width of one image (a tile of a grid), from the shape and layout."""
        sizes = dict(zip(self.layout, self.shape, strict=True))
        return sizes["H"], sizes["W"]


def _grid_size(grid: tuple[int, int, int], height: int, width: int) -> tuple[int, int]:
    """The size of a grid of images of ``height x width`` (:func:`tensorpng.grid.grid_shape`
    without its memory bound: a record's numbers are only compared with IHDR's)."""
    count, nrow, padding = grid
    if count == 1:
        return height, width
    columns = min(nrow, count)
    rows = -(-count // columns)
    return rows * (height + padding) + padding, columns * (width + padding) + padding


_FIELD_NAMES = tuple(field.name for field in fields(MappingRecord))
_OMITTED_WHEN_NONE = frozenset(("cmap", "grid", "per_image_range", "frames", "fps", "loop"))


def _json_entry(values: Mapping[str, Any]) -> dict[str, Any]:
    """The JSON object of a record's field values (given in field order): the optional fields
    left out when None, tuples as lists, the grid as an object."""
    entry: dict[str, Any] = {}
    for name, value in values.items():
        if value is None and name in _OMITTED_WHEN_NONE:
            continue
        entry[name] = list(value) if isinstance(value, tuple) else value
    grid = values["grid"]
    if grid is not None:
        entry["grid"] = dict(zip(("count", "nrow", "padding"), grid, strict=True))
    return entry


_JSON = json.JSONEncoder(separators=(",", ":"))  # what json.dumps(separators=...) makes per call


def record_json(entry: Mapping[str, Any]) -> str:
    """The text of a record's JSON object (see :meth:`MappingRecord.json_entry`)."""
    return _JSON.encode(entry)


def _number(value: object, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise RecordError(f"its {name} is not a number")
    if isinstance(value, int) and abs(value) > 2**1023:
        raise RecordError(f"its {name} is out of range")
    number = float(value)
    if not math.isfinite(number):
        raise RecordError(f"its {name} is not finite")
    return number


def _optional(entry: dict[str, Any], name: str) -> float | None:
    value = entry.get(name)
    return None if value is None else _number(value, name)


def _count(value: object, name: str, low: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= MAX_EXTENT:
        raise RecordError(f"its {name} is not an integer in {low}..2**31-1")
    return value


def _floats(entry: dict[str, Any], name: str) -> tuple[float, ...] | None:
    value = entry.get(name)
    if value is None:
        return None
    if not isinstance(value, list) or not 1 <= len(value) <= 4:
        raise RecordError(f"its {name} is not a list of 1 to 4 numbers")
    return tuple(_number(item, name) for item in value)


def _choice(entry: dict[str, Any], name: str, allowed: tuple[str, ...]) -> str:
    value = entry.get(name)
    if value not in allowed:
        raise RecordError(f"its {name} {str(value)[:40]!r} is not one of {', '.join(allowed)}")
    return str(value)


def _framework(value: object) -> str:
    if not isinstance(value, str) or not _FRAMEWORK.fullmatch(value):
        raise RecordError("its framework is not a module name")
    return value


def _parse(entry: dict[str, Any]) -> MappingRecord:
    layout = _choice(entry, "layout", LAYOUT_NAMES)
    shape = entry.get("shape")
    if not isinstance(shape, list) or len(shape) != len(layout) or len(shape) > MAX_NDIM:
        raise RecordError(f"its shape does not fit its layout {layout}")
    bits = entry.get("bits")
    if bits not in (8, 16) or isinstance(bits, bool):
        raise RecordError("its bits are not 8 or 16")
    value_range = entry.get("value_range")
    if value_range is not None and (not isinstance(value_range, list) or len(value_range) != 2):
        raise RecordError("its value_range is not a pair")
    ends = None
    if value_range is not None:
        low, high = (None if v is None else _number(v, "value_range") for v in value_range)
        ends = (low, high)
    mapping = _choice(entry, "mapping", MAPPINGS)
    dtype = _choice(entry, "dtype", DTYPES)
    _check_mapping(mapping, int(bits), dtype)
    cmap = entry.get("cmap")
    if mapping == "colormap":
        from .colormaps import COLORMAPS

        cmap = _choice(entry, "cmap", COLORMAPS)
    grid = entry.get("grid")
    if grid is not None:
        if not isinstance(grid, dict):
            raise RecordError("its grid is not an object")
        grid = tuple(
            _count(grid.get(key), f"grid {key}", low)
            for key, low in (("count", 1), ("nrow", 1), ("padding", 0))
        )
    scale = entry.get("scale")
    if scale is not None and scale not in ("image", "batch"):
        raise RecordError("its scale is not image, batch or null")
    index = entry.get("index")
    std = _floats(entry, "std")
    if std is not None and 0.0 in std:
        raise RecordError("its std holds 0")
    version = entry.get("version")
    return MappingRecord(
        version=version if isinstance(version, str) and len(version) <= 40 else "",
        framework=_framework(entry.get("framework")),
        dtype=dtype,
        shape=tuple(_count(d, "shape", 1) for d in shape),  # tensorpng writes no empty image
        layout=layout,
        index=None if index is None else _count(index, "index"),
        mapping=mapping,
        bits=int(bits),
        mean=_floats(entry, "mean"),
        std=std,
        scale=scale,
        value_range=ends,
        min=_optional(entry, "min"),
        max=_optional(entry, "max"),
        cmap=cmap,
        grid=grid,
        per_image_range=bool(entry.get("per_image_range")) if "per_image_range" in entry else None,
        frames=None if entry.get("frames") is None else _count(entry["frames"], "frames", 1),
        fps=_optional(entry, "fps"),
        loop=None if entry.get("loop") is None else _count(entry["loop"], "loop"),
    )


# The (bits, dtypes) each mapping is written with (None: any); a record pairing them
# otherwise is forged or corrupt, and undoing it would give wrong values, not an error.
_INTEGERS = frozenset(d for d in DTYPES if d.startswith(("int", "uint")))
_MAPPING_FORMS: dict[str, tuple[frozenset[int], frozenset[str] | None]] = {
    "widen": (frozenset({16}), frozenset({"uint8"})),  # uint8 x 257
    "narrow": (frozenset({8}), frozenset({"uint16"})),  # uint16 / 257
    "bool": (frozenset({8, 16}), frozenset({"bool"})),
    "copy": (frozenset({8, 16}), _INTEGERS),  # bool is written as "bool" (0 / max), or "palette"
    "palette": (frozenset({8}), _INTEGERS | {"bool"}),
    "colormap": (frozenset({8}), None),
    "affine": (frozenset({8, 16}), None),
}


def _check_mapping(mapping: str, bits: int, dtype: str) -> None:
    allowed_bits, allowed_dtypes = _MAPPING_FORMS[mapping]
    if bits not in allowed_bits or (allowed_dtypes is not None and dtype not in allowed_dtypes):
        raise RecordError(f"its mapping {mapping!r} is never written for {bits}-bit {dtype} values")
    if mapping == "copy" and (dtype, bits) in (("uint8", 16), ("uint16", 8)):
        raise RecordError(f"its mapping 'copy' keeps values as they are: {dtype} is not {bits}-bit")
