"""Colormaps, palette PNGs, the mapping record and ``tensorpng.load``, end to end.

Expected values are computed here independently of the library: colormap colors from the
``cmap`` package, 8-bit samples with a float64 formula, the VOC colors with the development
kit's ``bitget`` algorithm, the record's min/max from the input, chunks parsed (CRCs
checked) straight from the file bytes. Files are read back by imagecodecs, Pillow, OpenCV
and pypng, and checked by pngcheck.
"""

from __future__ import annotations

import importlib
import io
import json
import os
import subprocess
import sys
import textwrap
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import tensorpng
from conftest import (
    decode_imagecodecs,
    decode_opencv,
    decode_pillow,
    decode_pypng,
    parse_chunks,
    pngcheck,
    pngcheck_bytes,
)
from tensorpng import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    DecodeError,
    DTypeError,
    OptionError,
    ShapeError,
    ValueRangeError,
)

# ``tensorpng.load`` is the function; the module (with DECODERS) is reached by its name.
load_module = importlib.import_module("tensorpng.load")

REPO = Path(__file__).resolve().parents[1]
SIGNATURE = bytes([137, 80, 78, 71, 13, 10, 26, 10])
COLORMAP_NAMES = ("viridis", "magma", "inferno", "plasma", "cividis", "turbo", "gray")
TEXT_CHUNKS = (b"tEXt", b"zTXt", b"iTXt")
# label maximum -> the smallest palette bit depth that holds it
DEPTH_FOR_MAX = {1: 1, 3: 2, 15: 4, 255: 8}
STEP8 = 1 / 255
STEP16 = 1 / 65535
EPS = 1e-6  # float32 rounding of values of magnitude up to a few units


# ---------------------------------------------------------------------------------------------
# Independent helpers


def chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    """(type, data) of every chunk of a PNG file, CRC-32s checked, up to IEND."""
    out = parse_chunks(data)
    assert out[-1][0] == b"IEND"
    return out


def texts(data: bytes) -> dict[str, tuple[bytes, str]]:
    """Text entries: key -> (chunk type, value), parsed by the PNG specification."""
    found: dict[str, tuple[bytes, str]] = {}
    for tag, body in chunks(data):
        if tag == b"tEXt":
            key, value = body.split(b"\x00", 1)
            found[key.decode("latin-1")] = (tag, value.decode("latin-1"))
        elif tag == b"iTXt":
            key, rest = body.split(b"\x00", 1)
            flag, method, rest = rest[0], rest[1], rest[2:]
            _language, _translated, value = rest.split(b"\x00", 2)
            assert method == 0
            raw = zlib.decompress(value) if flag else value
            found[key.decode("latin-1")] = (tag, raw.decode("utf-8"))
        elif tag == b"zTXt":
            key, rest = body.split(b"\x00", 1)
            found[key.decode("latin-1")] = (tag, zlib.decompress(rest[1:]).decode("latin-1"))
    return found


def record(data: bytes) -> dict[str, Any]:
    """The ``tensorpng`` JSON record of a file (a tEXt chunk)."""
    tag, value = texts(data)["tensorpng"]
    assert tag == b"tEXt"
    entry = json.loads(value)
    assert isinstance(entry, dict)
    return entry


def ihdr_depth(data: bytes) -> int:
    assert data[:8] == SIGNATURE and data[12:16] == b"IHDR"
    return data[24]


def ihdr_color_type(data: bytes) -> int:
    return data[25]


def plte(data: bytes) -> np.ndarray:
    (body,) = [body for tag, body in chunks(data) if tag == b"PLTE"]
    return np.frombuffer(body, np.uint8).reshape(-1, 3)


def samples8(values: np.ndarray) -> np.ndarray:
    """8-bit samples of values in [0, 1]: floor(clip(v, 0, 1) * 255 + 0.5), in float64."""
    return np.floor(np.clip(values.astype(np.float64), 0.0, 1.0) * 255 + 0.5).astype(np.uint8)


def cmap_table(name: str) -> np.ndarray:
    """The 256 x 3 uint8 colors of a colormap, straight from the cmap package.

    "gray" is the identity ramp: the cmap package's own gray truncates ``i / 255 * 255``
    to ``i - 1`` at some entries (checked in ``test_cmap_package_gray_is_a_truncated_ramp``),
    while a gray colormap of 8-bit samples is the samples themselves.
    """
    if name == "gray":
        return np.repeat(np.arange(256, dtype=np.uint8)[:, None], 3, axis=1)
    from cmap import Colormap

    table = np.asarray(Colormap(name)(np.arange(256), N=256, bytes=True))[:, :3]
    assert table.shape == (256, 3) and table.dtype == np.uint8
    return table


def voc_colors(count: int = 256) -> np.ndarray:
    """The PASCAL VOC devkit's ``labelcolormap``, written out as its ``bitget`` loop."""
    table = np.zeros((count, 3), dtype=np.uint8)
    for label in range(count):
        red = green = blue = 0
        code = label
        for shift in range(8):
            red |= ((code >> 0) & 1) << (7 - shift)
            green |= ((code >> 1) & 1) << (7 - shift)
            blue |= ((code >> 2) & 1) << (7 - shift)
            code >>= 3
        table[label] = (red, green, blue)
    return table


def away_from_ties(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """float32 values in [0, 1] whose 8-bit rounding is unambiguous (no x.5 ties within
    float32 error): every level 0..255 exactly, then random levels plus an offset in
    [-0.45, 0.45] of a step."""
    count = int(np.prod(shape))
    levels = np.concatenate([np.arange(256), rng.integers(0, 256, max(0, count - 256))])[:count]
    offsets = rng.uniform(-0.45, 0.45, count)
    offsets[:256] = 0
    values = np.clip((levels + offsets) / 255, 0, 1)
    return values.astype(np.float32).reshape(shape)


def finite_extremes(x: torch.Tensor | np.ndarray) -> tuple[float, float]:
    values = np.asarray(x.float() if isinstance(x, torch.Tensor) else x, dtype=np.float64)
    finite = values[np.isfinite(values)]
    return float(finite.min()), float(finite.max())


def nothing_written(folder: Path) -> None:
    assert sorted(os.listdir(folder)) == [], f"files left in {folder}: {os.listdir(folder)}"


def as_numpy(value: Any) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        if value.dtype == torch.uint16:
            return value.to(torch.int32).numpy().astype(np.uint16)
        return value.float().numpy() if value.dtype == torch.bfloat16 else value.numpy()
    assert isinstance(value, np.ndarray)
    return value


# ---------------------------------------------------------------------------------------------
# Colormaps


def test_cmap_package_gray_is_a_truncated_ramp() -> None:
    # Why "gray" is checked against the identity ramp: the package's bytes are the ramp
    # truncated by float error, never more than one level below it.
    from cmap import Colormap

    package = np.asarray(Colormap("gray")(np.arange(256), N=256, bytes=True))[:, :3].astype(int)
    ramp = np.arange(256)[:, None]
    assert np.all((ramp - package >= 0) & (ramp - package <= 1))
    np.testing.assert_array_equal(
        tensorpng.to_array(np.arange(256, dtype=np.float32)[None] / 255, cmap="gray")[0],
        np.repeat(ramp, 3, axis=1),
    )


@pytest.mark.parametrize("name", COLORMAP_NAMES)
def test_colormap_output_equals_the_source_table(name: str, tmp_path: Path) -> None:
    rng = np.random.default_rng(7)
    values = away_from_ties(rng, (2, 1, 24, 21))
    values[1, 0, -1, -4:] = [-0.5, 1.5, -np.inf, np.inf]  # clipped at both ends
    table = cmap_table(name)
    expected = table[samples8(values[:, 0])]  # N x H x W x 3
    assert len(np.unique(samples8(values))) == 256  # every table entry is used

    # NumPy (NCHW given), torch CPU, and an NHWC NumPy batch: to_array.
    np.testing.assert_array_equal(tensorpng.to_array(values, layout="NCHW", cmap=name), expected)
    tensor = torch.from_numpy(values)
    np.testing.assert_array_equal(tensorpng.to_array(tensor, cmap=name), expected)
    np.testing.assert_array_equal(tensorpng.to_array(values.transpose(0, 2, 3, 1), cmap=name), expected)
    np.testing.assert_array_equal(tensorpng.to_array(values[1, 0], cmap=name.upper()), expected[1])

    # Files: the CPU encoder (numpy and torch) and the torch path (encoder="device").
    cpu = tensorpng.save(tensor, tmp_path / "cpu.png", cmap=name)
    dev = tensorpng.save(tensor, tmp_path / "dev.png", cmap=name, encoder="device")
    npy = tensorpng.save(values[:, 0], tmp_path / "npy.png", layout="NHW", cmap=name)
    pngcheck(*cpu, *dev, *npy)
    for paths in (cpu, dev, npy):
        assert len(paths) == 2
        for index, path in enumerate(paths):
            data = path.read_bytes()
            assert (ihdr_depth(data), ihdr_color_type(data)) == (8, 2)  # 8-bit RGB
            np.testing.assert_array_equal(decode_imagecodecs(data), expected[index])
            np.testing.assert_array_equal(decode_pillow(data), expected[index])
            assert record(data)["mapping"] == "colormap" and record(data)["cmap"] == name
    encoded = tensorpng.encode(tensor[1], cmap=name, encoder="device")
    np.testing.assert_array_equal(decode_pypng(encoded), expected[1])
    assert encoded == tensorpng.encode(tensor[1], cmap=name, encoder="device")


def test_colormap_after_the_value_mapping(tmp_path: Path) -> None:
    # value_range / mean / std map first, then the colors: the same as coloring the mapped values.
    rng = np.random.default_rng(3)
    mapped = away_from_ties(rng, (1, 16, 18))
    x = torch.from_numpy((mapped - 0.25) / 0.5)  # normalized with mean 0.25, std 0.5
    expected = cmap_table("magma")[samples8(mapped[0])]
    for encoder in ("cpu", "device"):
        data = tensorpng.encode(x, cmap="magma", mean=0.25, std=0.5, encoder=encoder)
        np.testing.assert_array_equal(decode_imagecodecs(data), expected)
    wide = torch.from_numpy(mapped * 4 - 1)  # values in [-1, 3]
    for encoder in ("cpu", "device"):
        data = tensorpng.encode(wide, cmap="turbo", value_range=(-1, 3), encoder=encoder)
        np.testing.assert_array_equal(decode_imagecodecs(data), cmap_table("turbo")[samples8(mapped[0])])


def test_colormap_errors(tmp_path: Path) -> None:
    gray = np.zeros((4, 5), np.float32)
    rgb = np.zeros((4, 5, 3), np.float32)
    with pytest.raises(ShapeError, match=r"cmap= colors single-channel images.*3 channels"):
        tensorpng.save(rgb, tmp_path / "a.png", cmap="viridis")
    with pytest.raises(ShapeError, match=r"3 channels"):
        tensorpng.to_array(rgb, cmap="viridis")
    with pytest.raises(ShapeError, match=r"3 channels"):
        tensorpng.save(torch.zeros(2, 3, 4, 5), tmp_path / "b.png", cmap="viridis", encoder="device")
    with pytest.raises(OptionError, match=r"cmap= writes 8-bit RGB; drop bits=16"):
        tensorpng.save(gray, tmp_path / "c.png", cmap="viridis", bits=16)
    with pytest.raises(OptionError, match=r"unknown colormap 'jet'.*viridis"):
        tensorpng.save(gray, tmp_path / "d.png", cmap="jet")
    with pytest.raises(OptionError, match=r"either cmap= .* or palette="):
        tensorpng.save(gray.astype(np.uint8), tmp_path / "e.png", cmap="viridis", palette="voc")
    with pytest.raises(OptionError, match=r"cmap is a colormap name"):
        tensorpng.encode(gray, cmap=3)
    nothing_written(tmp_path)


# ---------------------------------------------------------------------------------------------
# Palette PNGs


def labels_up_to(maximum: int, shape: tuple[int, int] = (9, 13), seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, maximum + 1, shape)
    labels.flat[0] = maximum  # the maximum is present
    labels.flat[1] = 0
    return labels


@pytest.mark.parametrize("maximum", sorted(DEPTH_FOR_MAX))
@pytest.mark.parametrize("kind", ["numpy-int64", "numpy-uint8", "torch-long", "torch-uint8"])
def test_palette_png_through_save_and_encode(maximum: int, kind: str, tmp_path: Path) -> None:
    from PIL import Image

    labels = labels_up_to(maximum)
    x: Any = {
        "numpy-int64": labels,
        "numpy-uint8": labels.astype(np.uint8),
        "torch-long": torch.from_numpy(labels),
        "torch-uint8": torch.from_numpy(labels.astype(np.uint8)),
    }[kind]
    voc = voc_colors()
    (path,) = tensorpng.save(x, tmp_path / "labels.png", palette="voc")
    data = path.read_bytes()
    assert data == tensorpng.encode(x, palette="VOC")
    pngcheck(path)
    assert ihdr_depth(data) == DEPTH_FOR_MAX[maximum]
    assert ihdr_color_type(data) == 3
    table = plte(data)
    assert 1 <= len(table) <= 1 << DEPTH_FOR_MAX[maximum]
    np.testing.assert_array_equal(table, voc[: len(table)])
    with Image.open(io.BytesIO(data)) as image:
        assert image.mode == "P"
        np.testing.assert_array_equal(np.asarray(image), labels)
    np.testing.assert_array_equal(decode_imagecodecs(data), voc[labels])
    np.testing.assert_array_equal(decode_opencv(data), voc[labels])
    assert record(data)["mapping"] == "palette"
    # load returns the labels themselves, in their dtype and layout.
    loaded = tensorpng.load(path)
    assert type(loaded) is type(x)
    np.testing.assert_array_equal(as_numpy(loaded), labels)
    assert as_numpy(loaded).dtype == as_numpy(x).dtype


def test_palette_and_colormap_through_the_writer(tmp_path: Path) -> None:
    labels = torch.from_numpy(np.stack([labels_up_to(3, seed=1), labels_up_to(15, seed=2)]))
    values = torch.from_numpy(away_from_ties(np.random.default_rng(9), (2, 1, 16, 16)))
    with tensorpng.Writer(tmp_path) as writer:
        writer.save(labels, "labels/{index}.png", palette="voc", layout="NHW")
        writer.save(values, "cpu/{index}.png", cmap="plasma")
        writer.save(values, "dev/{index}.png", cmap="plasma", encoder="device")
    for index, depth in enumerate((2, 4)):
        path = tmp_path / "labels" / f"{index}.png"
        data = path.read_bytes()
        pngcheck(path)
        assert (ihdr_depth(data), ihdr_color_type(data)) == (depth, 3)
        np.testing.assert_array_equal(decode_pillow(data), labels[index].numpy())
        loaded = tensorpng.load(path)
        assert loaded.dtype == torch.int64 and torch.equal(loaded, labels[index])
        for folder in ("cpu", "dev"):
            colors = decode_imagecodecs((tmp_path / folder / f"{index}.png").read_bytes())
            np.testing.assert_array_equal(colors, cmap_table("plasma")[samples8(values[index, 0].numpy())])


def test_voc_palette_colors() -> None:
    voc = voc_colors()
    assert voc[0].tolist() == [0, 0, 0]
    assert voc[1].tolist() == [128, 0, 0]
    assert voc[15].tolist() == [192, 128, 128]  # "person"
    assert voc[255].tolist() == [224, 224, 192]  # "void"
    labels = np.arange(256, dtype=np.uint8).reshape(16, 16)
    for palette in ("voc", True):
        data = tensorpng.encode(labels, palette=palette)
        np.testing.assert_array_equal(plte(data), voc)
        np.testing.assert_array_equal(decode_imagecodecs(data), voc[labels])


def test_custom_palette_list(tmp_path: Path) -> None:
    palette = [[10, 20, 30], [200, 0, 0], [0, 255, 0], [1, 2, 3], [9, 9, 9]]
    labels = labels_up_to(4, seed=5)
    (path,) = tensorpng.save(labels, tmp_path / "custom.png", palette=palette)
    data = path.read_bytes()
    pngcheck(path)
    assert ihdr_depth(data) == 4
    np.testing.assert_array_equal(plte(data), np.array(palette, np.uint8))
    np.testing.assert_array_equal(decode_imagecodecs(data), np.array(palette, np.uint8)[labels])
    np.testing.assert_array_equal(decode_pillow(data), labels)
    loaded = tensorpng.load(path)
    np.testing.assert_array_equal(loaded, labels)
    assert loaded.dtype == labels.dtype


def test_palette_with_repeated_colors_loads_the_labels(tmp_path: Path) -> None:
    # Two labels drawn in one color: the decoded RGB cannot tell them apart, the indices can.
    palette = [[0, 0, 0], [0, 0, 0], [255, 0, 0], [255, 0, 0]]
    labels = np.array([[0, 1, 2, 3], [3, 2, 1, 0]], dtype=np.int16)
    (path,) = tensorpng.save(labels, tmp_path / "dup.png", palette=palette)
    pngcheck(path)
    loaded = tensorpng.load(path)
    np.testing.assert_array_equal(loaded, labels)
    assert loaded.dtype == np.int16


def test_bool_labels_are_indices_0_and_1(tmp_path: Path) -> None:
    mask = np.zeros((7, 11), dtype=bool)
    mask[2:5, 3:9] = True
    (path,) = tensorpng.save(mask, tmp_path / "mask.png", palette=[[0, 0, 0], [255, 255, 255]])
    data = path.read_bytes()
    pngcheck(path)
    assert ihdr_depth(data) == 1
    np.testing.assert_array_equal(decode_pillow(data), mask.astype(np.uint8))
    loaded = tensorpng.load(path)
    assert loaded.dtype == bool
    np.testing.assert_array_equal(loaded, mask)
    tensor_mask = torch.from_numpy(mask)
    data = tensorpng.encode(tensor_mask, palette=True)
    np.testing.assert_array_equal(decode_pillow(data), mask.astype(np.uint8))


@pytest.mark.parametrize(
    ("x", "options", "error", "match"),
    [
        (np.full((3, 4), 256), {"palette": "voc"}, ValueRangeError, r"labels 0\.\.255.*256"),
        (torch.full((3, 4), 300), {"palette": True}, ValueRangeError, r"labels 0\.\.255.*300"),
        (np.full((3, 4), 0.5), {"palette": "voc"}, DTypeError, r"palette= takes integer labels.*float64"),
        (torch.zeros(3, 4), {"palette": "voc"}, DTypeError, r"palette= takes integer labels.*float32"),
        (np.array([[0, -1], [2, 3]]), {"palette": "voc"}, ValueRangeError, r"negative"),
        (
            np.ones((3, 4), np.uint8),
            {"palette": "voc", "mean": 0.5, "std": 0.2},
            OptionError,
            r"palette= writes integer labels as they are",
        ),
        (
            np.ones((3, 4), np.uint8),
            {"palette": "voc", "value_range": (0, 9)},
            OptionError,
            r"drop mean/std/value_range",
        ),
        (
            np.ones((3, 4), np.uint8),
            {"palette": "voc", "bits": 16},
            OptionError,
            r"palette= writes integer labels",
        ),
        (
            np.ones((3, 4, 3), np.uint8),
            {"palette": "voc"},
            ShapeError,
            r"palette= colors single-channel.*3 channels",
        ),
        (
            np.full((3, 4), 5),
            {"palette": [[0, 0, 0], [1, 1, 1]]},
            ValueRangeError,
            r"labels reach 5 but the palette has 2",
        ),
        (np.ones((3, 4), np.uint8), {"palette": "pascal"}, OptionError, r"unknown palette 'pascal'"),
    ],
)
def test_palette_errors(
    x: Any, options: dict[str, Any], error: type[Exception], match: str, tmp_path: Path
) -> None:
    with pytest.raises(error, match=match):
        tensorpng.save(x, tmp_path / "out.png", **options)
    with pytest.raises(error, match=match):
        tensorpng.encode(x, **options)
    with pytest.raises(error, match=match), tensorpng.Writer(tmp_path / "writer") as writer:
        writer.save(x, "w.png", **options)
    nothing_written(tmp_path)


# ---------------------------------------------------------------------------------------------
# The mapping record


def check_batch_records(paths: list[Path], x: torch.Tensor, expected: dict[str, Any]) -> None:
    assert len(paths) == x.shape[0]
    for index, path in enumerate(paths):
        entry = record(path.read_bytes())
        low, high = finite_extremes(x[index])
        assert entry["index"] == index
        assert entry["min"] == pytest.approx(low, abs=0) and entry["max"] == pytest.approx(high, abs=0)
        assert entry["version"] == tensorpng.__version__
        for key, value in expected.items():
            assert entry[key] == value, (key, entry[key], value)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("encoder", ["auto", "device"])
def test_record_of_a_normalized_torch_batch(dtype: torch.dtype, encoder: str, tmp_path: Path) -> None:
    x = (torch.randn(3, 3, 10, 12, generator=torch.Generator().manual_seed(1)) * 1.5).to(dtype)
    x[1, 0, 0, 0] = float("inf")  # not finite: not the max
    x[2, 2, 3, 3] = -float("inf")
    with pytest.warns(RuntimeWarning, match="NaN"):
        x[0, 1, 2, 2] = float("nan")
        paths = tensorpng.save(x, tmp_path / "b.png", mean=IMAGENET_MEAN, std=IMAGENET_STD, encoder=encoder)
    name = str(dtype).removeprefix("torch.")
    check_batch_records(
        paths,
        x,
        {
            "framework": "torch",
            "dtype": name,
            "shape": [3, 3, 10, 12],
            "layout": "NCHW",
            "mapping": "affine",
            "bits": 8,
            "mean": list(IMAGENET_MEAN),
            "std": list(IMAGENET_STD),
            "scale": None,
            "value_range": [0.0, 1.0],
        },
    )
    if dtype == torch.bfloat16:
        assert record(paths[0].read_bytes())["dtype"] == "bfloat16"


@pytest.mark.parametrize("encoder", ["auto", "device"])
def test_record_with_scale_image(encoder: str, tmp_path: Path) -> None:
    x = torch.rand(2, 3, 8, 9, generator=torch.Generator().manual_seed(2)) * 7 - 3
    x[1] *= 0.1
    paths = tensorpng.save(x, tmp_path / "s.png", scale="image", bits=16, encoder=encoder)
    for index, path in enumerate(paths):
        entry = record(path.read_bytes())
        low, high = finite_extremes(x[index])
        assert entry["scale"] == "image" and entry["bits"] == 16 and entry["index"] == index
        assert entry["value_range"] == [pytest.approx(low, rel=1e-7), pytest.approx(high, rel=1e-7)]
        assert (entry["min"], entry["max"]) == (low, high)


def test_record_with_scale_image_and_mean_std(tmp_path: Path) -> None:
    # value_range holds the values after x * std + mean.
    x = np.random.default_rng(4).normal(size=(6, 7, 3)).astype(np.float32)
    mean, std = (0.1, 0.2, 0.3), (2.0, 0.5, 1.0)
    (path,) = tensorpng.save(x, tmp_path / "x.png", mean=mean, std=std, scale="image")
    denormalized = x.astype(np.float64) * np.array(std) + np.array(mean)
    entry = record(path.read_bytes())
    assert entry["value_range"] == [
        pytest.approx(denormalized.min(), rel=1e-6),
        pytest.approx(denormalized.max(), rel=1e-6),
    ]
    assert (entry["min"], entry["max"]) == finite_extremes(x)


def test_record_of_numpy_hwc_and_of_integers(tmp_path: Path) -> None:
    x = np.random.default_rng(5).random((5, 6, 3))
    (path,) = tensorpng.save(x, tmp_path / "f.png")
    entry = record(path.read_bytes())
    assert entry["framework"] == "numpy" and entry["dtype"] == "float64" and entry["layout"] == "HWC"
    assert entry["shape"] == [5, 6, 3] and entry["index"] is None and entry["mapping"] == "affine"
    assert entry["mean"] is None and entry["std"] is None and entry["value_range"] == [0.0, 1.0]
    assert (entry["min"], entry["max"]) == finite_extremes(x)

    labels = np.arange(20, dtype=np.int32).reshape(4, 5) * 3
    (path,) = tensorpng.save(labels, tmp_path / "i.png")
    entry = record(path.read_bytes())
    assert entry["mapping"] == "copy" and entry["bits"] == 8 and entry["dtype"] == "int32"
    assert entry["value_range"] is None and (entry["min"], entry["max"]) == (0.0, 57.0)
    (path,) = tensorpng.save(labels * 1000, tmp_path / "i16.png")
    assert record(path.read_bytes())["bits"] == 16
    (path,) = tensorpng.save(np.eye(3, dtype=bool), tmp_path / "b.png")
    assert record(path.read_bytes())["mapping"] == "bool"


def test_user_metadata_beside_the_record(tmp_path: Path) -> None:
    user = {"Software": "trainer 2", "step": "1200", "note": "naïve café"}  # Latin-1: tEXt
    (path,) = tensorpng.save(np.zeros((3, 4)), tmp_path / "m.png", metadata=user)
    found = texts(path.read_bytes())
    assert set(found) == {"tensorpng", *user}
    for key, value in user.items():
        assert found[key] == (b"tEXt", value)
    assert json.loads(found["tensorpng"][1])["layout"] == "HW"
    pngcheck(path)


def test_non_latin1_metadata_goes_to_itxt(tmp_path: Path) -> None:
    user = {"prompt": "a cat ☃ 猫", "plain": "abc"}
    for encoder in ("cpu", "device"):
        data = tensorpng.encode(torch.zeros(1, 4, 5), metadata=user, encoder=encoder)
        found = texts(data)
        assert found["prompt"] == (b"iTXt", "a cat ☃ 猫")
        assert found["plain"] == (b"tEXt", "abc")
        assert found["tensorpng"][0] == b"tEXt"
        pngcheck_bytes(data, tmp_path)


@pytest.mark.parametrize("encoder", ["auto", "device"])
def test_metadata_false_writes_no_text_chunks(encoder: str, tmp_path: Path) -> None:
    x = torch.rand(2, 3, 5, 6)
    paths = tensorpng.save(x, tmp_path / "n.png", metadata=False, encoder=encoder)
    paths.append(tmp_path / "e.png")
    paths[-1].write_bytes(tensorpng.encode(x[0], metadata=False, encoder=encoder))
    for path in paths:
        kinds = [tag for tag, _ in chunks(path.read_bytes())]
        assert not set(kinds) & set(TEXT_CHUNKS), kinds
        assert kinds[0] == b"IHDR" and kinds[-1] == b"IEND"
    # Without a record, load returns the raw samples.
    loaded = tensorpng.load(paths[0], as_tensor=False)
    np.testing.assert_array_equal(loaded, samples8(x[0].numpy().transpose(1, 2, 0)))
    (path,) = tensorpng.save(np.zeros((2, 2), np.uint8), tmp_path / "f.png", metadata=False, palette="voc")
    assert not {tag for tag, _ in chunks(path.read_bytes())} & set(TEXT_CHUNKS)


def test_reserved_metadata_key(tmp_path: Path) -> None:
    reserved = {"tensorpng": "x", "other": "y"}
    with pytest.raises(OptionError, match=r"'tensorpng' is tensorpng's own record"):
        tensorpng.save(np.zeros((2, 2)), tmp_path / "r.png", metadata=reserved)
    with pytest.raises(OptionError, match=r"own record"):
        tensorpng.encode(np.zeros((2, 2)), metadata=reserved)
    with pytest.raises(OptionError, match=r"own record"):
        tensorpng.Writer(tmp_path / "w", metadata=reserved)
    with pytest.raises(OptionError, match=r"own record"), tensorpng.Writer(tmp_path / "w2") as writer:
        writer.save(np.zeros((2, 2)), "x.png", metadata=reserved)
    nothing_written(tmp_path)


def test_records_written_by_the_writer(tmp_path: Path) -> None:
    x = torch.randn(3, 3, 6, 7, generator=torch.Generator().manual_seed(6)).to(torch.bfloat16)
    common = {
        "framework": "torch",
        "dtype": "bfloat16",
        "shape": [3, 3, 6, 7],
        "layout": "NCHW",
        "mean": list(IMAGENET_MEAN),
        "std": list(IMAGENET_STD),
        "bits": 8,
    }
    array = np.random.default_rng(8).random((2, 5, 4, 1)).astype(np.float32)
    with tensorpng.Writer(tmp_path, metadata={"run": "r1"}) as writer:
        writer.save(x, "cpu/{index}.png", mean=IMAGENET_MEAN, std=IMAGENET_STD)
        writer.save(x, "dev/{index}.png", mean=IMAGENET_MEAN, std=IMAGENET_STD, encoder="device")
        writer.save(x, "off/{index}.png", metadata=False)
        writer.save(array, "np/{index}.png", scale="image")
    for folder in ("cpu", "dev"):
        paths = [tmp_path / folder / f"{i}.png" for i in range(3)]
        check_batch_records(paths, x, common)
        for path in paths:
            assert texts(path.read_bytes())["run"] == (b"tEXt", "r1")
    for i in range(3):
        assert not {tag for tag, _ in chunks((tmp_path / "off" / f"{i}.png").read_bytes())} & set(TEXT_CHUNKS)
    for i in range(2):
        entry = record((tmp_path / "np" / f"{i}.png").read_bytes())
        low, high = finite_extremes(array[i])
        assert entry["framework"] == "numpy" and entry["layout"] == "NHWC" and entry["index"] == i
        assert entry["value_range"] == [pytest.approx(low), pytest.approx(high)]
        assert (entry["min"], entry["max"]) == (low, high)


# ---------------------------------------------------------------------------------------------
# load: round trips


@pytest.mark.parametrize("bits", [8, 16])
@pytest.mark.parametrize("normalized", [False, True])
@pytest.mark.parametrize("as_tensor", [None, True, False])
def test_load_round_trip_torch_chw(
    bits: int, normalized: bool, as_tensor: bool | None, tmp_path: Path
) -> None:
    x = torch.rand(3, 12, 17, generator=torch.Generator().manual_seed(bits))
    options: dict[str, Any] = {"bits": bits}
    std = np.ones(3)
    if normalized:
        std = np.array(IMAGENET_STD)
        x = (x - torch.tensor(IMAGENET_MEAN)[:, None, None]) / torch.tensor(IMAGENET_STD)[:, None, None]
        options.update(mean=IMAGENET_MEAN, std=IMAGENET_STD)
    (path,) = tensorpng.save(x, tmp_path / "x.png", **options)
    loaded = tensorpng.load(path, as_tensor=as_tensor)
    if as_tensor is False:
        assert isinstance(loaded, np.ndarray)
    else:  # None: saved from torch, and torch is imported
        assert isinstance(loaded, torch.Tensor)
    values = as_numpy(loaded)
    assert values.shape == (3, 12, 17) and values.dtype == np.float32
    step = STEP8 if bits == 8 else STEP16
    error = np.abs(values.astype(np.float64) - x.double().numpy()).max(axis=(1, 2))
    assert np.all(error <= 0.5 * step / std + EPS), error


def test_sixteen_bit_unit_floats_load_within_one_step(tmp_path: Path) -> None:
    x = torch.rand(3, 64, 80, generator=torch.Generator().manual_seed(11))
    x[0, 0, :2] = torch.tensor([0.0, 1.0])
    (path,) = tensorpng.save(x, tmp_path / "x16.png", bits=16)
    assert ihdr_depth(path.read_bytes()) == 16
    loaded = tensorpng.load(path)
    assert isinstance(loaded, torch.Tensor) and loaded.dtype == torch.float32 and loaded.shape == x.shape
    error = (loaded.double() - x.double()).abs().max().item()
    assert error <= STEP16 + 1e-9
    assert error <= 0.5 * STEP16 + 1e-7  # rounded to nearest, then read back in float32
    assert loaded[0, 0, 0].item() == 0.0 and loaded[0, 0, 1].item() == 1.0


def test_normalized_imagenet_photo_loads_within_half_a_step(photo: np.ndarray, tmp_path: Path) -> None:
    mean = torch.tensor(IMAGENET_MEAN)[:, None, None]
    std = torch.tensor(IMAGENET_STD)[:, None, None]
    x = (torch.from_numpy(photo).permute(2, 0, 1).float() / 255 - mean) / std
    batch = torch.stack([x, x.flip(-1)])
    paths = tensorpng.save(batch, tmp_path / "photo.png", mean=IMAGENET_MEAN, std=IMAGENET_STD)
    for path, image in zip(paths, batch, strict=True):
        loaded = tensorpng.load(path)
        assert isinstance(loaded, torch.Tensor) and loaded.shape == (3, 512, 512)
        error = (loaded.double() - image.double()).abs().amax(dim=(1, 2)).numpy()
        assert np.all(error <= 0.5 / 255 / np.array(IMAGENET_STD) + EPS), error


def test_numpy_sources_load_as_arrays_in_their_layout(tmp_path: Path) -> None:
    rng = np.random.default_rng(12)
    hwc = rng.random((9, 10, 3))
    gray = rng.random((9, 10)).astype(np.float32)
    hw1 = rng.random((9, 10, 1)).astype(np.float32)
    for name, x in (("hwc", hwc), ("gray", gray), ("hw1", hw1)):
        (path,) = tensorpng.save(x, tmp_path / f"{name}.png", bits=16)
        loaded = tensorpng.load(path)  # None: the source was NumPy
        assert isinstance(loaded, np.ndarray)
        assert loaded.shape == x.shape and loaded.dtype == x.dtype
        assert np.abs(loaded - x).max() <= 0.5 * STEP16 + 1e-7
        tensor = tensorpng.load(path, as_tensor=True)  # the source's layout, as a tensor too
        assert isinstance(tensor, torch.Tensor)
        np.testing.assert_array_equal(tensor.numpy(), loaded)


def test_torch_sources_load_chw(tmp_path: Path) -> None:
    x = torch.rand(2, 1, 6, 8)
    paths = tensorpng.save(x, tmp_path / "g.png")
    loaded = tensorpng.load(paths[1])
    assert isinstance(loaded, torch.Tensor) and loaded.shape == (1, 6, 8)
    assert (loaded - x[1]).abs().max().item() <= 0.5 * STEP8 + EPS
    hw = torch.rand(6, 8)
    (path,) = tensorpng.save(hw, tmp_path / "hw.png")
    loaded = tensorpng.load(path)
    assert loaded.shape == (6, 8)
    # a torch NHWC batch comes back HWC, its own layout
    nhwc = torch.rand(2, 6, 8, 3)
    paths = tensorpng.save(nhwc, tmp_path / "nhwc.png", layout="NHWC")
    loaded = tensorpng.load(paths[0], as_tensor=False)
    assert loaded.shape == (6, 8, 3)
    assert np.abs(loaded - nhwc[0].numpy()).max() <= 0.5 * STEP8 + EPS


def test_bfloat16_loads_as_bfloat16(tmp_path: Path) -> None:
    x = torch.rand(3, 5, 6).to(torch.bfloat16)
    (path,) = tensorpng.save(x, tmp_path / "bf.png", bits=16)
    loaded = tensorpng.load(path)
    assert loaded.dtype == torch.bfloat16 and loaded.shape == (3, 5, 6)
    # bfloat16 keeps 8 significant bits: within half a bfloat16 step of a value below 1
    assert (loaded.float() - x.float()).abs().max().item() <= 2**-9
    assert tensorpng.load(path, as_tensor=False).dtype == np.float32


def test_numpy_source_without_torch_imported(tmp_path: Path) -> None:
    # as_tensor=None gives an array when torch is not imported, even for a torch-made file.
    (path,) = tensorpng.save(torch.rand(3, 4, 5), tmp_path / "t.png")
    script = f"""
        import sys, tensorpng
        value = tensorpng.load({str(path)!r})
        assert "torch" not in sys.modules, "load imported torch"
        print(type(value).__name__, value.shape, value.dtype)
    """
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)], capture_output=True, text=True, timeout=120, cwd=REPO
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["ndarray", "(3,", "4,", "5)", "float32"]


def test_scale_image_round_trip(tmp_path: Path) -> None:
    x = torch.randn(2, 3, 10, 11, generator=torch.Generator().manual_seed(13)) * 40 + 7
    for bits, step in ((8, STEP8), (16, STEP16)):
        paths = tensorpng.save(x, tmp_path / f"s{bits}.png", scale="image", bits=bits)
        for path, image in zip(paths, x, strict=True):
            low, high = finite_extremes(image)
            loaded = tensorpng.load(path)
            error = (loaded.double() - image.double()).abs().max().item()
            assert error <= 0.5 * step * (high - low) + 1e-5 * max(abs(low), abs(high))


@pytest.mark.parametrize("name", COLORMAP_NAMES)
@pytest.mark.parametrize("encoder", ["auto", "device"])
def test_colormap_round_trip(name: str, encoder: str, tmp_path: Path) -> None:
    rng = np.random.default_rng(14)
    values = rng.uniform(-0.2, 1.2, (2, 1, 20, 24)).astype(np.float32)
    values[0, 0].flat[:256] = np.arange(256) / 255  # every color
    paths = tensorpng.save(torch.from_numpy(values), tmp_path / "c.png", cmap=name, encoder=encoder)
    for path, image in zip(paths, values, strict=True):
        loaded = tensorpng.load(path)
        assert isinstance(loaded, torch.Tensor) and loaded.shape == (1, 20, 24)
        error = np.abs(loaded.double().numpy() - np.clip(image, 0, 1)).max()
        assert error <= STEP8 + EPS, error
    # value_range is undone too; a NumPy HW source comes back HW.
    wide = rng.uniform(-2.0, 6.0, (15, 16))
    (path,) = tensorpng.save(wide, tmp_path / "w.png", cmap=name, value_range=(-2, 6))
    loaded = tensorpng.load(path)
    assert isinstance(loaded, np.ndarray) and loaded.shape == (15, 16) and loaded.dtype == np.float64
    assert np.abs(loaded - wide).max() <= 8 * STEP8 + EPS


@pytest.mark.parametrize(
    ("x", "dtype"),
    [
        (np.arange(60, dtype=np.int32).reshape(6, 10) * 4, np.int32),
        (np.arange(60, dtype=np.int32).reshape(6, 10) * 1000, np.int32),
        (np.arange(60, dtype=np.uint16).reshape(6, 10) * 1111, np.uint16),
        (np.arange(60, dtype=np.uint8).reshape(6, 10), np.uint8),
        (np.arange(60, dtype=np.int64).reshape(6, 10), np.int64),
        (np.eye(6, 10, dtype=bool), np.bool_),
    ],
)
def test_integer_and_bool_round_trips(x: np.ndarray, dtype: type, tmp_path: Path) -> None:
    (path,) = tensorpng.save(x, tmp_path / "i.png")
    loaded = tensorpng.load(path)
    assert loaded.dtype == dtype
    np.testing.assert_array_equal(loaded, x)
    tensor = tensorpng.load(path, as_tensor=True)
    np.testing.assert_array_equal(as_numpy(tensor), x)


def test_torch_integer_round_trips(tmp_path: Path) -> None:
    for x in (
        torch.arange(48, dtype=torch.int32).reshape(1, 6, 8) * 7,
        torch.arange(48, dtype=torch.int16).reshape(6, 8) * 600,
        torch.rand(2, 6, 8) > 0.5,
    ):
        (path,) = tensorpng.save(x, tmp_path / "t.png")
        loaded = tensorpng.load(path)
        assert isinstance(loaded, torch.Tensor) and loaded.dtype == x.dtype and loaded.shape == x.shape
        assert torch.equal(loaded, x)


def test_widened_uint8_round_trips(tmp_path: Path) -> None:
    x = np.arange(256, dtype=np.uint8).reshape(16, 16)
    (path,) = tensorpng.save(x, tmp_path / "w.png", bits=16)
    assert ihdr_depth(path.read_bytes()) == 16
    loaded = tensorpng.load(path)
    assert loaded.dtype == np.uint8
    np.testing.assert_array_equal(loaded, x)


def test_pillow_written_png_loads_as_its_samples(tmp_path: Path) -> None:
    from PIL import Image

    rgb = np.random.default_rng(15).integers(0, 256, (13, 17, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "pil.png")
    assert "tensorpng" not in texts((tmp_path / "pil.png").read_bytes())
    loaded = tensorpng.load(tmp_path / "pil.png")
    assert isinstance(loaded, np.ndarray) and loaded.dtype == np.uint8
    np.testing.assert_array_equal(loaded, rgb)
    tensor = tensorpng.load(tmp_path / "pil.png", as_tensor=True)
    assert tensor.dtype == torch.uint8
    np.testing.assert_array_equal(tensor.numpy(), rgb.transpose(2, 0, 1))
    gray = rgb[..., 0]
    Image.fromarray(gray).save(tmp_path / "gray.png")
    np.testing.assert_array_equal(tensorpng.load(tmp_path / "gray.png"), gray)


def write_pypng_rgb16(path: Path, image: np.ndarray) -> None:
    import png

    height, width, _ = image.shape
    writer = png.Writer(width, height, greyscale=False, bitdepth=16)
    with open(path, "wb") as handle:
        writer.write(handle, image.reshape(height, width * 3).tolist())


def test_pypng_sixteen_bit_rgb_loads_exactly(tmp_path: Path) -> None:
    image = np.random.default_rng(16).integers(0, 65536, (11, 9, 3), dtype=np.uint16)
    write_pypng_rgb16(tmp_path / "pypng.png", image)
    loaded = tensorpng.load(tmp_path / "pypng.png")
    assert isinstance(loaded, np.ndarray) and loaded.dtype == np.uint16
    np.testing.assert_array_equal(loaded, image)
    tensor = tensorpng.load(tmp_path / "pypng.png", as_tensor=True)
    assert tensor.dtype == torch.uint16 and tensor.shape == (3, 11, 9)
    np.testing.assert_array_equal(as_numpy(tensor), image.transpose(2, 0, 1))


def test_grid_loads_hwc(tmp_path: Path) -> None:
    x = torch.rand(4, 3, 5, 6)
    (path,) = tensorpng.save(x, tmp_path / "grid.png", grid=True, nrow=2, padding=1)
    entry = record(path.read_bytes())
    assert entry["grid"] == {"count": 4, "nrow": 2, "padding": 1} and entry["index"] is None
    loaded = tensorpng.load(path, as_tensor=False)
    assert loaded.shape == (2 * 5 + 3, 2 * 6 + 3, 3)
    assert np.abs(loaded[1:6, 1:7] - x[0].numpy().transpose(1, 2, 0)).max() <= 0.5 * STEP8 + EPS


def corrupt_files(tmp_path: Path) -> dict[str, Path]:
    """A good file cut or damaged several ways, and files that are not PNGs."""
    x = np.random.default_rng(17).random((32, 40, 3)).astype(np.float32)
    data = tensorpng.encode(x, compression="none")
    idat = data.index(b"IDAT")
    record_at = data.index(b"tEXt")
    cases = {
        "signature-only": data[:8],
        "cut-in-ihdr": data[:20],
        "cut-in-idat": data[: idat + 200],
        "cut-half": data[: len(data) // 2],
        "idat-crc": data[: idat + 100] + bytes([data[idat + 100] ^ 0xFF]) + data[idat + 101 :],
        "record-damaged": data[: record_at + 30]
        + bytes([data[record_at + 30] ^ 0x01])
        + data[record_at + 31 :],
        "empty": b"",
        "text": b"this is not a PNG file at all\n",
        "jpeg-magic": b"\xff\xd8\xff\xe0" + bytes(100),
    }
    paths = {}
    for name, content in cases.items():
        paths[name] = tmp_path / f"{name}.png"
        paths[name].write_bytes(content)
    return paths


def test_corrupt_and_non_png_files_raise_decode_error(tmp_path: Path) -> None:
    for name, path in corrupt_files(tmp_path).items():
        with pytest.raises(DecodeError) as caught:
            tensorpng.load(path)
        assert isinstance(caught.value, ValueError), name
        if name in ("empty", "text", "jpeg-magic"):
            assert "not a PNG" in str(caught.value)
        if name in ("record-damaged", "idat-crc"):
            assert "fails its CRC check" in str(caught.value)


def test_malformed_record_is_ignored_with_a_warning(tmp_path: Path) -> None:
    image = np.arange(6, dtype=np.uint8).reshape(2, 3)
    for value, match in (("{not json", "not valid JSON"), ("[1, 2]", "not a JSON object")):
        data = tensorpng.png.encode_png(image[..., None], text={"tensorpng": value})
        (tmp_path / "m.png").write_bytes(data)
        with pytest.warns(tensorpng.RecordWarning, match=match):
            loaded = tensorpng.load(tmp_path / "m.png")
        np.testing.assert_array_equal(loaded, image)
