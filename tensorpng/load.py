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


def read_text(data: bytes) -> dict[str, str]:
    """The ``tEXt``, ``iTXt`` (and ``zTXt``) entries of a PNG file."""
    texts: dict[str, str] = {}
    for kind, body in iter_chunks(data):
        if kind == b"tEXt":
            key, _, value = body.partition(b"\x00")
            texts[key.decode("latin-1")] = value.decode("latin-1")
        elif kind == b"zTXt":
            key, _, rest = body.partition(b"\x00")
            texts[key.decode("latin-1")] = zlib.decompress(rest[1:]).decode("latin-1")
        elif kind == b"iTXt":
            key, _, rest = body.partition(b"\x00")
            compressed, rest = rest[0], rest[2:]
            _, _, rest = rest.partition(b"\x00")  # language tag
            _, _, value = rest.partition(b"\x00")  # translated keyword
            texts[key.decode("latin-1")] = (zlib.decompress(value) if compressed else value).decode("utf-8")
        elif kind == b"IDAT":
            continue
    return texts


def _header(data: bytes) -> tuple[int, int]:
    """Bit depth and colour type from IHDR."""
    for kind, body in iter_chunks(data):
        if kind == b"IHDR":
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
        raise DecodeError("Pillow reads 16-bit color PNGs as 8-bit")
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


def decode(data: bytes) -> np.ndarray:
    """Decode PNG bytes to ``H x W`` or ``H x W x C`` uint8/uint16 (palette images as RGB)."""
    depth, color = _header(data)
    failures = []
    for module, function, hint in DECODERS:
        try:
            return function(data, depth, color)
        except ImportError:
            failures.append(f"{module} is not installed ({hint})")
        except DecodeError as error:
            failures.append(f"{module}: {error}")
        except Exception as error:  # a decoder's own error: a corrupt file
            raise DecodeError(f"cannot decode the PNG ({module}: {error})") from error
    raise DecodeError("no PNG decoder could read the file: " + "; ".join(failures))


def _as_indices(image: np.ndarray, table: np.ndarray) -> np.ndarray:
    """Map RGB pixels back to the index of their nearest color in ``table`` (K x 3 uint8)."""
    rgb = image[..., :3].reshape(-1, 3).astype(np.int32)
    keys = (rgb[:, 0] << 16) | (rgb[:, 1] << 8) | rgb[:, 2]
    table32 = table.astype(np.int32)
    table_keys = (table32[:, 0] << 16) | (table32[:, 1] << 8) | table32[:, 2]
    unique, inverse = np.unique(keys, return_inverse=True)
    exact = {int(k): i for i, k in reversed(list(enumerate(table_keys.tolist())))}
    colors = np.stack([(unique >> 16) & 255, (unique >> 8) & 255, unique & 255], axis=1)
    found = np.empty(len(unique), dtype=np.int64)
    for slot, key in enumerate(unique.tolist()):
        index = exact.get(key)
        if index is None:  # not a table color (edited file): the nearest one
            index = int(np.argmin(((table32 - colors[slot]) ** 2).sum(axis=1)))
        found[slot] = index
    return found[inverse].reshape(image.shape[:2])


def read_palette(data: bytes) -> np.ndarray | None:
    """The ``P x 3`` uint8 colors of a file's PLTE chunk, if it has one."""
    for kind, body in iter_chunks(data):
        if kind == b"PLTE":
            return np.frombuffer(body, dtype=np.uint8).reshape(-1, 3)
    return None


def _undo_mapping(samples: np.ndarray, entry: dict[str, Any], palette: np.ndarray | None) -> np.ndarray:
    """Values in the caller's original space from decoded samples and their record."""
    mapping = entry.get("mapping")
    bits = int(entry.get("bits") or 8)
    maximum = float((1 << bits) - 1)
    dtype = str(entry.get("dtype", "float32"))
    if mapping == "palette":
        if palette is None:
            raise DecodeError("the record says palette but the file has no PLTE chunk")
        labels = _as_indices(samples, palette) if samples.ndim == 3 else samples
        return labels.astype(_numpy_dtype(dtype, fallback="int64"))
    if mapping == "colormap":
        from .colormaps import colormap_table

        samples = _as_indices(samples, colormap_table(str(entry["cmap"]))).astype(np.uint8)
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
    samples = decode(data)
    text = read_text(data)
    entry = json.loads(text[METADATA_KEY]) if METADATA_KEY in text else None
    torch_wanted = as_tensor
    if as_tensor is None:
        torch_wanted = bool(entry and entry.get("framework") == "torch" and "torch" in sys.modules)
    if entry is None:
        values = samples
        layout = "CHW" if torch_wanted and samples.ndim == 3 else ("HWC" if samples.ndim == 3 else "HW")
    else:
        values = _undo_mapping(samples, entry, read_palette(data))
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
