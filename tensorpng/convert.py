"""Internal module.

Conversion: from any input to PNG samples, composing arrays, layout, scaling and grid.

The data's path: ``as_source`` (NumPy view, or a torch tensor on its accelerator) ->
``resolve_layout`` / ``as_nhwc`` (a view ``N x H x W x C``) -> ``make_plan`` (the value
map, validated against the data) -> per image ``convert_image`` on the host, or for device
tensors one ``convert_batch_on_device`` before the (small, integer) copy to the host ->
``make_grid`` when asked.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import cached_property
from typing import Any

import numpy as np

from ._options import ImageOptions
from .arrays import SourceArray, as_source
from .colormaps import apply_colormap, apply_colormap_torch
from .errors import DTypeError, OptionError, ShapeError, ValueRangeError, warn_user
from .grid import make_grid
from .layout import Layout, as_nhwc, infer_layout, resolve_layout
from .palettes import resolve_palette
from .scaling import ConvertedImage, Plan, convert_batch_on_device, convert_image, make_plan


def warn_nans(count: int, description: str) -> None:
    """Warn once for a call whose input held NaN values (they are written as 0)."""
    if count:
        warn_user(
            f"{count} NaN value{'s' if count != 1 else ''} in {description} written as 0", RuntimeWarning
        )


@dataclass
class Batch:
    """A validated input: ``count`` images viewed as ``N x H x W x C`` with their value plan.

    ``images`` is a NumPy view for host inputs, or a torch tensor on its accelerator until
    :meth:`to_host` (or the Writer's pinned copy) brings the converted samples over.
    """

    source: SourceArray
    layout: Layout
    images: Any
    plan: Plan
    options: ImageOptions
    nan_count: int = 0
    converted: bool = False  # ``images`` holds final samples (colormap applied), not values
    palette_table: np.ndarray | None = None  # P x 3 uint8 for palette PNGs

    @cached_property
    def value_ends(self) -> tuple[np.ndarray, np.ndarray] | None:
        """The values written as 0 and as the maximum, ``(N or 1) x 1`` on the host (copied
        from the device once per batch, for the metadata of each of its files)."""
        if self.plan.low is None:
            return None
        low, high = (np.asarray(e.cpu() if hasattr(e, "cpu") else e) for e in (self.plan.low, self.plan.high))
        return low, high

    @property
    def colormap(self) -> str | None:
        return self.options.cmap

    @property
    def count(self) -> int:
        return int(self.images.shape[0])

    @property
    def on_device(self) -> bool:
        return not isinstance(self.images, np.ndarray)

    @property
    def writes_grid(self) -> bool:
        return self.options.grid and self.layout.batched

    def convert_on_device(self) -> tuple[Any, Any]:
        """Device inputs: the converted ``N x H x W x C`` samples and a NaN count, on the device
        (``C`` = 3 after a colormap)."""
        samples, nans = convert_batch_on_device(self.plan, self.images)
        if self.colormap is not None:
            samples = apply_colormap_torch(samples[..., 0], self.colormap).contiguous()
        return samples, nans

    def to_host(self) -> Batch:
        """This batch with its samples converted and on the host (a no-op for host inputs)."""
        if not self.on_device:
            return self
        samples, nans = self.convert_on_device()
        return self.with_host_samples(samples.cpu().numpy(), int(nans.item()))

    def with_host_samples(self, samples: np.ndarray, nan_count: int) -> Batch:
        """A host batch holding already converted ``N x H x W x C`` samples (same plan)."""
        return replace(self, images=samples, nan_count=nan_count, converted=True)

    def image(self, index: int) -> ConvertedImage:
        """Image ``index`` converted to ``H x W x C`` samples (host only; see
        :class:`~tensorpng.scaling.ConvertedImage` for their memory order)."""
        assert not self.on_device, "call to_host() first"
        if self.converted:
            return ConvertedImage(self.images[index])
        return self.colored(convert_image(self.plan, self.images[index], index))

    def colored(self, converted: ConvertedImage) -> ConvertedImage:
        """A converted image with the batch's colormap applied (as it is without one)."""
        if self.colormap is None:
            return converted
        return converted._replace(samples=apply_colormap(converted.samples[..., 0], self.colormap))

    def grid_image(self) -> ConvertedImage:
        """The whole batch tiled into one C-contiguous ``H' x W' x C`` image."""
        converted = [self.image(index) for index in range(self.count)]
        tiles = stacked([image.samples for image in converted])
        opts = self.options
        pad = 0.0 if self.palette_table is not None else opts.pad_value  # label 0 between tiles
        grid = make_grid(tiles, nrow=opts.nrow, padding=opts.padding, pad_value=pad)
        known = [image.extremes for image in converted if image.extremes is not None]
        extremes = None
        if len(known) == len(converted):
            extremes = min(low for low, _ in known), max(high for _, high in known)
        return ConvertedImage(grid, sum(image.nans for image in converted), extremes)


def stacked(images: list[np.ndarray]) -> np.ndarray:
    """``N x H x W x C`` C-contiguous samples of equally shaped images in any memory order
    (``np.stack`` keeps the inputs' order: channels-first images would stay so)."""
    out = np.empty((len(images), *images[0].shape), dtype=images[0].dtype)
    for slot, image in enumerate(images):
        out[slot] = image
    return out


def prepare(x: object, options: ImageOptions, *, keep_torch: bool = False) -> Batch:
    """Validate ``x`` against ``options`` and plan its conversion, without converting it yet.

    With ``keep_torch``, CPU torch tensors are converted with torch operations (as tensors
    on an accelerator always are) instead of through NumPy.

    Raises:
        TensorPNGError: (a ``ValueError`` or ``TypeError``) for inputs or options that cannot
            be written, naming the input's type, shape and dtype.
    """
    source = as_source(x, keep_torch=keep_torch)
    given = options.layout
    single = options.palette is not None or options.cmap is not None
    # label maps and cmap= values have one channel: what reads as CHW is N x H x W
    if (
        given is None
        and single
        and len(source.shape) == 3
        and source.shape[0] != 1
        and infer_layout(source.shape, source.channels_first, source.description) == "CHW"
    ):
        given = "NHW"
    layout = resolve_layout(source.shape, given, source.channels_first, source.description)
    images = as_nhwc(source.data, layout)
    channels = int(images.shape[-1])
    if (options.cmap is not None or options.palette is not None) and channels != 1:
        what = "cmap=" if options.cmap is not None else "palette="
        raise ShapeError(
            f"{what} colors single-channel images, but {source.description} has {channels} channels "
            f"(layout {layout.name}); select one channel (x[:, 0] for a batch, x[0] for one image) "
            "or pass the right layout="
        )
    table = None
    if options.palette is not None:
        kind = source.dtype_name
        if not (kind == "bool" or kind.startswith(("int", "uint"))):
            raise DTypeError(
                f"palette= takes integer labels, got {source.description}; "
                "cast to an integer type (x.long()), or use cmap= for values"
            )
        labels_min, labels_max = int(images.min()), int(images.max())  # a device sync on CUDA
        if labels_min < 0:
            raise ValueRangeError(
                f"palette PNGs hold labels 0..255, but {source.description} has negative labels "
                f"(min {labels_min})"
            )
        table = resolve_palette(options.palette, labels_max)
        plan = Plan("copy", 8)  # labels as they are (bool too: 0 and 1, not 0 and 255)
    else:
        plan = make_plan(images, source.dtype_name, options.scaling, source.description)
    if options.cmap is not None and plan.bits != 8:
        raise OptionError(
            f"cmap= colors 8-bit samples, but {source.description} would be written at 16 bits "
            "as it is; pass value_range=(lo, hi) or scale='image' to map its values"
        )
    return Batch(source, layout, images, plan, options, palette_table=table)
