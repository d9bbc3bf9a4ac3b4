"""Internal module.

Scaling: from the input's values to PNG samples (uint8 or uint16), without wrap-around.

Float inputs (and integer inputs given ``mean``/``std``/``value_range``/``scale``) go through
one affine map per image and channel, then a clamp and a round to nearest::

    sample = clamp(x * std + mean, lo, hi) mapped linearly so that lo -> 0, hi -> 2**bits - 1

fused as ``floor(clamp(x * gain + offset, 0, max))`` with ``offset`` holding the ``+ 0.5``
of the rounding. ``lo, hi`` come from ``value_range`` (default ``(0, 1)``) or from the
finite min and max of each image (``scale="image"``) or of the batch (``scale="batch"``);
a constant image (or one whose span is below float64 resolution) maps to 0, never NaN.
NaN becomes 0, +inf the maximum, -inf 0.

Integer inputs without those options are written as they are: uint8 as 8-bit, uint16 as
16-bit (``bits=`` converts between them exactly: x257 or /257 rounded), bool as 0/max, other
integer types as 8-bit when their values fit 0..255, else 16-bit when they fit 0..65535.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from . import _cpu_codec
from .arrays import torch_module
from .errors import OptionError, ValueRangeError

if TYPE_CHECKING:  # the options are parsed above this module, in _options
    from ._options import ScaleOptions


IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)

_WIDE_INTEGER_KINDS = ("int32", "int64", "uint32", "uint64")
_FLOAT64_MAX = float(np.finfo(np.float64).max)


def _per_channel(name: str, values: tuple[float, ...] | None, default: float, channels: int) -> np.ndarray:
    if values is None:
        return np.full(channels, default)
    if len(values) == 1:
        return np.full(channels, values[0])
    if len(values) != channels:
        raise OptionError(
            f"{name} has {len(values)} values but the image has {channels} channels; "
            f"pass one value or {channels}"
        )
    return np.asarray(values, dtype=np.float64)


@dataclass(frozen=True)
class Plan:
    """How to turn each image of an ``N x H x W x C`` batch into PNG samples.

    ``mode`` is ``"affine"`` (float math; ``gain``/``offset`` of shape ``(N or 1, C)``, NumPy
    or torch on the input's device), ``"copy"`` (integers as they are), ``"bool"`` (0/max),
    ``"widen"`` (uint8 to uint16, x257) or ``"narrow"`` (uint16 to uint8, /257 rounded).
    """

    mode: str
    bits: int
    gain: Any = None
    offset: Any = None
    compute_dtype: str = "float32"
    # the values mapped to 0 and to the maximum, ``(N or 1, 1)`` (affine mode): value_range's,
    # or each image's (the batch's) finite min and max for scale= (equal for constant images)
    low: Any = None
    high: Any = None

    @property
    def out_dtype(self) -> type[np.unsignedinteger[Any]]:
        return np.uint8 if self.bits == 8 else np.uint16

    @property
    def max_value(self) -> int:
        return (1 << self.bits) - 1


def _finite_min_max(x: Any, axes: tuple[int, ...]) -> tuple[Any, Any]:
    """Min and max over ``axes`` ignoring NaN and inf (inf, -inf where nothing is finite)."""
    if isinstance(x, np.ndarray):
        finite = np.isfinite(x)
        if finite.all():
            return x.min(axis=axes), x.max(axis=axes)
        return np.where(finite, x, np.inf).min(axis=axes), np.where(finite, x, -np.inf).max(axis=axes)
    torch = torch_module()
    finite = torch.isfinite(x)
    inf = torch.full((), math.inf, dtype=x.dtype, device=x.device)  # a fill, not a host copy
    return torch.where(finite, x, inf).amin(dim=axes), torch.where(finite, x, -inf).amax(dim=axes)


def _as_like(values: np.ndarray, like: Any) -> Any:
    """``values`` as an array of ``like``'s library and device (float64 NumPy, or torch).

    To an accelerator the values travel from pinned memory with ``non_blocking=True``: a
    pageable copy would make the caller's thread wait for the device's queue.
    """
    if isinstance(like, np.ndarray) or not isinstance(values, np.ndarray):
        return values
    torch = torch_module()
    host = torch.from_numpy(np.ascontiguousarray(values))
    if like.device.type == "cuda":
        host = host.pin_memory()
    return host.to(like.device, non_blocking=True)


def _reduce(values: Any, axis: int, largest: bool) -> Any:
    """Min or max over ``axis`` keeping it, for NumPy arrays and torch tensors alike."""
    if isinstance(values, np.ndarray):
        return values.max(axis, keepdims=True) if largest else values.min(axis, keepdims=True)
    return values.amax(axis, keepdim=True) if largest else values.amin(axis, keepdim=True)


def _integer_plan(x: Any, dtype_name: str, options: ScaleOptions, description: str) -> Plan:
    bits = options.bits
    if dtype_name == "bool":
        return Plan("bool", bits or 8)
    if dtype_name == "uint8":
        return Plan("copy", 8) if bits in (None, 8) else Plan("widen", 16)
    if dtype_name == "uint16":
        return Plan("copy", 16) if bits in (None, 16) else Plan("narrow", 8)
    low, high = int(x.min()), int(x.max())
    if low < 0:
        raise ValueRangeError(
            f"{description} has negative values (min {low}); integers are written as they are, "
            "so pass value_range=(lo, hi) or scale='image' to map them"
        )
    if high <= 255 and bits in (None, 8):
        return Plan("copy", 8)
    if high <= 65535 and bits in (None, 16):
        return Plan("copy", 16)
    raise ValueRangeError(
        f"{description} has values up to {high}, more than {bits or 16}-bit PNG holds; "
        + ("pass bits=16, " if bits == 8 and high <= 65535 else "")
        + "pass value_range=(lo, hi) or scale='image' to map them"
    )


def make_plan(x: Any, dtype_name: str, options: ScaleOptions, description: str) -> Plan:
    """The conversion plan for an ``N x H x W x C`` batch ``x`` (NumPy array or torch tensor).

    Reads the data only for ``scale=`` (min/max, kept on the input's device) and for integer
    inputs of types other than bool/uint8/uint16 (a range check).

    Raises:
        OptionError: mean/std of a length that does not match the channel count.
        ValueRangeError: integer values that cannot be written as they are.
    """
    is_float = dtype_name.startswith(("float", "bfloat"))
    if not is_float and not options.maps_values:
        return _integer_plan(x, dtype_name, options, description)
    channels = int(x.shape[-1])
    mean = _per_channel("mean", options.mean, 0.0, channels)
    std = _per_channel("std", options.std, 1.0, channels)
    bits = options.bits or 8
    max_value = float((1 << bits) - 1)
    # float32 holds 24 bits: enough to round 8-bit samples right, not 16-bit ones.
    exact = bits == 16 or dtype_name in ("float64", *_WIDE_INTEGER_KINDS)
    compute_dtype = "float64" if exact else "float32"
    if options.scale is None:
        low, high = options.value_range or (0.0, 1.0)
        factor_ = _factor(max_value, low, high)
        gain = std * factor_
        offset = (mean - low) * factor_ + 0.5
        ends = np.array([[low]]), np.array([[high]])
        return Plan("affine", bits, gain[None], offset[None], compute_dtype, *ends)
    # Per-image (or batch) min/max of the denormalized values x * std + mean, finite only.
    xf = x if is_float else x.astype(np.float64) if isinstance(x, np.ndarray) else x.double()
    raw_min, raw_max = _finite_min_max(xf, (1, 2))  # (N, C)
    std_, mean_ = _as_like(std, raw_min), _as_like(mean, raw_min)
    positive = std_ > 0
    low_c = _where(positive, raw_min * std_ + mean_, raw_max * std_ + mean_)
    high_c = _where(positive, raw_max * std_ + mean_, raw_min * std_ + mean_)
    low, high = _reduce(low_c, -1, largest=False), _reduce(high_c, -1, largest=True)
    if options.scale == "batch":
        low, high = _reduce(low, 0, largest=False), _reduce(high, 0, largest=True)
    true_low, true_high = low, high
    # Constant and all-NaN images map to 0, and so do spans so small that max / span is no
    # float (subnormal ones: the image is constant to float64 precision).
    # Halves: a span from -1e308 to 1e308 is no float64, half of it is (see _factor).
    half_span = high / 2 - low / 2
    varies = (high > low) & (half_span > max_value / 2 / _FLOAT64_MAX)
    # Scalars, not ``low * 0``: an all-NaN/inf image has low = inf, and inf * 0 is NaN (and
    # a NumPy "invalid value" warning).
    half_span = _where(varies, half_span, 1.0)
    low = _where(varies, low, 0.0)
    factor = _where(varies, max_value / 2 / half_span, 0.0)
    gain = std_[None] * factor
    offset = (mean_[None] - low) * factor + 0.5
    return Plan("affine", bits, gain, offset, compute_dtype, true_low, true_high)


def _factor(max_value: float, low: float, high: float) -> float:
    """``max_value / (high - low)`` where ``high - low`` may overflow float64 (``value_range``
    of +-1e308): from the halves, which cannot."""
    return max_value / 2 / (high / 2 - low / 2)


def _where(condition: Any, a: Any, b: Any) -> Any:
    if isinstance(condition, np.ndarray):
        with np.errstate(invalid="ignore", over="ignore"):
            return np.where(condition, a, b)
    return torch_module().where(condition, a, b)


class ConvertedImage(NamedTuple):
    """One image's PNG samples, and what the conversion learnt about its values on the way.

    ``samples``: ``H x W x C`` uint8/uint16; for channels-first inputs a view of a
    C-contiguous ``C x H x W`` array (the encoder filters such planes without interleaving
    them first), else C-contiguous. ``nans``: NaN values of the input (written as 0).
    ``extremes``: the input image's finite min and max when the conversion found them (None:
    not computed here).
    """

    samples: np.ndarray
    nans: int = 0
    extremes: tuple[float, float] | None = None


# Samples computed as ``x * gain + offset`` within ``[0, max + _CLAMP_FREE_TOP]`` need no clamp:
# the cast truncates them to ``0..max`` already. See _clamp_free for the rounding allowed for.
_CLAMP_FREE_TOP = 0.75


def convert_image(plan: Plan, x: np.ndarray, index: int) -> ConvertedImage:
    """Convert image ``index`` of the batch: ``x`` is its ``H x W x C`` NumPy view."""
    out_dtype = plan.out_dtype
    if plan.mode == "copy":
        if x.dtype == out_dtype and (x.flags.c_contiguous or x.transpose(2, 0, 1).flags.c_contiguous):
            return ConvertedImage(x)  # already samples, in a memory order the encoder takes
        return ConvertedImage(np.ascontiguousarray(x, dtype=out_dtype))
    if plan.mode == "bool":
        return ConvertedImage(np.ascontiguousarray(x, dtype=out_dtype) * out_dtype(plan.max_value))
    if plan.mode == "widen":
        return ConvertedImage(np.ascontiguousarray(x, dtype=np.uint16) * np.uint16(257))
    if plan.mode == "narrow":
        wide = x.astype(np.uint32) + 128
        wide //= 257
        return ConvertedImage(np.ascontiguousarray(wide, dtype=np.uint8))
    return _convert_affine(plan, x, index)


def _convert_affine(plan: Plan, x: np.ndarray, index: int) -> ConvertedImage:
    """``floor(clamp(x * gain + offset, 0, max))`` for one ``H x W x C`` image.

    The passes run over the input's memory as it lies: channels-first images (a PyTorch
    ``C x H x W`` viewed as ``H x W x C``) as ``C`` long planes with one gain each, channels-
    last ones as rows with a row-long tiled gain (broadcasting a C-vector over a contiguous
    last axis makes NumPy loop over 3 or 4 elements at a time, ~20x slower). Samples stay in
    that order. The input's min and max (per channel when channels-first) come first: they
    are the metadata's extremes, they reveal NaN (which min and max propagate), and when the
    mapped range cannot leave ``0..max`` the clamp pass is skipped.
    """
    row = index if plan.gain.shape[0] > 1 else 0
    height, width, channels = x.shape
    gain64, offset64 = plan.gain[row], plan.offset[row]
    gains, offsets = gain64.tolist(), offset64.tolist()
    compute_dtype = plan.compute_dtype
    if compute_dtype == "float32" and not float32_suffices(gains, offsets, plan.max_value):
        compute_dtype = "float64"  # e.g. 1e7 + [0, 1] with scale='image': float32 is off by steps
    if compute_dtype == x.dtype.name == "float32" and plan.bits == 8 and _cpu_codec.native_conversion():
        return ConvertedImage(*_cpu_codec.native_convert(x, gains, offsets))  # one pass, 5x faster
    gain, offset = gain64.astype(compute_dtype), offset64.astype(compute_dtype)
    planar = x.transpose(2, 0, 1).flags.c_contiguous
    if planar:
        source = x.transpose(2, 0, 1).reshape(channels, -1)
        low, high = source.min(axis=1), source.max(axis=1)
        gain, offset = gain[:, None], offset[:, None]
    else:
        source = np.ascontiguousarray(x).reshape(height, width * channels)
        low, high = source.min(), source.max()
        gain, offset = np.tile(gain, width), np.tile(offset, width)
    values = np.empty(source.shape, dtype=compute_dtype)
    with np.errstate(invalid="ignore", over="ignore"):
        np.multiply(source, gain, out=values)
        values += offset
    # a handful of numbers: Python floats, not NumPy scalars (10x less overhead)
    lows, highs = _per_channel_list(low, channels), _per_channel_list(high, channels)
    finite = all(map(math.isfinite, lows + highs))
    mapped_finite = finite and all(map(math.isfinite, gains + offsets))  # inf for subnormal spans
    step = _RELATIVE_ERROR[compute_dtype]
    nans = 0
    if not (mapped_finite and _clamp_free(lows, highs, gains, offsets, plan.max_value, step)):
        with np.errstate(invalid="ignore"):
            np.clip(values, 0, plan.max_value, out=values)  # +-inf clamp; NaN stays NaN
        if not mapped_finite and not np.isfinite(np.add.reduce(values, axis=None)):
            # rare: only images that hold NaN or inf (or a span too small for the dtype) pay
            # for this. Count the input's NaNs (inf * a zero gain is NaN too, and is also
            # written as 0, but is no NaN of the caller's).
            nans = int(np.count_nonzero(np.isnan(x))) if x.dtype.kind == "f" else 0
            values[np.isnan(values)] = 0
    samples = np.empty(values.shape, dtype=plan.out_dtype)
    np.copyto(samples, values, casting="unsafe")  # truncates: values hold the + 0.5 already
    if planar:
        samples = samples.reshape(channels, height, width).transpose(1, 2, 0)
    else:
        samples = samples.reshape(height, width, channels)
    extremes = (float(min(lows)), float(max(highs))) if finite else None
    return ConvertedImage(samples, nans, extremes)


def _per_channel_list(value: np.ndarray, channels: int) -> list[float]:
    """A per-channel (``C``) or whole-image (0-d) min or max as ``C`` Python numbers."""
    values = value.tolist()
    return values if isinstance(values, list) else [values] * channels


def _clamp_free(
    lows: list[float],
    highs: list[float],
    gains: list[float],
    offsets: list[float],
    max_value: int,
    relative_error: float,
) -> bool:
    """Whether every channel's values, from ``lows`` to ``highs``, map within
    ``[0, max + _CLAMP_FREE_TOP]`` even after the rounding of the computed ``x * gain + offset``
    (where the truncating cast alone writes them right).

    The computed samples differ from the exact ones by at most ``relative_error`` times
    ``|x * gain| + |offset|`` (the roundings of gain and offset to the compute dtype, of the
    product and of the sum): tiny for data near 0..1, but more than a sample step for data
    such as ``1e5 + [0, 1]`` in float32, which therefore always takes the clamp.
    """
    for low, high, gain, offset in zip(lows, highs, gains, offsets, strict=True):
        ends = (low * gain + offset, high * gain + offset)
        slack = relative_error * (max(abs(low * gain), abs(high * gain)) + abs(offset))
        if min(ends) - slack < 0 or max(ends) + slack > max_value + _CLAMP_FREE_TOP:
            return False
    return True


# A bound on the relative rounding error of ``x * gain + offset`` in each compute dtype: four
# roundings (gain, offset, product, sum) of half a unit in the last place each.
_RELATIVE_ERROR = {"float32": 2.0**-22, "float64": 2.0**-51}
_FLOAT32_GAIN_LIMIT = 1e37  # well below float32's largest value (3.4e38)


def float32_suffices(gains: list[float], offsets: list[float], max_value: int) -> bool:
    """Whether ``x * gain + offset`` in float32 maps values within the range to within 1/64
    of a sample step of the exact map (else it is computed in float64).

    For a value that lands in ``0..max``, ``|x * gain| <= max + 1 + |offset|``, so the error is
    at most ``2**-22 * (max + 1 + 2 * |offset|)``: fine for data near 0..1 (offsets of a few
    hundred), not for data far from 0 with a small span (``1e7 + [0, 1]`` and ``scale='image'``
    has an offset of -2.55e9, where a float32 step is 256). A gain float32 cannot hold (a span
    below ~1e-35) needs float64 too.
    """
    largest_offset = max(map(abs, offsets))
    if not all(math.isfinite(v) and abs(v) < _FLOAT32_GAIN_LIMIT for v in gains):
        return False
    return _RELATIVE_ERROR["float32"] * (max_value + 1 + 2 * largest_offset) <= 1 / 64


def convert_batch_on_device(plan: Plan, x: Any) -> tuple[Any, Any]:
    """Convert a whole ``N x H x W x C`` torch batch on its device (no host synchronization).

    Returns:
        The ``N x H x W x C`` contiguous uint8/uint16 tensor on the same device, and a 0-d
        tensor counting NaN values (read it after the copy to the host has completed).
    """
    torch = torch_module()
    out_dtype = torch.uint8 if plan.bits == 8 else torch.uint16
    zero_nans = torch.zeros((), dtype=torch.int64, device=x.device)
    if plan.mode == "copy":
        return x.to(out_dtype).contiguous(), zero_nans
    if plan.mode == "bool":
        return (x.to(torch.int32) * plan.max_value).to(out_dtype).contiguous(), zero_nans
    if plan.mode == "widen":
        return (x.to(torch.int32) * 257).to(out_dtype).contiguous(), zero_nans
    if plan.mode == "narrow":
        return ((x.to(torch.int32) + 128) // 257).to(out_dtype).contiguous(), zero_nans
    double = plan.compute_dtype == "float64" or (
        # gains known on the host (value_range, mean/std): the same check as the host path.
        # Per-image gains of scale= live on the device; reading them would sync it.
        isinstance(plan.gain, np.ndarray)
        and not float32_suffices(plan.gain.ravel().tolist(), plan.offset.ravel().tolist(), plan.max_value)
    )
    dtype = torch.float64 if double else torch.float32
    gain = _as_like(plan.gain, x).to(dtype)[:, None, None, :]
    offset = _as_like(plan.offset, x).to(dtype)[:, None, None, :]
    values = x.to(dtype)
    nans = torch.isnan(values).sum() if values.is_floating_point() else zero_nans
    values = torch.addcmul(offset, values, gain)
    values = torch.fmax(values, torch.zeros((), dtype=dtype, device=x.device))
    values = torch.fmin(values, torch.full((), plan.max_value, dtype=dtype, device=x.device))
    return values.to(out_dtype).contiguous(), nans
