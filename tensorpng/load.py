"""Internal module; its public names are re-exported by ``tensorpng``.

Reading PNGs back: ``load`` checks the file, decodes it and undoes tensorpng's value mapping.

Every file is treated as untrusted. Before any pixel is decoded, :mod:`tensorpng._png_chunks`
checks its chunks (bounds, every CRC, IHDR, PLTE/tRNS placement), the declared size against
``max_pixels``, and that the image data inflates to exactly the bytes IHDR implies (a
streaming inflate that never holds more than 64 KiB). Only then does a maintained decoder
(:mod:`tensorpng._decoders`) run, and its result has one form whichever decoder it was.
Only the ``tensorpng`` text chunk is inflated, within size limits; the record it holds is
checked by :meth:`tensorpng.metadata.MappingRecord.from_json` and against IHDR.
"""

from __future__ import annotations

import os
import sys
import warnings
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from ._decoders import MAX_IMAGE_PIXELS, check_max_pixels, check_pixels, decode
from ._png_chunks import Container, inflate_image_data, read_container
from ._png_text import read_texts
from .errors import (
    DecodeError,
    MissingFileError,
    OptionError,
    ReadError,
    RecordWarning,
    TensorPNGError,
)
from .metadata import METADATA_KEY, MappingRecord, RecordError

_TABLE_BLOCK = 1 << 12  # colours per step of the nearest-colour search (4096 x 256 distances)


def read_text(source: Source) -> dict[str, str]:
    """Every text entry of a PNG: ``tEXt``, ``zTXt`` and ``iTXt``, as key -> value.

    Args:
        source: a path, the bytes of a PNG file (``bytes``, ``bytearray``, ``memoryview``), or
            a binary file object (read to its end).

    Returns:
        The keys and values in file order (a later chunk with the same key wins). Compressed
        text is inflated with limits: 1 MiB per value and 64 MiB in all (as Pillow's
        ``MAX_TEXT_CHUNK`` and ``MAX_TEXT_MEMORY``).

    Raises:
        DecodeError: not a PNG, a corrupt chunk (bad CRC, cut file), a damaged text chunk,
            or text past the limits.
        MissingFileError, ReadError: as for :func:`load`.
    """
    data, _ = _read(source)
    return read_texts(read_container(data).texts)


Source = str | os.PathLike[str] | bytes | bytearray | memoryview | BinaryIO


def _read(source: Source) -> tuple[bytes, str]:
    """The bytes of a path, bytes-like object or binary file object, and a label for messages
    (never the bytes themselves: a message holding a whole file helps no one)."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
        return data, f"<{len(data):,} bytes>"
    if hasattr(source, "read"):
        label = str(getattr(source, "name", f"<{type(source).__name__}>"))
        try:
            data = source.read()
        except (OSError, ValueError) as error:  # ValueError: a closed file
            raise ReadError(f"cannot read {label}: {error}") from error
        if not isinstance(data, bytes):
            raise ReadError(
                f"cannot read {label}: open it in binary mode ('rb'), it gave {type(data).__name__}"
            )
        return data, label
    if not isinstance(source, (str, os.PathLike)):
        raise ReadError(f"expected a path, PNG bytes or a binary file object, got {type(source).__name__}")
    try:
        return Path(source).read_bytes(), os.fspath(source)
    except FileNotFoundError as error:
        raise MissingFileError(error.errno, f"no file {source}", str(source)) from None
    except (OSError, TypeError, ValueError) as error:  # ValueError: a NUL in the path
        raise ReadError(f"cannot read {source!r}: {error}") from error


def _table_positions(image: np.ndarray, table: np.ndarray) -> np.ndarray:
    """The position in ``table`` (K x 3 uint8) of each RGB pixel's color, as float64.

    A color the table holds more than once (colormaps whose neighbouring entries round to
    the same bytes) maps to the mean of its positions, the middle of the values it stands
    for; a color it lacks (an edited file) to its nearest table color's, found for all such
    colors at once, in blocks (time and memory linear in the pixels).
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
    missing = np.flatnonzero(colors[slots] != unique)
    for start in range(0, len(missing), _TABLE_BLOCK):
        block = missing[start : start + _TABLE_BLOCK]
        pixels = np.stack([(unique[block] >> shift) & 255 for shift in (16, 8, 0)], axis=1)
        distances = sum((pixels[:, None, c] - table64[None, :, c]) ** 2 for c in range(3))
        found[block] = middle[which[np.argmin(distances, axis=1)]]
    return found[inverse.reshape(-1)].reshape(image.shape[:2])


def _undo_mapping(samples: np.ndarray, entry: MappingRecord) -> np.ndarray:
    """Values in the caller's original space from decoded samples and their record."""
    mapping = entry.mapping
    maximum = float((1 << entry.bits) - 1)
    dtype = entry.dtype
    if mapping == "palette":  # ``samples`` are the indices
        return samples.astype(_numpy_dtype(dtype, fallback="int64"))
    if mapping == "colormap":
        from .colormaps import colormap_table

        samples = _table_positions(samples, colormap_table(str(entry.cmap)))
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
    values = samples.astype(np.float64) / maximum
    value_range = entry.value_range
    if entry.per_image_range:
        warnings.warn(
            "this grid was scaled per image; load returns its samples in [0, 1]", RuntimeWarning, stacklevel=3
        )
    elif value_range and value_range[0] is not None and value_range[1] is not None:
        low, high = float(value_range[0]), float(value_range[1])
        values = low + values * (high - low)
        channels = 1 if values.ndim == 2 else values.shape[2]
        mean = _per_channel(entry.mean or (0.0,), channels, "mean")
        std = _per_channel(entry.std or (1.0,), channels, "std")
        values = (values - mean) / std if values.ndim == 3 else (values - mean[0]) / std[0]
    return values.astype(_numpy_dtype(dtype, fallback="float32") if dtype.startswith("float") else np.float32)


def _per_channel(values: tuple[float, ...], channels: int, name: str) -> np.ndarray:
    if len(values) not in (1, channels):
        raise RecordError(f"its {name} has {len(values)} values for {channels} channels")
    return np.broadcast_to(np.asarray(values, dtype=np.float64), (channels,))


def _numpy_dtype(name: str, fallback: str) -> np.dtype[Any]:
    try:
        return np.dtype(name)
    except TypeError:  # bfloat16 and other dtypes NumPy lacks (names from an allow-list)
        return np.dtype(fallback)


def _record(container: Container, path: object) -> MappingRecord | None:
    """The file's mapping record if it has one that fits the file; a bad one is ignored
    with a :class:`RecordWarning`."""
    try:
        texts = read_texts(container.texts, (METADATA_KEY,))
    except DecodeError as error:
        _ignored(path, str(error))
        return None
    if METADATA_KEY not in texts:
        return None
    try:
        entry = MappingRecord.from_json(texts[METADATA_KEY])
        header = container.header
        entry.check(header.width, header.height, header.bit_depth, header.color_type)
    except RecordError as error:
        _ignored(path, str(error))
        return None
    return entry


def _ignored(path: object, reason: str) -> None:
    warnings.warn(
        f"the {METADATA_KEY!r} record of {path} is ignored ({reason}); load returns the raw samples",
        RecordWarning,
        stacklevel=4,
    )


def load(
    path: Source,
    *,
    as_tensor: bool | None = None,
    max_pixels: int | None = MAX_IMAGE_PIXELS,
) -> Any:
    """Read a PNG, undoing tensorpng's value mapping when the file records it.

    The file is untrusted: it is checked before anything is decoded (every chunk's CRC,
    IHDR, the declared size against ``max_pixels``, and that its image data inflates to
    exactly the size IHDR implies), and every step takes time and memory bounded by the
    declared image size. The result does not depend on which decoder is installed.

    Args:
        path: a PNG file written by tensorpng or anything else: a path, its bytes
            (``bytes``, ``bytearray``, ``memoryview``) or a binary file object.
        as_tensor: ``True``: a ``torch.Tensor``; ``False``: a ``numpy.ndarray``; ``None``
            (default): a tensor when the file was saved from a torch tensor and torch is
            already imported, else an array.
        max_pixels: the most pixels (width x height) a file may declare, checked before
            decoding: by default 178,956,970, where Pillow raises ``DecompressionBombError``
            (twice its ``MAX_IMAGE_PIXELS``); ``None``: no limit.

    Returns:
        With a tensorpng record: the values in the caller's original space (floats: the value
        range, mean and std undone; integers, bools and labels: their dtype) in the layout
        of one image of the input (``C x H x W``, ``H x W x C`` or ``H x W``). Without one:
        the uint8/uint16 samples, ``H x W [x C]`` as an array, ``C x H x W`` as a tensor,
        in imagecodecs' forms: depths below 8 bits scaled to 0..255 uint8, palettes as RGB
        (RGBA with tRNS), tRNS on gray or RGB as an alpha channel.
        16-bit files of floats in [0, 1] come back within 1/65535, 8-bit within 1/255.

        A record that tensorpng would not write (an unknown dtype, layout or mapping, a shape
        out of bounds, JSON too large or too deep) or that does not match the file's IHDR
        (bit depth, size, channels; e.g. a 16-bit file re-encoded at 8 bits with its text
        kept) is ignored with a :class:`~tensorpng.errors.RecordWarning`, and the raw
        samples are returned: the pixels are sound, only their interpretation is lost.

    Raises:
        DecodeError: not a PNG, corrupt (bad CRC, cut, image data of the wrong size), more
            pixels than ``max_pixels``, or no installed decoder reads it.
        MissingFileError: no file at ``path`` (also a ``FileNotFoundError``).
        ReadError: the file cannot be read (also an ``OSError``).
    """
    check_max_pixels(max_pixels)
    if not isinstance(as_tensor, (bool, type(None))):
        raise OptionError(f"as_tensor must be True, False or None, got {as_tensor!r}")
    data, label = _read(path)
    container = read_container(data)
    header = container.header
    check_pixels(label, header.width, header.height, max_pixels)
    inflate_image_data(container)
    entry = _record(container, label)
    try:
        samples = decode(container, indices=entry is not None and entry.mapping == "palette")
    except MemoryError:
        raise DecodeError(f"{label} is too large to decode in the memory available") from None
    values, torch_wanted = _values(samples, entry, as_tensor, label)
    if not torch_wanted:
        return values
    try:
        import torch
    except ImportError:
        raise OptionError("as_tensor=True needs PyTorch: pip install torch") from None
    if values.dtype == np.uint16:
        return torch.from_numpy(values.astype(np.int32)).to(torch.uint16)
    tensor = torch.from_numpy(np.ascontiguousarray(values))
    if entry is not None and entry.dtype == "bfloat16":
        tensor = tensor.to(torch.bfloat16)
    return tensor


def _values(
    samples: np.ndarray, entry: MappingRecord | None, as_tensor: bool | None, path: object
) -> tuple[np.ndarray, bool]:
    torch_wanted = as_tensor
    if as_tensor is None:
        torch_wanted = bool(entry and entry.framework == "torch" and "torch" in sys.modules)
    values = samples
    layout = "CHW" if torch_wanted and samples.ndim == 3 else ("HWC" if samples.ndim == 3 else "HW")
    if entry is not None:
        try:
            values = _undo_mapping(samples, entry)
            layout = entry.layout.replace("N", "")
            if entry.grid is not None:
                layout = "HWC" if values.ndim == 3 else "HW"
        except (RecordError, TensorPNGError) as error:
            _ignored(path, str(error))
            return _values(samples, None, as_tensor, path)
    if values.ndim == 3 and layout == "CHW":
        values = np.ascontiguousarray(values.transpose(2, 0, 1))
    elif values.ndim == 2 and layout == "CHW":  # one channel: 1 x H x W
        values = values[None]
    elif values.ndim == 2 and layout == "HWC":
        values = values[..., None]
    return values, bool(torch_wanted)
