"""Internal: the options of the public functions, declared once and parsed once.

Each option is declared once, with its type, in a ``TypedDict`` group (:class:`ScaleKeywords`
and the others, composed by inheritance), and its default once, in :data:`DEFAULTS`. Public
functions take ``**options: Unpack[Group]`` (PEP 692), so type checkers and IDEs check and
complete every option; :func:`takes_options` gives them a signature that lists each option for
``help()``, turns Python's bare "unexpected keyword argument" into an
:class:`~tensorpng.UnknownOptionError` that names the function and the closest option, and fills
in the defaults. The values are then validated into frozen records before any I/O.
"""

from __future__ import annotations

import difflib
import functools
import inspect
import math
import re
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, TypedDict, TypeVar

from ._png_text import text_chunk, text_key, text_value
from .colormaps import colormap_table
from .errors import OptionError, UnknownOptionError, names_memory_errors
from .grid import check_grid_options
from .layout import parse_layout
from .metadata import METADATA_KEY
from .palettes import PaletteSpec, resolve_palette
from .png import COMPRESSIONS

Compression = Literal["fast", "small", "none"]
Encoder = Literal["auto", "cpu", "device"]
Scale = Literal["image", "batch"]
SCALES: tuple[str, ...] = ("image", "batch")
ENCODERS = ("auto", "cpu", "device")

Function = TypeVar("Function", bound=Callable[..., Any])


# The options, declared once. Each public function takes the groups it applies as
# ``**options: Unpack[...]`` (PEP 692), so type checkers check every option's name and type;
# :func:`takes_options` gives it a signature listing each one for help() and IDEs.
class ScaleKeywords(TypedDict, total=False):
    """The value mapping: undo ``Normalize``, map a range or min-max to black..white."""

    mean: float | Sequence[float] | None
    std: float | Sequence[float] | None
    value_range: tuple[float, float] | None
    scale: Scale | None
    bits: int | None


class ConvertKeywords(ScaleKeywords, total=False):
    """How the input is read (``layout``) and turned into samples (``cmap``)."""

    layout: str | None
    cmap: str | None


class GridKeywords(TypedDict, total=False):
    """The geometry of a grid, as ``torchvision.utils.make_grid``'s."""

    nrow: int
    padding: int
    pad_value: float


class PaletteKeywords(ConvertKeywords, total=False):
    """The conversion options of an image that may be a label map (``palette``)."""

    palette: PaletteSpec | bool | None


class ImageKeywords(PaletteKeywords, GridKeywords, total=False):
    """Every conversion option: :func:`tensorpng.to_array`'s."""

    grid: bool


class PNGKeywords(TypedDict, total=False):
    """The file's compression and text chunks."""

    compression: Compression
    metadata: Mapping[str, str] | bool | None


class FileKeywords(PNGKeywords, total=False):
    """Whether an existing file may be replaced."""

    overwrite: bool


class EncodeKeywords(ImageKeywords, PNGKeywords, total=False):
    """:func:`tensorpng.encode`'s options."""

    encoder: Encoder


class WriterKeywords(EncodeKeywords, FileKeywords, total=False):
    """The per-save options of :class:`tensorpng.Writer` (its defaults for every save)."""


class AnimationKeywords(ConvertKeywords, FileKeywords, total=False):
    """:func:`tensorpng.save_animation`'s options (besides ``fps`` and ``loop``)."""


class SummaryImageKeywords(PaletteKeywords, PNGKeywords, total=False):
    """:func:`tensorpng.tensorboard.add_image`'s options."""


class SummaryKeywords(SummaryImageKeywords, GridKeywords, total=False):
    """:func:`tensorpng.tensorboard.add_images`'s options (always one grid)."""


class SaveKeywords(WriterKeywords, total=False):
    """:func:`tensorpng.save`'s options."""

    workers: int | None
    storage_options: dict[str, Any] | None


# Every option's default, in the order signatures list them.
DEFAULTS: dict[str, Any] = {
    "layout": None, "mean": None, "std": None, "value_range": None, "scale": None, "bits": None,
    "grid": False, "nrow": 8, "padding": 2, "pad_value": 0.0, "cmap": None, "palette": None,
    "compression": "fast", "metadata": None, "encoder": "auto", "overwrite": True, "workers": None,
    "storage_options": None,
}  # fmt: skip


def option(options: Mapping[str, Any], name: str) -> Any:
    """The value of option ``name`` in ``options``, or its default."""
    return options.get(name, DEFAULTS[name])


def takes_options(
    keywords: type | None = None, defaults: Mapping[str, Any] = DEFAULTS
) -> Callable[[Function], Function]:
    """Decorate a public function whose options are ``**options: Unpack[keywords]``.

    The function gets a signature that lists every option of ``keywords`` keyword-only, with
    its type and default (``help()``, ``inspect.signature``); a misspelled keyword raises
    :class:`UnknownOptionError` naming the function and the closest option; and ``options``
    arrives with every option's default (from ``defaults``) filled in. Without ``keywords``
    (explicit keyword parameters), only the check.
    """

    def decorate(function: Function) -> Function:
        return _checked(function, keywords, defaults)

    return decorate


def checked_keywords(function: Function) -> Function:
    """:func:`takes_options` for a function that spells every option out."""
    return _checked(function, None, DEFAULTS)


def _option_parameters(keywords: type, defaults: Mapping[str, Any]) -> list[inspect.Parameter]:
    annotations = keywords.__annotations__
    if not annotations.keys() <= defaults.keys():
        raise TypeError(f"{keywords.__name__}: no default for {sorted(annotations.keys() - defaults.keys())}")
    return [
        inspect.Parameter(
            name,
            inspect.Parameter.KEYWORD_ONLY,
            default=default,
            annotation=getattr(annotations[name], "__forward_arg__", annotations[name]),
        )
        for name, default in defaults.items()
        if name in annotations
    ]


def _checked(function: Function, keywords: type | None, table: Mapping[str, Any]) -> Function:
    signature = inspect.signature(function)
    parameters = list(signature.parameters.values())
    filled: list[inspect.Parameter] = []
    if keywords is not None:
        declared = function.__annotations__.get("options")
        hint = declared if isinstance(declared, str) else repr(declared)  # str under PEP 563
        if not re.fullmatch(rf"(typing\.)?Unpack\[([\w.]+\.)?{keywords.__name__}\]", hint):
            # the decorator and the hint must name the same group
            raise TypeError(
                f"{function.__qualname__}: **options is {declared!r}, not Unpack[{keywords.__name__}]"
            )
        filled = _option_parameters(keywords, table)
        parameters = [p for p in parameters if p.kind is not p.VAR_KEYWORD] + filled
        signature = signature.replace(parameters=parameters)
    elif any(p.kind is p.VAR_KEYWORD for p in parameters):
        return function  # takes any keyword (name fields): it checks them itself
    defaults = {p.name: p.default for p in filled}
    names = frozenset(p.name for p in parameters if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD))
    options = frozenset(p.name for p in parameters if p.kind is p.KEYWORD_ONLY)
    positional = sum(p.kind is p.POSITIONAL_OR_KEYWORD for p in parameters)
    label = function.__qualname__.replace("__init__", "").rstrip(".")

    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if not kwargs.keys() <= names:
            raise unknown_option(f"tensorpng.{label}", kwargs.keys() - names, options or names)
        if len(args) > positional:
            raise UnknownOptionError(
                f"tensorpng.{label}() takes {positional} positional argument(s) but got {len(args)}; "
                "pass its options by keyword, e.g. bits=16"
            )
        return named(*args, **{**defaults, **kwargs})

    named = names_memory_errors(f"tensorpng.{label}")(function)
    wrapper.__signature__ = signature  # type: ignore[attr-defined]
    return wrapper  # type: ignore[return-value]


def unknown_option(function: str, unknown: Iterable[str], known: Iterable[str]) -> UnknownOptionError:
    """The error for keywords that ``function`` does not take, with a suggestion."""
    name = sorted(unknown)[0]
    close = difflib.get_close_matches(name, sorted(known), n=1, cutoff=0.6)
    hint = f"; did you mean {close[0]!r}?" if close else f"; its options: {', '.join(sorted(known))}"
    return UnknownOptionError(f"{function}() got an unknown option {name!r}{hint}")


def check_bool(name: str, value: object) -> bool:
    """``value`` if it is a real bool (``"False"`` is a mistake, not True)."""
    if not isinstance(value, bool):
        raise OptionError(f"{name} must be True or False, got {value!r}")
    return value


def check_workers(workers: object) -> int | None:
    """A thread count: an integer >= 1, or None for one per CPU."""
    if workers is not None and (not isinstance(workers, int) or isinstance(workers, bool) or workers < 1):
        raise OptionError(f"workers must be an integer >= 1 or None, got {workers!r}")
    return workers


_MIN_HALF_SPAN = 65535 / 2 / sys.float_info.max  # the narrowest half value_range a 16-bit scale takes


def _as_floats(name: str, value: float | Sequence[float] | None) -> tuple[float, ...] | None:
    if value is None:
        return None
    if hasattr(value, "tolist"):  # tensors and arrays of mean/std values
        value = value.tolist()
    try:
        values = (value,) if isinstance(value, (int, float)) else tuple(value)
        floats = tuple(float(v) for v in values)
    except (TypeError, ValueError, OverflowError):
        raise OptionError(f"{name} must be a number or a sequence of numbers, got {value!r}") from None
    if not floats or not all(math.isfinite(v) for v in floats):
        raise OptionError(f"{name} must hold finite numbers, got {value!r}")
    return floats


@dataclass(frozen=True)
class ScaleOptions:
    """The value-mapping options of ``tensorpng.save`` and friends, validated."""

    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    value_range: tuple[float, float] | None = None
    scale: Scale | None = None
    bits: int | None = None

    @classmethod
    def parse(
        cls,
        *,
        mean: float | Sequence[float] | None = None,
        std: float | Sequence[float] | None = None,
        value_range: tuple[float, float] | None = None,
        scale: str | None = None,
        bits: int | None = None,
    ) -> ScaleOptions:
        mean_values = _as_floats("mean", mean)
        std_values = _as_floats("std", std)
        if std_values is not None and any(v == 0 for v in std_values):
            raise OptionError(f"std must not be 0, got {std!r}")
        range_values = _as_floats("value_range", value_range)
        if range_values is not None and (len(range_values) != 2 or not range_values[0] < range_values[1]):
            raise OptionError(f"value_range must be (lo, hi) with lo < hi, got {value_range!r}")
        # 65535 / (hi - lo) must be a float64 (halves: hi - lo itself may overflow): else a raw error
        if range_values is not None and not range_values[1] / 2 - range_values[0] / 2 > _MIN_HALF_SPAN:
            raise OptionError(
                f"value_range={value_range!r} is too narrow to scale by (hi - lo is below "
                f"{2 * _MIN_HALF_SPAN:.3g}); pass a wider range, or scale the data first"
            )
        if scale is not None and scale not in SCALES:
            raise OptionError(f"scale must be 'image', 'batch' or None, got {scale!r}")
        if scale is not None and range_values is not None:
            raise OptionError("pass either value_range= or scale=, not both")
        if bits not in (None, 8, 16):
            raise OptionError(f"bits must be 8 or 16, got {bits!r}")
        return cls(
            mean=mean_values,
            std=std_values,
            value_range=(range_values[0], range_values[1]) if range_values else None,
            scale=scale,  # type: ignore[arg-type]
            bits=bits,
        )

    @property
    def maps_values(self) -> bool:
        """Whether any option asks for the affine map (else integers are written as they are)."""
        return any(v is not None for v in (self.mean, self.std, self.value_range, self.scale))


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


@dataclass(frozen=True)
class PNGOptions:
    """Validated encoding options: ``compression``, text ``metadata``, ``encoder``, and
    whether the mapping record is written (``metadata=False`` writes no text at all)."""

    compression: Compression = "fast"
    metadata: Mapping[str, str] | None = None
    encoder: Encoder = "auto"
    record: bool = True


def parse_image_options(options: Mapping[str, Any]) -> ImageOptions:
    """Validate the conversion options (raises :class:`OptionError`); ``options`` holds
    some of :class:`ImageKeywords` (the others take their defaults) and maybe other keys."""
    layout, grid, cmap, palette = (option(options, name) for name in ("layout", "grid", "cmap", "palette"))
    nrow, padding, pad_value = (option(options, name) for name in ("nrow", "padding", "pad_value"))
    bits = option(options, "bits")
    check_grid_options(nrow, padding, pad_value)
    check_bool("grid", grid)
    if bits is not None and (not isinstance(bits, int) or isinstance(bits, bool)):
        raise OptionError(f"bits must be 8 or 16 (an int), got {bits!r}")
    scaling = ScaleOptions.parse(**{name: option(options, name) for name in ScaleKeywords.__annotations__})
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
        resolve_palette(palette, 0)  # an unknown name or malformed colours fail here, early
        if cmap is not None:
            raise OptionError("pass either cmap= (for values) or palette= (for integer labels), not both")
        if scaling.maps_values or scaling.bits == 16:
            raise OptionError(
                "palette= writes integer labels as they are: drop mean/std/value_range/scale/bits"
            )
    return ImageOptions(
        parse_layout(layout),
        scaling,
        grid,
        nrow,
        padding,
        float(pad_value),
        cmap,
        palette,
    )


def parse_png_options(options: Mapping[str, Any] | None = None) -> PNGOptions:
    """Validate the encoding options of ``options`` (:class:`EncodeKeywords`; the others take
    their defaults) (raises :class:`OptionError`)."""
    options = options or {}
    compression, metadata, encoder = (
        option(options, name) for name in ("compression", "metadata", "encoder")
    )
    if compression not in COMPRESSIONS:
        raise OptionError(f"compression must be one of {COMPRESSIONS}, got {compression!r}")
    if encoder not in ENCODERS:
        raise OptionError(f"encoder must be one of {ENCODERS}, got {encoder!r}")
    record = metadata is not False
    if isinstance(metadata, bool):
        metadata = None
    if metadata is not None:
        if not isinstance(metadata, Mapping):
            raise OptionError(f"metadata must be a mapping of str to str, or False, got {metadata!r}")
        metadata = {text_key(key): text_value(key, value) for key, value in metadata.items()}
        if METADATA_KEY in metadata:
            raise OptionError(f"the metadata key {METADATA_KEY!r} is tensorpng's own record; pick another")
        for key, value in metadata.items():
            text_chunk(key, value)  # validate keys and values now, before any file is touched
    return PNGOptions(compression, metadata, encoder, record)
