"""tensorpng: save tensors as PNG images, correctly and fast.

>>> import tensorpng
>>> tensorpng.save(batch, "samples/{index:03d}.png", mean=tensorpng.IMAGENET_MEAN,
...                std=tensorpng.IMAGENET_STD)  # doctest: +SKIP
"""

from __future__ import annotations

from ._admission import WriterStats
from ._animation import save_animation
from ._api import encode, save, to_array
from ._torchvision import make_grid, save_image
from ._version import __version__
from .errors import (
    DecodeError,
    DTypeError,
    ForkedWriterError,
    LoadError,
    MissingFileError,
    OptionError,
    OutOfMemoryError,
    PathError,
    QueueFullError,
    ReadError,
    RecordWarning,
    ShapeError,
    TargetExistsError,
    TensorPNGError,
    UnknownOptionError,
    ValueRangeError,
    WriteError,
)
from .load import load, read_text
from .parameters import format_parameters, parse_parameters
from .scaling import IMAGENET_MEAN, IMAGENET_STD
from .writer import Writer

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "DTypeError",
    "DecodeError",
    "ForkedWriterError",
    "LoadError",
    "MissingFileError",
    "ReadError",
    "OptionError",
    "OutOfMemoryError",
    "PathError",
    "QueueFullError",
    "RecordWarning",
    "ShapeError",
    "TargetExistsError",
    "TensorPNGError",
    "UnknownOptionError",
    "ValueRangeError",
    "WriteError",
    "Writer",
    "WriterStats",
    "__version__",
    "encode",
    "format_parameters",
    "load",
    "make_grid",
    "parse_parameters",
    "read_text",
    "save",
    "save_animation",
    "save_image",
    "to_array",
]
