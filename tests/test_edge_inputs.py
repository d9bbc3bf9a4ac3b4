"""Edge inputs: uint64 beyond int64, grid sizes, .npz members without the suffix, odd options.

Every error that reaches a caller of a public function must be a TensorPNGError.
"""

from __future__ import annotations

import contextlib
import functools
import io
import os
import tempfile
import warnings
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import tensorpng
from tensorpng.errors import OptionError, TensorPNGError
from tensorpng.loaders import load_file


def test_torch_uint64_above_int64_does_not_wrap() -> None:
    values = [0, 2**62, 2**63 + 5, 2**64 - 1]
    tensor = torch.tensor(values, dtype=torch.uint64).reshape(1, 4)
    expected = tensorpng.to_array(np.array(values, dtype=np.uint64).reshape(1, 4), scale="image")
    assert expected.ravel().tolist() == [0, 64, 128, 255]
    np.testing.assert_array_equal(tensorpng.to_array(tensor, scale="image"), expected)


def test_grid_size_is_checked_before_allocating() -> None:
    images = np.zeros((2, 4, 4, 3), np.uint8)
    with pytest.raises(OptionError, match=r"padding=100000.*\d+x\d+ pixels"):
        tensorpng.encode(images, layout="NHWC", grid=True, padding=10**5)


def test_encode_rejects_float_bits() -> None:
    with pytest.raises(OptionError):
        tensorpng.encode(np.zeros((4, 4), np.uint8), bits=16.0)  # type: ignore[arg-type]


def _npy_bytes(shape: tuple[int, ...]) -> bytes:
    stream = io.BytesIO()
    np.lib.format.write_array_header_1_0(stream, {"descr": "|u1", "fortran_order": False, "shape": shape})
    return stream.getvalue()


def test_npz_member_without_npy_suffix_is_counted(tmp_path: Path) -> None:
    path = tmp_path / "hostile.npz"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("small.npy", _npy_bytes((2, 2)) + bytes(4))
        archive.writestr("huge", _npy_bytes((10**6, 10**6)))  # NumPy reads it as archive["huge"]
    with pytest.raises(TensorPNGError, match="more than"):
        load_file(path, max_values=10**6)


def test_npz_member_without_npy_suffix_is_loaded(tmp_path: Path) -> None:
    path = tmp_path / "plain.npz"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("image", _npy_bytes((2, 2)) + bytes(range(4)))
        archive.writestr("notes.txt", b"not an array")
    entries = load_file(path)
    assert [entry.key for entry in entries] == ["image"]
    assert np.asarray(entries[0].data).tolist() == [[0, 1], [2, 3]]


odd_values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=8),
    st.lists(st.integers(-3, 300), max_size=4),
    st.just(object()),
)
option_names = st.sampled_from(
    ["layout", "value_range", "scale", "bits", "nrow", "padding", "pad_value", "compression", "mean", "std"]
)


@settings(max_examples=150, deadline=None)
@given(name=option_names, value=odd_values)
def test_odd_options_raise_tensorpng_errors(name: str, value: object) -> None:
    image = np.arange(2 * 4 * 4 * 3, dtype=np.uint8).reshape(2, 4, 4, 3)
    options: dict[str, object] = {"layout": "NHWC", "grid": True, name: value}
    folder = tempfile.mkdtemp()
    save = functools.partial(tensorpng.save, path=os.path.join(folder, "x.png"))
    for function in (tensorpng.encode, tensorpng.to_array, save):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with contextlib.suppress(TensorPNGError):
                function(image, **options)  # type: ignore[arg-type]


@settings(max_examples=100, deadline=None)
@given(data=st.one_of(odd_values, st.lists(st.lists(odd_values, max_size=3), max_size=3)))
def test_odd_inputs_raise_tensorpng_errors(data: object) -> None:
    for function in (tensorpng.encode, tensorpng.to_array):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with contextlib.suppress(TensorPNGError):
                function(data)


@settings(max_examples=60, deadline=None)
@given(path=st.one_of(st.text(max_size=20), st.binary(max_size=8), st.integers(), st.none()))
def test_odd_paths_raise_tensorpng_errors(path: object) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with contextlib.suppress(TensorPNGError):
            tensorpng.load(path)  # type: ignore[arg-type]


def test_grid_bound_counts_bytes_not_pixels() -> None:
    """45032 x 45032 pixels are under 2**31, but as uint16 RGBA they are 16 GiB."""
    rgba16 = np.zeros((64, 4, 4, 4), np.uint16)
    with pytest.raises(OptionError, match=r"16,223,048,192 bytes"):
        tensorpng.encode(rgba16, layout="NHWC", grid=True, padding=5000, bits=16)
    with pytest.raises(OptionError, match="bytes"):
        tensorpng.save_image(torch.zeros(64, 4, 4, 4), "never.png", padding=5000, bits=16)
    with pytest.raises(OptionError, match="bytes"):
        tensorpng.make_grid(torch.zeros(64, 4, 4, 4, dtype=torch.float64), padding=3000)
    assert not os.path.exists("never.png")


GRID_UNDER_RLIMIT = """
import resource, sys
import numpy as np
import tensorpng
resource.setrlimit(resource.RLIMIT_AS, (3 << 30, 3 << 30))
x = np.zeros((64, 4, 4, 4), np.uint16)
try:  # 27032 x 27032 RGBA uint16: 5.8 GB, under the 8 GiB bound but over this limit
    tensorpng.encode(x, layout="NHWC", grid=True, padding=3000, bits=16)
except tensorpng.OptionError as error:
    print("OptionError", error)
"""


def test_a_grid_that_does_not_fit_in_memory_is_an_option_error() -> None:
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-c", GRID_UNDER_RLIMIT], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("OptionError") and "does not fit in the memory" in done.stdout, done.stdout


def test_float64_spans_beyond_the_largest_double_are_scaled() -> None:
    """A span of 2.7e308 is no float64; before, every sample came out 0. (Values chosen away
    from rounding ties, so the exact oracle decides every sample.)"""
    from fractions import Fraction

    def oracle(values: list[float], low: float, high: float, maximum: int) -> list[int]:
        span = Fraction(high) - Fraction(low)
        return [int((Fraction(v) - Fraction(low)) / span * maximum + Fraction(1, 2)) for v in values]

    scaled = [-1e308, 1.234e307, 6.1e307, 1.7e308]
    ranged = [-0.93e308, 1.234e307, 6.1e307, 1.7e308]
    for bits, maximum in ((8, 255), (16, 65535)):
        for wrap in (np.asarray, torch.from_numpy):
            data = wrap(np.array([scaled], np.float64))
            expected = oracle(scaled, -1e308, 1.7e308, maximum)
            assert tensorpng.to_array(data, scale="image", bits=bits).ravel().tolist() == expected
            assert tensorpng.to_array(data, scale="batch", bits=bits).ravel().tolist() == expected
            data = wrap(np.array([ranged], np.float64))
            mapped = tensorpng.to_array(data, value_range=(-1.7e308, 1.7e308), bits=bits).ravel().tolist()
            assert mapped == oracle(ranged, -1.7e308, 1.7e308, maximum)


# ---- numeric options and odd inputs: each refused with a TensorPNGError before any file --------

_FLOAT_GRID = torch.rand(2, 3, 4, 4)
_UINT8_GRID = np.zeros((2, 3, 4, 4), np.uint8)
_FRAMES = np.zeros((3, 4, 4, 3), np.uint8)
_FULLY_MASKED = np.ma.masked_all((4, 4), np.float32)
_PARTLY_MASKED = np.ma.array(np.linspace(0, 1, 16).reshape(4, 4), mask=np.eye(4, dtype=bool))


def _nested() -> object:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "nested tensors are in prototype stage"
        return torch.nested.nested_tensor([torch.zeros(3, 4, 4), torch.zeros(3, 5, 4)])


_NESTED = r"nested tensor of 2 tensors \(float32\).*one by one"


def _masked_tensor(data: torch.Tensor, specified: torch.Tensor) -> object:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "the PyTorch API of MaskedTensors is in prototype stage"
        return torch.masked.masked_tensor(data, specified)


def _writer_save(x: object, folder: Path) -> None:
    with tensorpng.Writer(folder) as writer:
        writer.save(x, "x.png")


_Call = Callable[[Path], object]
EDGE_CALLS: dict[str, tuple[_Call, str]] = {
    # make_grid fills its padding through torch/NumPy: ints beyond int64 or the dtype raised raw
    "make_grid pad_value beyond int64 (uint8)": (
        lambda d: tensorpng.make_grid(torch.from_numpy(_UINT8_GRID), pad_value=-(10**19)),
        r"pad_value=-10000000000000000000 does not fit the images' dtype uint8 \(0\.\.255\)",
    ),
    "make_grid pad_value beyond float64": (
        lambda d: tensorpng.make_grid(_FLOAT_GRID, pad_value=10**400),
        r"pad_value must be a number",
    ),
    "make_grid pad_value beyond uint8 (NumPy)": (
        lambda d: tensorpng.make_grid(_UINT8_GRID, pad_value=10**19),
        r"pad_value=10000000000000000000 does not fit",
    ),
    "make_grid pad_value would wrap in uint8": (
        lambda d: tensorpng.make_grid(torch.from_numpy(_UINT8_GRID), pad_value=300),
        r"pad_value=300 does not fit the images' dtype uint8",
    ),
    "save_image pad_value NaN": (
        lambda d: tensorpng.save_image(_FLOAT_GRID, d / "x.png", pad_value=float("nan")),
        r"pad_value must be a number, not NaN.*got nan",
    ),
    "save_image pad_value beyond float64": (
        lambda d: tensorpng.save_image(_UINT8_GRID, d / "x.png", pad_value=10**400),
        r"pad_value must be a number",
    ),
    "make_grid value_range NaN": (
        lambda d: tensorpng.make_grid(_FLOAT_GRID, normalize=True, value_range=(float("nan"), 1.0)),
        r"value_range must hold two finite numbers.*nan",
    ),
    "make_grid value_range beyond float32": (
        lambda d: tensorpng.make_grid(_FLOAT_GRID, normalize=True, value_range=(0.0, 1e308)),
        r"value_range=\(0\.0, 1e\+308\) is beyond float32",
    ),
    "save_image value_range beyond float64": (
        lambda d: tensorpng.save_image(_FLOAT_GRID, d / "x.png", normalize=True, value_range=(0, 10**400)),
        r"value_range must hold two finite numbers",
    ),
    "save_image value_range infinite": (
        lambda d: tensorpng.save_image(
            _FLOAT_GRID, d / "x.png", normalize=True, value_range=(0.0, float("inf"))
        ),
        r"value_range must hold two finite numbers.*inf",
    ),
    "value_range narrower than a float64 scale": (
        lambda d: tensorpng.save(np.zeros((4, 4), np.float32), d / "x.png", value_range=(0.0, 5e-324)),
        r"value_range=\(0\.0, 5e-324\) is too narrow",
    ),
    "value_range narrower than a float64 scale (torch)": (
        lambda d: tensorpng.save(torch.zeros(4, 4), d / "x.png", value_range=(-5e-324, 5e-324)),
        r"too narrow to scale by",
    ),
    # fps: inf and NaN reached Fraction() (raw OverflowError / ValueError)
    "save_animation fps=inf": (
        lambda d: tensorpng.save_animation(_FRAMES, d / "x.png", fps=float("inf")),
        r"fps is a positive, finite number.*got inf",
    ),
    "save_animation fps=nan": (
        lambda d: tensorpng.save_animation(_FRAMES, d / "x.png", fps=float("nan")),
        r"fps is a positive, finite number.*got nan",
    ),
    "Writer.add_frame fps=inf": (lambda d: _add_frame(d, float("inf")), r"got inf"),
    "Writer.add_frame fps=nan": (lambda d: _add_frame(d, float("nan")), r"got nan"),
    # inputs whose values or shape no image holds
    "fully masked array": (
        lambda d: tensorpng.save(_FULLY_MASKED, d / "x.png"),
        r"16 of 16 values masked.*numpy\.MaskedArray, shape \(4, 4\).*x\.filled",
    ),
    "fully masked array, scaled": (
        lambda d: tensorpng.save(_FULLY_MASKED, d / "x.png", scale="image"),
        r"16 of 16 values masked",
    ),
    "partly masked array": (
        lambda d: tensorpng.save(_PARTLY_MASKED, d / "x.png", scale="image"),
        r"4 of 16 values masked",
    ),
    "masked array to save_image": (lambda d: tensorpng.save_image(_FULLY_MASKED, d / "x.png"), r"masked"),
    "masked frames": (lambda d: tensorpng.save_animation([_FULLY_MASKED] * 2, d / "x.png"), r"masked"),
    "masked tensor": (
        lambda d: tensorpng.save(
            _masked_tensor(torch.zeros(4, 4), torch.eye(4, dtype=torch.bool)), d / "x.png"
        ),
        r"MaskedTensor with 12 of 16 values masked out",
    ),
    "nested tensor to save": (lambda d: tensorpng.save(_nested(), d / "x.png"), _NESTED),
    "nested tensor to encode": (lambda d: tensorpng.encode(_nested()), _NESTED),
    "nested tensor to save_image": (lambda d: tensorpng.save_image(_nested(), d / "x.png"), _NESTED),
    "nested tensor to make_grid": (lambda d: tensorpng.make_grid(_nested()), _NESTED),
    "nested tensor to save_animation": (lambda d: tensorpng.save_animation(_nested(), d / "x.png"), _NESTED),
    "nested tensor to Writer.save": (lambda d: _writer_save(_nested(), d), _NESTED),
}


def _add_frame(folder: Path, fps: float) -> None:
    with tensorpng.Writer(folder) as writer:
        writer.add_frame(_FRAMES[0], "clip.png", fps=fps)


@pytest.mark.parametrize("case", sorted(EDGE_CALLS))
def test_numeric_options_and_odd_inputs_raise_tensorpng_errors(case: str, tmp_path: Path) -> None:
    folder = tmp_path / "target"
    folder.mkdir()
    call, match = EDGE_CALLS[case]
    with pytest.raises(TensorPNGError, match=match):
        call(folder)
    assert list(folder.iterdir()) == [], case


def test_fps_that_is_no_positive_finite_number_is_an_option_error(tmp_path: Path) -> None:
    for fps in (float("inf"), -float("inf"), float("nan"), 0, 0.0, -1, -2.5):
        with pytest.raises(OptionError, match="fps is a positive, finite number"):
            tensorpng.save_animation(_FRAMES, tmp_path / "x.png", fps=fps)
    assert list(tmp_path.iterdir()) == []


def test_masked_arrays_with_nothing_masked_are_their_data(tmp_path: Path) -> None:
    """The mask is honoured, not dropped: with nothing masked the data is the image."""
    data = np.linspace(0, 1, 16, dtype=np.float32).reshape(4, 4)
    plain = tensorpng.to_array(data)
    np.testing.assert_array_equal(tensorpng.to_array(np.ma.array(data, mask=False)), plain)
    specified = _masked_tensor(torch.from_numpy(data), torch.ones(4, 4, dtype=torch.bool))
    np.testing.assert_array_equal(tensorpng.to_array(specified), plain)
    with pytest.raises(tensorpng.ValueRangeError, match=r"4 of 16 values masked.*filled"):
        tensorpng.to_array(_PARTLY_MASKED)


def test_grid_options_torch_takes_stay_as_torchvision_gives_them() -> None:
    """inf padding (clamped to white by save_image) and ints within the dtype are still taken."""
    grid = tensorpng.make_grid(torch.zeros(2, 3, 2, 2), padding=1, pad_value=float("inf"))
    assert torch.isinf(grid[:, 0, 0]).all() and grid[:, 1, 1].eq(0).all()
    assert (
        tensorpng.make_grid(torch.zeros(2, 3, 2, 2, dtype=torch.uint8), padding=1, pad_value=255)[0, 0, 0]
        == 255
    )
    assert tensorpng.make_grid(_FLOAT_GRID, pad_value=-(10**19))[0, 0, 0] == -1e19


def test_out_of_memory_is_a_tensorpng_error_that_is_still_a_memory_error(tmp_path: Path) -> None:
    """A broadcast view counts at its full size: under a 3 GiB address-space limit, encode and
    Writer.save of 3 GB views raise OutOfMemoryError (a TensorPNGError and a MemoryError)."""
    import subprocess
    import sys

    code = (
        "import resource, numpy as np, tensorpng\n"
        "resource.setrlimit(resource.RLIMIT_AS, (3 << 30, 3 << 30))\n"
        "calls = [\n"
        "    lambda: tensorpng.encode(np.broadcast_to(np.zeros((1, 1), 'u1'), (30000, 100000))),\n"
        "    lambda: tensorpng.Writer('w').save(\n"
        "        np.broadcast_to(np.zeros((1, 1, 1), 'f4'), (4000, 1000, 1000)), '{index}.png', layout='NHW'),\n"
        "]\n"
        "for call in calls:\n"
        "    try:\n"
        "        call()\n"
        "    except tensorpng.OutOfMemoryError as error:\n"
        "        print(isinstance(error, MemoryError), str(error).split('(')[0])\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=tmp_path
    )
    assert result.stdout.splitlines() == [
        "True tensorpng.encode",
        "True tensorpng.Writer.save",
    ], result.stdout + result.stderr
