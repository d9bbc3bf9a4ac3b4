"""Internal: a warning for the two most common mistakes, whose output is otherwise just wrong.

Float images in 0..255 saved with the default ``value_range=(0, 1)`` come out nearly all
white, and ``Normalize``-d images saved without ``mean``/``std`` come out harsh. Both put a
large share of the values outside the range, which float-error slivers (``1.0000001``) never
do: a value counts as outside when it maps more than 5% of the range beyond either end, and
the call warns once when more than 10% of a strided sample of the values do.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np

from ._options import ScaleOptions
from .arrays import torch_module
from .errors import warn_user
from .scaling import Plan

if TYPE_CHECKING:  # convert (the batch) sits beside this module, not below it
    from .convert import Batch

MARGIN = 0.05  # of the range, beyond either end
SHARE = 0.10  # of the sampled values
_AMOUNTS = ((0.9, "Nearly all (over 90%)"), (0.5, "Most (over 50%)"), (0.25, "Over 25%"), (0.0, "Over 10%"))
_SAMPLE_SIDE = 64  # about 64 x 64 pixels of each of at most 16 images are looked at


def applies(plan: Plan, options: ScaleOptions) -> bool:
    """Whether the batch maps float values into a fixed range (the case that can go wrong)."""
    return plan.mode == "affine" and options.scale is None


def outside_share(plan: Plan, images: Any) -> Any:
    """The share of sampled values of an ``N x H x W x C`` batch that map outside the range:
    a float for NumPy input, a 0-d float32 tensor on the device for torch input (no sync)."""
    count, height, width = (int(d) for d in images.shape[:3])
    sample = images[
        :: max(1, count // 16), :: max(1, height // _SAMPLE_SIDE), :: max(1, width // _SAMPLE_SIDE)
    ]
    top = float(plan.max_value)
    if isinstance(sample, np.ndarray):
        gain, offset = np.asarray(plan.gain)[:1, None, None], np.asarray(plan.offset)[:1, None, None]
        if _inside(sample, gain, offset, top):
            return 0.0
        with np.errstate(all="ignore"):
            mapped = sample.astype(np.float64) * gain + offset
            finite_values = np.isfinite(mapped)  # +-inf are meant as white and black
            outside = finite_values & ((mapped < -MARGIN * top) | (mapped > (1 + MARGIN) * top + 0.5))
        finite = int(finite_values.sum())
        return float(outside.sum()) / finite if finite else 0.0
    torch = torch_module()
    gain = torch.as_tensor(np.asarray(plan.gain)[:1], dtype=torch.float32).to(
        sample.device, non_blocking=True
    )
    offset = torch.as_tensor(np.asarray(plan.offset)[:1], dtype=torch.float32).to(
        sample.device, non_blocking=True
    )
    mapped = sample.float() * gain[:, None, None] + offset[:, None, None]
    finite = torch.isfinite(mapped)
    outside = (finite & ((mapped < -MARGIN * top) | (mapped > (1 + MARGIN) * top + 0.5))).sum()
    return outside.float() / finite.sum().clamp(min=1).float()


def _inside(sample: np.ndarray, gain: np.ndarray, offset: np.ndarray, top: float) -> bool:
    """Whether every value of the sample maps inside the range, judged from each channel's min
    and max alone: an affine map in float64 is monotonic, so each channel's values map between
    the images of its two under its gain and offset. Two reductions instead of six passes for
    the usual batch; False when unsure (NaN, inf, or values near an end). Per channel, not for
    the whole sample: with ``mean``/``std`` the channels' ranges differ, and the widest one under
    the narrowest channel's map falls outside (ImageNet's), which cost those six passes."""
    lows, highs = sample.min(axis=(0, 1, 2)).tolist(), sample.max(axis=(0, 1, 2)).tolist()
    gains, offsets = gain.ravel().tolist(), offset.ravel().tolist()
    for low, high, g, o in zip(lows, highs, gains, offsets, strict=True):
        for mapped in (low * g + o, high * g + o):
            if not (math.isfinite(mapped) and -MARGIN * top <= mapped <= (1 + MARGIN) * top + 0.5):
                return False
    return True


def warn_if_outside(share: float, options: ScaleOptions, description: str) -> None:
    """One ``UserWarning`` naming the likely fixes when ``share`` is large."""
    if share <= SHARE:
        return
    low, high = options.value_range or (0.0, 1.0)
    normalize = (
        ""
        if options.mean is not None
        else ("mean=/std= to undo Normalize (e.g. tensorpng.IMAGENET_MEAN, tensorpng.IMAGENET_STD), ")
    )
    # A share in coarse steps, not a percentage: the text stays the same from step to step of a
    # loop, so Python's filter shows it once per line of code, not at every step.
    amount = next(text for limit, text in _AMOUNTS if share > limit)
    warn_user(
        f"{amount} of the values of {description} fall outside value_range=({low:g}, {high:g}) "
        f"and were clamped; pass value_range=(0, 255) for 0..255 pixels, {normalize}"
        "or scale='image' to stretch each image to its own min and max",
        UserWarning,
    )


def check_range(batch: Batch) -> None:
    """Warn when much of a float batch falls outside its value range (see :data:`SHARE`); a
    device batch is read once here (``save``, ``encode`` and ``save_animation`` wait for the
    device anyway; the Writer checks on its own copies instead)."""
    if applies(batch.plan, batch.options.scaling):
        share = outside_share(batch.plan, batch.images)
        warn_if_outside(float(share), batch.options.scaling, batch.source.description)
