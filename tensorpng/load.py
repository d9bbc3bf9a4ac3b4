"""Reading PNGs back: ``load`` decodes with a maintained decoder and undoes our value mapping.

Decoders are optional backends tried in order, each imported only when needed (as
imageio's v3 plugins are): ``imagecodecs``, OpenCV (``cv2``), Pillow (not for 16-bit color,
which it reads as 8-bit). The mapping record (see :mod:`tensorpng.metadata`) is read from
the file's ``tEXt``/``iTXt`` chunks by the small chunk reader here.
"""

from __future__ import annotations

import io
import json
import os
import struct
import sys
import warnings
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from .errors import OptionError, TensorPNGError
from .metadata import METADATA_KEY
from .png import PNG_SIGNATURE


class DecodeError(TensorPNGError, ValueError):
    """A file is not a PNG that the installed decoders can read."""


def iter_chunks(data: bytes) -> Iterator[tuple[bytes, bytes]]:
    """``(type, data)`` of each chunk of a PNG file (CRCs are left to the decoders)."""
    if not data.startswith(PNG_SIGNATURE):
        raise DecodeError("not a PNG file (the signature is missing)")
    offset = len(PNG_SIGNATURE)
    while offset + 8 <= len(data):
        (length,) = struct.unpack_from(">I", data, offset)
        kind = data[offset + 4 : offset + 8]
        yield kind, data[offset + 8 : offset + 8 + length]
        offset += 12 + length
        if kind == b"IEND":
            return


def _crc_ok(data: bytes, offset: int, kind: bytes, body: bytes) -> bool:
    """Whether the CRC stored after the chunk at ``offset`` matches its type and data."""
    end = offset + 8 + len(body)
    stored = data[end : end + 4]
    return len(stored) == 4 and struct.unpack(">I", stored)[0] == zlib.crc32(kind + body)


def read_text(data: bytes) -> dict[str, str]:
    """The ``tEXt``, ``iTXt`` (and ``zTXt``) entries of a PNG file.

    Entries whose CRC does not match (or that do not decompress) are skipped, as PNG decoders
    skip damaged ancillary chunks, except tensorpng's own record: a damaged record raises
    :class:`DecodeError` rather than being read wrong or silently dropped.
    """
    texts: dict[str, str] = {}
    offset = len(PNG_SIGNATURE)
    for kind, body in iter_chunks(data):
        start, offset = offset, offset + 12 + len(body)
        if kind not in (b"tEXt", b"zTXt", b"iTXt"):
            continue
        key_bytes, _, rest = body.partition(b"\x00")
        key = key_bytes.decode("latin-1")
        try:
            if not _crc_ok(data, start, kind, body):
                raise ValueError("its CRC does not match")
            if kind == b"tEXt":
                value = rest.decode("latin-1")
            elif kind == b"zTXt":
                value = zlib.decompress(rest[1:]).decode("latin-1")
            else:
                compressed, rest = rest[0], rest[2:]
                _, _, rest = rest.partition(b"\x00")  # language tag
                _, _, text = rest.partition(b"\x00")  # translated keyword
                value = (zlib.decompress(text) if compressed else text).decode("utf-8")
        except (ValueError, IndexError, zlib.error) as error:
            if key == METADATA_KEY:
                raise DecodeError(f"the file's {METADATA_KEY!r} record is damaged ({error})") from None
            continue
        texts[key] = value
    return texts


def _header(data: bytes) -> tuple[int, int]:
    """Bit depth and colour type from IHDR."""
    for kind, body in iter_chunks(data):
        if kind == b"IHDR":
            if len(body) != 13:
                raise DecodeError(
                    f"the PNG's IHDR chunk is {len(body)} bytes, not 13: the file is cut or corrupt"
                )
            return body[8], body[9]
    raise DecodeError("the PNG has no IHDR chunk")


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
    return image


def _pillow(data: bytes, depth: int, color: int) -> np.ndarray:
    if depth == 16 and color != 0:
        raise DecodeError("Pillow reads 16-bit color PNGs as 8-bit, so it does not read them")
    from PIL import Image

    with Image.open(io.BytesIO(data)) as image:
        if color == 3:
            return np.asarray(image.convert("RGBA" if "transparency" in image.info else "RGB"))
        return np.asarray(image)


DECODERS: tuple[tuple[str, Callable[[bytes, int, int], np.ndarray], str], ...] = (
    ("imagecodecs", _imagecodecs, "pip install imagecodecs"),
    ("cv2", _opencv, "pip install opencv-python-headless"),
    ("PIL", _pillow, "pip install pillow"),
)


# Every decoder's install command, kept apart from DECODERS so that an error can name the
# decoders that would read a file even when only some are tried.
INSTALL_HINTS: dict[str, str] = {module: hint for module, _, hint in DECODERS}


def decode(data: bytes) -> np.ndarray:
    """Decode PNG bytes to ``H x W`` or ``H x W x C`` uint8/uint16 (palette images as RGB)."""
    depth, color = _header(data)
    failures, refused = [], set()
    for module, function, hint in DECODERS:
        try:
            return function(data, depth, color)
        except ImportError:
            failures.append(f"{module} is not installed ({hint})")
        except DecodeError as error:
            failures.append(f"{module}: {error}")
            refused.add(module)
        except Exception as error:  # a decoder's own error: a corrupt file
            raise DecodeError(f"cannot decode the PNG ({module}: {error})") from error
    others = [hint for module, hint in INSTALL_HINTS.items() if module not in refused]
    advice = f"; install a decoder that reads it: {' or '.join(others)}" if others else ""
    raise DecodeError("no PNG decoder could read the file: " + "; ".join(failures) + advice)


def _table_positions(image: np.ndarray, table: np.ndarray) -> np.ndarray:
    """The position in ``table`` (K x 3 uint8) of each RGB pixel's color, as float64.

    A color the table holds more than once (colormaps whose neighbouring entries round to
    the same bytes) maps to the mean of its positions, the middle of the values it stands
    for; a color it lacks (an edited file) to its nearest table color's.
    """
    rgb = image[..., :3].reshape(-1, 3).astype(np.int64)
    keys = (rgb[:, 0] << 16) | (rgb[:, 1] << 8) | rgb[:, 2]
    table64 = table.astype(np.int64)
    table_keys = (table64[:, 0] << 16) | (table64[:, 1] << 8) | table64[:, 2]
    colors, which = np.unique(table_keys, return_inverse=True)
    middle = np.bincount(which, weights=np.arange(len(table_keys))) / np.bincount(which)
    unique, inverse = np.unique(keys, return_inverse=True)
    slots = np.minimum(np.searchsorted(colors, unique), len(colors) - 1)
    found = middle[slots]
    for missing in np.flatnonzero(colors[slots] != unique).tolist():
        pixel = np.array([(unique[missing] >> shift) & 255 for shift in (16, 8, 0)])
        nearest = int(np.argmin(((table64 - pixel) ** 2).sum(axis=1)))
        found[missing] = middle[which[nearest]]
    return found[inverse.reshape(-1)].reshape(image.shape[:2])


def _with_index_palette(data: bytes) -> bytes:
    """``data`` with its PLTE colors replaced by ``(i, 0, 0)``: decoded, red is the index.

    Decoders expand palette images to RGB, and a palette may repeat a color; this reads the
    stored indices themselves through the same decoders.
    """
    offset = len(PNG_SIGNATURE)
    for kind, body in iter_chunks(data):
        if kind == b"PLTE":
            count = len(body) // 3
            colors = np.zeros((count, 3), dtype=np.uint8)
            colors[:, 0] = np.arange(count)
            fresh = colors.tobytes()
            replacement = struct.pack(">I", len(fresh)) + kind + fresh
            replacement += struct.pack(">I", zlib.crc32(kind + fresh))
            return data[:offset] + replacement + data[offset + 12 + len(body) :]
        offset += 12 + len(body)
    raise DecodeError("the record says palette but the file has no PLTE chunk")


def read_palette(data: bytes) -> np.ndarray | None:
    """The ``P x 3`` uint8 colors of a file's PLTE chunk, if it has one."""
    for kind, body in iter_chunks(data):
        if kind == b"PLTE":
            return np.frombuffer(body, dtype=np.uint8).reshape(-1, 3)
    return None


def _undo_mapping(samples: np.ndarray, entry: dict[str, Any]) -> np.ndarray:
    """Values in the caller's original space from decoded samples and their record."""
    mapping = entry.get("mapping")
    bits = int(entry.get("bits") or 8)
    maximum = float((1 << bits) - 1)
    dtype = str(entry.get("dtype", "float32"))
    if mapping == "palette":  # ``samples`` are the indices (see _with_index_palette)
        labels = samples[..., 0] if samples.ndim == 3 else samples
        return labels.astype(_numpy_dtype(dtype, fallback="int64"))
    if mapping == "colormap":
        from .colormaps import colormap_table

        samples = _table_positions(samples, colormap_table(str(entry["cmap"])))
        maximum = 255.0
        mapping = "affine"
    if mapping == "copy":
        return samples.astype(_numpy_dtype(dtype, fallback=str(samples.dtype)))
    if mapping == "bool":
        return samples > 0
    if mapping == "widen":
        return ((samples.astype(np.uint32) + 128) // 257).astype(np.uint8)
    if mapping == "narrow":
        return samples.astype(np.uint16) * np.uint16(257)
    if mapping != "affine":
        raise DecodeError(f"unknown mapping {mapping!r} in the tensorpng record")
    values = samples.astype(np.float64) / maximum
    value_range = entry.get("value_range")
    if entry.get("per_image_range"):
        warnings.warn(
            "this grid was scaled per image; load returns its samples in [0, 1]", RuntimeWarning, stacklevel=3
        )
    elif value_range and value_range[0] is not None and value_range[1] is not None:
        low, high = float(value_range[0]), float(value_range[1])
        values = low + values * (high - low)
        channels = 1 if values.ndim == 2 else values.shape[2]
        mean = np.broadcast_to(np.asarray(entry.get("mean") or [0.0], dtype=np.float64), (channels,))
        std = np.broadcast_to(np.asarray(entry.get("std") or [1.0], dtype=np.float64), (channels,))
        values = (values - mean) / std if values.ndim == 3 else (values - mean[0]) / std[0]
    return values.astype(_numpy_dtype(dtype, fallback="float32") if dtype.startswith("float") else np.float32)


def _record(texts: dict[str, str]) -> dict[str, Any] | None:
    """The file's mapping record, if it has one (DecodeError when it is not a JSON object)."""
    if METADATA_KEY not in texts:
        return None
    try:
        entry = json.loads(texts[METADATA_KEY])
    except ValueError as error:
        raise DecodeError(f"the file's {METADATA_KEY!r} record is not valid JSON ({error})") from None
    if not isinstance(entry, dict):
        raise DecodeError(f"the file's {METADATA_KEY!r} record is not a JSON object: {entry!r:.80}")
    return entry


def _numpy_dtype(name: str, fallback: str) -> np.dtype[Any]:
    try:
        return np.dtype(name)
    except TypeError:  # bfloat16 and other dtypes NumPy lacks
        return np.dtype(fallback)


def load(path: str | os.PathLike[str], *, as_tensor: bool | None = None) -> Any:
    """Read a PNG, undoing tensorpng's value mapping when the file records it.

    Args:
        path: a PNG file written by tensorpng or anything else.
        as_tensor: ``True``: a ``torch.Tensor``; ``False``: a ``numpy.ndarray``; ``None``
            (default): a tensor when the file was saved from a torch tensor and torch is
            already imported, else an array.

    Returns:
        With a tensorpng record: the values in the caller's original space (floats: the value
        range, mean and std undone; integers, bools and labels: their dtype) in the layout
        of one image of the input (``C x H x W``, ``H x W x C`` or ``H x W``). Without one:
        the uint8/uint16 samples, ``H x W [x C]`` as an array, ``C x H x W`` as a tensor.
        16-bit files of floats in [0, 1] come back within 1/65535, 8-bit within 1/255.

    Raises:
        DecodeError: not a PNG, or no installed decoder can read it.
    """
    data = Path(path).read_bytes()
    entry = _record(read_text(data))
    if entry is not None and entry.get("mapping") == "palette":
        data = _with_index_palette(data)
    samples = decode(data)
    torch_wanted = as_tensor
    if as_tensor is None:
        torch_wanted = bool(entry and entry.get("framework") == "torch" and "torch" in sys.modules)
    if entry is None:
        values = samples
        layout = "CHW" if torch_wanted and samples.ndim == 3 else ("HWC" if samples.ndim == 3 else "HW")
    else:
        try:
            values = _undo_mapping(samples, entry)
        except (KeyError, TypeError, ValueError, IndexError, OptionError) as error:
            if isinstance(error, DecodeError):
                raise
            raise DecodeError(f"the tensorpng record of {path} is malformed ({error!r})") from error
        layout = str(entry.get("layout", "HWC")).replace("N", "")
        if entry.get("grid"):
            layout = "HWC" if values.ndim == 3 else "HW"
    if values.ndim == 3 and layout == "CHW":
        values = np.ascontiguousarray(values.transpose(2, 0, 1))
    elif values.ndim == 2 and layout == "CHW":  # one channel: 1 x H x W
        values = values[None]
    elif values.ndim == 2 and layout == "HWC":
        values = values[..., None]
    if not torch_wanted:
        return values
    try:
        import torch
    except ImportError:
        raise OptionError("as_tensor=True needs PyTorch: pip install torch") from None
    if values.dtype == np.uint16:
        return torch.from_numpy(values.astype(np.int32)).to(torch.uint16)
    tensor = torch.from_numpy(np.ascontiguousarray(values))
    if entry and entry.get("dtype") == "bfloat16":
        tensor = tensor.to(torch.bfloat16)
    return tensor
