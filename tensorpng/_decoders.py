"""Decoding validated PNGs with a maintained decoder, to one form whichever decoder runs.

Backends are tried in order, each imported only when needed: ``imagecodecs``, OpenCV
(``cv2``), Pillow (which reads 16-bit colour as 8-bit: such files are decoded twice, for the
high and the low bytes, or as 8-bit RGBA for gray+alpha). The environment variable
``TENSORPNG_DECODER`` (``imagecodecs``, ``opencv`` or ``pillow``) picks one alone.

Decoders disagree on palettes, depths below 8 bits and tRNS, so they are never shown those:
the file is first checked by :mod:`tensorpng._png_chunks`, then rebuilt with only IHDR,
IDAT and IEND (and, for palette and low-depth gray files, an index palette ``(i, 0, 0)``,
so that red is the stored value). Palettes, tRNS and scaling are then applied here, in the
forms of imagecodecs: depths below 8 bits scaled to 0..255 uint8, palettes expanded to RGB
(RGBA with tRNS), tRNS on gray or RGB becoming an alpha channel.
"""

from __future__ import annotations

import io
import os
import struct
from collections.abc import Callable
from typing import Any

import numpy as np

from ._png_chunks import (
    IEND,
    SIGNATURE,
    Container,
    chunk,
    ihdr,
    inflate_image_data,
    plte,
    png_bytes,
    read_container,
)
from .errors import DecodeError, OptionError

ENV_VAR = "TENSORPNG_DECODER"
MAX_IMAGE_PIXELS = 178_956_970  # where Pillow raises DecompressionBombError (2x its MAX_IMAGE_PIXELS)


def check_max_pixels(max_pixels: object) -> int | None:
    """Validate a ``max_pixels`` option (an int, or None for no limit)."""
    if max_pixels is not None and (isinstance(max_pixels, bool) or not isinstance(max_pixels, int)):
        raise OptionError(f"max_pixels must be an int or None, got {max_pixels!r}")
    return max_pixels


def check_pixels(label: object, width: int, height: int, max_pixels: int | None) -> None:
    """Refuse a declared size over ``max_pixels`` before anything is allocated for it."""
    if max_pixels is not None and width * height > max_pixels:
        raise DecodeError(
            f"{label} declares {width} x {height} = {width * height:,} pixels, more than "
            f"max_pixels={max_pixels:,} (a decompression bomb?); pass max_pixels=None to read it anyway"
        )


def _imagecodecs(data: bytes, depth: int, color: int) -> np.ndarray:
    import imagecodecs

    return np.asarray(imagecodecs.png_decode(data))


def _opencv(data: bytes, depth: int, color: int) -> np.ndarray:
    import cv2

    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if image is None:
        raise DecodeError("OpenCV could not decode the file")
    if image.ndim == 3 and color == 4:  # gray+alpha comes back as BGRA
        return np.ascontiguousarray(image[..., [0, 3]])
    if image.ndim == 3 and image.shape[2] == 3:
        return np.ascontiguousarray(image[..., ::-1])
    if image.ndim == 3 and image.shape[2] == 4:
        return np.ascontiguousarray(image[..., [2, 1, 0, 3]])
    return np.asarray(image)


def _pillow(data: bytes, depth: int, color: int) -> np.ndarray:

    if depth == 16 and color == 4:
        # Pillow reads 16-bit gray+alpha as 8-bit. Its scanlines are those of an 8-bit RGBA
        # image of the same width (4 bytes a pixel, so the same unfiltering): decode that,
        # and read each pixel's bytes back as two big-endian samples.
        (width, height), interlace = struct.unpack(">II", data[16:24]), data[28]
        rgba = _pillow(SIGNATURE + ihdr(width, height, 8, 6, interlace) + data[33:], 8, 6)
        return np.ascontiguousarray(rgba).view(">u2").astype(np.uint16)
    if depth == 16 and color != 0:
        # Pillow reads 16-bit RGB(A) as 8-bit: the high byte of each sample (raw mode
        # "RGB;16B"). Decoding again as if little-endian ("RGB;16L") gives the low bytes.
        high = _pillow_raw(data, None)
        low = _pillow_raw(data, ";16L")
        return (high.astype(np.uint16) << 8) | low
    return _pillow_raw(data, None)


def _pillow_raw(data: bytes, suffix: str | None) -> np.ndarray:
    from PIL import PngImagePlugin

    # The PNG plugin itself, not Image.open: open's decompression-bomb check (a warning above
    # 89M pixels, an error above 179M) would override the caller's max_pixels, checked already.
    with PngImagePlugin.PngImageFile(io.BytesIO(data)) as image:
        if suffix is not None:
            tile: Any = image.tile[0]  # (codec, extents, offset, raw mode); a _Tile in Pillow 11+
            raw = str(tile[3] if isinstance(tile[3], str) else tile[3][0]).replace(";16B", suffix)
            image.tile = [tile._replace(args=raw) if hasattr(tile, "_replace") else (*tile[:3], raw)]  # type: ignore[list-item]
        image.load()
        return np.asarray(image)


DECODERS: tuple[tuple[str, Callable[[bytes, int, int], np.ndarray], str], ...] = (
    ("imagecodecs", _imagecodecs, "pip install imagecodecs"),
    ("cv2", _opencv, "pip install opencv-python-headless"),
    ("PIL", _pillow, "pip install pillow"),
)
# The names TENSORPNG_DECODER takes, and the module of each.
CHOICES = {"imagecodecs": "imagecodecs", "opencv": "cv2", "pillow": "PIL"}


def _chosen() -> tuple[tuple[str, Callable[[bytes, int, int], np.ndarray], str], ...]:
    choice = os.environ.get(ENV_VAR, "").strip().lower()
    if not choice:
        return DECODERS
    if choice not in CHOICES:
        raise DecodeError(f"{ENV_VAR}={choice!r} is not one of {', '.join(CHOICES)} (or unset)")
    return tuple(entry for entry in DECODERS if entry[0] == CHOICES[choice])


def _run(data: bytes, depth: int, color: int) -> np.ndarray:
    failures, refused = [], set()
    decoders = _chosen()
    for module, function, hint in decoders:
        try:
            return function(data, depth, color)
        except ImportError:
            failures.append(f"{module} is not installed ({hint})")
        except Exception as error:  # a decoder's own limit, on a file we validated
            # (libpng refuses rows or columns over 1,000,000 pixels; Pillow does not): the next
            # decoder may read it, so that the result does not depend on which one is first.
            failures.append(f"{module}: {error}")
            refused.add(module)
    others = [hint for module, _, hint in DECODERS if module not in refused]
    advice = f"; install a decoder that reads it: {' or '.join(others)}" if others else ""
    raise DecodeError("no PNG decoder could read the file: " + "; ".join(failures) + advice)


def decode(container: Container, *, indices: bool = False) -> np.ndarray:
    """The samples of a validated PNG: ``H x W`` or ``H x W x C``, uint8 or uint16.

    ``indices``: for a palette file, the stored indices (``H x W`` uint8) instead of colours.
    """
    header = container.header
    low_gray = header.color_type == 0 and header.bit_depth < 8
    if header.color_type == 3 or low_gray:
        count = 1 << header.bit_depth
        table = np.zeros((count, 3), np.uint8)
        table[:, 0] = np.arange(count)
        head = SIGNATURE + ihdr(header.width, header.height, header.bit_depth, 3, header.interlace)
        data = png_bytes((head, plte(table.tobytes())), b"".join(container.idat))
        decoded = _run(data, header.bit_depth, 3)
        values = decoded[..., 0] if decoded.ndim == 3 else decoded
        values = np.ascontiguousarray(values, dtype=np.uint8)
    else:
        head = SIGNATURE + ihdr(
            header.width, header.height, header.bit_depth, header.color_type, header.interlace
        )
        data = b"".join((head, chunk(b"IDAT", b"".join(container.idat)), IEND))
        values = _run(data, header.bit_depth, header.color_type)
        values = _check_form(values, container)
    if header.color_type == 3:
        if values.max(initial=0) >= len(container.palette or b"") // 3:
            raise DecodeError("a pixel of the palette PNG has an index past its PLTE entries")
        if indices:
            return values
        return palette_colors(values, container)
    if low_gray:
        gray = values * np.uint8(255 // ((1 << header.bit_depth) - 1))
        if container.transparency is None:
            return gray
        alpha = _transparent(values[..., None], container.transparency, header.bit_depth, np.dtype(np.uint8))
        return np.stack([gray, alpha], axis=-1)
    if container.transparency is not None:
        image = values if values.ndim == 3 else values[..., None]
        alpha = _transparent(image, container.transparency, header.bit_depth, values.dtype)
        return np.concatenate([image, alpha[..., None]], axis=-1)
    return values


def _check_form(values: np.ndarray, container: Container) -> np.ndarray:
    header = container.header
    shape = (header.height, header.width) + ((header.channels,) if header.channels > 1 else ())
    dtype = np.uint16 if header.bit_depth == 16 else np.uint8
    if values.ndim == 3 and values.shape[2] == 1:
        values = values[..., 0]
    if values.shape != shape or values.dtype != dtype:
        raise DecodeError(
            f"the decoder returned {values.dtype} samples of shape {values.shape}, "
            f"not {np.dtype(dtype)} {shape}"
        )
    return values


def palette_colors(values: np.ndarray, container: Container) -> np.ndarray:
    """The colours (RGB, or RGBA with tRNS) of a palette PNG's indices."""
    colors = np.frombuffer(container.palette or b"", np.uint8).reshape(-1, 3)
    if container.transparency is None:
        return colors[values]
    alphas = np.full(len(colors), 255, np.uint8)
    alphas[: len(container.transparency)] = np.frombuffer(container.transparency, np.uint8)
    return np.concatenate([colors, alphas[:, None]], axis=1)[values]


def _transparent(image: np.ndarray, trns: bytes, bit_depth: int, dtype: np.dtype) -> np.ndarray:
    """Alpha of gray or RGB samples (``H x W x C``, the stored values): 0 where a pixel equals
    tRNS's colour, else the maximum of ``dtype``.

    tRNS holds 16 bits a sample. A key with bits past the depth (0x00FF in a 4-bit file; the
    specification says they are 0) is cut to its low ``bit_depth`` bits, as libpng does when it
    expands tRNS (``png_do_expand``), so imagecodecs and every backend here agree. Others differ
    (Pillow matches some such keys against samples scaled to 8 bits, pypng matches none).
    """
    channels = image.shape[2]
    mask = (1 << bit_depth) - 1
    key = [value & mask for value in np.frombuffer(trns, ">u2")[:channels].tolist()]
    match = np.ones(image.shape[:2], dtype=bool)
    for channel, value in enumerate(key):  # one boolean plane at a time, no wide copy
        match &= image[..., channel] == value
    maximum = np.iinfo(dtype).max
    return np.where(match, 0, maximum).astype(dtype)


def decode_png(
    data: bytes, *, max_pixels: int | None = MAX_IMAGE_PIXELS, label: object = "the file"
) -> np.ndarray:
    """The samples of a PNG file's bytes, its container and declared size checked first (no
    record applied)."""
    container = read_container(data)
    check_pixels(label, container.header.width, container.header.height, max_pixels)
    inflate_image_data(container)
    return decode(container)
