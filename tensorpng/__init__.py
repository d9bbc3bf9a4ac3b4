"""tensorpng: save tensors as PNG images, correctly and fast.

>>> import tensorpng
>>> tensorpng.save(batch, "samples/{index:03d}.png", mean=tensorpng.IMAGENET_MEAN,
...                std=tensorpng.IMAGENET_STD)  # doctest: +SKIP
"""

from __future__ import annotations

from ._animation import save_animation
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
    "load",
    "save",
    "save_animation",
    "to_array",
]
