"""Conversion: from any input to PNG samples, composing arrays, layout, scaling and grid.

The data's path: ``as_source`` (NumPy view, or a torch tensor on its accelerator) ->
``resolve_layout`` / ``as_nhwc`` (a view ``N x H x W x C``) -> ``make_plan`` (the value
map, validated against the data) -> per image ``convert_image`` on the host, or for device
tensors one ``convert_batch_on_device`` before the (small, integer) copy to the host ->
``make_grid`` when asked.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import Any

import numpy as np

from .arrays import SourceArray, as_source
from .colormaps import apply_colormap, apply_colormap_torch, colormap_table
from .errors import DTypeError, OptionError, ShapeError, ValueRangeError
from .grid import check_grid_options, make_grid
from .layout import Layout, as_nhwc, parse_layout, resolve_layout
from .palettes import PaletteSpec, resolve_palette
from .scaling import ConvertedImage, Plan, ScaleOptions, convert_batch_on_device, convert_image, make_plan


@dataclass(frozen=True)
class ImageOptions:
    """Validated conversion options (see :func:`tensorpng.save` for their meaning)."""

    layout: str | None = None
    scaling: ScaleOptions = field(default_factory=ScaleOptions)
    grid: bool = False
    nrow: int = 8
    padding: int = 2
    pad_value: float = 0.0
    cmap: str | None = None
    palette: PaletteSpec | None = None

    @classmethod
    def parse(
        cls,
        *,
        layout: str | None = None,
        mean: float | Sequence[float] | None = None,
        std: float | Sequence[float] | None = None,
        value_range: tuple[float, float] | None = None,
        scale: str | None = None,
        bits: int | None = None,
        grid: bool = False,
        nrow: int = 8,
        padding: int = 2,
        pad_value: float = 0.0,
        cmap: str | None = None,
        palette: PaletteSpec | None = None,
    ) -> ImageOptions:
        check_grid_options(nrow, padding, pad_value)
        if not isinstance(grid, bool):
            raise OptionError(f"grid must be True or False, got {grid!r}")
        scaling = ScaleOptions.parse(mean=mean, std=std, value_range=value_range, scale=scale, bits=bits)
        if palette is False:
            palette = None
        if cmap is not None:
            if not isinstance(cmap, str):
                raise OptionError(f"cmap is a colormap name such as 'viridis', got {cmap!r}")
            colormap_table(cmap)  # unknown names and a missing package fail here, early
            cmap = cmap.lower()
            if scaling.bits == 16:
                raise OptionError("cmap= writes 8-bit RGB; drop bits=16 (or drop cmap= for 16-bit gray)")
        if palette is not None:
            if cmap is not None:
                raise OptionError("pass either cmap= (for values) or palette= (for integer labels), not both")
            if scaling.maps_values or scaling.bits == 16:
                raise OptionError(
                    "palette= writes integer labels as they are: drop mean/std/value_range/scale/bits"
                )
        return cls(parse_layout(layout), scaling, grid, nrow, padding, float(pad_value), cmap, palette)


def warn_nans(count: int, description: str) -> None:
    """Warn once for a call whose input held NaN values (they are written as 0)."""
    if count:
        warnings.warn(
            f"{count} NaN value{'s' if count != 1 else ''} in {description} written as 0",
            RuntimeWarning,
            stacklevel=3,
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
    def channels(self) -> int:
        return int(self.images.shape[-1])

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
        converted = convert_image(self.plan, self.images[index], index)
        if self.colormap is not None:
            converted = converted._replace(samples=apply_colormap(converted.samples[..., 0], self.colormap))
        return converted

    def grid_image(self) -> ConvertedImage:
        """The whole batch tiled into one C-contiguous ``H' x W' x C`` image."""
        converted = [self.image(index) for index in range(self.count)]
        stacked = _stacked([image.samples for image in converted])
        opts = self.options
        pad = 0.0 if self.palette_table is not None else opts.pad_value  # label 0 between tiles
        grid = make_grid(stacked, nrow=opts.nrow, padding=opts.padding, pad_value=pad)
        known = [image.extremes for image in converted if image.extremes is not None]
        extremes = None
        if len(known) == len(converted):
            extremes = min(low for low, _ in known), max(high for _, high in known)
        return ConvertedImage(grid, sum(image.nans for image in converted), extremes)


def _stacked(images: list[np.ndarray]) -> np.ndarray:
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
    layout = resolve_layout(source.shape, options.layout, source.channels_first, source.description)
    images = as_nhwc(source.data, layout)
    channels = int(images.shape[-1])
    if (options.cmap is not None or options.palette is not None) and channels != 1:
        what = "cmap=" if options.cmap is not None else "palette="
        raise ShapeError(
            f"{what} colors single-channel images, but {source.description} has {channels} channels "
            f"(layout {layout.name}); select one (x[:, :1]) or pass the right layout="
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


def to_array(x: object, **options: Any) -> np.ndarray:
    """Convert ``x`` to PNG samples without encoding them.

    Takes the options of :func:`tensorpng.save` that concern values and layout (``layout``,
    ``mean``, ``std``, ``value_range``, ``scale``, ``bits``, ``grid``, ``nrow``, ``padding``,
    ``pad_value``).

    Returns:
        uint8 or uint16 samples: ``H x W`` (gray) or ``H x W x C`` for one image or a grid,
        ``N x H x W`` or ``N x H x W x C`` for a batch.
    """
    try:
        image_options = ImageOptions.parse(**options)
    except TypeError as error:  # an unexpected keyword argument (save's and encode's say so too)
        raise OptionError(f"unknown option: {error}") from None
    batch = prepare(x, image_options).to_host()
    if batch.writes_grid:
        result, nans, _ = batch.grid_image()
    else:
        converted = [batch.image(index) for index in range(batch.count)]
        result = _stacked([image.samples for image in converted])
        nans = sum(image.nans for image in converted)
        if not batch.layout.batched:
            result = result[0]
    warn_nans(nans + batch.nan_count, batch.source.description)
    return result[..., 0] if result.shape[-1] == 1 else result
