"""Internal module.

Layouts: which axis of an input is the batch, the height, the width and the channels.

Every input is viewed (without a copy) as a batch ``N x H x W x C``. An explicit ``layout=``
always wins; without one, the layout is inferred only where the shape is unambiguous:

- 2-D: ``HW``.
- 3-D: ``CHW`` if only the first dim is in 1..4, ``HWC`` if only the last is.
- 4-D: ``NCHW`` if only dim 1 is in 1..4, ``NHWC`` if only the last is.
- Both candidates in 1..4: the input framework's convention breaks the tie (torch: channels
  first; NumPy and other array libraries: channels last).
- Otherwise: an error that shows the shape and asks for ``layout=``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .errors import OptionError, ShapeError

LAYOUTS: tuple[str, ...] = ("HW", "CHW", "HWC", "NHW", "NCHW", "NHWC")
MAX_CHANNELS = 4


def parse_layout(layout: str | None) -> str | None:
    """Validate a layout name (case-insensitive); ``None`` means infer."""
    if layout is None:
        return None
    if not isinstance(layout, str) or layout.upper() not in LAYOUTS:
        raise OptionError(f"layout must be one of {', '.join(LAYOUTS)} (or None), got {layout!r}")
    return layout.upper()


def infer_layout(shape: tuple[int, ...], channels_first: bool, description: str) -> str:
    """The layout of an input of ``shape`` when the caller gave none (rules in the module doc)."""
    ndim = len(shape)
    hint = "pass layout= (one of " + ", ".join(LAYOUTS) + ")"
    if ndim == 2:
        return "HW"
    if ndim == 5:
        raise ShapeError(
            f"an image is 2-D (HW), 3-D (CHW/HWC/NHW) or 4-D (NCHW/NHWC); got the 5-D {description}. "
            "For video or a batch of clips (N x T x C x H x W) merge the first two axes: "
            "x.flatten(0, 1) (torch) or x.reshape(-1, *x.shape[2:]) (NumPy)"
        )
    if ndim not in (3, 4):
        raise ShapeError(f"an image is 2-D (HW), 3-D (CHW/HWC/NHW) or 4-D (NCHW/NHWC); got {description}")
    first_axis = 0 if ndim == 3 else 1
    first = 1 <= shape[first_axis] <= MAX_CHANNELS
    last = 1 <= shape[-1] <= MAX_CHANNELS
    first_name, last_name = ("CHW", "HWC") if ndim == 3 else ("NCHW", "NHWC")
    if first and last:
        return first_name if channels_first else last_name
    if first:
        return first_name
    if last:
        return last_name
    if ndim == 3:
        raise ShapeError(
            f"cannot tell the channel axis of {description}: neither the first nor the last dim "
            f"is in 1..4; for a batch of gray images pass layout='NHW', for more than 4 "
            f"channels select some (x[:3]), else {hint}"
        )
    raise ShapeError(
        f"cannot tell the channel axis of {description}: neither dim 1 nor the last dim is in "
        f"1..4; select at most 4 channels (x[:, :3]) or {hint}"
    )


@dataclass(frozen=True)
class Layout:
    """A resolved layout: its name and whether the input held a batch."""

    name: str

    @property
    def batched(self) -> bool:
        return self.name.startswith("N")


def resolve_layout(
    shape: tuple[int, ...], layout: str | None, channels_first: bool, description: str
) -> Layout:
    """Validate an explicit layout against ``shape``, or infer one; check the channel count."""
    name = parse_layout(layout)
    if name is None:
        name = infer_layout(shape, channels_first, description)
    elif len(name) != len(shape):
        raise ShapeError(f"layout {name!r} needs a {len(name)}-D input, got {description}")
    if "C" in name:
        channels = shape[name.index("C")]
        if not 1 <= channels <= MAX_CHANNELS:
            raise ShapeError(
                f"PNG holds 1 (gray), 2 (gray+alpha), 3 (RGB) or 4 (RGBA) channels; {description} "
                f"has {channels} on the C axis of layout {name!r}: select some (e.g. x[..., :3] "
                "or x[:3]) or pass the right layout="
            )
    spatial = [shape[name.index("H")], shape[name.index("W")]]
    if min(spatial) == 0 or ("N" in name and shape[0] == 0):
        raise ShapeError(f"nothing to save: {description} has an empty axis (layout {name!r})")
    return Layout(name)


def as_nhwc(data: Any, layout: Layout) -> Any:
    """View ``data`` (NumPy array or torch tensor) as ``N x H x W x C`` without copying."""
    name = layout.name
    if "N" not in name:
        data = data[None]
        name = "N" + name
    if "C" not in name:
        data = data[..., None]
        name = name + "C"
    order = tuple(name.index(axis) for axis in "NHWC")
    if order == (0, 1, 2, 3):
        return data
    if hasattr(data, "permute"):
        return data.permute(*order)
    return data.transpose(order)
