"""tensorpng: save tensors as PNG images, correctly and fast.

>>> import tensorpng
>>> tensorpng.save(batch, "samples/{index:03d}.png", mean=tensorpng.IMAGENET_MEAN,
...                std=tensorpng.IMAGENET_STD)  # doctest: +SKIP
"""

from __future__ import annotations

from ._version import __version__
from .convert import to_array
from .errors import (
    DecodeError,
    DTypeError,
    LoadError,
    MissingFileError,
    OptionError,
    PathError,
    QueueFullError,
    ReadError,
    RecordWarning,
    ShapeError,
    TargetExistsError,
    TensorPNGError,
    ValueRangeError,
    WriteError,
)
from .files import encode, save
from .load import load, read_text
from .png import encode_png
from .scaling import IMAGENET_MEAN, IMAGENET_STD
from .writer import Writer, WriterStats

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "DTypeError",
    "DecodeError",
    "LoadError",
    "MissingFileError",
    "ReadError",
    "OptionError",
    "PathError",
    "QueueFullError",
    "RecordWarning",
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
    "read_text",
    "save",
    "to_array",
]
