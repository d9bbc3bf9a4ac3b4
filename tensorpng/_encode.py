"""Internal: encoded bytes for a prepared batch, by the CPU encoder or the torch encoder.

The choice between the two encoders is made here, once per batch (:func:`prepare_for`);
the CPU path has two stages (:func:`filtered_image` on the calling thread, then
``png.finish_png`` on any thread), the device path encodes a whole batch at once.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from . import gpu_encode
from ._chunks import chunk_texts, convert_chunk
from ._options import ImageOptions, PNGOptions
from ._record import device_extremes, record_text, text_chunks
from .arrays import describe, is_torch_tensor
from .convert import Batch, prepare
from .errors import OptionError
from .png import FilteredPNG, encode_png_ranged, filter_indexed_png, filter_png, filter_pngs, finish_png
from .scaling import ConvertedImage

Extremes = tuple[float | None, float | None]


def texts(
    png_options: PNGOptions, batch: Batch, index: int | None, extremes: Extremes | None = None
) -> dict[str, str] | None:
    """The text chunks of image ``index`` of ``batch`` (None: its grid or only image)."""
    entry = record_text(batch, index, extremes) if png_options.record else None
    return text_chunks(png_options.metadata, entry, png_options.record)


def prepare_for(x: object, image_options: ImageOptions, png_options: PNGOptions) -> tuple[Batch, bool]:
    """Prepare ``x`` and say whether the torch encoder encodes it (see :class:`PNGOptions`)."""
    if png_options.encoder == "device":
        if not is_torch_tensor(x):
            raise OptionError(f"encoder='device' encodes torch tensors; got {describe(x)}")
        if png_options.compression != "fast":
            raise OptionError("encoder='device' has one compression setting; pass compression='fast'")
        batch = prepare(x, image_options, keep_torch=True)
        if batch.writes_grid or batch.palette_table is not None:
            raise OptionError(
                "encoder='device' writes one RGB/gray file per image; "
                "grids and palette PNGs use encoder='cpu'"
            )
        return batch, True
    batch = prepare(x, image_options)
    device = (
        png_options.encoder == "auto"
        and batch.on_device
        and png_options.compression == "fast"
        and not batch.writes_grid
        and batch.palette_table is None
        and _image_scanline_bytes(batch) <= DEVICE_ENCODER_MAX_IMAGE_BYTES
    )
    return batch, device


# The torch encoder needs about 170 bytes of device memory per scanline byte of one image
# (it splits batches, not images): above this, "auto" encodes on the CPU (32 MiB: ~5.5 GB).
DEVICE_ENCODER_MAX_IMAGE_BYTES = 1 << 25


def _image_scanline_bytes(batch: Batch) -> int:
    """Bytes of one image's PNG scanlines (filter bytes included)."""
    _, height, width, channels = (int(d) for d in batch.images.shape)
    channels = 3 if batch.colormap is not None else channels
    return height * (1 + width * channels * batch.plan.bits // 8)


def encode_on_device(batch: Batch, png_options: PNGOptions) -> tuple[list[bytes], int]:
    """PNG bytes of every image of a torch batch by the torch encoder, and the NaN count."""
    samples, nans = batch.convert_on_device()
    low, high = device_extremes(batch.images) if png_options.record else (None, None)
    return encode_device_samples(batch, samples, png_options, low, high), int(nans.item())


def encode_device_samples(
    batch: Batch, samples: Any, png_options: PNGOptions, low: Any, high: Any
) -> list[bytes]:
    """The torch encoder on converted ``samples``, with each image's text chunks."""
    count = int(samples.shape[0])
    if png_options.record:  # extremes were computed on the device; their copy waits for it
        pairs = list(zip(low.tolist(), high.tolist(), strict=True))
        chunks = [
            texts(png_options, batch, i if batch.layout.batched else None, pairs[i]) for i in range(count)
        ]
    else:
        chunks = [texts(png_options, batch, None)] * count
    return gpu_encode.encode_batch(samples, text=chunks)


def host_extremes(batch: Batch) -> list[Extremes] | None:
    """For a batch on a device that the CPU encoder will write: per-image (or, for a grid,
    whole-batch) finite min and max, read before the samples replace the values."""
    if not batch.on_device:
        return None
    low, high = device_extremes(batch.images)
    pairs = list(zip(low.tolist(), high.tolist(), strict=True))
    if batch.writes_grid:
        lows = [p[0] for p in pairs if p[0] is not None and math.isfinite(p[0])]
        highs = [p[1] for p in pairs if p[1] is not None and math.isfinite(p[1])]
        return [(min(lows) if lows else None, max(highs) if highs else None)]
    return pairs


def filtered_image(
    batch: Batch, index: int, png_options: PNGOptions, extremes: Extremes | None = None
) -> tuple[FilteredPNG, int]:
    """Convert and filter image ``index`` of a host batch (the grid when the batch is one):
    the first stage of its encoding (see :class:`~tensorpng.png.FilteredPNG`), and its
    NaN count.

    ``extremes``: the image's finite min and max for the record, when ``batch`` holds
    converted samples rather than the caller's values.
    """
    image = batch.grid_image() if batch.writes_grid else batch.image(index)
    position = index if batch.layout.batched and not batch.writes_grid else None
    text = texts(png_options, batch, position, extremes if extremes is not None else image.extremes)
    return _filtered(batch, image, png_options, text)


def filtered_chunk(
    batch: Batch, start: int, stop: int, png_options: PNGOptions, extremes: list[Extremes] | None = None
) -> list[tuple[FilteredPNG, int]]:
    """:func:`filtered_image` of images ``start`` to ``stop`` of a host batch of files (not a
    grid), converted in one pass (see :mod:`tensorpng._chunks`); ``extremes``: as given to
    ``filtered_image``, for the whole batch."""
    images = convert_chunk(batch, start, stop)
    pairs: list[Extremes | None] = []
    pairs += extremes[start:stop] if extremes is not None else [image.extremes for image in images]
    text = chunk_texts(png_options, batch, start, pairs)
    if batch.palette_table is not None:
        return [_filtered(batch, image, png_options, t) for image, t in zip(images, text, strict=True)]
    samples = [image.samples for image in images]
    filtered = filter_pngs(samples, compression=png_options.compression, texts=text)
    return [(item, image.nans) for item, image in zip(filtered, images, strict=True)]


def _filtered(
    batch: Batch, image: ConvertedImage, png_options: PNGOptions, text: dict[str, str] | None
) -> tuple[FilteredPNG, int]:
    if batch.palette_table is not None:
        labels = image.samples[..., 0]
        return filter_indexed_png(
            labels, batch.palette_table, compression=png_options.compression, text=text
        ), image.nans
    return filter_png(image.samples, compression=png_options.compression, text=text), image.nans


def encode_image(
    batch: Batch, index: int, png_options: PNGOptions, extremes: Extremes | None = None
) -> tuple[bytes, int]:
    """PNG bytes of image ``index`` of a host batch (see :func:`filtered_image`), and its
    NaN count."""
    if extremes is None and png_options.record and _samples_are_values(batch, png_options):
        # 8-bit input written as it is: the record's min and max are the samples', which the
        # native encoder finds as it codes them (a pass over the image less; 2-3% of a photo)
        position = index if batch.layout.batched else None
        data = encode_png_ranged(
            batch.image(index).samples, lambda low, high: texts(png_options, batch, position, (low, high))
        )
        if data is not None:
            return data, 0
    filtered, nans = filtered_image(batch, index, png_options, extremes)
    return finish_png(filtered), nans


def _samples_are_values(batch: Batch, png_options: PNGOptions) -> bool:
    """Whether the PNG samples of a host batch's images are its values, one by one (uint8
    input written as it is, one file per image), for the fast compression."""
    images = batch.images
    return (
        png_options.compression == "fast"
        and isinstance(images, np.ndarray)
        and images.dtype == np.uint8
        and batch.plan.mode == "copy"
        and not batch.converted
        and not batch.writes_grid
        and batch.colormap is None
        and batch.palette_table is None
    )
