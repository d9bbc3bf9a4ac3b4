"""Internal: the one rule for file names, used by ``save``, ``Writer`` and the CLI.

A name is a ``str.format`` template of plain fields with format specs (``{index:04d}``,
``{step:06d}``); attribute and item access (``{index.__class__}``), conversions (``!r``) and
positional fields are refused, and widths are bounded, because templates may come from
data. The rule for a batch:

- one image, or a batch of one, is written to the name itself (``{index}`` is 0);
- a larger batch whose template has no ``{index}`` gets ``_{index}`` before the suffix,
  zero-padded to the widest index (``out.png`` -> ``out_00.png`` ... ``out_63.png``);
- two images that would share a file are an error.

Every name must end in ``.png`` (tensorpng writes PNG). Field values that come from data
(``Writer`` and CLI fields) are sanitized: no separators, control or bidirectional-override
characters, and no ``..``. :func:`relative_name` keeps a name inside a root.
"""

from __future__ import annotations

import difflib
import functools
import os
import re
import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

import numpy as np

from .errors import PathError, UnknownOptionError

MAX_WIDTH = 64  # the widest formatted field: a wider one is a mistake, or a memory attack
SUFFIX = ".png"
_SPEC = re.compile(
    r"(?:(?P<fill>.)?[<>=^])?[+\- ]?z?#?0?(?P<width>\d+)?[_,]?(?:\.(?P<precision>\d+))?[bcdeEfFgGnosxX%]?"
)
_UNSAFE = re.compile(r"[\x00-\x1f\x7f/\\\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")


@dataclass(frozen=True)
class Template:
    """A checked name template: its text and the names of its fields."""

    text: str
    fields: frozenset[str]

    def names(self, count: int, batched: bool, fields: Mapping[str, Any] | None = None) -> list[str]:
        """The name of each of ``count`` images (see the module doc for the rule)."""
        values = dict(fields or {})
        template = self
        if batched and count > 1 and "index" not in self.fields:
            stem, suffix = os.path.splitext(self.text)
            template = parse_template(f"{stem}_{{index:0{len(str(count - 1))}d}}{suffix}")
        missing = template.fields - values.keys() - {"index"}
        if missing:
            raise PathError(
                f"name {self.text!r} uses unknown field(s) {sorted(missing)}; "
                f"available: {sorted({*values, 'index'})}"
            )
        try:
            names = [template.text.format_map({**values, "index": index}) for index in range(count)]
        except (ValueError, TypeError) as error:  # a spec that does not fit the value's type
            raise PathError(f"cannot format name {self.text!r} with {values or 'index'}: {error}") from None
        if len(set(names)) != len(names):
            raise PathError(f"name {self.text!r} gives two images the same file; put {{index}} in it")
        return names


@functools.lru_cache(maxsize=256)
def parse_template(template: str) -> Template:
    """Check ``template`` (see the module doc); raises :class:`PathError` naming the problem."""
    if not isinstance(template, str):
        raise PathError(f"a name must be a str or os.PathLike[str], got {template!r}")
    if "\x00" in template:  # the OS refuses it (a raw ValueError from deep inside open)
        raise PathError(f"name {template!r} contains a NUL character; no file name may")
    if template.endswith(("/", os.sep)) or not os.path.basename(template):
        raise PathError(f"name {template!r} names a folder; add a file name such as '{{index:04d}}.png'")
    if not template.lower().endswith(SUFFIX):
        suffix = os.path.splitext(template)[1] or "no suffix"
        raise PathError(f"tensorpng writes PNG files, but name {template!r} has {suffix}; end it with .png")
    fields = set()
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as error:
        raise PathError(
            f"malformed name template {template!r}: {error} (write {{{{ and }}}} for literal braces)"
        ) from None
    for _, name, spec, conversion in parsed:
        if name is None:
            continue
        if not name:
            raise PathError(
                f"name template {template!r} has a positional field {{}}; name it, e.g. {{index}}"
            )
        if not name.isidentifier():
            raise PathError(
                f"cannot format name template {template!r}: the field {{{name}}} is not a plain name; "
                "fields are names such as {index} or {step:06d} (no positions, attributes or items)"
            )
        if conversion or (spec and "{" in spec):
            raise PathError(
                f"name {template!r}: field {{{name}}} may have a format spec only, like {{{name}:04d}}"
            )
        match = _SPEC.fullmatch(spec or "")
        if match is None:
            raise PathError(f"cannot format name template {template!r}: {spec!r} is not a format spec")
        for part in ("width", "precision"):
            if match[part] and int(match[part]) > MAX_WIDTH:
                raise PathError(f"name {template!r}: the {part} in {{{name}:{spec}}} is over {MAX_WIDTH}")
        fields.add(name)
    return Template(template, frozenset(fields))


def sanitize_field(value: Any) -> Any:
    """A field value safe to put in a file name: numbers as they are, anything else as text
    with separators, control and bidirectional-override characters replaced by ``_``, at
    most :data:`MAX_WIDTH` characters, and ``.``/``..`` refused."""
    if isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool):
        return value
    text = _UNSAFE.sub("_", str(value))[:MAX_WIDTH]
    if text in ("", ".", ".."):
        return "_"
    return text.replace("..", "__")


def relative_name(name: str) -> str:
    """Check that a formatted name stays inside its root; return it in POSIX form."""
    if "\x00" in name:
        raise PathError(f"file name {name!r} contains a NUL character")
    path = PurePosixPath(name.replace(os.sep, "/"))
    if path.is_absolute() or name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name):
        raise PathError(f"file name {name!r} is absolute; names are relative to the writer's root")
    if any(part == ".." for part in path.parts):
        raise PathError(
            f"file name {name!r} would resolve outside its root folder (the Writer's root, "
            "the CLI's -o): names stay below it"
        )
    if not path.parts or path.name in ("", "."):
        raise PathError(f"file name {name!r} names no file")
    return str(path)


def path_text(path: str | os.PathLike[str]) -> str:
    """``os.fspath(path)`` as a str (bytes paths are refused with a clear error)."""
    try:
        text = os.fspath(path)
    except TypeError:
        text = path  # type: ignore[assignment]
    if not isinstance(text, str):
        hint = ""
        if callable(getattr(path, "write", None)):  # a file object: the bytes are what they want
            hint = "; for a file object, write tensorpng.encode(x) to it"
        raise PathError(f"path must be a str or os.PathLike[str], got {type(path).__name__}{hint}")
    if "\x00" in text:
        raise PathError(f"path {text!r} contains a NUL character; no file name may")
    return text


# Options of other calls, which a Writer.save keyword would otherwise take for a name field.
ELSEWHERE = {
    **dict.fromkeys(
        ("max_pending", "on_full", "rank_zero_only", "storage_options", "sink"), "tensorpng.Writer(...)"
    ),
    "workers": "tensorpng.Writer(...) and tensorpng.save",
    **dict.fromkeys(("fps", "loop"), "Writer.add_frame"),
}


def writer_names(
    template: str, count: int, batched: bool, rank: int, fields: Mapping[str, Any], options: Sequence[str]
) -> list[str]:
    """The relative names that :class:`tensorpng.Writer` gives ``count`` images from ``template``
    and the caller's ``fields`` (``{rank}`` defaults to this process's rank). A field that the
    template does not use and that is close to one of ``options`` is a misspelled option: say
    so rather than ignore it."""
    parsed = parse_template(template)
    if "index" in fields:
        raise PathError(
            f"index is the image's position in the batch, which the Writer fills in for {template!r}; "
            "name your field differently, e.g. sample=..."
        )
    for key in fields:
        if key in parsed.fields:
            continue
        if key in ELSEWHERE:
            raise UnknownOptionError(
                f"tensorpng.Writer.save() got {key!r}, which is neither an option of it nor a field "
                f"of the name {template!r}: it is an option of {ELSEWHERE[key]}"
            )
        close = difflib.get_close_matches(key, options, n=1, cutoff=0.6)
        if close:
            raise UnknownOptionError(
                f"tensorpng.Writer.save() got {key!r}, which is neither an option nor a field of the "
                f"name {template!r}; did you mean {close[0]!r}?"
            )
    values = {key: sanitize_field(value) for key, value in fields.items()}
    values.setdefault("rank", rank)
    return [relative_name(n) for n in parsed.names(count, batched, values)]
