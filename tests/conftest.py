"""Shared test helpers: independent decoders and pngcheck."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import struct
import subprocess
import sys
import threading
import time
import zlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

PNGCHECK = shutil.which("pngcheck")


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
REPO = Path(__file__).resolve().parents[1]


@contextlib.contextmanager
def killed_after_ready(script: str, *args: str) -> Iterator[subprocess.Popen[str]]:
    """Run ``script`` in a child Python (this checkout's tensorpng), wait until it prints
    ``ready``, yield it, then kill it with SIGKILL (checked: it did not exit by itself)."""
    env = dict(os.environ, PYTHONPATH=str(REPO))
    child = subprocess.Popen(
        [sys.executable, "-c", script, *args], stdout=subprocess.PIPE, text=True, env=env
    )
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "ready"
        yield child
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
        if child.stdout is not None:
            child.stdout.close()
    assert child.returncode == -signal.SIGKILL


def parse_chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    """Split a PNG file into (type, data) chunks, checking lengths and every CRC-32."""
    assert data[:8] == PNG_SIGNATURE, "bad PNG signature"
    chunks: list[tuple[bytes, bytes]] = []
    pos = 8
    while pos < len(data):
        assert pos + 12 <= len(data), f"truncated chunk header at byte {pos}"
        (length,) = struct.unpack_from(">I", data, pos)
        assert length <= 2**31 - 1
        tag = data[pos + 4 : pos + 8]
        body = data[pos + 8 : pos + 8 + length]
        assert len(body) == length, f"chunk {tag!r} is truncated"
        (crc,) = struct.unpack_from(">I", data, pos + 8 + length)
        assert crc == zlib.crc32(tag + body), f"bad CRC-32 in chunk {tag!r}"
        chunks.append((tag, body))
        pos += 12 + length
    assert pos == len(data)
    return chunks


def png_content(data: bytes) -> list[tuple[bytes, bytes]]:
    """A PNG file's chunks in order, its IDAT chunks as one inflated entry where the first one
    was (the zlib stream must end exactly at their end). Two files with equal content are the
    same image and metadata even where their deflate differs: ISA-L's bytes for the same
    scanlines can differ between calls (docs/design.md)."""
    chunks = parse_chunks(data)
    tags = [tag for tag, _ in chunks]
    first = tags.index(b"IDAT")
    count = tags.count(b"IDAT")
    assert tags[first : first + count] == [b"IDAT"] * count, "IDAT chunks are not consecutive"
    inflater = zlib.decompressobj()
    inflated = inflater.decompress(b"".join(body for tag, body in chunks if tag == b"IDAT"))
    assert inflater.eof and not inflater.unused_data, "the zlib stream does not end with the IDAT chunks"
    return [*chunks[:first], (b"IDAT", inflated), *chunks[first + count :]]


def pngcheck(*paths: Path | str) -> None:
    """Run ``pngcheck -q`` on files; fail the test with its output unless every file passes."""
    assert PNGCHECK is not None, "pngcheck is not installed (apt-get install pngcheck)"
    result = subprocess.run([PNGCHECK, "-q", *map(str, paths)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def pngcheck_bytes(data: bytes, tmp_path: Path, name: str = "check.png") -> None:
    path = tmp_path / name
    path.write_bytes(data)
    pngcheck(path)


def decode_imagecodecs(data: bytes) -> np.ndarray:
    import imagecodecs

    return np.asarray(imagecodecs.png_decode(data))


def decode_pypng(data: bytes) -> np.ndarray:
    """Decode with pypng to ``H x W`` (gray) or ``H x W x C``, dtype by bit depth."""
    import png

    width, height, rows, info = png.Reader(bytes=data).read_flat()
    dtype = np.uint16 if info["bitdepth"] > 8 else np.uint8
    planes = info["planes"]
    array = np.asarray(rows, dtype=dtype).reshape(height, width, planes)
    return array[..., 0] if planes == 1 else array


def decode_pillow(data: bytes) -> np.ndarray:
    import io

    from PIL import Image

    with Image.open(io.BytesIO(data)) as image:
        return np.asarray(image)


def decode_opencv(data: bytes) -> np.ndarray:
    """Decode with OpenCV (IMREAD_UNCHANGED), returned in RGB(A) order like the others."""
    import cv2

    array = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if array.ndim == 3 and array.shape[2] == 3:
        array = array[..., ::-1]
    elif array.ndim == 3 and array.shape[2] == 4:
        array = array[..., [2, 1, 0, 3]]
    return array


@pytest.fixture
def photo() -> np.ndarray:
    """scikit-image's astronaut: a real 512x512 RGB uint8 photo."""
    import skimage.data

    return skimage.data.astronaut()


class SlowSink:
    """A sink that holds every write for ``delay`` seconds (or until ``gate`` is set)."""

    def __init__(self, root: Path, delay: float = 0.0, gate: threading.Event | None = None) -> None:
        self.root = str(root)
        self.delay = delay
        self.gate = gate
        self.names: list[str] = []

    def write(self, name: str, data: bytes, overwrite: bool) -> int:
        if self.gate is not None:
            assert self.gate.wait(30)
        time.sleep(self.delay)
        path = Path(self.root) / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        self.names.append(name)
        return len(data)

    def check_absent(self, names: list[str]) -> None:
        pass


class GatedSink:
    """Local files; the first write waits until ``gate`` is set (``entered`` tells it began)."""

    def __init__(self, root: Path) -> None:
        from tensorpng.sinks import LocalSink

        self.root = str(root)
        self.local = LocalSink(root)
        self.gate = threading.Event()
        self.entered = threading.Event()

    def write(self, name: str, data: bytes, overwrite: bool) -> int:
        if not self.entered.is_set():
            self.entered.set()
            assert self.gate.wait(30)
        return self.local.write(name, data, overwrite)

    def check_absent(self, names: list[str]) -> None:
        self.local.check_absent(names)
