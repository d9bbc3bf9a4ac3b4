"""Internal: the one-call API, ``save``, ``encode`` and ``to_array``.

Each call parses its options once, prepares the input once (``convert.prepare``, through
``_encode.prepare_for``, which also picks the encoder), and passes the prepared batch down:
encoded bytes (``_encode``) go to a sink (``sinks``) through ``_pipeline.run_pipeline``.
``save`` and ``encode`` differ in their last step only, as safetensors' ``save`` and
``save_file`` do.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Unpack

import numpy as np

from ._chunks import chunk_bounds, pipeline_workers
from ._encode import (
    encode_image,
    encode_on_device,
    filtered_chunk,
    filtered_image,
    host_extremes,
    prepare_for,
)
from ._misuse import check_range
from ._names import parse_template, path_text
from ._options import (
    DEFAULTS,
    EncodeKeywords,
    ImageKeywords,
    ImageOptions,
    PNGOptions,
    SaveKeywords,
    check_bool,
    check_workers,
    parse_image_options,
    parse_png_options,
    takes_options,
)
from ._pipeline import default_workers, run_pipeline
from .convert import Batch, prepare, stacked, warn_nans
from .errors import OptionError
from .png import FilteredPNG, finish_png
from .sinks import FsspecSink, Sink, target_sink


@takes_options(SaveKeywords)
def save(x: object, path: str | os.PathLike[str], **options: Unpack[SaveKeywords]) -> list[Path] | list[str]:
    """Save a tensor or array as PNG: one file per image, or one grid.

    Args:
        x: ``torch.Tensor`` (any device; float, int, bool dtypes; ``requires_grad`` is fine),
            ``numpy.ndarray``, an object with ``__dlpack__``/``__array__``, or a list of
            equally sized images. Shapes: ``H x W``, ``C x H x W``, ``H x W x C``,
            ``N x H x W``, ``N x C x H x W`` or ``N x H x W x C`` with C = 1 (gray),
            2 (gray+alpha), 3 (RGB) or 4 (RGBA).
        path: the file, ending in ``.png``; a local path, or an fsspec URL
            (``s3://bucket/run/{index:04d}.png``; needs ``pip install 'tensorpng[s3]'``).
            One image, or a batch of one, is written to ``path`` itself. For a larger batch
            ``{index}`` (with a format spec such as ``{index:04d}``) names each image's
            file; without it ``_{index}`` is added before the suffix.
        layout: ``"HW"``, ``"CHW"``, ``"HWC"``, ``"NHW"``, ``"NCHW"`` or ``"NHWC"``;
            inferred when None (see the README).
        mean, std: undo ``Normalize(mean, std)``: ``x * std + mean``; a scalar or one value
            per channel.
        value_range: ``(lo, hi)``: lo maps to black, hi to white, values outside are
            clamped. Default ``(0, 1)`` for floats; integers are written as they are.
        scale: ``"image"`` (min-max per image) or ``"batch"`` (one min-max for the batch).
        bits: 8 or 16 bits per sample (default 8; 16 for uint16 input).
        grid: tile a batch into one image with torchvision ``make_grid``'s geometry.
        nrow, padding, pad_value: the grid's images per row, gap in pixels, and gap
            brightness from 0 to 1.
        cmap: a colormap for single-channel inputs (``"viridis"``, ``"turbo"``, ...): 8-bit RGB.
        palette: integer label maps as palette PNGs: ``"voc"`` (or True), or RGB triples.
        compression: ``"fast"`` (ISA-L level 1), ``"small"`` (adaptive filters, libdeflate)
            or ``"none"`` (stored).
        metadata: ``{key: value}`` text chunks to add; ``False`` writes no text at all, not
            even the mapping record that :func:`tensorpng.load` uses.
        encoder: ``"auto"``, ``"cpu"`` or ``"device"`` (the torch encoder for torch tensors).
        overwrite: with ``False``, raise :class:`TargetExistsError` before anything is
            written if a target exists.
        workers: threads for a batch (default: one per CPU, the calling thread included).
        storage_options: passed to fsspec for a URL ``path``.

    Returns:
        The files written, in batch order (``Path`` objects; URL strings for URL targets).

    Raises:
        TensorPNGError: bad input, options or path (before anything is written), or a
            failed write (no partial file is left under the final name).
    """
    image_options, png_options = parsed_options(options)
    overwrite = check_bool("overwrite", options["overwrite"])
    workers = check_workers(options["workers"])
    template = parse_template(path_text(path))
    sink, name = target_sink(template.text, options["storage_options"])
    batch, on_device = prepare_for(x, image_options, png_options)
    count = 1 if batch.writes_grid else batch.count
    names = parse_template(name).names(count, batch.layout.batched and not batch.writes_grid)
    write_batch(batch, on_device, names, sink, png_options, overwrite=overwrite, workers=workers)
    if isinstance(sink, FsspecSink):
        return [sink.url(name) for name in names]
    return [Path(name) for name in names]


@takes_options(EncodeKeywords)
def encode(x: object, **options: Unpack[EncodeKeywords]) -> bytes:
    """Encode one image, or a batch as a grid, to PNG bytes.

    Args:
        x: as for :func:`save`; a batch needs ``grid=True`` (or holds one image).
        layout, mean, std, value_range, scale, bits, grid, nrow, padding, pad_value, cmap,
        palette, compression, metadata, encoder: as for :func:`save`.

    Returns:
        The bytes of one PNG file.
    """
    image_options, png_options = parsed_options(options)
    batch, on_device = prepare_for(x, image_options, png_options)
    if batch.layout.batched and not batch.writes_grid and batch.count != 1:
        raise OptionError(
            f"encode makes one PNG but got a batch of {batch.count} ({batch.source.description}); "
            "pass grid=True, or encode x[i] for each image"
        )
    check_range(batch)
    if on_device:
        (data,), nans = encode_on_device(batch, png_options)
        warn_nans(nans, batch.source.description)
        return data
    extremes = host_extremes(batch) if png_options.record else None
    batch = batch.to_host()
    data, nans = encode_image(batch, 0, png_options, extremes[0] if extremes else None)
    warn_nans(nans + batch.nan_count, batch.source.description)
    return data


@takes_options(ImageKeywords)
def to_array(x: object, **options: Unpack[ImageKeywords]) -> np.ndarray:
    """Convert ``x`` to PNG samples without encoding them.

    Args:
        x: as for :func:`save`.
        layout, mean, std, value_range, scale, bits, grid, nrow, padding, pad_value, cmap,
        palette: as for :func:`save` (``palette`` checks the labels; they come back as they are).

    Returns:
        uint8 or uint16 samples: ``H x W`` (gray) or ``H x W x C`` for one image or a grid,
        ``N x H x W`` or ``N x H x W x C`` for a batch (C = 3 after a colormap).
    """
    image_options = parse_image_options(options)
    batch = prepare(x, image_options)
    check_range(batch)
    batch = batch.to_host()
    if batch.writes_grid:
        result, nans, _ = batch.grid_image()
    else:
        converted = [batch.image(index) for index in range(batch.count)]
        result = stacked([image.samples for image in converted])
        nans = sum(image.nans for image in converted)
        if not batch.layout.batched:
            result = result[0]
    warn_nans(nans + batch.nan_count, batch.source.description)
    return result[..., 0] if result.shape[-1] == 1 else result


# The options that parse into the two records, with their defaults (as takes_options fills
# them in: the same objects).
_DEFAULT_ITEMS = tuple((name, DEFAULTS[name]) for name in EncodeKeywords.__annotations__)
_default_records: tuple[ImageOptions, PNGOptions] | None = None


def parsed_options(options: Mapping[str, Any]) -> tuple[ImageOptions, PNGOptions]:
    """The conversion and encoding records of ``options``. A call that leaves every one at its
    default (most calls) reuses records parsed once, as they are frozen: parsing takes ~4 us,
    a tenth of the overhead of an ``encode`` (identity, not ``==``: arrays have no truth)."""
    global _default_records
    if all(options.get(name, value) is value for name, value in _DEFAULT_ITEMS):
        if _default_records is None:
            _default_records = parse_image_options(DEFAULTS), parse_png_options(DEFAULTS)
        return _default_records
    return parse_image_options(options), parse_png_options(options)


def write_batch(
    batch: Batch,
    on_device: bool,
    names: list[str],
    sink: Sink,
    png_options: PNGOptions,
    *,
    overwrite: bool = True,
    workers: int | None = None,
) -> None:
    """Encode a prepared batch and write it to ``names`` in ``sink`` (see :func:`prepare_for`):
    convert and filter on this thread, deflate on every core, write from this thread."""
    if not overwrite:
        sink.check_absent(names)
    check_range(batch)
    count = len(names)
    if on_device:
        files, device_nans = encode_on_device(batch, png_options)
        run_pipeline(
            count,
            files.__getitem__,
            lambda i, data: data,
            lambda i, data: sink.write(names[i], data, overwrite),
            workers,
        )
        warn_nans(device_nans, batch.source.description)
        return
    extremes = host_extremes(batch) if png_options.record else None
    batch = batch.to_host()
    if batch.writes_grid:
        grid, grid_nans = filtered_image(batch, 0, png_options, extremes[0] if extremes else None)
        sink.write(names[0], finish_png(grid), overwrite)
        warn_nans(grid_nans + batch.nan_count, batch.source.description)
        return
    # Small images go a chunk at a time (see _chunks): one conversion pass, one hand-off
    workers = pipeline_workers(batch, workers)
    chunks = chunk_bounds(batch, default_workers() if workers is None else workers)

    def convert_and_filter(chunk: int) -> list[tuple[FilteredPNG, int]]:  # on the calling thread
        return filtered_chunk(batch, *chunks[chunk], png_options, extremes)

    def deflate(chunk: int, filtered: list[tuple[FilteredPNG, int]]) -> tuple[list[bytes], int]:  # any thread
        return [finish_png(image) for image, _ in filtered], sum(nans for _, nans in filtered)

    def write(chunk: int, encoded: tuple[list[bytes], int]) -> int:  # on the calling thread
        start, stop = chunks[chunk]
        _write_each(sink, names[start:stop], encoded[0], overwrite)
        return encoded[1]

    nans = run_pipeline(len(chunks), convert_and_filter, deflate, write, workers)
    warn_nans(sum(nans) + batch.nan_count, batch.source.description)


def _write_each(sink: Sink, names: list[str], files: list[bytes], overwrite: bool) -> None:
    """Write ``files`` to ``names``: every one is tried, the first failure raised."""
    failure: Exception | None = None
    for name, data in zip(names, files, strict=True):
        try:
            sink.write(name, data, overwrite)
        except Exception as error:
            failure = failure or error
    if failure is not None:
        raise failure
