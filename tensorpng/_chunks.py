"""Internal module: converting a host batch a chunk of images at a time.

``save`` of many small images (CIFAR's 3 x 32 x 32) was paying a fixed cost per image for
work that does not depend on the image: a dozen NumPy calls of conversion, a mapping record
built and serialized from scratch, and a hand-off between threads. Here a chunk of images
(:func:`chunk_bounds`: up to about 128 K samples, one image when images are larger) is
converted in one vectorized pass (:func:`convert_chunk`) and its records are made from one
JSON object per batch (:func:`chunk_texts`), which the pipeline then moves as one item.

The bytes written are exactly those of converting each image on its own
(:func:`tensorpng.scaling.convert_image`): the same float operations on the same values, in
the same compute dtype; only their grouping into NumPy calls differs.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

import numpy as np

from ._options import PNGOptions
from ._record import mapping_record, text_chunks
from .convert import Batch
from .metadata import METADATA_KEY, record_json
from .scaling import ConvertedImage, Plan, float32_suffices

Extremes = tuple[float | None, float | None]

CHUNK_SAMPLES = 1 << 17  # ~128 K samples (512 KiB of float32 values): a chunk stays in cache
MAX_CHUNK_IMAGES = 64


# Images of at most this many samples (32 x 32 RGBA, 64 x 64 gray) are encoded on the calling
# thread alone when the caller leaves ``workers`` to us: their work is short Python and short
# calls that release the GIL (syscalls, a 25 us deflate), so a second thread mostly waits for
# the GIL, and hands it to and fro. Measured on 2 cores with 2,000 3 x 32 x 32 images: 67 us
# an image on one thread, 75 us on two; even at 64 x 64 two threads gained nothing.
ONE_THREAD_SAMPLES = 4096


def pipeline_workers(batch: Batch, workers: int | None) -> int | None:
    """The ``workers`` to run a host batch's pipeline with: 1 for small images unless the
    caller chose a number."""
    per_image = math.prod(int(d) for d in batch.images.shape[1:])
    return 1 if workers is None and per_image <= ONE_THREAD_SAMPLES else workers


def chunk_size(batch: Batch, threads: int) -> int:
    """Images per chunk of a host batch: images of up to ``CHUNK_SAMPLES`` samples together,
    and at least 4 chunks per thread where the batch has that many images (so that the
    threads share the work)."""
    per_image = max(1, math.prod(int(d) for d in batch.images.shape[1:]))
    return max(1, min(MAX_CHUNK_IMAGES, CHUNK_SAMPLES // per_image, -(-batch.count // (4 * threads))))


def chunk_bounds(batch: Batch, threads: int) -> list[tuple[int, int]]:
    """``(start, stop)`` of each chunk of a host batch (see :func:`chunk_size`)."""
    count, size = batch.count, chunk_size(batch, threads)
    return [(start, min(start + size, count)) for start in range(0, count, size)]


def chunk_around(batch: Batch, index: int, threads: int) -> tuple[int, int]:
    """``(start, stop)`` of the chunk of :func:`chunk_bounds` that holds image ``index``."""
    size = chunk_size(batch, threads)
    start = index - index % size
    return start, min(start + size, batch.count)


def convert_chunk(batch: Batch, start: int, stop: int) -> list[ConvertedImage]:
    """Images ``start`` to ``stop`` of a host batch, each as :meth:`Batch.image` gives it."""
    converted = None
    if stop - start > 1 and not batch.converted and batch.plan.mode == "affine":
        converted = _convert_affine_chunk(batch.plan, batch.images[start:stop], start)
    if converted is None:
        return [batch.image(index) for index in range(start, stop)]
    return [batch.colored(image) for image in converted]


def _compute_dtype(plan: Plan, gains: list[float], offsets: list[float]) -> str:
    """The dtype ``convert_image`` computes an image with gains and offsets in (see there)."""
    if plan.compute_dtype == "float32" and not float32_suffices(gains, offsets, plan.max_value):
        return "float64"
    return plan.compute_dtype


def _convert_affine_chunk(plan: Plan, x: np.ndarray, start: int) -> list[ConvertedImage] | None:
    """``floor(clamp(x * gain + offset, 0, max))`` for an ``n x H x W x C`` chunk of images,
    as ``scaling._convert_affine`` computes each of them; None when the images cannot share
    one pass (their compute dtypes differ, or their memory orders).

    The clamp pass always runs: on values that need none it changes nothing (what it would
    clip to ``max`` truncates to ``max`` anyway), and one pass over the chunk costs less than
    deciding per image.
    """
    count, height, width, channels = (int(d) for d in x.shape)
    per_image = plan.gain.shape[0] > 1
    rows = slice(start, start + count) if per_image else slice(0, 1)
    gain_rows, offset_rows = plan.gain[rows], plan.offset[rows]
    gain_list, offset_list = gain_rows.tolist(), offset_rows.tolist()
    dtypes = {_compute_dtype(plan, g, o) for g, o in zip(gain_list, offset_list, strict=True)}
    planar = x.transpose(0, 3, 1, 2).flags.c_contiguous
    if len(dtypes) != 1 or planar != x[0].transpose(2, 0, 1).flags.c_contiguous:
        return None
    dtype = dtypes.pop()
    gain, offset = gain_rows.astype(dtype), offset_rows.astype(dtype)
    if planar:  # C planes per image, one gain each
        source = x.transpose(0, 3, 1, 2).reshape(count, channels, -1)
        gain, offset = gain[:, :, None], offset[:, :, None]
    else:  # interleaved: the gains repeat along each pixel
        source = np.ascontiguousarray(x).reshape(count, -1, channels)
        gain, offset = gain[:, None, :], offset[:, None, :]
    low, high = source.min(axis=-1 if planar else 1), source.max(axis=-1 if planar else 1)
    values = np.empty(source.shape, dtype=dtype)
    with np.errstate(invalid="ignore", over="ignore"):
        if planar and not per_image:  # a scalar per plane: 2x faster than a broadcast gain
            for channel in range(channels):
                plane = values[:, channel]
                np.multiply(source[:, channel], gain[0, channel, 0], out=plane)
                plane += offset[0, channel, 0]
        else:
            np.multiply(source, gain, out=values)
            values += offset
        np.clip(values, 0, plan.max_value, out=values)  # +-inf clamp; NaN stays NaN
    finite = np.isfinite(low).all(axis=1) & np.isfinite(high).all(axis=1)  # (n,): NaN and inf
    mapped = np.isfinite(gain_rows).all(axis=1) & np.isfinite(offset_rows).all(axis=1)
    nans = [0] * count
    unmapped = ~(finite & mapped)  # images that may hold NaN values: zeroed, and counted
    for index in np.flatnonzero(unmapped).tolist():
        image_values = values[index]
        image_values[np.isnan(image_values)] = 0
        nans[index] = int(np.count_nonzero(np.isnan(x[index]))) if x.dtype.kind == "f" else 0
    # the samples: truncated (values hold the + 0.5 already), and interleaved in the same pass
    # for planes, a channel at a time (3x faster than one transposed copy)
    images = np.empty((count, height, width, channels), dtype=plan.out_dtype)
    if planar:
        pixels = images.reshape(count, -1, channels)
        for channel in range(channels):
            np.copyto(pixels[:, :, channel], values[:, channel], casting="unsafe")
    else:
        np.copyto(images.reshape(values.shape), values, casting="unsafe")
    lows, highs = low.min(axis=1).tolist(), high.max(axis=1).tolist()  # ints for integer input
    known = finite.tolist()
    return [
        ConvertedImage(images[i], nans[i], (float(lows[i]), float(highs[i])) if known[i] else None)
        for i in range(count)
    ]


def chunk_texts(
    png_options: PNGOptions, batch: Batch, start: int, extremes: Sequence[Extremes | None]
) -> list[dict[str, str] | None]:
    """The text chunks of images ``start`` to ``start + len(extremes)`` of a batch of files
    (one per image), as ``_encode.texts`` makes each: the record's JSON is made once per
    chunk, with the parts that differ per image (index, min, max and, with per-image ranges,
    value_range) filled in as JSON writes them."""
    if not png_options.record:
        return [text_chunks(png_options.metadata, None, False)] * len(extremes)
    batched = batch.layout.batched
    if len(extremes) == 1:  # one image: its record as it is (no template to fill in)
        entry = mapping_record(batch, start if batched else None, extremes[0])
        return [text_chunks(png_options.metadata, entry, True)]
    base = mapping_record(batch, start if batched else None, extremes[0]).json_entry()
    ends = batch.value_ends if base.get("value_range") is not None else None
    if ends is not None and ends[0].shape[0] == 1:
        ends = None  # one range for the batch: as the first image's record has it
    per_image = [name for name in _PER_IMAGE if name != "value_range" or ends is not None]
    pieces = _RECORD_FIELD.split(record_json({**base, **{name: _MARK + name for name in per_image}}))
    user = dict(png_options.metadata or {})
    out: list[dict[str, str] | None] = []
    for offset, pair in enumerate(extremes):
        index = start + offset
        if pair is None:  # NaN or inf: the finite extremes, as mapping_record finds them
            text = mapping_record(batch, index if batched else None, None).to_json()
        else:
            values: dict[str, float | list[float] | None] = {
                "index": index if batched else None,
                "min": pair[0],
                "max": pair[1],
            }
            if ends is not None:
                values["value_range"] = [float(ends[0][index, 0]), float(ends[1][index, 0])]
            pieces[1::2] = [_json_number(values[name]) for name in per_image]
            text = "".join(pieces)
        out.append({METADATA_KEY: text, **user})
    return out


_PER_IMAGE = ("index", "value_range", "min", "max")  # in the record's field order
_MARK = "\x00tensorpng-field:"
_RECORD_FIELD = re.compile(r'"\\u0000tensorpng-field:(\w+)"')


def _json_number(value: float | list[float] | None) -> str:
    """``value`` as JSON writes it: ``null`` for None and for inf and NaN (as the record
    holds them), ``repr`` for numbers (``json`` writes floats with ``float.__repr__``)."""
    if isinstance(value, list):
        return f"[{','.join(_json_number(item) for item in value)}]"
    return "null" if value is None or not math.isfinite(value) else repr(value)


def _finite(value: float | None) -> float | None:
    return value if value is None or math.isfinite(value) else None
