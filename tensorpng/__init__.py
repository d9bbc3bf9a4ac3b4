"""tensorpng: save tensors as PNG images, correctly and fast.

>>> import tensorpng
>>> tensorpng.save(batch, "samples/{index:03d}.png", mean=tensorpng.IMAGENET_MEAN,
...                std=tensorpng.IMAGENET_STD)  # doctest: +SKIP
"""

from __future__ import annotations

from ._torchvision import make_grid, save_image
from ._version import __version__
from .convert import to_array
from .errors import (
    DTypeError,
    OptionError,
    PathError,
    QueueFullError,
    ShapeError,
    TargetExistsError,
    TensorPNGError,
    ValueRangeError,
    WriteError,
)
from .files import encode, save
from .load import DecodeError, load
from .parameters import format_parameters, parse_parameters
from .png import encode_png
from .scaling import IMAGENET_MEAN, IMAGENET_STD
from .writer import Writer, WriterStats

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "DTypeError",
    "DecodeError",
    "OptionError",
    "PathError",
    "QueueFullError",
    "ShapeError",
    "TargetExistsError",
    "TensorPNGError",
    "ValueRangeError",
    "WriteError",
    "Writer",
    "WriterStats",
    "__version__",
    "encode",
    "encode_png",
    "format_parameters",
    "load",
    "make_grid",
    "parse_parameters",
    "save",
    "save_image",
    "to_array",
]
