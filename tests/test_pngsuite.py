"""PngSuite: every valid file loads as imagecodecs decodes it, with each backend alone, and
every corrupt one (the suite's ``x*`` cases, made here from valid files) is refused."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import imagecodecs
import numpy as np
import pytest

import tensorpng

SUITE = Path(__file__).parent / "data" / "pngsuite"
VALID = sorted(SUITE.glob("*.png"))
BACKENDS = ("imagecodecs", "opencv", "pillow")


def test_the_vendored_suite_is_there() -> None:
    assert len(VALID) == 28


@pytest.mark.parametrize("backend", BACKENDS)
def test_valid_files_load_as_imagecodecs_decodes_them(backend: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TENSORPNG_DECODER", backend)
    checked = 0
    for path in VALID:
        data = path.read_bytes()
        expected = np.asarray(imagecodecs.png_decode(data))
        loaded = tensorpng.load(path)
        assert loaded.dtype == expected.dtype and loaded.shape == expected.shape, path.name
        np.testing.assert_array_equal(loaded, expected, err_msg=path.name)
        checked += 1
    assert checked == len(VALID)  # Pillow too: 16-bit colour is read whole (two passes)


def _chunk(tag: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + tag + body + struct.pack(">I", zlib.crc32(tag + body))


def _with_ihdr(data: bytes, depth: int, color: int) -> bytes:
    body = bytearray(data[16:29])
    body[8], body[9] = depth, color
    return data[:8] + _chunk(b"IHDR", bytes(body)) + data[33:]


def _without(data: bytes, tag: bytes) -> bytes:
    out, offset = bytearray(data[:8]), 8
    while offset < len(data):
        (length,) = struct.unpack_from(">I", data, offset)
        if data[offset + 4 : offset + 8] != tag:
            out += data[offset : offset + 12 + length]
        offset += 12 + length
    return bytes(out)


def corrupt_cases() -> dict[str, bytes]:
    """The suite's corrupt files, each made as the suite describes it."""
    g01 = (SUITE / "basn0g01.png").read_bytes()
    g04 = (SUITE / "basn0g04.png").read_bytes()
    g08 = (SUITE / "basn0g08.png").read_bytes()
    c08 = (SUITE / "basn2c08.png").read_bytes()
    idat = g01.index(b"IDAT")
    (length,) = struct.unpack_from(">I", g01, idat - 4)
    body = bytearray(g01[idat + 4 : idat + 4 + length])
    body[-1] ^= 0xFF  # the zlib stream's Adler-32
    return {
        "xs1n0g01": b"\x89PNG\r\n\x1a\x0a"[:7] + b"\x0b" + g01[8:],  # signature byte 1
        "xs2n0g01": b"\x88" + g01[1:],  # signature byte 2
        "xs4n0g01": g01[:1] + b"QNG" + g01[4:],  # signature byte 4
        "xs7n0g01": g01[:7] + b"\x0b" + g01[8:],  # 7-bit signature
        "xcrn0g04": g04.replace(b"\r\n", b"\r\r\n", 1),  # added CR bytes
        "xlfn0g04": g04.replace(b"\r\n", b"\n", 1),  # CR/LF turned into LF
        "xhdn0g08": g08[:29] + bytes([g08[29] ^ 1]) + g08[30:],  # incorrect IHDR checksum
        "xc1n0g08": _with_ihdr(g08, 8, 1),  # colour type 1
        "xc9n2c08": _with_ihdr(c08, 8, 9),  # colour type 9
        "xd0n2c08": _with_ihdr(c08, 0, 2),  # bit depth 0
        "xd3n2c08": _with_ihdr(c08, 3, 2),  # bit depth 3
        "xd9n2c08": _with_ihdr(c08, 99, 2),  # bit depth 99
        "xdtn0g01": _without(g01, b"IDAT"),  # missing IDAT
        "xcsn0g01": g01[: idat - 4] + _chunk(b"IDAT", bytes(body)) + g01[idat + 8 + length :],  # bad Adler-32
    }


@pytest.mark.parametrize("backend", BACKENDS)
def test_corrupt_files_are_refused(backend: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TENSORPNG_DECODER", backend)
    for name, data in corrupt_cases().items():
        path = tmp_path / f"{name}.png"
        path.write_bytes(data)
        with pytest.raises(tensorpng.DecodeError):
            tensorpng.load(path)
            pytest.fail(f"{name} loaded")
