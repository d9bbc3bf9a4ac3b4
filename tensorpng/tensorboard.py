"""TensorBoard: images and grids encoded by tensorpng, written to a ``SummaryWriter``'s event file.

>>> from torch.utils.tensorboard import SummaryWriter
>>> from tensorpng.tensorboard import add_images
>>> writer = SummaryWriter("runs/exp1")  # doctest: +SKIP
>>> add_images(writer, "samples", batch, step, mean=0.5, std=0.5, nrow=8)  # doctest: +SKIP

Unlike ``SummaryWriter.add_image(s)``, the values are mapped by tensorpng's rules (``mean``/
``std``, ``value_range``, ``scale``; uint8 stays uint8, never multiplied by 255 again), the
grid has ``torchvision.utils.make_grid``'s geometry, and the PNG keeps tensorpng's record, so
an image downloaded from TensorBoard is read back by :func:`tensorpng.load` in the original
value space.

``bits=16`` (and uint16 input, which is 16-bit by default) writes a 16-bit PNG into the event
file as it is: TensorBoard serves the stored bytes to the browser without decoding them, and
browsers show 16-bit PNGs (reduced to 8 bits on screen), while a downloaded image keeps its 16
bits for :func:`tensorpng.load`. Pass ``bits=8`` for an 8-bit summary.

Needs the ``tensorboard`` package (``pip install 'tensorpng[tensorboard]'``) for the summary
protocol buffers; works with ``torch.utils.tensorboard.SummaryWriter`` and with anything that
has its ``_get_file_writer()`` (or ``file_writer``) whose ``add_summary`` takes a summary proto.
"""

from __future__ import annotations

import struct
from typing import Any, Unpack

from ._api import encode
from ._options import SummaryImageKeywords, SummaryKeywords, takes_options
from .errors import DTypeError, OptionError, ShapeError

__all__ = ["add_image", "add_images", "image_summary"]

# Summary.Image.colorspace by PNG color type (gray, RGB, palette, gray+alpha, RGBA).
_COLORSPACE = {0: 1, 2: 3, 3: 3, 4: 2, 6: 4}


def _summary_pb2() -> Any:
    try:
        from tensorboard.compat.proto import summary_pb2
    except ImportError as error:
        raise OptionError(
            "tensorpng.tensorboard needs the tensorboard package: pip install 'tensorpng[tensorboard]'"
        ) from error
    return summary_pb2


def _png_geometry(data: bytes) -> tuple[int, int, int]:
    """Width, height and ``Summary.Image.colorspace`` of PNG bytes (from IHDR; a palette PNG
    with a ``tRNS`` chunk counts as RGBA)."""
    width, height, _depth, color_type = struct.unpack_from(">IIBB", data, 16)
    channels = _COLORSPACE[color_type]
    if color_type == 3 and b"tRNS" in data[: data.find(b"IDAT")]:
        channels = 4
    return width, height, channels


def image_summary(tag: str, png: bytes) -> Any:
    """A ``Summary`` protocol buffer holding one image value: ``png`` under ``tag``."""
    summary_pb2 = _summary_pb2()
    width, height, channels = _png_geometry(png)
    image = summary_pb2.Summary.Image(
        height=height, width=width, colorspace=channels, encoded_image_string=png
    )
    return summary_pb2.Summary(value=[summary_pb2.Summary.Value(tag=tag, image=image)])


def _check_writer(summary_writer: object) -> None:
    if not callable(getattr(summary_writer, "_get_file_writer", None)) and not hasattr(
        summary_writer, "file_writer"
    ):
        raise DTypeError(
            f"expected a torch.utils.tensorboard.SummaryWriter, got {type(summary_writer).__name__}; "
            "with Lightning, pass trainer.logger.experiment"
        )


def _file_writer(summary_writer: object) -> Any:
    # _get_file_writer() reopens the event file after SummaryWriter.close(), as add_image does.
    getter = getattr(summary_writer, "_get_file_writer", None)
    file_writer = getter() if callable(getter) else getattr(summary_writer, "file_writer", None)
    if file_writer is None or not callable(getattr(file_writer, "add_summary", None)):
        raise DTypeError(f"{type(summary_writer).__name__} has no file writer with add_summary")
    return file_writer


@takes_options(SummaryKeywords)
def add_images(
    summary_writer: object,
    tag: str,
    images: object,
    global_step: int | None = None,
    walltime: float | None = None,
    **options: Unpack[SummaryKeywords],
) -> None:
    """Write a batch as one grid image to ``summary_writer``'s event file.

    Args:
        summary_writer: a ``torch.utils.tensorboard.SummaryWriter`` (Lightning:
            ``trainer.logger.experiment``).
        tag: the image's name in TensorBoard.
        images: ``N x C x H x W`` or ``N x H x W x C`` (``torch.Tensor`` on any device, or
            ``numpy.ndarray``), ``N x H x W`` with ``layout="NHW"``, or one image (``C x H x W``,
            ``H x W x C``, ``H x W``); C = 1, 2, 3 or 4.
        global_step: the step shown in TensorBoard.
        walltime: seconds since the epoch (default: now).
        layout, mean, std, value_range, scale, bits, nrow, padding, pad_value, cmap, palette,
            compression, metadata: as for :func:`tensorpng.save` (the grid is
            ``make_grid``'s: ``nrow`` images a row, ``padding`` pixels between them).

    The image written is ``tensorpng.to_array(images, grid=True, <the same options>)``,
    ``H' x W' [x C]`` with ``H' = rows * (H + padding) + padding`` (no padding for one image).
    """
    _summary_pb2()  # a missing package or a wrong writer is reported before any work
    _check_writer(summary_writer)
    png = encode(images, grid=True, **options)
    _file_writer(summary_writer).add_summary(image_summary(tag, png), global_step, walltime)


@takes_options(SummaryImageKeywords)
def add_image(
    summary_writer: object,
    tag: str,
    image: object,
    global_step: int | None = None,
    walltime: float | None = None,
    **options: Unpack[SummaryImageKeywords],
) -> None:
    """Write one image to ``summary_writer``'s event file.

    Args:
        image: ``C x H x W``, ``H x W x C`` or ``H x W`` (``torch.Tensor`` on any device, or
            ``numpy.ndarray``), C = 1, 2, 3 or 4. A batch goes to :func:`add_images`.
        The others: as for :func:`add_images`.
    """
    layout = options["layout"]
    if layout is not None and not isinstance(layout, str):
        raise OptionError(f"layout must be a string such as 'CHW', got {layout!r}")
    shape = tuple(getattr(image, "shape", ()))
    if len(shape) == 4 or (layout is not None and layout.upper().startswith("N")):
        raise ShapeError(
            f"add_image takes one image (C x H x W, H x W x C or H x W), got shape {shape}"
            f"{f' with layout={layout!r}' if layout else ''}; use add_images for a batch (one grid)"
        )
    add_images(summary_writer, tag, image, global_step, walltime, **options)
