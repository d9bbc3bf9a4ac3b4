"""The result of load does not depend on the decoder: each backend alone (chosen through the
documented TENSORPNG_DECODER variable) gives imagecodecs' forms, on files of every kind."""

from __future__ import annotations

import io
import struct
import sys
import zlib
from pathlib import Path

import imagecodecs
import numpy as np
import pytest

import tensorpng

BACKENDS = ("imagecodecs", "opencv", "pillow")


def _chunk(tag: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + tag + body + struct.pack(">I", zlib.crc32(tag + body))


def raw_png(rows: np.ndarray, width: int, height: int, depth: int, color: int, extra: bytes = b"") -> bytes:
    """A PNG of already-packed scanline bytes (filter 0), written by hand."""
    scan = np.concatenate([np.zeros((height, 1), np.uint8), rows.reshape(height, -1)], axis=1)
    head = struct.pack(">IIBBBBB", width, height, depth, color, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", head)
        + extra
        + _chunk(b"IDAT", zlib.compress(scan.tobytes()))
        + _chunk(b"IEND", b"")
    )


def cases() -> dict[str, bytes]:
    rng = np.random.default_rng(5)
    out: dict[str, bytes] = {}
    for depth in (1, 2, 4):
        values = rng.integers(0, 1 << depth, (6, 16), dtype=np.uint8)
        packed = np.packbits(
            np.unpackbits(values[..., None], axis=2)[..., 8 - depth :].reshape(6, -1), axis=1
        )
        out[f"gray{depth}"] = raw_png(packed, 16, 6, depth, 0)
        out[f"gray{depth}-trns"] = raw_png(packed, 16, 6, depth, 0, _chunk(b"tRNS", struct.pack(">H", 1)))
        palette = rng.integers(0, 256, (1 << depth) * 3, dtype=np.uint8).tobytes()
        out[f"palette{depth}"] = raw_png(packed, 16, 6, depth, 3, _chunk(b"PLTE", palette))
        out[f"palette{depth}-trns"] = raw_png(
            packed, 16, 6, depth, 3, _chunk(b"PLTE", palette) + _chunk(b"tRNS", b"\x00\x80")
        )
    rgb8 = rng.integers(0, 4, (6, 5, 3), dtype=np.uint8)
    out["rgb8-trns"] = raw_png(rgb8, 5, 6, 8, 2, _chunk(b"tRNS", struct.pack(">HHH", 1, 2, 3)))
    gray16 = rng.integers(0, 3, (6, 5), dtype=np.uint16).astype(">u2").view(np.uint8)
    out["gray16-trns"] = raw_png(gray16, 5, 6, 16, 0, _chunk(b"tRNS", struct.pack(">H", 2)))
    gray8 = rng.integers(0, 256, (6, 5), dtype=np.uint8)
    out["gray8"] = raw_png(gray8, 5, 6, 8, 0)
    return out


def test_the_variable_is_checked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "a.png"
    path.write_bytes(cases()["gray8"])
    monkeypatch.setenv("TENSORPNG_DECODER", "libpng")
    with pytest.raises(tensorpng.DecodeError, match="TENSORPNG_DECODER"):
        tensorpng.load(path)


@pytest.mark.parametrize("backend", BACKENDS)
def test_each_backend_alone_gives_imagecodecs_forms(
    backend: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TENSORPNG_DECODER", backend)
    assert_loads_as_imagecodecs(cases(), tmp_path)


def assert_loads_as_imagecodecs(files: dict[str, bytes], folder: Path, dtype: type | None = None) -> None:
    """``load`` of each file gives imagecodecs' array (and ``dtype``, where given)."""
    for name, data in files.items():
        expected = np.asarray(imagecodecs.png_decode(data))
        assert dtype is None or expected.dtype == dtype, name
        path = folder / f"{name}.png"
        path.write_bytes(data)
        loaded = tensorpng.load(path)
        assert loaded.dtype == expected.dtype and loaded.shape == expected.shape, (name, loaded.shape)
        np.testing.assert_array_equal(loaded, expected, err_msg=name)


@pytest.mark.parametrize("backend", BACKENDS)
def test_each_backend_alone_reads_tensorpng_files(
    backend: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rng = np.random.default_rng(6)
    inputs = {
        "float": rng.random((7, 9, 3)).astype(np.float32),
        "labels": rng.integers(0, 5, (7, 9)).astype(np.uint8),
        "cmap": rng.random((7, 9)),
        "bool": rng.random((7, 9)) > 0.5,
    }
    options = {"labels": {"palette": "voc"}, "cmap": {"cmap": "viridis"}}
    paths = {
        name: tensorpng.save(x, tmp_path / f"{name}.png", **options.get(name, {}))[0]
        for name, x in inputs.items()
    }
    reference = {name: tensorpng.load(path) for name, path in paths.items()}
    monkeypatch.setenv("TENSORPNG_DECODER", backend)
    for name, path in paths.items():
        loaded = tensorpng.load(path)
        assert loaded.dtype == reference[name].dtype and loaded.shape == reference[name].shape, name
        np.testing.assert_array_equal(loaded, reference[name], err_msg=name)


def sixteen_bit_colour() -> dict[str, bytes]:
    """16-bit gray+alpha, RGB (with and without tRNS) and RGBA: tensorpng's files (every
    filter type, on smooth and noisy samples) and pypng's interlaced ones."""
    import png as pypng

    rng = np.random.default_rng(8)
    ramp = np.add.outer(np.arange(9) * 4099, np.arange(13) * 2311).astype(np.uint16)
    out: dict[str, bytes] = {}
    for channels in (2, 3, 4):
        smooth = np.stack([ramp + 97 * c for c in range(channels)], axis=-1).astype(np.uint16)
        noise = rng.integers(0, 65536, (9, 13, channels), dtype=np.uint16)
        for kind, image in (("smooth", smooth), ("noise", noise)):
            out[f"{channels}ch-{kind}"] = tensorpng.encode(image, metadata=False)
        stream = io.BytesIO()
        writer = pypng.Writer(
            13, 9, greyscale=channels == 2, alpha=channels in (2, 4), bitdepth=16, interlace=True
        )
        writer.write(stream, noise.reshape(9, -1).tolist())
        out[f"{channels}ch-interlaced"] = stream.getvalue()
    rgb16 = rng.integers(0, 3, (6, 5, 3), dtype=np.uint16).astype(">u2").view(np.uint8)
    out["rgb16-trns"] = raw_png(rgb16, 5, 6, 16, 2, _chunk(b"tRNS", struct.pack(">HHH", 1, 2, 0)))
    return out


@pytest.mark.parametrize("backend", BACKENDS)
def test_each_backend_alone_reads_sixteen_bit_colour(
    backend: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Pillow reads 16-bit colour as 8-bit; load still gives every sample whole."""
    monkeypatch.setenv("TENSORPNG_DECODER", backend)
    assert_loads_as_imagecodecs(sixteen_bit_colour(), tmp_path, np.uint16)


def test_a_missing_decoder_is_skipped_with_its_install_hint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    image = np.random.default_rng(7).integers(0, 256, (4, 5, 3), dtype=np.uint8)
    path = tensorpng.save(image, tmp_path / "a.png")[0]
    monkeypatch.setitem(sys.modules, "imagecodecs", None)  # import imagecodecs raises ImportError
    np.testing.assert_array_equal(tensorpng.load(path), image)  # OpenCV reads it
    monkeypatch.setenv("TENSORPNG_DECODER", "imagecodecs")
    with pytest.raises(
        tensorpng.DecodeError, match=r"imagecodecs is not installed \(pip install imagecodecs\)"
    ):
        tensorpng.load(path)


@pytest.mark.parametrize("backend", BACKENDS)
def test_each_backend_alone_refuses_short_data_and_bad_crcs(
    backend: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Pillow alone used to fill missing rows with zeros and accept a bad IDAT CRC."""
    monkeypatch.setenv("TENSORPNG_DECODER", backend)
    good = cases()["gray8"]
    tall = bytearray(good)
    tall[16:24] = struct.pack(">II", 5, 9)  # IHDR claims 9 rows; the data holds 6
    tall[29:33] = struct.pack(">I", zlib.crc32(bytes(tall[12:29])))
    idat = good.index(b"IDAT")
    bad_crc = good[: idat + 6] + bytes([good[idat + 6] ^ 1]) + good[idat + 7 :]
    for name, data in (("tall", bytes(tall)), ("bad-crc", bad_crc)):
        path = tmp_path / f"{name}.png"
        path.write_bytes(data)
        with pytest.raises(tensorpng.DecodeError):
            tensorpng.load(path)
            pytest.fail(f"{backend} read {name}")


def out_of_range_keys() -> dict[str, bytes]:
    """Gray and RGB files whose tRNS key has bits past the bit depth (0x00FF in a 4-bit file):
    libpng, and so imagecodecs, compares only the key's low ``depth`` bits."""
    out: dict[str, bytes] = {}
    for depth, key in ((1, 0x0003), (2, 0x0107), (4, 0x00FF), (4, 0x001F), (8, 0x0105), (8, 0xFF00)):
        values = (np.arange(32) % (1 << depth)).astype(np.uint8).reshape(2, 16)
        bits = np.unpackbits(values[..., None], axis=2)[..., 8 - depth :].reshape(2, -1)
        out[f"gray{depth}-key{key:04x}"] = raw_png(
            np.packbits(bits, axis=1), 16, 2, depth, 0, _chunk(b"tRNS", struct.pack(">H", key))
        )
    rgb = np.array([[[1, 2, 3], [1, 2, 3]], [[0, 0, 0], [1, 1, 1]]], np.uint8)
    for key in ((0x0101, 2, 3), (1, 0x0102, 0x0003), (0xFF01, 0xFF02, 0xFF03)):
        out["rgb8-key" + "-".join(f"{k:04x}" for k in key)] = raw_png(
            rgb, 2, 2, 8, 2, _chunk(b"tRNS", struct.pack(">HHH", *key))
        )
    return out


@pytest.mark.parametrize("backend", BACKENDS)
def test_each_backend_alone_cuts_a_trns_key_to_the_bit_depth_as_libpng(
    backend: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from PIL import Image

    monkeypatch.setenv("TENSORPNG_DECODER", backend)
    for name, data in out_of_range_keys().items():
        expected = np.asarray(imagecodecs.png_decode(data))
        assert (expected[..., -1] == 0).any(), name  # the key matches some pixels
        path = tmp_path / f"{name}.png"
        path.write_bytes(data)
        loaded = tensorpng.load(path)
        assert loaded.dtype == expected.dtype and loaded.shape == expected.shape, (name, loaded.shape)
        np.testing.assert_array_equal(loaded, expected, err_msg=name)
        if "8-" in name:  # at 8 bits Pillow (its own reader, not libpng) agrees
            with Image.open(io.BytesIO(data)) as image:
                alpha = np.asarray(image.convert("LA" if name.startswith("gray") else "RGBA"))[..., -1]
            np.testing.assert_array_equal(loaded[..., -1], alpha, err_msg=name)


def test_a_row_longer_than_libpngs_limit_loads_where_any_decoder_reads_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """libpng (imagecodecs, OpenCV) refuses rows over 1,000,000 pixels; Pillow reads them. The
    default order goes on to the next decoder, so tensorpng reads its own wide files."""
    x = np.random.default_rng(3).integers(0, 256, (2, 1_100_000), dtype=np.uint8)
    (path,) = tensorpng.save(x, tmp_path / "wide.png")
    np.testing.assert_array_equal(tensorpng.load(path, as_tensor=False), x)
    monkeypatch.setenv("TENSORPNG_DECODER", "pillow")
    np.testing.assert_array_equal(tensorpng.load(path, as_tensor=False), x)
    monkeypatch.setenv("TENSORPNG_DECODER", "imagecodecs")
    with pytest.raises(tensorpng.DecodeError, match="imagecodecs"):
        tensorpng.load(path)


def test_pillow_follows_max_pixels_not_its_own_bomb_limit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """90M pixels: Pillow's Image.open would warn (DecompressionBombWarning); the caller's
    max_pixels is the one limit, checked before decoding."""
    import warnings

    width = height = 9500  # 90,250,000 pixels of 1-bit gray: a file of a few KiB
    data = raw_png(np.zeros((height, (width + 7) // 8), np.uint8), width, height, 1, 0)
    path = tmp_path / "big.png"
    path.write_bytes(data)
    monkeypatch.setenv("TENSORPNG_DECODER", "pillow")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        image = tensorpng.load(path, as_tensor=False)
    assert image.shape == (height, width) and not image.any()
    with pytest.raises(tensorpng.DecodeError, match="max_pixels"):
        tensorpng.load(path, max_pixels=90_000_000)
