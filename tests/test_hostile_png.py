"""Untrusted PNGs in load: decompression bombs, text bombs, and time bounded by the file."""

from __future__ import annotations

import inspect
import json
import struct
import time
import tracemalloc
import zlib
from pathlib import Path

import numpy as np
import pytest

import tensorpng
from tensorpng._png_chunks import chunk

SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png(width: int, height: int, depth: int, color: int, idat: bytes, extra: bytes = b"") -> bytes:
    head = struct.pack(">IIBBBBB", width, height, depth, color, 0, 0, 0)
    return SIGNATURE + chunk(b"IHDR", head) + extra + chunk(b"IDAT", idat) + chunk(b"IEND")


def zeros_stream(size: int) -> bytes:
    """A zlib stream of ``size`` zero bytes, made piecewise (no ``size``-byte buffer)."""
    deflater = zlib.compressobj(9)
    piece = bytes(1 << 20)
    parts = [deflater.compress(piece) for _ in range(size >> 20)]
    parts.append(deflater.compress(bytes(size & ((1 << 20) - 1))))
    return b"".join([*parts, deflater.flush()])


def peak_bytes(function: object) -> int:
    tracemalloc.start()
    try:
        function()  # type: ignore[operator]
    finally:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    return peak


# ---- decompression bombs ----------------------------------------------------------------------


def test_a_huge_declared_size_is_refused_before_allocating(tmp_path: Path) -> None:
    """The issue's example: a small file that declares 30000 x 30000 RGB (2.7 GB)."""
    path = tmp_path / "bomb.png"
    path.write_bytes(png(30000, 30000, 8, 2, zlib.compress(bytes(30000 * 3 + 1) * 4)))

    def refused() -> None:
        with pytest.raises(tensorpng.DecodeError, match="max_pixels"):
            tensorpng.load(path)

    assert peak_bytes(refused) < 4 << 20


def test_max_pixels_raises_or_lifts_the_limit(tmp_path: Path) -> None:
    image = np.random.default_rng(0).integers(0, 256, (100, 100), dtype=np.uint8)
    (path,) = tensorpng.save(image, tmp_path / "a.png")
    with pytest.raises(tensorpng.DecodeError, match="10,000 pixels"):
        tensorpng.load(path, max_pixels=9_999)
    np.testing.assert_array_equal(tensorpng.load(path, max_pixels=10_000), image)
    np.testing.assert_array_equal(tensorpng.load(path, max_pixels=None), image)
    with pytest.raises(tensorpng.OptionError):
        tensorpng.load(path, max_pixels=1.5)  # type: ignore[arg-type]


def test_the_default_limit_is_where_pillow_refuses() -> None:
    from PIL import Image

    # Pillow warns above MAX_IMAGE_PIXELS and raises DecompressionBombError above twice that
    default = inspect.signature(tensorpng.load).parameters["max_pixels"].default
    assert default == 2 * Image.MAX_IMAGE_PIXELS == 178_956_970


def test_image_data_that_inflates_past_ihdr_is_refused_in_bounded_memory(tmp_path: Path) -> None:
    path = tmp_path / "long.png"
    path.write_bytes(png(10, 10, 8, 0, zeros_stream(256 << 20)))  # 256 MiB for 110 bytes

    def refused() -> None:
        with pytest.raises(tensorpng.DecodeError, match="more than the 110 bytes"):
            tensorpng.load(path)

    assert peak_bytes(refused) < 4 << 20


def test_image_data_short_of_ihdr_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "short.png"
    path.write_bytes(png(10, 10, 8, 0, zlib.compress(bytes(11 * 9))))
    with pytest.raises(tensorpng.DecodeError, match="inflates to 99 bytes"):
        tensorpng.load(path)


# ---- text bombs ---------------------------------------------------------------------------


def test_text_that_is_not_asked_for_is_never_inflated(tmp_path: Path) -> None:
    image = np.zeros((8, 8), np.uint8)
    bomb = chunk(b"zTXt", b"Comment\x00\x00" + zeros_stream(64 << 20))
    data = tensorpng.encode(image, metadata=False)
    end = data.index(b"IEND") - 4
    path = tmp_path / "text-bomb.png"
    path.write_bytes(data[:end] + bomb + data[end:])
    assert peak_bytes(lambda: tensorpng.load(path)) < 4 << 20
    with pytest.raises(tensorpng.DecodeError, match="more than 1,048,576 bytes"):
        tensorpng.read_text(path)


def test_a_record_past_the_text_limit_is_ignored(tmp_path: Path) -> None:
    image = np.arange(64, dtype=np.uint8).reshape(8, 8)
    data = tensorpng.encode(image, metadata=False)
    end = data.index(b"IEND") - 4
    bomb = chunk(b"zTXt", b"tensorpng\x00\x00" + zeros_stream(8 << 20))
    path = tmp_path / "record-bomb.png"
    path.write_bytes(data[:end] + bomb + data[end:])
    with pytest.warns(tensorpng.RecordWarning, match="more than 1,048,576"):
        loaded = tensorpng.load(path)
    np.testing.assert_array_equal(loaded, image)


def test_total_text_is_limited() -> None:
    from tensorpng._png_chunks import Chunk
    from tensorpng._png_text import read_texts

    pieces = [chunk(b"zTXt", f"k{i}".encode() + b"\x00\x00" + zeros_stream(1 << 20)) for i in range(3)]
    chunks = [Chunk(b"zTXt", memoryview(piece)[8:-4], 0) for piece in pieces]
    with pytest.raises(tensorpng.DecodeError, match="more than 2,097,152"):
        read_texts(chunks, max_total=2 << 20)


# ---- time ---------------------------------------------------------------------------------


def test_undoing_a_colormap_is_vectorized(tmp_path: Path) -> None:
    """The issue's example: 65536 colours not in the table took a Python loop each."""
    x = np.arange(256, dtype=np.uint8)
    rgb = np.stack(np.broadcast_arrays(x[:, None], x[None, :], (x[:, None] + x[None, :]) // 2), axis=-1)
    (path,) = tensorpng.save(np.random.default_rng(0).random((256, 256)), tmp_path / "c.png", cmap="viridis")
    record = tensorpng.read_text(path)["tensorpng"]
    forged = tmp_path / "forged.png"
    forged.write_bytes(tensorpng.png.encode_png(np.ascontiguousarray(rgb), text={"tensorpng": record}))
    assert forged.stat().st_size < 64_000
    start = time.perf_counter()
    values = tensorpng.load(forged)
    assert time.perf_counter() - start < 10  # was about a minute; now well under a second
    # each colour maps to its nearest table colour's position (checked by brute force on a sample)
    from tensorpng.colormaps import colormap_table

    table = colormap_table("viridis").astype(np.int64)
    for row, col in [(0, 0), (17, 200), (255, 3), (128, 128)]:
        nearest = int(np.argmin(((table - rgb[row, col].astype(np.int64)) ** 2).sum(axis=1)))
        assert values[row, col] == pytest.approx(nearest / 255, abs=1e-6)


def test_every_error_of_load_is_a_tensorpng_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError) as missing:
        tensorpng.load(tmp_path / "missing.png")
    assert isinstance(missing.value, tensorpng.TensorPNGError)
    with pytest.raises(tensorpng.ReadError):
        tensorpng.load(tmp_path)  # a folder
    with pytest.raises(tensorpng.DecodeError):
        tensorpng.load(Path(__file__))


def test_records_are_bounded_json(tmp_path: Path) -> None:
    record = json.dumps({"mapping": "copy", "pad": "x" * 70_000})
    path = tmp_path / "big-record.png"
    path.write_bytes(tensorpng.png.encode_png(np.zeros((2, 2), np.uint8), text={"tensorpng": record}))
    with pytest.warns(tensorpng.RecordWarning, match="characters"):
        tensorpng.load(path)


def test_inflating_one_big_idat_chunk_copies_its_input_a_bounded_number_of_times(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each bounded inflate step copies the input it has not consumed yet: given a whole
    4 MB IDAT chunk, that was 4 MB per 64 KiB of output (quadratic: 6 s for a 50 MB file)."""
    from tensorpng import _png_chunks

    given: list[int] = []

    class Counting:
        def __init__(self, inflater: object) -> None:
            self.inflater = inflater

        def decompress(self, data: bytes, max_length: int = 0) -> bytes:
            given.append(len(data))
            return self.inflater.decompress(data, max_length)  # type: ignore[attr-defined, no-any-return]

        def __getattr__(self, name: str) -> object:
            return getattr(self.inflater, name)

    factory = _png_chunks._inflaters[0]
    monkeypatch.setattr(_png_chunks, "_inflaters", [lambda: Counting(factory())])
    noise = np.random.default_rng(12).integers(0, 256, (1024, 1024, 4), dtype=np.uint8)
    path = tmp_path / "noise.png"
    path.write_bytes(tensorpng.encode(noise, metadata=False, compression="none"))
    np.testing.assert_array_equal(tensorpng.load(path), noise)
    assert sum(given) < 2 * path.stat().st_size, f"{sum(given):,} bytes given for {path.stat().st_size:,}"


@pytest.mark.timeout(30)  # a FIFO blocked the read forever; /dev/zero read until MemoryError
def test_load_reads_regular_files_only(tmp_path: Path) -> None:
    import os

    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    for path, kind in ((fifo, "named pipe"), (Path("/dev/zero"), "device"), (tmp_path, "folder")):
        with pytest.raises(tensorpng.ReadError, match=kind):
            tensorpng.load(path)
        with pytest.raises(tensorpng.ReadError, match=kind):
            tensorpng.read_text(path)
    with pytest.raises(tensorpng.MissingFileError):
        tensorpng.load(tmp_path / "missing.png")
    with open("/dev/zero", "rb") as device, pytest.raises(tensorpng.ReadError, match="not a regular file"):
        tensorpng.load(device)  # a file object of a device: refused too, not read forever
