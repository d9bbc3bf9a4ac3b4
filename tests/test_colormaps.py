"""Colormaps (tensorpng.colormaps): tables equal the source package's, lookups in NumPy and
torch agree, errors, no torch import, and the fallback when ``cmap`` is missing."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from tensorpng.colormaps import COLORMAPS, apply_colormap, apply_colormap_torch, colormap_table
from tensorpng.errors import DTypeError, OptionError, ShapeError

REPO = Path(__file__).resolve().parents[1]
FROM_PACKAGE = [name for name in COLORMAPS if name != "gray"]


def cmap_bytes(name: str) -> np.ndarray:
    """The colormap as the cmap package gives it: 256 floats per channel, ``uint8(c * 255)``."""
    from cmap import Colormap

    lut = np.asarray(Colormap(name).lut(256))
    assert lut.shape == (256, 4)
    return (lut[:, :3] * 255).astype(np.uint8)


def run_python(script: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
    )


def test_colormap_names() -> None:
    assert COLORMAPS == ("viridis", "magma", "inferno", "plasma", "cividis", "turbo", "gray")


@pytest.mark.parametrize("name", COLORMAPS)
def test_every_table_loads(name: str) -> None:
    table = colormap_table(name)
    assert table.shape == (256, 3)
    assert table.dtype == np.uint8
    assert not table.flags.writeable
    with pytest.raises(ValueError, match="read-only"):
        table[0, 0] = 1
    assert colormap_table(name) is table  # cached


@pytest.mark.parametrize("name", FROM_PACKAGE)
def test_table_equals_cmap_package(name: str) -> None:
    np.testing.assert_array_equal(colormap_table(name), cmap_bytes(name))


@pytest.mark.parametrize(
    ("name", "first", "last"),
    [
        # matplotlib's published endpoints (_cm_listed.py), times 255
        ("viridis", (68, 1, 84), (253, 231, 37)),
        ("magma", (0, 0, 4), (252, 253, 191)),
        ("inferno", (0, 0, 4), (252, 255, 164)),
        ("plasma", (13, 8, 135), (240, 249, 33)),
        ("cividis", (0, 34, 78), (254, 232, 56)),
        ("turbo", (48, 18, 59), (122, 4, 3)),
        ("gray", (0, 0, 0), (255, 255, 255)),
    ],
)
def test_known_endpoints(name: str, first: tuple[int, int, int], last: tuple[int, int, int]) -> None:
    table = colormap_table(name).astype(int)
    assert np.abs(table[0] - first).max() <= 1, table[0]
    assert np.abs(table[255] - last).max() <= 1, table[255]


def test_viridis_midpoint() -> None:
    # viridis at 0.5 is about (33, 145, 140), the familiar teal
    assert np.abs(colormap_table("viridis")[128].astype(int) - (33, 145, 140)).max() <= 1


def test_names_are_case_insensitive() -> None:
    assert colormap_table("Viridis") is colormap_table("viridis")
    assert colormap_table("TURBO") is colormap_table("turbo")


def test_gray_is_identity() -> None:
    table = colormap_table("gray")
    np.testing.assert_array_equal(table, np.repeat(np.arange(256, dtype=np.uint8)[:, None], 3, axis=1))
    samples = np.arange(256, dtype=np.uint8).reshape(16, 16)
    np.testing.assert_array_equal(apply_colormap(samples, "gray"), np.stack([samples] * 3, axis=-1))


@pytest.mark.parametrize(
    ("shape", "out_shape"),
    [
        ((5, 7), (5, 7, 3)),
        ((2, 5, 7), (2, 5, 7, 3)),
        ((5, 7, 1), (5, 7, 3)),
        ((2, 5, 7, 1), (2, 5, 7, 3)),
        ((1, 1), (1, 1, 3)),
    ],
)
@pytest.mark.parametrize("name", ["viridis", "turbo", "gray"])
def test_apply_numpy_and_torch(shape: tuple[int, ...], out_shape: tuple[int, ...], name: str) -> None:
    samples = np.random.default_rng(0).integers(0, 256, size=shape, dtype=np.uint8)
    table = colormap_table(name)
    expected = table[samples.reshape(out_shape[:-1])]

    colored = apply_colormap(samples, name)
    assert colored.shape == out_shape and colored.dtype == np.uint8
    np.testing.assert_array_equal(colored, expected)

    tensor = torch.from_numpy(samples)
    colored_t = apply_colormap_torch(tensor, name)
    assert colored_t.dtype == torch.uint8
    assert colored_t.device == tensor.device
    assert tuple(colored_t.shape) == out_shape
    np.testing.assert_array_equal(colored_t.numpy(), expected)


def test_apply_every_value_and_strided_input() -> None:
    """All 256 values, including those a uint8 mask reading of the index would get wrong."""
    samples = np.arange(256, dtype=np.uint8).reshape(16, 16).T  # non-contiguous
    for name in COLORMAPS:
        table = colormap_table(name)
        np.testing.assert_array_equal(apply_colormap(samples, name), table[samples])
        np.testing.assert_array_equal(
            apply_colormap_torch(torch.from_numpy(samples.copy()).T, name).numpy(), table[samples.T]
        )


def test_apply_result_is_writable_copy() -> None:
    colored = apply_colormap(np.zeros((2, 2), np.uint8), "viridis")
    colored[0, 0] = 0  # does not touch the read-only table
    assert tuple(colormap_table("viridis")[0]) == (68, 1, 84)


def test_unknown_name() -> None:
    with pytest.raises(OptionError, match=r"unknown colormap 'jet': choose one of viridis, magma, .*gray"):
        colormap_table("jet")
    with pytest.raises(OptionError, match="unknown colormap"):
        apply_colormap(np.zeros((2, 2), np.uint8), "hot")
    with pytest.raises(OptionError, match="unknown colormap"):
        apply_colormap_torch(torch.zeros((2, 2), dtype=torch.uint8), "hot")
    with pytest.raises(OptionError, match="a colormap name is a string"):
        colormap_table(3)  # type: ignore[arg-type]


def test_wrong_dtypes_and_types() -> None:
    with pytest.raises(DTypeError, match=r"uint8, got dtype float32 and shape \(2, 2\)"):
        apply_colormap(np.zeros((2, 2), np.float32), "viridis")
    with pytest.raises(DTypeError, match=r"uint8, got a tensor of dtype torch.int64"):
        apply_colormap_torch(torch.zeros((2, 2), dtype=torch.int64), "viridis")
    with pytest.raises(DTypeError, match="use apply_colormap_torch"):
        apply_colormap(torch.zeros((2, 2), dtype=torch.uint8), "viridis")  # type: ignore[arg-type]
    with pytest.raises(DTypeError, match="use apply_colormap for NumPy"):
        apply_colormap_torch(np.zeros((2, 2), np.uint8), "viridis")


@pytest.mark.parametrize("shape", [(4,), (2, 3, 4, 5), (2, 3, 4, 5, 1), (2, 3, 3)])
def test_wrong_shapes(shape: tuple[int, ...]) -> None:
    if shape == (2, 3, 3):  # N x H x W is fine; only the trailing 1 is dropped
        assert apply_colormap(np.zeros(shape, np.uint8), "gray").shape == (2, 3, 3, 3)
        return
    with pytest.raises(ShapeError, match="H x W or N x H x W"):
        apply_colormap(np.zeros(shape, np.uint8), "gray")
    with pytest.raises(ShapeError, match="H x W or N x H x W"):
        apply_colormap_torch(torch.zeros(shape, dtype=torch.uint8), "gray")


def test_does_not_import_torch() -> None:
    result = run_python(
        """
        import sys
        import numpy as np
        import tensorpng.colormaps as colormaps
        for name in colormaps.COLORMAPS:
            colormaps.colormap_table(name)
        colormaps.apply_colormap(np.zeros((2, 2), np.uint8), "viridis")
        assert "torch" not in sys.modules, "tensorpng.colormaps imported torch"
        print("ok")
        """
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == "ok"


def test_without_cmap_package() -> None:
    """cmap hidden: matplotlib's table if it is installed, else an error with the install hint."""
    result = run_python(
        """
        import sys
        sys.modules["cmap"] = None  # import cmap now raises ImportError
        import numpy as np
        import tensorpng.colormaps as colormaps
        from tensorpng.errors import OptionError
        np.testing.assert_array_equal(colormaps.colormap_table("gray")[:, 0], np.arange(256))
        try:
            import matplotlib
        except ImportError:
            try:
                colormaps.colormap_table("viridis")
            except OptionError as error:
                print("error:", error)
            else:
                raise AssertionError("no error without cmap and matplotlib")
        else:
            table = colormaps.colormap_table("viridis")
            expected = matplotlib.colormaps["viridis"](np.arange(256), bytes=True)[:, :3]
            np.testing.assert_array_equal(table, expected)
            print("matplotlib")
        """
    )
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout.strip()
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        assert out.startswith("error: colormap 'viridis' needs a colormap package"), out
        assert "pip install cmap" in out and "pip install 'tensorpng[colormaps]'" in out, out
    else:
        assert out == "matplotlib", out


def test_matplotlib_fallback_path() -> None:
    """With cmap hidden and a stand-in matplotlib (backed by cmap's colours, N = 256 and
    N = 512), the fallback gives the same tables."""
    result = run_python(
        """
        import sys, types
        import numpy as np
        from cmap import Colormap
        sys.modules["cmap"] = None

        class StandIn:
            def __init__(self, name, n):
                self.name, self.N = name, n
            def resampled(self, n):
                return StandIn(self.name, n)
            def __call__(self, x, bytes=False):
                assert bytes and self.N == 256 and np.asarray(x).dtype.kind == "i"
                return Colormap(self.name)(x, N=self.N, bytes=True)

        class Registry:
            def __getitem__(self, name):
                return StandIn(name, 512 if name == "turbo" else 256)

        fake = types.ModuleType("matplotlib")
        fake.colormaps = Registry()
        sys.modules["matplotlib"] = fake
        import tensorpng.colormaps as colormaps
        for name in ("viridis", "turbo"):
            table = colormaps.colormap_table(name)
            expected = (Colormap(name).lut(256)[:, :3] * 255).astype(np.uint8)
            np.testing.assert_array_equal(table, expected)
        print("ok")
        """
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == "ok"
