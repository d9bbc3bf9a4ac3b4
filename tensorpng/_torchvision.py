"""A drop-in for ``torchvision.utils.save_image`` and ``make_grid``: same calls, same pixels.

``from tensorpng import save_image`` replaces ``from torchvision.utils import save_image``.
The arithmetic is torchvision's, step by step and in the input's dtype, so float32 and
float64 inputs give the same samples bit for bit: a 1-channel image becomes RGB; a batch of
one is not padded; ``normalize`` clamps to ``(lo, hi)`` then divides ``x - lo`` by
``max(hi - lo, 1e-5)``; a sample is ``x * 255 + 0.5``, clamped to 0..255, truncated.

It is faster because it never builds the float grid that torchvision converts afterwards:
each image is converted in its own cache-sized pass, straight into its place in an
interleaved uint8 grid (``H x W x C``, the PNG's pixel order), on every core;
the one big image is then deflated on every core (:mod:`tensorpng._parallel_deflate`).
Every step is elementwise, so converting image by image gives the same samples as
torchvision's whole-grid passes; the padding is converted with the same operations.

Beyond torchvision (each an option it lacks or an input it raises on): uint8 and bool
inputs are written as they are, ``bits=16`` writes 16-bit PNGs, NumPy arrays are taken
(and ``make_grid`` returns a NumPy array for them), 2-channel images are written as
gray + alpha, ``value_range`` may be a list, and ``metadata`` adds text chunks.
"""

from __future__ import annotations

import io
import os
from collections.abc import Mapping
from typing import Any, BinaryIO, Literal, TypedDict, Unpack

import numpy as np

from . import _parallel_deflate
from ._api import encode
from ._names import file_path
from ._options import checked_keywords, takes_options
from ._torchvision_checks import check_grid_options, check_span, grid_fill, torch_scalar
from .arrays import is_torch_tensor, plain_input, torch_module
from .errors import DTypeError, OptionError, ShapeError
from .grid import allocation_failed, fill_padding, grid_shape, tile_origin
from .png import Compression
from .sinks import write_atomic

_NORMALIZE_EPSILON = 1e-5  # torchvision's floor on hi - lo
# torch dtypes whose samples NumPy computes bit for bit as torch does (not float16/bfloat16).
_NUMPY_EXACT = frozenset({"torch.float32", "torch.float64", "torch.uint8", "torch.bool", "torch.uint16"})


def _describe(x: Any) -> str:
    return f"{type(x).__module__}.{type(x).__name__} of shape {tuple(x.shape)} and dtype {x.dtype}"


def _stack(tensor: Any) -> tuple[Any, bool]:
    """The input as one array or tensor, and whether it is a torch tensor (lists stacked)."""
    if isinstance(tensor, (list, tuple)):
        tensor = [plain_input(item) for item in tensor]  # masks dropped only where nothing is masked
        if not tensor:
            raise ShapeError("got an empty list of images; pass at least one C x H x W image")
        if all(is_torch_tensor(item) for item in tensor):
            shapes = {tuple(item.shape) for item in tensor}
            if len(shapes) != 1:
                raise ShapeError(f"a list of images must hold one shape, got shapes {sorted(shapes)}")
            return torch_module().stack(list(tensor), dim=0), True
        if all(isinstance(item, np.ndarray) for item in tensor):
            shapes = {item.shape for item in tensor}
            if len(shapes) != 1:
                raise ShapeError(f"a list of images must hold one shape, got shapes {sorted(shapes)}")
            return np.stack(tensor), False
        kinds = sorted({type(item).__name__ for item in tensor})
        raise DTypeError(f"a list of images must hold only torch tensors or only NumPy arrays, got {kinds}")
    tensor = plain_input(tensor)  # no nested tensor, no masked value
    if is_torch_tensor(tensor):
        return tensor.detach(), True
    if isinstance(tensor, np.ndarray):
        return tensor, False
    raise DTypeError(
        f"save_image and make_grid take a torch.Tensor, a numpy.ndarray or a list of them, "
        f"got {type(tensor).__name__}"
    )


def _as_nchw(tensor: Any) -> tuple[Any, bool]:
    """``N x C x H x W`` (channels not yet widened to RGB), as torchvision reads the shape."""
    batch, is_torch = _stack(tensor)
    if batch.ndim == 2:
        batch = batch[None, None]
    elif batch.ndim == 3:
        batch = batch[None]
    elif batch.ndim != 4:
        raise ShapeError(
            f"expected H x W, C x H x W or N x C x H x W (or a list of C x H x W), got {_describe(batch)}"
        )
    if 0 in tuple(batch.shape):
        raise ShapeError(f"every dimension needs at least one element, got {_describe(batch)}")
    return batch, is_torch


def _is_float(batch: Any, is_torch: bool) -> bool:
    return bool(batch.is_floating_point()) if is_torch else batch.dtype.kind == "f"


def _normalized(
    batch: Any, is_torch: bool, value_range: tuple[float, float, float] | None, scale_each: bool
) -> Any:
    """torchvision's ``normalize=True``: clamp, subtract lo, divide by ``max(hi - lo, 1e-5)``."""
    if not _is_float(batch, is_torch):  # torchvision raises on integers; they are normalized in float32
        batch = batch.to(torch_module().float32) if is_torch else batch.astype(np.float32)
    out = batch.clone() if is_torch else batch.copy()
    if value_range is not None:
        check_span(value_range[0], value_range[1], out.dtype)
    for part in out if scale_each else (out,):
        if value_range is None:
            low, high = float(part.min()), float(part.max())
            span = high - low
        else:
            low, high, span = value_range
        if is_torch:
            part.clamp_(min=low, max=high)
            part.sub_(low).div_(max(span, _NORMALIZE_EPSILON))
        else:
            kind = part.dtype.type  # the arithmetic stays in the input's dtype, as in torch
            np.clip(part, kind(low), kind(high), out=part)
            part -= kind(low)
            part /= kind(max(span, _NORMALIZE_EPSILON))
    return out


class GridSampleKeywords(TypedDict, total=False):
    """``make_grid``'s options, and the sample depth."""

    nrow: int
    padding: int
    normalize: bool
    value_range: tuple[float, float] | None
    scale_each: bool
    pad_value: float
    bits: Literal[8, 16]


class SaveImageKeywords(GridSampleKeywords, total=False):
    """``save_image``'s options."""

    compression: Compression
    metadata: Mapping[str, str] | bool | None


# torchvision's defaults (its own, not tensorpng.save's: bits is 8, value_range a normalize range)
TORCHVISION_DEFAULTS: dict[str, Any] = {
    "nrow": 8, "padding": 2, "normalize": False, "value_range": None, "scale_each": False, "pad_value": 0.0,
    "bits": 8, "compression": "fast", "metadata": None,
}  # fmt: skip


@checked_keywords
def make_grid(
    tensor: Any,
    nrow: int = 8,
    padding: int = 2,
    normalize: bool = False,
    value_range: tuple[float, float] | None = None,
    scale_each: bool = False,
    pad_value: float = 0.0,
) -> Any:
    """Make a grid of images, as ``torchvision.utils.make_grid`` does (an equal result).

    Args:
        tensor: ``B x C x H x W`` batch, ``C x H x W`` or ``H x W`` image, or a list of
            ``C x H x W`` images of one shape: torch tensors (any dtype, any device) or NumPy
            arrays. 1-channel images become 3-channel (RGB).
        nrow: images per grid row; the grid is ``ceil(B / nrow)`` rows of ``min(nrow, B)``.
        padding: pixels around and between the images.
        normalize: shift each value into 0..1 by ``value_range`` (default: the min and max).
        value_range: ``(min, max)`` for ``normalize``.
        scale_each: with ``normalize``, use each image's own min and max.
        pad_value: value of the padding pixels, in the input's dtype.

    Returns:
        ``C x H' x W'`` of the input's dtype (``C x H x W`` unpadded for a batch of one): a
        torch tensor on the input's device, or a NumPy array for NumPy input.
    """
    nrow, padding, pad_value, low_high = check_grid_options(nrow, padding, pad_value, value_range)
    batch, is_torch = _as_nchw(tensor)
    if batch.shape[1] == 1:
        wide = (batch.shape[0], 3, *batch.shape[2:])
        batch = batch.expand(*wide) if is_torch else np.broadcast_to(batch, wide)
    if normalize is True:  # torchvision's test: a truthy non-True value does not normalize
        batch = _normalized(batch, is_torch, low_high, scale_each is True)
    count, channels, height, width = batch.shape
    if count == 1:
        return batch[0].clone() if is_torch else batch[0].copy()
    fill = grid_fill(pad_value, batch.dtype, _is_float(batch, is_torch))
    itemsize = batch.element_size() if is_torch else batch.itemsize
    grid_height, grid_width = grid_shape(count, height, width, nrow, padding, channels * itemsize)
    shape = (channels, grid_height, grid_width)
    try:
        grid = batch.new_full(shape, fill) if is_torch else np.full(shape, fill, dtype=batch.dtype)
    except (MemoryError, RuntimeError) as error:  # torch's CPU allocator raises RuntimeError
        raise allocation_failed(shape, itemsize) from error
    for index in range(count):
        top, left = tile_origin(index, count, nrow, height, width, padding)
        grid[:, top : top + height, left : left + width] = batch[index]
    return grid


def _target(fp: Any, format: str | None) -> None:
    """Raise before any work unless ``fp``/``format`` ask for a PNG we can write."""
    if format is not None and (not isinstance(format, str) or format.lower() != "png"):
        raise OptionError(f"tensorpng.save_image writes PNG only, got format={format!r}")
    name = getattr(fp, "name", None)  # a file object's name: a wrong suffix is as wrong there
    if isinstance(fp, (str, os.PathLike)) or isinstance(name, str):
        # a path naming a folder is refused here, before any folder is made
        text = file_path(fp) if isinstance(fp, (str, os.PathLike)) else str(name)
        suffix = os.path.splitext(text)[1].lower()
        if suffix not in ("", ".png") and format is None:
            raise OptionError(
                f"tensorpng.save_image writes PNG only, got the path {text!r}; "
                "name it .png (or pass format='png' to write PNG bytes under this name)"
            )
        if isinstance(fp, (str, os.PathLike)):
            return
    if isinstance(fp, io.TextIOBase) or not callable(getattr(fp, "write", None)):
        raise DTypeError(
            f"fp must be a path or a binary file object (opened with 'wb'), got {type(fp).__name__}"
        )


def _sample_dtype(batch: Any, is_torch: bool, bits: int, normalize: bool) -> Literal["float", "copy", "bool"]:
    """How the samples are made: torchvision's float arithmetic, a copy, or 0 / max for bool."""
    if normalize or _is_float(batch, is_torch):
        return "float"
    name = str(batch.dtype).removeprefix("torch.")
    if name == "bool":
        return "bool"
    if name == "uint8" or (name == "uint16" and bits == 16):
        return "copy"
    raise DTypeError(
        f"save_image takes float images in 0..1 (torchvision's convention), uint8 or bool"
        f"{' (uint16 with bits=16)' if name == 'uint16' else ''}; got {_describe(batch)}. "
        "Convert it, for example x.float() / x.max(), or use tensorpng.save with value_range"
    )


def _pad_sample(batch: Any, is_torch: bool, pad_value: float, maximum: int, mode: str) -> int:
    """The padding's sample: ``pad_value`` through the same arithmetic as the pixels."""
    if mode != "float":
        return int(min(max(pad_value * maximum + 0.5, 0), maximum))
    if is_torch:
        torch = torch_module()
        value = torch.full((1,), torch_scalar(pad_value), dtype=batch.dtype, device=batch.device)
        return int(value.mul(maximum).add_(0.5).clamp_(0, maximum).to(torch.float64).item())
    kind = batch.dtype.type
    value = np.full(1, pad_value, dtype=batch.dtype)
    return int(np.clip(value * kind(maximum) + kind(0.5), 0, maximum)[0])


def _convert_into(out: np.ndarray, image: Any, is_torch: bool, maximum: int, mode: str) -> None:
    """``out[...] = samples of image`` (both ``C x H x W``): torchvision's arithmetic for floats."""
    if mode == "bool":
        np.multiply(np.asarray(image.cpu() if is_torch else image), maximum, out=out, casting="unsafe")
        return
    if mode == "copy":
        source = np.asarray(image.cpu() if is_torch else image)
        out[...] = source if out.dtype == source.dtype else source.astype(out.dtype) * 257
        return
    if is_torch:
        torch = torch_module()
        # x * 255 + 0.5, clamped, then the cast truncates: torchvision's save_image.
        values = image.mul(maximum).add_(0.5).clamp_(0, maximum)
        if out.dtype == np.uint8:
            torch.from_numpy(out).copy_(values)
        else:
            out[...] = values.to(torch.float64).cpu().numpy()  # exact, then truncated by the cast
        return
    kind = image.dtype.type
    values = image * kind(maximum)
    values += kind(0.5)
    np.clip(values, 0, maximum, out=values)
    # Float to unsigned truncates, as torch's cast does. Plane by plane: ``out`` is a view of
    # interleaved pixels, and one strided cast per plane runs ~4x faster than NumPy's cast
    # of the whole C x H x W block into it (whose innermost loop is the 3 channels).
    # NaN stays NaN through the clip and casts to 0, silently as in torch (NumPy would warn).
    with np.errstate(invalid="ignore"):
        for plane, source in zip(out, values, strict=True):
            plane[...] = source


@takes_options(GridSampleKeywords, TORCHVISION_DEFAULTS)
def grid_samples(tensor: Any, **options: Unpack[GridSampleKeywords]) -> np.ndarray:
    """The samples :func:`save_image` writes: ``C x H' x W'`` uint8 (uint16 for ``bits=16``).

    Equal to ``make_grid(...).mul(255).add_(0.5).clamp_(0, 255).to(torch.uint8)`` for float
    inputs; C is 3 for 1-channel input, else the input's (2: gray + alpha, 4: RGBA). The
    array is a view of ``H' x W' x C`` C-contiguous memory (``.transpose(1, 2, 0)`` is the
    PNG's pixel order): each image is interleaved while it is converted, in cache, on every
    core, so the encoder needs no copy of the whole grid.
    """
    return _grid_samples(tensor, options)


def _grid_samples(tensor: Any, options: Mapping[str, Any]) -> np.ndarray:
    """:func:`grid_samples` with every option of ``options`` given (others are ignored)."""
    bits = options["bits"]
    normalize, scale_each = options["normalize"] is True, options["scale_each"] is True  # as torchvision
    if bits not in (8, 16) or isinstance(bits, bool):
        raise OptionError(f"bits must be 8 or 16, got {bits!r}")
    nrow, padding, pad_value, low_high = check_grid_options(
        options["nrow"], options["padding"], options["pad_value"], options["value_range"]
    )
    batch, is_torch = _as_nchw(tensor)
    if is_torch and batch.device.type == "cpu" and str(batch.dtype) in _NUMPY_EXACT:
        # NumPy's float32/float64 operations round as torch's do (IEEE), and run on the
        # calling thread: many small torch calls each wake torch's thread pool, which
        # costs more than the work on a busy machine.
        batch, is_torch = batch.numpy(), False
    if batch.shape[1] > 4:
        raise ShapeError(
            f"save_image reads C x H x W (channels first) with C in 1..4, got {_describe(batch)}; "
            "for H x W x C images use x.permute(2, 0, 1) (or tensorpng.save, which reads both)"
        )
    mode = _sample_dtype(batch, is_torch, bits, normalize)
    if bits == 16 and mode == "float" and str(batch.dtype).removeprefix("torch.") in ("float16", "bfloat16"):
        batch = batch.float() if is_torch else batch.astype(np.float32)  # 65535 is beyond float16
    if normalize:
        batch = _normalized(batch, is_torch, low_high, scale_each)
    maximum = (1 << bits) - 1
    count, channels, height, width = batch.shape
    out_channels = 3 if channels == 1 else channels
    grid_height, grid_width = grid_shape(count, height, width, nrow, padding, out_channels * bits // 8)
    dtype = np.uint8 if bits == 8 else np.uint16
    shape = (grid_height, grid_width, out_channels)
    columns = min(nrow, count)
    value = _pad_sample(batch, is_torch, pad_value, maximum, mode) if count > 1 else 0
    # Only the padding is set here: every image's pixels are written once, below. Zero
    # padding (the default) costs nothing: calloc'd memory is zero already.
    try:
        grid = np.zeros(shape, dtype) if value == 0 and count > 1 else np.empty(shape, dtype)
    except MemoryError:
        raise allocation_failed(shape, bits // 8) from None
    if value != 0:
        fill_padding(grid, count, columns, (height, width, padding), value)

    def convert(index: int) -> None:
        top, left = tile_origin(index, count, nrow, height, width, padding)
        tile = grid[top : top + height, left : left + width]
        _convert_into(tile[:, :, :channels].transpose(2, 0, 1), batch[index], is_torch, maximum, mode)
        if channels == 1:  # gray becomes RGB: the same samples in three channels
            tile[:, :, 1:] = tile[:, :, :1]

    if is_torch or count < 4 or _parallel_deflate.cpu_count() < 2:
        for index in range(count):
            convert(index)
    else:  # NumPy's ufuncs release the GIL: images convert on every core, into disjoint tiles
        list(_parallel_deflate.shared_pool().map(convert, range(count)))
    return grid.transpose(2, 0, 1)


@takes_options(SaveImageKeywords, TORCHVISION_DEFAULTS)
def save_image(
    tensor: Any,
    fp: str | os.PathLike[str] | BinaryIO,
    format: str | None = None,
    **options: Unpack[SaveImageKeywords],
) -> None:
    """Save a tensor as a PNG file, as ``torchvision.utils.save_image`` does (same pixels).

    Args:
        tensor: ``B x C x H x W`` batch (saved as a grid, see :func:`make_grid`),
            ``C x H x W`` or ``H x W`` image, or a list of ``C x H x W`` images; torch tensor
            (any device) or NumPy array. C = 1 (written as RGB, like torchvision), 2 (gray +
            alpha), 3 (RGB) or 4 (RGBA). Float values are in 0..1; uint8 and bool are
            written as they are (bool: 0 or the maximum).
        fp: a path (``str`` or ``pathlib.Path``; written atomically) or a binary file object.
        format: ``None`` or ``"png"``: tensorpng writes PNG only.
        nrow, padding, normalize, value_range, scale_each: as in :func:`make_grid`.
        pad_value: the padding, on float images' 0..1 scale whatever the input's dtype
            (1.0 is white for uint8 and bool input too; :func:`make_grid`, like torchvision's,
            takes it as a sample of the input's dtype).
        bits: 8 (torchvision's) or 16 (``x * 65535 + 0.5``, clamped, truncated).
        compression: ``"fast"``, ``"small"`` or ``"none"`` (see :func:`tensorpng.encode`).
        metadata: text chunks to add, ``{key: text}`` (as for :func:`tensorpng.save`;
            ``False`` writes no text at all, not even tensorpng's record).
    """
    _target(fp, format)
    grid = _grid_samples(tensor, options)
    # Planes viewed as H x W x C: the encoder filters them without interleaving them first.
    data = encode(
        grid.transpose(1, 2, 0),
        layout="HWC",
        compression=options["compression"],
        metadata=options["metadata"],
    )
    if isinstance(fp, (str, os.PathLike)):
        write_atomic(fp, data)
    else:
        fp.write(data)


__all__ = ["grid_samples", "make_grid", "save_image"]
