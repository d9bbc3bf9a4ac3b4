"""Internal module.

Grids: tile a batch of converted images into one image, with torchvision's geometry.

Works on the converted samples (uint8/uint16, on the host), so a grid costs one copy of the
batch. The geometry is that of ``torchvision.utils.make_grid``: ``nrow`` images per row,
``padding`` pixels around and between images, and a batch of one returned without padding.
Unlike torchvision, gray images stay single-channel (a 1-channel PNG is a third the size).
"""

from __future__ import annotations

import math

import numpy as np

from .errors import OptionError

# Most bytes a grid may take (8 GiB: 2**31 RGBA uint8 pixels), far above any real grid;
# checked before allocating, so a huge padding is an OptionError, not a raw MemoryError.
MAX_GRID_BYTES = 2**33


def check_grid_options(nrow: int, padding: int, pad_value: float) -> None:
    """Raise :class:`OptionError` unless ``nrow >= 1``, ``padding >= 0``, ``0 <= pad_value <= 1``."""
    if not isinstance(nrow, int) or isinstance(nrow, bool) or nrow < 1:
        raise OptionError(f"nrow must be an integer >= 1, got {nrow!r}")
    if not isinstance(padding, int) or isinstance(padding, bool) or padding < 0:
        raise OptionError(f"padding must be an integer >= 0, got {padding!r}")
    if not isinstance(pad_value, (int, float)) or not 0 <= pad_value <= 1:
        raise OptionError(f"pad_value is a brightness from 0 (black) to 1 (white), got {pad_value!r}")


def grid_shape(
    count: int, height: int, width: int, nrow: int, padding: int, pixel_bytes: int = 1
) -> tuple[int, int]:
    """Height and width of the grid of ``count`` images of ``height x width``, whose pixels
    take ``pixel_bytes`` each (channels x bytes per sample)."""
    if count == 1:
        return height, width
    columns = min(nrow, count)
    rows = math.ceil(count / columns)
    grid_height = rows * (height + padding) + padding
    grid_width = columns * (width + padding) + padding
    if grid_height * grid_width * pixel_bytes > MAX_GRID_BYTES:
        raise OptionError(
            f"a grid of {count} images of {height}x{width} with padding={padding} and nrow={nrow} "
            f"would be {grid_height}x{grid_width} pixels ({grid_height * grid_width * pixel_bytes:,} "
            f"bytes), more than {MAX_GRID_BYTES:,}; use a smaller padding or save the images separately"
        )
    return grid_height, grid_width


def allocation_failed(shape: tuple[int, ...], pixel_bytes: int) -> OptionError:
    """The error for a grid under the bound that this machine still cannot allocate."""
    total = math.prod(shape) * pixel_bytes
    return OptionError(
        f"a grid of {'x'.join(map(str, shape))} samples ({total:,} bytes) does not fit in the memory "
        "available; use a smaller padding or nrow, or save the images separately"
    )


def tile_origin(index: int, count: int, nrow: int, height: int, width: int, padding: int) -> tuple[int, int]:
    """Top left pixel of image ``index`` of ``count`` in the grid (0, 0 for a batch of one,
    which is not padded)."""
    if count == 1:
        return 0, 0
    columns = min(nrow, count)
    return (index // columns) * (height + padding) + padding, (index % columns) * (width + padding) + padding


def fill_padding(grid: np.ndarray, count: int, columns: int, cell: tuple[int, int, int], value: int) -> None:
    """Set the padding of an ``H x W x C`` grid of ``count`` images in ``columns`` columns to
    ``value``: the rows and columns between the images, and the cells no image fills.
    ``cell``: each image's height and width, and the padding."""
    height, width, padding = cell
    rows = -(-count // columns)
    for row in range(rows + 1):
        grid[row * (height + padding) : row * (height + padding) + padding] = value
    for column in range(columns + 1):
        grid[:, column * (width + padding) : column * (width + padding) + padding] = value
    for index in range(count, rows * columns):  # the empty cells of the last row
        top, left = tile_origin(index, rows * columns, columns, height, width, padding)
        grid[top : top + height, left : left + width] = value


def make_grid(images: np.ndarray, nrow: int = 8, padding: int = 2, pad_value: float = 0.0) -> np.ndarray:
    """Tile ``images`` (``N x H x W x C``, uint8 or uint16) into one ``H' x W' x C`` image.

    Args:
        images: the converted batch.
        nrow: images per grid row.
        padding: pixels of padding around and between images.
        pad_value: brightness of the padding from 0 (black) to 1 (white); alpha is padded
            with the same value, so 0 leaves transparent gaps in RGBA grids.
    """
    check_grid_options(nrow, padding, pad_value)
    count, height, width, channels = images.shape
    if count == 1:
        return images[0]
    grid_height, grid_width = grid_shape(count, height, width, nrow, padding, channels * images.itemsize)
    max_value = np.iinfo(images.dtype).max
    try:
        grid = np.full((grid_height, grid_width, channels), round(pad_value * max_value), images.dtype)
    except MemoryError:
        raise allocation_failed((grid_height, grid_width, channels), images.itemsize) from None
    for index in range(count):
        top, left = tile_origin(index, count, nrow, height, width, padding)
        grid[top : top + height, left : left + width] = images[index]
    return grid
