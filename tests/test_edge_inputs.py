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
