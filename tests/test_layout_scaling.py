"""Layouts, dtypes, value mapping and grids of ``tensorpng.to_array`` / ``save``.

Expected samples are computed here independently, in float64, from the specification
(``x * std + mean``, ``lo -> 0``, ``hi -> max``, clamp, round half up). Test data are built
from dyadic numbers or from integer levels with a jitter well below half a level, so that
float32 (or float16) arithmetic and the float64 reference cannot land on different sides of
a rounding boundary: every comparison is exact.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch

import tensorpng
from conftest import decode_imagecodecs, decode_pypng, pngcheck
from tensorpng import DTypeError, OptionError, ShapeError, ValueRangeError, _cpu_codec
from tensorpng._options import ScaleOptions
from tensorpng.scaling import convert_batch_on_device, make_plan

RNG_SEED = 20240611

# Exactly representable in bfloat16, float16, float32 and float64; none maps to a tie
# except 0.5 -> 127.5, which is exact in every dtype and rounds up to 128.
DYADIC = np.array([0.0, 0.125, 0.25, 0.375, 0.5, 0.625, 0.75, 0.875, 1.0, -1.0, 2.0, 1.5], np.float64)
DYADIC_8BIT = np.array([0, 32, 64, 96, 128, 159, 191, 223, 255, 0, 255, 255], np.uint8)
DYADIC_16BIT = np.array(
    [0, 8192, 16384, 24576, 32768, 40959, 49151, 57343, 65535, 0, 65535, 65535], np.uint16
)

TORCH_FLOATS = {
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
    "float32": torch.float32,
    "float64": torch.float64,
}
NUMPY_FLOATS = {"float16": np.float16, "float32": np.float32, "float64": np.float64}


def round_half_up(values: np.ndarray) -> np.ndarray:
    return np.floor(values + 0.5)


def reference(
    x: np.ndarray,
    *,
    mean: float | np.ndarray = 0.0,
    std: float | np.ndarray = 1.0,
    lo: float | np.ndarray = 0.0,
    hi: float | np.ndarray = 1.0,
    bits: int = 8,
) -> np.ndarray:
    """The specified mapping, in float64 (channels last, so per-channel values broadcast)."""
    top = (1 << bits) - 1
    values = np.asarray(x, np.float64) * std + mean
    values = (values - lo) / (np.asarray(hi, np.float64) - lo) * top
    values = np.nan_to_num(values, nan=0.0, posinf=top, neginf=0.0)
    return round_half_up(np.clip(values, 0, top)).astype(np.uint8 if bits == 8 else np.uint16)


def jittered_levels(shape: tuple[int, ...], bits: int = 8, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Integer levels, and floats in 0..1 that are those levels plus less than 0.3 of a step."""
    rng = np.random.default_rng(seed)
    top = (1 << bits) - 1
    levels = rng.integers(0, top + 1, shape)
    jitter = rng.uniform(-0.3, 0.3, shape)
    jitter[levels == 0] = np.abs(jitter[levels == 0])
    jitter[levels == top] = -np.abs(jitter[levels == top])
    values = (levels + jitter) / top
    return levels.astype(np.uint8 if bits == 8 else np.uint16), values


def distinct_images(n: int, h: int, w: int, c: int) -> np.ndarray:
    """``n x h x w x c`` uint8 samples, different at every position (for layout checks)."""
    return (np.arange(n * h * w * c, dtype=np.int64).reshape(n, h, w, c) * 7 % 251).astype(np.uint8)


def to_layout(images: np.ndarray, layout: str) -> np.ndarray:
    """Rearrange ``N x H x W x C`` images into ``layout`` (dropping N or C where absent)."""
    data = images
    name = "NHWC"
    if "N" not in layout:
        assert data.shape[0] == 1
        data, name = data[0], "HWC"
    if "C" not in layout:
        assert data.shape[-1] == 1
        data, name = data[..., 0], name.replace("C", "")
    return np.ascontiguousarray(np.transpose(data, [name.index(axis) for axis in layout]))


def from_layout(data: np.ndarray, layout: str) -> np.ndarray:
    """The inverse of :func:`to_layout`: ``data`` in ``layout`` as ``N x H x W x C``."""
    if "N" not in layout:
        data, layout = data[None], "N" + layout
    if "C" not in layout:
        data, layout = data[..., None], layout + "C"
    return np.transpose(data, [layout.index(axis) for axis in "NHWC"])


def expected_output(images: np.ndarray, batched: bool) -> np.ndarray:
    """What to_array returns for ``images`` (``N x H x W x C``): gray loses its channel axis."""
    out = images if batched else images[0]
    return out[..., 0] if out.shape[-1] == 1 else out


# ---------------------------------------------------------------------------------------------
# Layouts


@pytest.mark.parametrize("channels", [1, 2, 3, 4])
@pytest.mark.parametrize("layout", ["HW", "CHW", "HWC", "NHW", "NCHW", "NHWC"])
@pytest.mark.parametrize("library", ["numpy", "torch"])
def test_explicit_layouts(layout: str, channels: int, library: str) -> None:
    if "C" not in layout and channels != 1:
        return  # a layout without C holds gray images only; covered by channels=1
    n = 3 if "N" in layout else 1
    images = distinct_images(n, 5, 7, channels)
    data = to_layout(images, layout)
    x = torch.from_numpy(data) if library == "torch" else data
    for spelling in (layout, layout.lower()):
        out = tensorpng.to_array(x, layout=spelling)
        assert out.dtype == np.uint8
        np.testing.assert_array_equal(out, expected_output(images, "N" in layout))


@pytest.mark.parametrize(
    ("shape", "library", "expected_layout"),
    [
        ((5, 7), "numpy", "HW"),
        ((5, 7), "torch", "HW"),
        ((3, 6, 7), "numpy", "CHW"),  # only the first dim is in 1..4
        ((6, 7, 3), "torch", "HWC"),  # only the last dim is in 1..4
        ((1, 6, 7), "numpy", "CHW"),
        ((6, 7, 2), "torch", "HWC"),
        ((3, 6, 4), "torch", "CHW"),  # tie: torch is channels first
        ((3, 6, 4), "numpy", "HWC"),  # tie: NumPy is channels last
        ((4, 9, 1), "torch", "CHW"),
        ((4, 9, 1), "numpy", "HWC"),
        ((2, 3, 6, 7), "numpy", "NCHW"),
        ((2, 6, 7, 4), "torch", "NHWC"),
        ((2, 3, 6, 3), "torch", "NCHW"),  # tie
        ((2, 3, 6, 3), "numpy", "NHWC"),  # tie
        ((5, 1, 8, 2), "torch", "NCHW"),
        ((5, 1, 8, 2), "numpy", "NHWC"),
    ],
)
def test_inferred_layouts(shape: tuple[int, ...], library: str, expected_layout: str) -> None:
    data = (np.arange(math.prod(shape)) % 256).astype(np.uint8).reshape(shape)
    x = torch.from_numpy(data) if library == "torch" else data
    out = tensorpng.to_array(x)
    np.testing.assert_array_equal(out, tensorpng.to_array(data, layout=expected_layout))
    np.testing.assert_array_equal(
        out, expected_output(from_layout(data, expected_layout), "N" in expected_layout)
    )


def test_tie_breaking_for_array_protocol_objects() -> None:
    """Objects that are not torch tensors (``__array__``, ``__dlpack__``) are channels last."""

    class ArrayOnly:
        def __init__(self, array: np.ndarray) -> None:
            self._array = array

        def __array__(self, dtype: object = None, copy: object = None) -> np.ndarray:
            return self._array

    data = distinct_images(1, 3, 5, 4)[0][:, :3, :]  # 3 x 3 x 4: both ends in 1..4
    data = np.ascontiguousarray(data)
    np.testing.assert_array_equal(tensorpng.to_array(ArrayOnly(data)), data)
    np.testing.assert_array_equal(tensorpng.to_array(torch.from_numpy(data)), np.transpose(data, (1, 2, 0)))


@pytest.mark.parametrize(
    ("shape", "library", "match"),
    [
        ((6, 7, 8), "numpy", r"shape \(6, 7, 8\).*layout="),
        ((6, 7, 8), "torch", r"shape \(6, 7, 8\).*layout="),
        ((2, 6, 7, 8), "numpy", r"shape \(2, 6, 7, 8\).*layout="),
        ((2, 6, 7, 8), "torch", r"shape \(2, 6, 7, 8\).*x\[:, :3\]"),
        ((6, 7, 8), "numpy", r"x\[:3\]"),
        ((7,), "numpy", r"shape \(7,\)"),
        ((2, 2, 3, 4, 5), "torch", r"shape \(2, 2, 3, 4, 5\)"),
        ((), "numpy", r"shape \(\)"),
    ],
)
def test_ambiguous_or_wrong_rank_shapes(shape: tuple[int, ...], library: str, match: str) -> None:
    data = np.zeros(shape, np.float32)
    x = torch.from_numpy(data) if library == "torch" else data
    with pytest.raises(ShapeError, match=match):
        tensorpng.to_array(x)


@pytest.mark.parametrize(
    ("shape", "layout", "match"),
    [
        ((5, 6, 7), "CHW", r"shape \(5, 6, 7\).*has 5 on the C axis.*x\[:3\]"),
        ((6, 7, 6), "HWC", r"shape \(6, 7, 6\).*has 6 on the C axis.*x\[\.\.\., :3\]"),
        ((2, 8, 4, 4), "NCHW", r"shape \(2, 8, 4, 4\).*has 8"),
        ((2, 4, 4, 16), "NHWC", r"shape \(2, 4, 4, 16\).*has 16"),
        ((3, 4, 4), "HW", r"'HW' needs a 2-D input.*shape \(3, 4, 4\)"),
        ((4, 4), "CHW", r"'CHW' needs a 3-D input.*shape \(4, 4\)"),
        ((2, 3, 4, 4), "NHW", r"'NHW' needs a 3-D input.*shape \(2, 3, 4, 4\)"),
        ((0, 4, 4), "NHW", r"nothing to save.*shape \(0, 4, 4\)"),
        ((3, 0, 4), "CHW", r"nothing to save.*shape \(3, 0, 4\)"),
        ((0, 3, 4, 4), None, r"nothing to save.*shape \(0, 3, 4, 4\)"),
    ],
)
def test_shape_errors(shape: tuple[int, ...], layout: str | None, match: str) -> None:
    with pytest.raises(ShapeError, match=match):
        tensorpng.to_array(np.zeros(shape, np.uint8), layout=layout)
    with pytest.raises(ShapeError, match=match):
        tensorpng.to_array(torch.zeros(shape, dtype=torch.uint8), layout=layout)


def test_zero_channels_is_an_error() -> None:
    with pytest.raises(ShapeError, match=r"has 0 on the C axis"):
        tensorpng.to_array(np.zeros((4, 4, 0), np.uint8), layout="HWC")


@pytest.mark.parametrize("layout", ["CWH", "nchw3", "", "XY", 3])
def test_unknown_layout_names(layout: object) -> None:
    with pytest.raises(OptionError, match=r"layout must be one of HW, CHW, HWC, NHW, NCHW, NHWC"):
        tensorpng.to_array(np.zeros((4, 4), np.uint8), layout=layout)


# ---------------------------------------------------------------------------------------------
# Dtypes


@pytest.mark.parametrize("dtype", list(TORCH_FLOATS))
def test_torch_float_dtypes_round_to_nearest_and_clamp(dtype: str) -> None:
    x = torch.tensor(DYADIC, dtype=TORCH_FLOATS[dtype]).reshape(1, 3, 4)
    np.testing.assert_array_equal(tensorpng.to_array(x), DYADIC_8BIT.reshape(3, 4))
    np.testing.assert_array_equal(tensorpng.to_array(x, bits=16), DYADIC_16BIT.reshape(3, 4))
    assert tensorpng.to_array(x, bits=16).dtype == np.uint16


@pytest.mark.parametrize("dtype", list(NUMPY_FLOATS))
def test_numpy_float_dtypes_round_to_nearest_and_clamp(dtype: str) -> None:
    x = DYADIC.astype(NUMPY_FLOATS[dtype]).reshape(3, 4)
    np.testing.assert_array_equal(tensorpng.to_array(x), DYADIC_8BIT.reshape(3, 4))
    np.testing.assert_array_equal(tensorpng.to_array(x, bits=16), DYADIC_16BIT.reshape(3, 4))


@pytest.mark.parametrize("bits", [8, 16])
@pytest.mark.parametrize("dtype", ["float16", "float32", "float64"])
def test_float_levels_are_recovered_exactly(dtype: str, bits: int) -> None:
    levels, values = jittered_levels((2, 3, 16, 16), bits=bits if dtype != "float16" else 8, seed=bits)
    if dtype == "float16" and bits == 16:
        # float16 cannot hold 16-bit levels; check its 8-bit levels written at 16 bits.
        levels, values = jittered_levels((2, 3, 16, 16), bits=8, seed=3)
        levels = (levels.astype(np.uint16) * 257).astype(np.uint16)
        values = levels / 65535 + np.random.default_rng(4).uniform(-1, 1, levels.shape) * 0.5 / 1024
    x = torch.from_numpy(values.astype(NUMPY_FLOATS[dtype]))
    out = tensorpng.to_array(x, bits=bits)
    expected = np.transpose(levels, (0, 2, 3, 1))
    if dtype == "float16" and bits == 16:
        # float16 has 11 significant bits: about 1/2048 of the range, i.e. +-32 16-bit levels.
        assert np.abs(out.astype(np.int64) - expected).max() <= 64
    else:
        np.testing.assert_array_equal(out, expected)


def test_no_wrap_around_far_outside_the_range() -> None:
    x = np.array([[-1e30, -300.0, -1.0, -1e-9, 1 + 1e-9, 1.004, 256.0, 1e30]], np.float64)
    np.testing.assert_array_equal(tensorpng.to_array(x), [[0, 0, 0, 0, 255, 255, 255, 255]])
    x32 = np.array([[np.finfo(np.float32).max, np.finfo(np.float32).min, 1.9, 2.1]], np.float32)
    np.testing.assert_array_equal(tensorpng.to_array(x32, bits=16), [[65535, 0, 65535, 65535]])


def test_rounding_is_to_nearest_not_truncation() -> None:
    x = np.array([[0.4 / 255, 0.6 / 255, 1.4 / 255, 1.6 / 255, 254.4 / 255, 254.6 / 255]])
    np.testing.assert_array_equal(tensorpng.to_array(x), [[0, 1, 1, 2, 254, 255]])
    for dtype in (torch.float16, torch.bfloat16, torch.float32):
        t = torch.tensor(x, dtype=torch.float64).to(dtype)
        np.testing.assert_array_equal(tensorpng.to_array(t, layout="HW"), reference(t.double().numpy()))


def test_uint8_and_uint16_are_written_as_they_are() -> None:
    u8 = distinct_images(1, 6, 5, 3)[0]
    out = tensorpng.to_array(u8)
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, u8)
    u16 = (np.arange(6 * 5 * 3, dtype=np.uint32).reshape(6, 5, 3) * 1111 % 65536).astype(np.uint16)
    out16 = tensorpng.to_array(torch.from_numpy(u16.astype(np.int32)).to(torch.uint16), layout="HWC")
    assert out16.dtype == np.uint16
    np.testing.assert_array_equal(out16, u16)
    np.testing.assert_array_equal(tensorpng.to_array(u16), u16)


def test_bits_convert_uint8_and_uint16_exactly() -> None:
    u8 = np.arange(256, dtype=np.uint8).reshape(16, 16)
    wide = tensorpng.to_array(u8, bits=16)
    assert wide.dtype == np.uint16
    np.testing.assert_array_equal(wide, u8.astype(np.uint16) * 257)
    np.testing.assert_array_equal(tensorpng.to_array(torch.from_numpy(u8), bits=16), wide)
    np.testing.assert_array_equal(tensorpng.to_array(u8, bits=8), u8)

    u16 = np.array([[0, 128, 129, 257, 385, 386, 65535, 65407, 65406, 32767, 32896]], np.uint16)
    # x / 257 rounded to nearest: 128/257 = 0.498 -> 0, 129/257 = 0.502 -> 1, 65406/257 = 254.498.
    expected = np.array([[0, 0, 1, 1, 1, 2, 255, 255, 254, 127, 128]], np.uint8)
    narrow = tensorpng.to_array(u16, bits=8)
    assert narrow.dtype == np.uint8
    np.testing.assert_array_equal(narrow, expected)
    np.testing.assert_array_equal(narrow, np.floor(u16 / 257 + 0.5).astype(np.uint8))
    every = np.arange(65536, dtype=np.uint16).reshape(256, 256)
    np.testing.assert_array_equal(tensorpng.to_array(every, bits=8), np.rint(every / 257).astype(np.uint8))
    # uint8 -> 16 -> 8 is the identity.
    np.testing.assert_array_equal(tensorpng.to_array(wide, bits=8), u8)


@pytest.mark.parametrize("library", ["numpy", "torch"])
def test_bool_is_black_and_white(library: str) -> None:
    mask = np.array([[True, False, True], [False, False, True]])
    x = torch.from_numpy(mask) if library == "torch" else mask
    np.testing.assert_array_equal(tensorpng.to_array(x), mask.astype(np.uint8) * 255)
    out16 = tensorpng.to_array(x, bits=16)
    assert out16.dtype == np.uint16
    np.testing.assert_array_equal(out16, mask.astype(np.uint16) * 65535)
    np.testing.assert_array_equal(tensorpng.to_array(x, bits=8), mask.astype(np.uint8) * 255)


INT_DTYPES = ["int8", "int16", "int32", "int64", "uint32"]


@pytest.mark.parametrize("dtype", INT_DTYPES)
@pytest.mark.parametrize("library", ["numpy", "torch"])
def test_other_integers_in_0_255_are_8_bit_as_is(dtype: str, library: str) -> None:
    top = 127 if dtype == "int8" else 255
    values = (np.arange(4 * 8 * 3) % (top + 1)).reshape(4, 8, 3).astype(dtype)
    x = torch.from_numpy(values) if library == "torch" and dtype != "uint32" else values
    out = tensorpng.to_array(x, layout="HWC")
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, values)
    # bits=16 writes the same sample values at 16 bits ("as is").
    out16 = tensorpng.to_array(x, layout="HWC", bits=16)
    assert out16.dtype == np.uint16
    np.testing.assert_array_equal(out16, values)


@pytest.mark.parametrize("dtype", ["int32", "int64", "uint32"])
def test_other_integers_up_to_65535_are_16_bit_as_is(dtype: str) -> None:
    values = np.array([[0, 256, 1000, 65535], [7, 300, 40000, 12345]], dtype)
    out = tensorpng.to_array(values)
    assert out.dtype == np.uint16
    np.testing.assert_array_equal(out, values)
    with pytest.raises(ValueRangeError, match=r"up to 65535, more than 8-bit.*pass bits=16"):
        tensorpng.to_array(values, bits=8)
    int16 = torch.tensor([[0, 256], [32767, 9]], dtype=torch.int16)
    np.testing.assert_array_equal(tensorpng.to_array(int16), int16.numpy())


@pytest.mark.parametrize("library", ["numpy", "torch"])
def test_integers_too_large_or_negative_are_errors(library: str) -> None:
    big = np.array([[0, 70000]], np.int32)
    negative = np.array([[-3, 5]], np.int16)
    wrap = (lambda a: torch.from_numpy(a)) if library == "torch" else (lambda a: a)
    with pytest.raises(ValueRangeError, match=r"dtype int32.*values up to 70000.*value_range"):
        tensorpng.to_array(wrap(big))
    with pytest.raises(ValueRangeError, match=r"dtype int16.*negative values \(min -3\).*value_range"):
        tensorpng.to_array(wrap(negative))
    with pytest.raises(ValueRangeError, match=r"int8.*min -128"):
        tensorpng.to_array(wrap(np.array([[-128, 127]], np.int8)))


def test_integer_value_range_maps_linearly() -> None:
    int8 = np.arange(-128, 128, dtype=np.int8).reshape(16, 16)
    out = tensorpng.to_array(int8, value_range=(-128, 127))
    np.testing.assert_array_equal(out, (int8.astype(np.int64) + 128).astype(np.uint8))
    np.testing.assert_array_equal(tensorpng.to_array(torch.from_numpy(int8), value_range=(-128, 127)), out)
    int16 = np.arange(-100, 1200, 7, dtype=np.int16)[None]
    out16 = tensorpng.to_array(int16, value_range=(0, 1020))
    np.testing.assert_array_equal(out16, reference(int16, hi=1020))
    out16 = tensorpng.to_array(int16, value_range=(0, 1020), bits=16)
    np.testing.assert_array_equal(out16, reference(int16, hi=1020, bits=16))
    int64 = np.array([[-(2**40), 0, 2**39, 2**40, 2**41]], np.int64)
    np.testing.assert_array_equal(tensorpng.to_array(int64, value_range=(0, 2**40)), [[0, 0, 128, 255, 255]])
    # scale= works for integers too.
    np.testing.assert_array_equal(
        tensorpng.to_array(np.array([[-5, 0, 5, 15]], np.int32), scale="image"), [[0, 64, 128, 255]]
    )


@pytest.mark.parametrize(
    ("value", "match"),
    [
        (np.zeros((4, 4), np.complex64), r"dtype complex64"),
        (torch.zeros((4, 4), dtype=torch.complex64), r"dtype complex64"),
        (np.zeros((4, 4), object), r"dtype object"),
        (np.zeros((4, 4), "U3"), r"dtype <U3"),
        (np.zeros((4, 4), "datetime64[s]"), r"dtype datetime64"),
        ("image.png", r"builtins\.str"),
        (None, r"NoneType"),
        ({"a": 1}, r"builtins\.dict"),
    ],
)
def test_unsupported_types_and_dtypes(value: object, match: str) -> None:
    with pytest.raises(DTypeError, match=match):
        tensorpng.to_array(value)


@pytest.mark.filterwarnings("ignore:torch.quantize_per_tensor:UserWarning")
def test_quantized_tensors_are_rejected_with_a_hint() -> None:
    q = torch.quantize_per_tensor(torch.rand(3, 4, 4), 0.1, 0, torch.quint8)
    with pytest.raises(DTypeError, match=r"dtype quint8.*dequantize"):
        tensorpng.to_array(q)


# ---------------------------------------------------------------------------------------------
# mean / std / value_range


@pytest.mark.parametrize("dtype", list(TORCH_FLOATS))
def test_per_channel_mean_std(dtype: str) -> None:
    mean = np.array([0.5, 0.25, -0.125])
    std = np.array([0.5, 0.25, 2.0])
    x = np.resize(DYADIC, (4, 6, 3))  # H x W x C, channels last for the reference
    expected = reference(x, mean=mean, std=std)
    t = torch.tensor(np.transpose(x, (2, 0, 1)), dtype=TORCH_FLOATS[dtype])
    np.testing.assert_array_equal(tensorpng.to_array(t, mean=tuple(mean), std=list(std)), expected)
    np.testing.assert_array_equal(
        tensorpng.to_array(t, mean=torch.tensor(mean), std=np.asarray(std)), expected
    )
    np.testing.assert_array_equal(
        tensorpng.to_array(t, mean=mean, std=std, bits=16), reference(x, mean=mean, std=std, bits=16)
    )


def test_scalar_mean_std_apply_to_every_channel() -> None:
    x = np.resize(DYADIC, (2, 4, 6, 3)).astype(np.float32)
    for mean, std in [(0.5, 0.5), ((0.5,), (0.5,)), (0.25, 1), (0, 2.0)]:
        m = mean[0] if isinstance(mean, tuple) else mean
        s = std[0] if isinstance(std, tuple) else std
        np.testing.assert_array_equal(tensorpng.to_array(x, mean=mean, std=std), reference(x, mean=m, std=s))
    gray = np.resize(DYADIC, (4, 6)).astype(np.float32)
    np.testing.assert_array_equal(
        tensorpng.to_array(gray, mean=0.5, std=0.25), reference(gray, mean=0.5, std=0.25)
    )
    # mean alone, std alone.
    np.testing.assert_array_equal(tensorpng.to_array(gray, mean=0.25), reference(gray, mean=0.25))
    np.testing.assert_array_equal(tensorpng.to_array(gray, std=0.5), reference(gray, std=0.5))


def test_negative_std_flips_values() -> None:
    x = np.resize(DYADIC, (4, 6)).astype(np.float32)
    np.testing.assert_array_equal(tensorpng.to_array(x, mean=1.0, std=-1.0), reference(x, mean=1.0, std=-1.0))


@pytest.mark.parametrize(
    ("value_range", "bits"),
    [((-1, 1), 8), ((-1.0, 1.0), 16), ((0, 255), 8), ((0.25, 0.75), 8), ((-4, 4), 16)],
)
def test_value_range(value_range: tuple[float, float], bits: int) -> None:
    lo, hi = value_range
    x = (np.resize(DYADIC, (3, 5, 4)) * (hi - lo) + lo).astype(np.float32)
    expected = reference(x, lo=lo, hi=hi, bits=bits)
    np.testing.assert_array_equal(tensorpng.to_array(x, value_range=value_range, bits=bits), expected)
    np.testing.assert_array_equal(
        tensorpng.to_array(torch.from_numpy(x).permute(2, 0, 1), value_range=value_range, bits=bits), expected
    )


def test_value_range_with_mean_std_applies_after_denormalizing() -> None:
    x = np.resize(DYADIC, (4, 6)).astype(np.float32)
    out = tensorpng.to_array(x, mean=0.5, std=0.5, value_range=(-1, 1))
    np.testing.assert_array_equal(out, reference(x, mean=0.5, std=0.5, lo=-1, hi=1))


def test_uint8_value_range_is_exact() -> None:
    u8 = np.arange(256, dtype=np.uint8).reshape(16, 16)
    np.testing.assert_array_equal(tensorpng.to_array(u8, value_range=(0, 255)), u8)
    np.testing.assert_array_equal(
        tensorpng.to_array(u8, value_range=(0, 255), bits=16), u8.astype(np.uint16) * 257
    )
    np.testing.assert_array_equal(
        tensorpng.to_array(u8, value_range=(0, 127.5)), np.minimum(u8.astype(int) * 2, 255)
    )


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"mean": (0.5, 0.5)}, r"mean has 2 values but the image has 3 channels"),
        ({"std": (1, 2, 3, 4)}, r"std has 4 values but the image has 3 channels"),
        ({"std": 0}, r"std must not be 0"),
        ({"std": (1, 0, 1)}, r"std must not be 0"),
        ({"mean": float("nan")}, r"mean must hold finite numbers"),
        ({"mean": "bright"}, r"mean must be a number or a sequence of numbers"),
        ({"std": ()}, r"std must hold finite numbers"),
        ({"value_range": (1, 0)}, r"value_range must be \(lo, hi\) with lo < hi"),
        ({"value_range": (1, 1)}, r"value_range must be \(lo, hi\) with lo < hi"),
        ({"value_range": (0, 1, 2)}, r"value_range must be \(lo, hi\)"),
        ({"value_range": (0, float("inf"))}, r"value_range must hold finite numbers"),
        ({"scale": "global"}, r"scale must be 'image', 'batch' or None, got 'global'"),
        ({"scale": "image", "value_range": (0, 1)}, r"either value_range= or scale="),
        ({"bits": 12}, r"bits must be 8 or 16, got 12"),
        ({"bits": "8"}, r"bits must be 8 or 16"),
        ({"grid": "yes"}, r"grid must be True or False"),
        ({"nrow": 0}, r"nrow must be an integer >= 1, got 0"),
        ({"nrow": 2.0}, r"nrow must be an integer"),
        ({"padding": -1}, r"padding must be an integer >= 0, got -1"),
        ({"pad_value": 1.5}, r"pad_value is a brightness from 0 \(black\) to 1 \(white\), got 1.5"),
        ({"pad_value": -0.1}, r"pad_value is a brightness"),
    ],
)
def test_option_errors(options: dict[str, object], match: str) -> None:
    x = np.zeros((2, 4, 4, 3), np.float32)
    with pytest.raises(OptionError, match=match):
        tensorpng.to_array(x, **options)


# ---------------------------------------------------------------------------------------------
# scale= "image" / "batch"


def test_scale_image_maps_each_image_min_max() -> None:
    images = np.stack(
        [
            np.array([[2.0, 4.0], [6.0, 10.0]]),
            np.array([[-1.0, -0.5], [0.0, 1.0]]),
            np.array([[100.0, 100.25], [100.5, 101.0]]),
        ]
    ).astype(np.float32)
    out = tensorpng.to_array(images, layout="NHW", scale="image")
    expected = np.stack([reference(im, lo=im.min(), hi=im.max()) for im in images.astype(np.float64)])
    np.testing.assert_array_equal(out, expected)
    assert (out.reshape(3, -1).min(axis=1) == 0).all() and (out.reshape(3, -1).max(axis=1) == 255).all()
    out16 = tensorpng.to_array(torch.from_numpy(images)[:, None], scale="image", bits=16)
    expected16 = np.stack(
        [reference(im, lo=im.min(), hi=im.max(), bits=16) for im in images.astype(np.float64)]
    )
    np.testing.assert_array_equal(out16, expected16)


def test_scale_image_uses_one_range_for_all_channels() -> None:
    image = np.zeros((2, 2, 3), np.float32)
    image[..., 0] = [[0.0, 1.0], [2.0, 4.0]]
    image[..., 1] = 2.0
    image[..., 2] = [[1.0, 1.0], [3.0, 3.0]]
    out = tensorpng.to_array(image, scale="image")
    np.testing.assert_array_equal(out, reference(image, lo=0.0, hi=4.0))


def test_scale_batch_uses_one_range() -> None:
    images = np.stack([np.array([[0.0, 1.0], [2.0, 3.0]]), np.array([[4.0, 5.0], [6.0, 8.0]])]).astype(
        np.float64
    )
    out = tensorpng.to_array(torch.from_numpy(images), layout="NHW", scale="batch")
    np.testing.assert_array_equal(out, reference(images, lo=0.0, hi=8.0))
    assert out[0].min() == 0 and out[0].max() < 255 and out[1].max() == 255


def test_scale_after_mean_std() -> None:
    images = np.resize(DYADIC, (2, 3, 4, 4)).astype(np.float32)  # N C H W
    images[1] *= 2
    mean = np.array([0.5, 0.25, 0.0])
    std = np.array([0.5, -0.25, 2.0])
    out = tensorpng.to_array(torch.from_numpy(images), mean=mean, std=std, scale="image")
    nhwc = np.transpose(images, (0, 2, 3, 1)).astype(np.float64)
    denormalized = nhwc * std + mean
    expected = np.stack([reference(d, lo=d.min(), hi=d.max()) for d in denormalized])
    np.testing.assert_array_equal(out, expected)
    out_batch = tensorpng.to_array(torch.from_numpy(images), mean=mean, std=std, scale="batch")
    np.testing.assert_array_equal(
        out_batch, reference(denormalized, lo=denormalized.min(), hi=denormalized.max())
    )


@pytest.mark.parametrize("scale", ["image", "batch"])
@pytest.mark.parametrize("value", [0.0, 3.5, -7.25, 1e30])
def test_constant_images_map_to_zero_without_warnings(scale: str, value: float) -> None:
    x = np.full((2, 3, 5, 5), value, np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # neither a NaN nor a NumPy warning
        out = tensorpng.to_array(torch.from_numpy(x), scale=scale)
        out16 = tensorpng.to_array(x, layout="NCHW", scale=scale, bits=16)
    assert out.shape == (2, 5, 5, 3) and not out.any()
    assert out16.dtype == np.uint16 and not out16.any()


def test_scale_image_constant_image_next_to_varying_ones() -> None:
    images = np.stack([np.full((2, 2), 5.0), np.array([[0.0, 1.0], [2.0, 4.0]])]).astype(np.float32)
    out = tensorpng.to_array(images, layout="NHW", scale="image")
    np.testing.assert_array_equal(out[0], 0)
    np.testing.assert_array_equal(out[1], reference(images[1], lo=0, hi=4))


@pytest.mark.parametrize("library", ["numpy", "torch"])
def test_scale_ignores_nan_and_inf(library: str) -> None:
    image = np.array([[np.nan, 2.0, np.inf], [-np.inf, 6.0, 10.0]], np.float32)
    x = torch.from_numpy(image) if library == "torch" else image
    with pytest.warns(RuntimeWarning, match=r"^1 NaN value in .*shape \(2, 3\).* written as 0$"):
        out = tensorpng.to_array(x, scale="image")
    np.testing.assert_array_equal(out, [[0, 0, 255], [0, 128, 255]])
    with pytest.warns(RuntimeWarning, match="1 NaN value"):
        np.testing.assert_array_equal(tensorpng.to_array(x, scale="batch"), out)


@pytest.mark.parametrize("scale", ["image", "batch"])
def test_scale_all_nan_or_inf_images_map_to_zero(scale: str) -> None:
    x = np.full((3, 4, 4), np.nan, np.float32)
    x[1] = np.inf
    x[2] = -np.inf
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = tensorpng.to_array(x, layout="NHW", scale=scale)
    messages = [str(w.message) for w in caught]
    assert messages == ["16 NaN values in numpy.ndarray, shape (3, 4, 4), dtype float32 written as 0"]
    assert out.dtype == np.uint8 and not out.any()


# ---------------------------------------------------------------------------------------------
# NaN and inf


@pytest.mark.parametrize("dtype", list(TORCH_FLOATS))
def test_nan_warning_counts_and_writes_zero(dtype: str, tmp_path) -> None:  # type: ignore[no-untyped-def]
    x = torch.full((3, 4, 5), 0.5, dtype=TORCH_FLOATS[dtype])
    x[0, 0, 0] = x[1, 2, 3] = x[2, 3, 4] = float("nan")
    x[0, 1, 1] = float("inf")
    x[1, 1, 1] = -float("inf")
    with pytest.warns(
        RuntimeWarning, match=rf"^3 NaN values in torch\.Tensor, shape \(3, 4, 5\), dtype {dtype}"
    ):
        out = tensorpng.to_array(x)
    assert out[0, 0, 0] == 0 and out[2, 3, 1] == 0 and out[3, 4, 2] == 0
    assert out[1, 1, 0] == 255 and out[1, 1, 1] == 0
    assert out[2, 2, 2] == 128
    with pytest.warns(RuntimeWarning, match="3 NaN"):
        paths = tensorpng.save(x, tmp_path / "nan.png")
    np.testing.assert_array_equal(decode_imagecodecs(paths[0].read_bytes()), out)
    with pytest.warns(RuntimeWarning, match="3 NaN"):
        data = tensorpng.encode(x, bits=16)
    assert decode_pypng(data)[0, 0, 0] == 0 and decode_pypng(data)[1, 1, 0] == 65535


def test_nan_warning_counts_a_whole_batch_once() -> None:
    x = np.zeros((4, 2, 2), np.float64)
    x[0, 0, 0] = x[3, 1, 1] = np.nan
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        tensorpng.to_array(x, layout="NHW")
    assert [str(w.message) for w in caught] == [
        "2 NaN values in numpy.ndarray, shape (4, 2, 2), dtype float64 written as 0"
    ]
    assert caught[0].category is RuntimeWarning
    assert caught[0].filename == __file__  # points at the caller


def test_single_nan_is_singular() -> None:
    with pytest.warns(RuntimeWarning, match=r"^1 NaN value in"):
        tensorpng.to_array(np.array([[np.nan, 1.0]]))


def test_no_warning_without_nan() -> None:
    x = np.array([[np.inf, -np.inf, 0.5]], np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        np.testing.assert_array_equal(tensorpng.to_array(x), [[255, 0, 128]])


# ---------------------------------------------------------------------------------------------
# Grids


def torchvision_make_grid(
    tensor: np.ndarray, nrow: int = 8, padding: int = 2, pad_value: float = 0.0
) -> np.ndarray:
    """A line-by-line port of ``torchvision.utils.make_grid`` (N x C x H x W, floats).

    Unlike torchvision it does not expand 1-channel images to 3 channels (tensorpng keeps
    gray images gray); the geometry is the same.
    """
    if tensor.shape[0] == 1:
        return tensor[0]
    nmaps = tensor.shape[0]
    xmaps = min(nrow, nmaps)
    ymaps = int(math.ceil(float(nmaps) / xmaps))  # noqa: RUF046 - as torchvision writes it
    height, width = int(tensor.shape[2] + padding), int(tensor.shape[3] + padding)
    num_channels = tensor.shape[1]
    grid = np.full((num_channels, height * ymaps + padding, width * xmaps + padding), pad_value)
    k = 0
    for y in range(ymaps):
        for x in range(xmaps):
            if k >= nmaps:
                break
            # grid.narrow(1, y * height + padding, height - padding)
            #     .narrow(2, x * width + padding, width - padding).copy_(tensor[k])
            top, left = y * height + padding, x * width + padding
            grid[:, top : top + height - padding, left : left + width - padding] = tensor[k]
            k += 1
    return grid


@pytest.mark.parametrize(
    ("count", "nrow", "padding", "pad_value"),
    [
        (1, 8, 2, 0.0),
        (2, 8, 2, 0.0),
        (3, 2, 2, 1.0),
        (5, 3, 0, 0.0),
        (8, 8, 2, 0.5),
        (9, 8, 4, 0.25),
        (7, 1, 3, 1.0),
        (17, 4, 1, 0.0),
        (6, 10, 2, 0.0),
    ],
)
@pytest.mark.parametrize("channels", [1, 3, 4])
def test_grid_matches_torchvision_geometry(
    count: int, nrow: int, padding: int, pad_value: float, channels: int
) -> None:
    levels, values = jittered_levels((count, channels, 5, 7), seed=count * 10 + channels)
    x = torch.from_numpy(values.astype(np.float32))
    out = tensorpng.to_array(x, grid=True, nrow=nrow, padding=padding, pad_value=pad_value)
    reference_grid = torchvision_make_grid(levels.astype(np.float64) / 255, nrow, padding, pad_value)
    expected = round_half_up(np.transpose(reference_grid, (1, 2, 0)) * 255).astype(np.uint8)
    if channels == 1:
        expected = expected[..., 0]
        assert out.ndim == 2  # gray stays single-channel
    np.testing.assert_array_equal(out, expected)
    if count > 1:
        columns = min(nrow, count)
        rows = math.ceil(count / columns)
        assert out.shape[:2] == (rows * (5 + padding) + padding, columns * (7 + padding) + padding)


def test_grid_defaults_and_16_bit_padding() -> None:
    images = np.arange(10 * 3 * 3, dtype=np.uint16).reshape(10, 3, 3) * 1000
    out = tensorpng.to_array(images, layout="NHW", grid=True, pad_value=1)
    assert out.dtype == np.uint16
    # defaults nrow=8, padding=2: 2 rows of 8 columns.
    assert out.shape == (2 * (3 + 2) + 2, 8 * (3 + 2) + 2)
    expected = torchvision_make_grid(images[:, None].astype(np.float64), 8, 2, 65535.0)[0]
    np.testing.assert_array_equal(out, expected)
    assert out[0, 0] == 65535 and out[-1, -1] == 65535


def test_grid_of_a_single_image_input_is_the_image() -> None:
    image = distinct_images(1, 4, 6, 3)[0]
    np.testing.assert_array_equal(tensorpng.to_array(image, grid=True, padding=5), image)
    np.testing.assert_array_equal(tensorpng.to_array(image[None], grid=True, padding=5), image)


def test_grid_with_scale_image_and_nan_count(tmp_path) -> None:  # type: ignore[no-untyped-def]
    images = np.stack([np.array([[0.0, 2.0], [np.nan, 4.0]]), np.array([[10.0, 20.0], [30.0, 50.0]])])
    with pytest.warns(RuntimeWarning, match="1 NaN value"):
        out = tensorpng.to_array(images, layout="NHW", grid=True, padding=1, scale="image")
    assert out.shape == (4, 7)
    np.testing.assert_array_equal(out[1:3, 1:3], [[0, 128], [0, 255]])
    np.testing.assert_array_equal(out[1:3, 4:6], [[0, 64], [128, 255]])
    with pytest.warns(RuntimeWarning, match="1 NaN value"):
        paths = tensorpng.save(
            images, tmp_path / "grid.png", layout="NHW", grid=True, padding=1, scale="image"
        )
    assert paths == [tmp_path / "grid.png"]
    pngcheck(*paths)
    np.testing.assert_array_equal(decode_pypng(paths[0].read_bytes()), out)


# ---------------------------------------------------------------------------------------------
# The accelerator path (convert_batch_on_device), run here on CPU tensors: it must agree with
# the host path for every plan kind.


def spanning_int64() -> torch.Tensor:
    """int64 images that each hold -8 and 9: a span of 17, so ``scale='image'`` maps them with a
    gain of exactly 15 and no sample lands on a rounding tie that the host's two roundings and
    the device's fused multiply-add could break differently (random spans such as 18 do)."""
    x = torch.randint(-8, 10, (2, 4, 5, 3), generator=torch.Generator().manual_seed(6))
    x[:, 0, 0, 0], x[:, 0, 0, 1] = -8, 9
    return x


@pytest.mark.parametrize(
    ("make", "options"),
    [
        (lambda: torch.rand(3, 4, 5, 2, generator=torch.Generator().manual_seed(1)) * 1.4 - 0.2, {}),
        (lambda: torch.rand(3, 4, 5, 2, generator=torch.Generator().manual_seed(2)), {"bits": 16}),
        (
            lambda: torch.randn(3, 4, 5, 3, generator=torch.Generator().manual_seed(3)),
            {"mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225)},
        ),
        (lambda: torch.randn(3, 4, 5, 1, generator=torch.Generator().manual_seed(4)) * 5, {"scale": "image"}),
        (
            lambda: torch.randn(3, 4, 5, 2, generator=torch.Generator().manual_seed(5)),
            {"scale": "batch", "bits": 16},
        ),
        (lambda: torch.full((2, 4, 5, 3), 2.0), {"scale": "image"}),
        (lambda: torch.tensor([[[[float("nan")], [float("inf")], [-float("inf")], [0.5]]]]), {}),
        (lambda: torch.tensor([[[[float("nan")], [float("inf")], [3.0], [1.0]]]]), {"scale": "image"}),
        (lambda: torch.randint(0, 2, (2, 4, 5, 1)).bool(), {}),
        (lambda: torch.randint(0, 2, (2, 4, 5, 1)).bool(), {"bits": 16}),
        (lambda: torch.randint(0, 256, (2, 4, 5, 3)).to(torch.uint8), {"bits": 16}),
        (lambda: torch.randint(0, 65536, (2, 4, 5, 3)).to(torch.uint16), {"bits": 8}),
        (lambda: torch.randint(0, 1000, (2, 4, 5, 3)).to(torch.int16), {}),
        (lambda: torch.randint(-128, 128, (2, 4, 5, 3)).to(torch.int8), {"value_range": (-128, 127)}),
        (lambda: spanning_int64(), {"scale": "image"}),
        (
            lambda: torch.rand(2, 4, 5, 3, generator=torch.Generator().manual_seed(7)).to(torch.bfloat16),
            {"scale": "image"},
        ),
    ],
)
def test_device_path_agrees_with_host_path(make, options) -> None:  # type: ignore[no-untyped-def]
    nhwc = make()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        host = tensorpng.to_array(nhwc, layout="NHWC", **options)
    dtype_name = str(nhwc.dtype).replace("torch.", "")
    plan = make_plan(nhwc, dtype_name, ScaleOptions.parse(**options), "test tensor")
    samples, nans = convert_batch_on_device(plan, nhwc)
    device = samples.to(torch.int32).numpy().astype(host.dtype)
    assert samples.dtype == (torch.uint8 if host.dtype == np.uint8 else torch.uint16)
    if host.ndim == 3:
        device = device[..., 0]
    np.testing.assert_array_equal(device, host)
    expected_nans = int(torch.isnan(nhwc).sum()) if nhwc.is_floating_point() else 0
    assert int(nans) == expected_nans


@pytest.mark.parametrize("layout", ["CHW", "HWC"])
@pytest.mark.parametrize("bits", [8, 16])
def test_the_clamp_is_skipped_only_where_it_changes_nothing(
    layout: str, bits: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """In-range images skip the clamp pass (their min and max prove it is not needed);
    values a hair outside the range, which the clamp-free cast also writes right, and values
    farther out, which need the clamp, come out as the float64 reference says."""
    clamps: list[object] = []
    real_clip = np.clip
    monkeypatch.setattr(np, "clip", lambda *a, **k: clamps.append(a) or real_clip(*a, **k))
    # the NumPy passes (the extension's one-pass conversion of float32 to 8 bits always clamps)
    monkeypatch.setattr(_cpu_codec, "native_conversion", lambda: False)
    top = (1 << bits) - 1
    hair = 0.2 / top  # within a quarter of a step outside 0..1: truncation gives 0 / max
    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
    rng = np.random.default_rng(bits)
    cases = {
        "inside": (rng.uniform(0, 1, (3, 6, 5)), False),
        "a hair outside": (np.clip(rng.uniform(-hair, 1 + hair, (3, 6, 5)), -hair, 1 + hair), False),
        "one channel far out": (
            np.concatenate([rng.uniform(0, 1, (2, 6, 5)), np.full((1, 6, 5), 1.5)]),
            True,
        ),
        "below zero": (rng.uniform(-0.5, 1, (3, 6, 5)), True),
        # 0.9 of a step over the top: without the clamp, max + 1.4 would wrap around to 0
        "a step outside": (np.minimum(rng.uniform(0, 1.1, (3, 6, 5)), 1 + 0.9 / top), True),
    }
    for name, (pixels, needs_clamp) in cases.items():
        pixels[:, 0, 0] = [0.0, 1.0, 0.25]  # both ends exactly (0.25: no rounding tie)
        normalized = (pixels - mean[:, None, None]) / std[:, None, None]
        x: object = torch.from_numpy(normalized.astype(np.float32))
        if layout == "HWC":
            x = np.ascontiguousarray(normalized.transpose(1, 2, 0)).astype(np.float32)
        restored = np.asarray(x, np.float64) if layout == "HWC" else normalized.transpose(1, 2, 0)
        expected = reference(restored.astype(np.float32), mean=mean, std=std, bits=bits)
        clamps.clear()
        out = tensorpng.to_array(x, mean=mean, std=std, bits=bits)
        np.testing.assert_array_equal(out, expected, err_msg=name)
        if layout == "CHW":  # per-channel extremes: the clamp runs exactly when it is needed
            assert bool(clamps) == needs_clamp, name
    # Channels-last images are bounded by their overall min and max (per-channel reductions
    # over a 3-wide last axis are slow): without per-channel gains, in-range ones skip it too.
    inside = rng.uniform(0, 1, (6, 5, 3))
    inside[0, 0] = [0.0, 1.0, 0.25]
    for values, needs_clamp in ((inside, False), (inside + 0.01, True)):
        expected = reference(values, bits=bits)
        clamps.clear()
        np.testing.assert_array_equal(tensorpng.to_array(values, bits=bits), expected)
        assert bool(clamps) == needs_clamp


def test_no_wrap_around_where_float32_rounding_exceeds_the_clamp_free_margin() -> None:
    """Data far from 0 with a small span (``1e5 + [0, 1]``) is mapped in float32 with an error
    of several sample steps: such images always take the clamp, so nothing wraps to 0."""
    one = np.float32(1)
    ulp = np.nextafter(one, np.float32(2)) - one
    three = np.array([[one, one + ulp, one + 2 * ulp]], np.float32)
    np.testing.assert_array_equal(tensorpng.to_array(three, scale="image"), [[0, 128, 255]])
    ramp = torch.full((3, 8, 8), 1e5) + torch.linspace(0, 1, 64).reshape(8, 8)
    for options in ({"value_range": (1e5, 1e5 + 1)}, {"scale": "image"}):
        out = tensorpng.to_array(ramp, **options).astype(np.int64)  # type: ignore[arg-type]
        np.testing.assert_array_equal(out[0, 0], [0, 0, 0])
        np.testing.assert_array_equal(out[7, 7], [255, 255, 255])
        expected = reference(ramp.double().permute(1, 2, 0).numpy(), lo=1e5, hi=1e5 + 1).astype(np.int64)
        # float32 holds 1e5 + x in steps of 1/128: a few levels off, never wrapped around
        assert np.abs(out - expected).max() <= 4
        assert (np.diff(out[..., 0].reshape(-1)) >= 0).all(), "not monotonic: something wrapped"


def test_a_span_below_float_resolution_counts_as_constant() -> None:
    """``scale='image'`` of ``[0, 5e-324]``: ``255 / span`` is no float64, so the image is
    constant to float precision and maps to 0 like a constant image, with no NumPy warning
    (overflow in the divide, invalid value in the cast)."""
    for x in (np.array([[0.0, 5e-324]]), torch.tensor([[0.0, 5e-324]], dtype=torch.float64)):
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            np.testing.assert_array_equal(tensorpng.to_array(x, scale="image"), [[0, 0]])
    # the smallest spans that are floats still map to 0 and max
    tiny = np.array([[0.0, 1e-300]])
    np.testing.assert_array_equal(tensorpng.to_array(tiny, scale="image"), [[0, 255]])


def test_float32_falls_back_to_float64_where_it_cannot_map_to_a_step() -> None:
    """Data far from 0 with a small span, or with a span so small that the gain overflows
    float32, is mapped in float64 (float32 was off by up to 255 levels, or wrote NaN)."""
    far = np.float32(1e5) + np.array([[0.0, 0.5, 1.0]], np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        np.testing.assert_array_equal(tensorpng.to_array(far, scale="image"), [[0, 128, 255]])
        np.testing.assert_array_equal(
            tensorpng.to_array(far, scale="image", std=-2.0, mean=1.0), [[255, 128, 0]]
        )
        tiny = np.array([[0.0, 1e-37, 0.5e-37]], np.float32)
        np.testing.assert_array_equal(tensorpng.to_array(tiny, scale="image"), [[0, 255, 128]])
        by_range = tensorpng.to_array(torch.from_numpy(tiny), value_range=(0, 1e-37), layout="HW")
    np.testing.assert_array_equal(by_range, reference(tiny.astype(np.float64), lo=0, hi=1e-37))
    ramp = np.float32(1e7) + np.arange(0, 16, dtype=np.float32).reshape(4, 4)
    expected = reference(ramp.astype(np.float64), lo=1e7, hi=1e7 + 15)
    np.testing.assert_array_equal(tensorpng.to_array(ramp, scale="image"), expected)
