"""Internal module.

Input adaptation: any tensor or array a caller holds, as a NumPy array or a torch tensor.

Frameworks are detected through ``sys.modules`` (as einops does): torch is never imported
here, only used when the caller has already imported it (a torch tensor cannot exist
otherwise). CPU torch tensors become NumPy arrays without a copy where NumPy has the dtype;
tensors on an accelerator stay torch tensors so that the conversion runs on the device.
"""

from __future__ import annotations

import functools
import sys
from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import DTypeError, ShapeError, ValueRangeError

# DLPack device types (dlpack.h): 1 = CPU, 3 = CUDA host (pinned) memory.
_DLPACK_HOST_DEVICES = (1, 3)


def torch_module() -> Any:
    """The torch module if the caller imported it, else ``None`` (never imports it).

    Typed ``Any``: callers reach it only once they hold a torch tensor, so it is not ``None``.
    """
    return sys.modules.get("torch")


def is_torch_tensor(x: object) -> bool:
    """Whether ``x`` is a ``torch.Tensor`` (False without importing torch when it is absent)."""
    torch = torch_module()
    return torch is not None and isinstance(x, torch.Tensor)


@dataclass(frozen=True)
class SourceArray:
    """An input made ready for conversion.

    Attributes:
        data: a ``numpy.ndarray``, or a ``torch.Tensor`` on an accelerator (detached).
        channels_first: the input framework's convention, used only to break layout ties
            (torch: channels first; NumPy and other array libraries: channels last).
        description: what the caller passed, for error messages (type, shape, dtype, device).
    """

    data: Any
    channels_first: bool
    description: str

    @property
    def framework(self) -> str:
        """The top-level module of the caller's input type (``"torch"``, ``"numpy"``, ...)."""
        return self.description.split(".", 1)[0]

    @property
    def input_dtype(self) -> str:
        """The dtype of the caller's input (before bfloat16 was widened, for example)."""
        for part in self.description.split(", "):
            if part.startswith("dtype "):
                return part.removeprefix("dtype ")
        return self.dtype_name

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(int(d) for d in self.data.shape)

    @property
    def dtype_name(self) -> str:
        return dtype_text(self.data.dtype)


def dtype_text(dtype: object) -> str:
    """A NumPy or torch dtype's name as messages and records write it (``"float32"``)."""
    try:
        return _dtype_texts(type(dtype), dtype)  # type: ignore[arg-type]
    except TypeError:  # not hashable
        return str(dtype).replace("torch.", "")


@functools.lru_cache(maxsize=64)
def _dtype_texts(kind: type, dtype: Any) -> str:  # str(dtype) costs microseconds per call
    return str(dtype).replace("torch.", "")


def describe(x: object) -> str:
    """A short description of an input for error messages: type, shape, dtype, device."""
    shape = getattr(x, "shape", None)
    dtype = getattr(x, "dtype", None)
    parts = [type(x).__module__.split(".")[0] + "." + type(x).__name__]
    if shape is not None:
        parts.append(f"shape {tuple(map(int, shape))}")
    if dtype is not None:
        parts.append(f"dtype {dtype_text(dtype)}")
    device = getattr(x, "device", None)
    if device is not None and not isinstance(x, np.ndarray):
        parts.append(f"device {device}")
    return ", ".join(parts)


def _with_array_facts(description: str, array: np.ndarray) -> str:
    """``description`` plus the shape and dtype of ``array`` when the input itself had none.

    Objects exposing only ``__array__``/``__dlpack__`` may lack ``.shape``/``.dtype``; error
    messages must still name them.
    """
    if "shape " in description:
        return description
    return f"{description} (as an array: shape {tuple(int(d) for d in array.shape)}, dtype {array.dtype})"


def _check_numpy_dtype(array: np.ndarray, description: str) -> np.ndarray:
    kind = array.dtype.kind
    if kind in "biuf":
        if not array.dtype.isnative:
            array = array.astype(array.dtype.newbyteorder("="))
        return array
    raise DTypeError(
        f"cannot save an array of dtype {array.dtype} as an image ({description}); "
        "pass real numbers: bool, integers or floats (take .real or .abs() of complex data)"
    )


def _from_torch(tensor: Any, description: str, keep_torch: bool = False) -> SourceArray:
    torch = torch_module()
    assert torch is not None
    tensor = tensor.detach()
    if tensor.layout != torch.strided or tensor.device.type == "meta":
        raise DTypeError(
            f"cannot save {description}: it holds no dense data ({tensor.layout}, device "
            f"{tensor.device.type}); pass a dense tensor (x.to_dense(), or real data)"
        )
    if tensor.is_floating_point() and tensor.element_size() == 1:
        tensor = tensor.float()  # float8 formats: widen, exactly
    if tensor.dtype == torch.uint64:
        # int64 cannot hold values >= 2**63 (they would wrap): let NumPy, which has uint64
        # arithmetic, convert it on the host. uint64 images are rare; the copy is acceptable.
        return SourceArray(tensor.cpu().numpy(), channels_first=True, description=description)
    if tensor.dtype == torch.uint32:  # few torch ops take it: widen, exactly
        tensor = tensor.to(torch.int64)
    if tensor.is_complex() or tensor.dtype in (torch.quint8, torch.qint8, torch.qint32):
        raise DTypeError(
            f"cannot save a tensor of dtype {str(tensor.dtype).replace('torch.', '')} as an image "
            f"({description}); pass real numbers (take .real, .abs() or .dequantize() first)"
        )
    if tensor.device.type != "cpu" or keep_torch:
        return SourceArray(tensor, channels_first=True, description=description)
    if tensor.dtype == torch.bfloat16:  # NumPy has no bfloat16: widen it, exactly.
        tensor = tensor.float()
    if tensor.is_conj():
        tensor = tensor.resolve_conj()
    if tensor.is_neg():
        tensor = tensor.resolve_neg()
    return SourceArray(tensor.numpy(), channels_first=True, description=description)


def plain_input(x: object) -> object:
    """``x`` without what no image holds, else an error naming the fix: a NumPy masked array
    or a torch ``MaskedTensor`` becomes its data when no value is masked (NumPy would raise
    a raw ``MaskError`` or write the hidden values); a nested tensor (images of several
    shapes, whose ``.shape`` raises) is refused."""
    if isinstance(x, np.ma.MaskedArray):
        masked = int(np.ma.count_masked(x))  # type: ignore[no-untyped-call]
        if masked:
            raise ValueRangeError(
                f"cannot save a masked array with {masked:,} of {x.size:,} values masked ({describe(x)}): "
                "an image has no masked pixels; pass x.filled(v) with the value they should take"
            )
        return np.ma.getdata(x)
    if not is_torch_tensor(x):
        return x
    tensor: Any = x
    if tensor.is_nested:
        raise ShapeError(
            f"cannot save a nested tensor of {tensor.size(0)} tensors ({dtype_text(tensor.dtype)}): its "
            "images have different shapes; save them one by one (for i, image in enumerate(x.unbind()): "
            "tensorpng.save(image, f'{i}.png')), or pad them to one size and stack them"
        )
    masked_type = getattr(getattr(torch_module(), "masked", None), "MaskedTensor", None)
    if masked_type is not None and isinstance(tensor, masked_type):
        specified = tensor.get_mask()  # True where a value is given (the opposite of NumPy's mask)
        if not bool(specified.all()):
            raise ValueRangeError(
                f"cannot save a MaskedTensor with {int((~specified).sum()):,} of {specified.numel():,} "
                "values masked out: an image has no masked pixels; pass a plain tensor with the value "
                "they should take, e.g. x.get_data().masked_fill(~x.get_mask(), 0)"
            )
        return tensor.get_data()
    return x


def as_source(x: object, *, keep_torch: bool = False) -> SourceArray:
    """Adapt a caller's input for conversion.

    Accepts ``torch.Tensor`` (any device, any real dtype, ``requires_grad`` included), NumPy
    arrays, objects exposing ``__dlpack__`` (host memory; device memory when torch is
    imported) or ``__array__``, and nested sequences of numbers. With ``keep_torch``, CPU
    torch tensors stay torch tensors (for the torch encoder) instead of NumPy views.

    Raises:
        DTypeError: for unsupported types or dtypes, naming what was passed.
    """
    x = plain_input(x)
    description = describe(x)
    if isinstance(x, np.ndarray):
        return SourceArray(_check_numpy_dtype(x, description), False, description)
    if is_torch_tensor(x):
        return _from_torch(x, description, keep_torch)
    if hasattr(x, "__dlpack__"):
        device = x.__dlpack_device__()[0] if hasattr(x, "__dlpack_device__") else 1
        if device in _DLPACK_HOST_DEVICES:
            array = np.from_dlpack(x)
            description = _with_array_facts(description, array)
            return SourceArray(_check_numpy_dtype(array, description), False, description)
        torch = torch_module()
        if torch is None:
            raise DTypeError(
                f"{description} lives on an accelerator (DLPack device type {device}); "
                "tensorpng reads such arrays through torch, which is not imported: "
                "import torch first, or copy the array to the host"
            )
        source = _from_torch(torch.from_dlpack(x), description)
        return SourceArray(source.data, channels_first=False, description=description)
    if isinstance(x, (str, bytes, dict)) or x is None:
        raise DTypeError(
            f"cannot save {description} as an image; pass a torch.Tensor, a numpy.ndarray "
            "or an array that supports __dlpack__ or __array__"
        )
    if isinstance(x, (list, tuple)):  # np.asarray would drop a mask; a nested tensor's .shape raises
        x = [plain_input(item) for item in x]
    if isinstance(x, list) and x and all(hasattr(item, "shape") for item in x):
        shapes = {tuple(int(d) for d in item.shape) for item in x}
        if len(shapes) > 1:
            raise ShapeError(
                f"cannot save a list of {len(x)} images of different shapes {sorted(shapes)[:4]} as one "
                "batch; save them one by one (for i, image in enumerate(images): tensorpng.save(image, "
                "f'{i}.png')), or bring them to one size to save them as a batch or a grid=True"
            )
        if is_torch_tensor(x[0]):
            return as_source(torch_module().stack([item.detach() for item in x]), keep_torch=keep_torch)
    try:
        array = np.asarray(x)
    except Exception as error:  # any failure means "not an array"
        raise DTypeError(
            f"cannot read {description} as an array ({error}); pass a torch.Tensor, a "
            "numpy.ndarray or an array that supports __dlpack__ or __array__"
        ) from error
    description = _with_array_facts(description, array)
    return SourceArray(_check_numpy_dtype(array, description), False, description)


def current_rank() -> int:
    """This process's rank in ``torch.distributed`` when initialized, else 0."""
    torch = torch_module()
    if torch is not None:
        distributed = getattr(torch, "distributed", None)
        if distributed is not None and distributed.is_available() and distributed.is_initialized():
            return int(distributed.get_rank())
    return 0


def plain_number(value: Any) -> Any:
    """A NumPy scalar or 0-d array or tensor as the Python number it holds (None when it cannot
    be read, e.g. a meta tensor); any other value as it is."""
    if hasattr(value, "item") and getattr(value, "ndim", None) == 0 and not isinstance(value, np.bool_):
        try:
            return value.item()
        except (RuntimeError, ValueError):
            return None
    return value
