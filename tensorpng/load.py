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

from ._decoders import MAX_IMAGE_PIXELS, check_max_pixels, check_pixels, decode, palette_colors
from ._png_chunks import Container, inflate_image_data, read_container
from ._png_text import read_texts
from ._walk import check_regular, open_regular
from .colormaps import NotAColormapImage, TablePositions
from .errors import (
    DecodeError,
    OptionError,
    ReadError,
    RecordWarning,
    TensorPNGError,
    names_memory_errors,
)
from .metadata import METADATA_KEY, MappingRecord, RecordError

_BLOCK = 1 << 16  # pixels per step of undoing an affine mapping: 512 KiB of float64 a channel


@names_memory_errors("tensorpng.read_text")
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
            fileno = source.fileno()  # type: ignore[union-attr]
        except (AttributeError, OSError, ValueError):  # io.BytesIO and the like: bounded already
            fileno = None
        if fileno is not None:
            check_regular(fileno, label, "; pass its bytes instead")
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
        # a regular file only: a pipe would block the read, a device (/dev/zero) never end it
        with open_regular(Path(source)) as file:
            return file.read(), os.fspath(source)
    except (OSError, TypeError, ValueError) as error:  # ValueError: a NUL in the path
        if isinstance(error, TensorPNGError):
            raise
        raise ReadError(f"cannot read {source!r}: {error}") from error


def _undo_mapping(samples: np.ndarray, entry: MappingRecord) -> np.ndarray:
    """Values in the caller's original space from decoded samples and their record."""
    mapping = entry.mapping
    if mapping in ("palette", "copy"):  # palette: ``samples`` are the indices
        dtype = _numpy_dtype(entry.dtype, fallback="int64")  # integer and bool names only
        _check_fits(samples, entry, dtype)
        return samples.astype(dtype)
    if mapping == "bool":
        return samples > 0
    if mapping == "widen":
        return ((samples.astype(np.uint32) + 128) // 257).astype(np.uint8)
    if mapping == "narrow":
        return samples.astype(np.uint16) * np.uint16(257)
    if entry.per_image_range:
        warnings.warn(
            "this grid was scaled per image; load returns its samples in [0, 1]", RuntimeWarning, stacklevel=3
        )
    if mapping == "colormap":
        try:
            return _undo_affine(samples, entry, 255, TablePositions(str(entry.cmap)))
        except NotAColormapImage as error:
            raise RecordError(str(error)) from None
    return _undo_affine(samples, entry, (1 << entry.bits) - 1)


def _check_fits(samples: np.ndarray, entry: MappingRecord, dtype: np.dtype[Any]) -> None:
    """Raise :class:`RecordError` unless every sample of the images is a value of ``dtype``:
    a record saying int8 or bool of a file with larger samples would wrap them."""
    top = 1 if dtype.kind == "b" else int(np.iinfo(dtype).max)
    if top >= np.iinfo(samples.dtype).max:
        return
    largest = _image_max(samples, entry)
    if largest > top:
        raise RecordError(
            f"it says {entry.mapping} of {entry.dtype} values, at most {top}, but the PNG holds samples "
            f"up to {largest}"
        )


def _image_max(samples: np.ndarray, entry: MappingRecord) -> int:
    """The largest sample of the images, not counting a grid's padding (``pad_value=1`` pads
    int8 grids with 255: not a value, and it may wrap)."""
    if entry.grid is None or entry.grid[0] == 1:
        return int(samples.max(initial=0))
    count, nrow, padding = entry.grid
    height, width = entry.image_size()
    columns = min(nrow, count)
    rows = -(-count // columns)
    # The grid's geometry was checked against IHDR: its cells are a view, tiles x rows x columns.
    body = samples[
        padding : padding + rows * (height + padding), padding : padding + columns * (width + padding)
    ]
    tiles = body.reshape(rows, height + padding, columns, width + padding, *samples.shape[2:])
    tiles = tiles[:, :height, :, :width]
    last = count - (rows - 1) * columns  # images in the last row; the other cells are padding
    return max(int(tiles[: rows - 1].max(initial=0)), int(tiles[rows - 1, :, :last].max(initial=0)))


def _undo_affine(
    samples: np.ndarray, entry: MappingRecord, maximum: int, positions: TablePositions | None = None
) -> np.ndarray:
    """``(samples / maximum * (high - low) + low - mean) / std`` in the record's float dtype
    (float32 for others), with ``positions`` first for a colormap: computed in float64 a block
    of pixels at a time, so the memory is that of the result and the samples."""
    dtype = entry.dtype
    out_dtype = _numpy_dtype(dtype, fallback="float32") if dtype.startswith("float") else np.dtype(np.float32)
    shape = samples.shape[:2] if positions is not None else samples.shape
    steps = _affine_steps(entry, 1 if len(shape) == 2 else shape[2], out_dtype)
    pixels = np.ascontiguousarray(samples).reshape(shape[0] * shape[1], -1)
    out = np.empty(shape, out_dtype)
    flat = out.reshape(len(pixels), -1)
    # the parameters were checked to keep every value finite; a float error here is a bug in that
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        for start in range(0, len(pixels), _BLOCK):
            part = pixels[start : start + _BLOCK]
            values = positions(part)[:, None] if positions is not None else part.astype(np.float64)
            values /= maximum
            if steps is not None:
                span, low, mean, std = steps
                values *= span
                values += low
                values -= mean
                values /= std
            flat[start : start + len(part)] = values
    return out


def _affine_steps(
    entry: MappingRecord, channels: int, out_dtype: np.dtype[Any]
) -> tuple[float, float, np.ndarray, np.ndarray] | None:
    """``(high - low, low, mean, std)`` of the record (None: values stay in [0, 1]), refused
    with :class:`RecordError` when they take a value past the range of ``out_dtype``.

    The steps are monotonic in each channel, so the values of samples 0 and the maximum bound
    all others: checking those two keeps inf and NaN (and NumPy's warnings) out of the result.
    """
    value_range = entry.value_range
    if entry.per_image_range or not value_range or value_range[0] is None or value_range[1] is None:
        return None
    low, high = float(value_range[0]), float(value_range[1])
    mean = _per_channel(entry.mean or (0.0,), channels, "mean")
    std = _per_channel(entry.std or (1.0,), channels, "std")
    ends = np.zeros((2, channels))
    ends[1] = 1.0
    with np.errstate(all="ignore"):
        ends *= high - low
        ends += low
        ends -= mean
        ends /= std
        cast = ends.astype(out_dtype)
    limit = _TORCH_FLOAT_MAX.get(entry.dtype)  # computed in float32, then cast by torch
    if not np.isfinite(cast).all() or (limit is not None and np.abs(ends).max() > limit):
        raise RecordError(
            f"its value_range {[low, high]}, mean {entry.mean} and std {entry.std} give values "
            f"from {ends.min():g} to {ends.max():g}, past the range of {out_dtype}"
        )
    return high - low, low, mean, std


# The largest finite value of the torch dtypes NumPy lacks (their values are computed in
# float32, then cast: a larger one would become inf).
_TORCH_FLOAT_MAX = {
    "bfloat16": 3.3895313892515355e38,
    "float8_e4m3fn": 448.0,
    "float8_e5m2": 57344.0,
    "float8_e4m3fnuz": 240.0,
    "float8_e5m2fnuz": 57344.0,
    "float8_e8m0fnu": 1.7014118346046923e38,
}


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
        if container.transparency is not None:  # its alpha would be taken for a value channel
            raise RecordError("the file has a tRNS chunk, which tensorpng never writes: it was edited")
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


@names_memory_errors("tensorpng.load")
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
        out of bounds, JSON too large or too deep), that does not match the file's IHDR
        (bit depth, size, channels, a grid's geometry; e.g. a 16-bit file re-encoded at 8
        bits with its text kept) or its samples (integers or bools that the record's dtype
        cannot hold, outside a grid's padding; a colormap image with more than 65,536
        colours not in the colormap), or whose numbers take values past the range of its
        float dtype (inf or NaN) is ignored with a :class:`~tensorpng.errors.RecordWarning`,
        and the raw samples are returned: the pixels are sound, only their interpretation
        is lost. Colours of an edited colormap image that are not in the colormap map to
        the nearest colour that is.

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
    values, torch_wanted, entry = _values(samples, entry, as_tensor, label, container)
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
    samples: np.ndarray,
    entry: MappingRecord | None,
    as_tensor: bool | None,
    path: object,
    container: Container,
) -> tuple[np.ndarray, bool, MappingRecord | None]:
    """The result as an array, whether it becomes a tensor, and the record used (None: the
    file's record was ignored here, and its raw samples are returned)."""
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
            if entry.mapping == "palette":  # the raw samples of a palette PNG are its colours
                samples = palette_colors(samples, container)
            return _values(samples, None, as_tensor, path, container)
    if values.ndim == 3 and layout == "CHW":
        values = np.ascontiguousarray(values.transpose(2, 0, 1))
    elif values.ndim == 2 and layout == "CHW":  # one channel: 1 x H x W
        values = values[None]
    elif values.ndim == 2 and layout == "HWC":
        values = values[..., None]
    return values, bool(torch_wanted), entry
