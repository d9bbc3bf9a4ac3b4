"""Internal: the one rule for file names, used by ``save``, ``Writer`` and the CLI.

A name is a ``str.format`` template of plain fields with format specs (``{index:04d}``,
``{step:06d}``); attribute and item access (``{index.__class__}``), conversions (``!r``) and
positional fields are refused, and widths are bounded, because templates may come from
data. The rule for a batch:

- one image, or a batch of one, is written to the name itself (``{index}`` is 0);
- a larger batch whose template has no ``{index}`` gets ``_{index}`` before the suffix,
  zero-padded to the widest index (``out.png`` -> ``out_00.png`` ... ``out_63.png``);
- two images that would share a file are an error.

Every name must end in ``.png`` (tensorpng writes PNG) and name a file, not a folder (no
trailing ``/``, ``/.`` or ``/..``). Field values that come from data (``Writer`` and CLI
fields) are sanitized: no separators, control, bidirectional-override or lone surrogate
characters, and no ``..``. A format spec cannot bring them back: its fill character may not
be a separator, dot, control or bidi character, the ``c`` type is refused, and each formatted
field is checked. :func:`relative_name` keeps a name inside a root. Every refusal is a
:class:`PathError` raised before any file or folder is made.
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
MAX_FIELD_TEXT = 255  # the longest formatted field: no file system takes a longer name part
SUFFIX = ".png"
_SPEC = re.compile(
    r"(?:(?P<fill>.)?[<>=^])?[+\- ]?z?#?0?(?P<width>\d+)?[_,]?(?:\.(?P<precision>\d+))?"
    r"(?P<type>[bcdeEfFgGnosxX%])?",
    re.DOTALL,  # a newline fill is refused with the others below, not as "not a format spec"
)
# Separators, C0/C1 controls, bidirectional controls and lone surrogates (which no UTF-8 name holds).
_UNSAFE = re.compile(r"[\x00-\x1f\x7f-\x9f/\\\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069\ud800-\udfff]")
_UNSAFE_FILL = re.compile(_UNSAFE.pattern[:-1] + r".]")  # and dots: a fill of dots makes "..".


@dataclass(frozen=True)
class Template:
    """A checked name template: its text, the names of its fields, and each field's spec."""

    text: str
    fields: frozenset[str]
    specs: tuple[tuple[str, str], ...] = ()  # (field, spec) of each replacement field, in order

    def names(
        self,
        count: int,
        batched: bool,
        fields: Mapping[str, Any] | None = None,
        folders: frozenset[str] = frozenset(),
    ) -> list[str]:
        """The name of each of ``count`` images (see the module doc for the rule). The
        values of the ``folders`` fields may hold ``/`` between sanitized parts (the CLI's
        ``{key}`` of a nested array is a subfolder)."""
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
        # The index is ours (0..count-1) and its spec was checked; the other fields are
        # formatted and checked once here, since they are the same in every name.
        for name, spec in template.specs:
            if name != "index":
                _format_field(self.text, name, spec, values[name], name in folders)
        try:
            names = [template.text.format_map({**values, "index": index}) for index in range(count)]
        except (ValueError, TypeError, OverflowError) as error:  # a spec that does not fit the index
            raise PathError(f"cannot format name {self.text!r} with index 0..{count - 1}: {error}") from None
        if len(set(names)) != len(names):
            raise PathError(f"name {self.text!r} gives two images the same file; put {{index}} in it")
        return names


def _format_field(template: str, name: str, spec: str, value: Any, folders: bool = False) -> str:
    """``format(value, spec)``, refused unless it is a safe part of a file name: a fill or a
    ``__format__`` must not bring back what :func:`sanitize_field` took out."""
    field = f"{{{name}:{spec}}}" if spec else f"{{{name}}}"
    try:
        text = format(value, spec)
    except (ValueError, TypeError, OverflowError) as error:  # e.g. an int of over 4300 digits
        raise PathError(
            f"cannot format the field {field} of name {template!r} with {name}={_describe(value)}: "
            f"{error}; pass a value that fits the spec (or change the spec)"
        ) from None
    for part in text.split("/") if folders else (text,):  # ".." in a folder: relative_name refuses it
        bad = _UNSAFE.search(part)
        if bad:
            raise PathError(
                f"the field {field} of name {template!r} formats {name}={_describe(value)} as "
                f"{text[:80]!r}, which holds {bad[0]!r} (a separator, control, bidi or lone surrogate "
                "character); no field may: pass a plain number or text"
            )
        if len(part) > MAX_FIELD_TEXT:
            raise PathError(
                f"the field {field} of name {template!r} formats {name}={_describe(value)} as "
                f"{len(part):,} characters, over {MAX_FIELD_TEXT}; pass a shorter value"
            )
    return text


def _describe(value: Any) -> str:
    """A short repr of ``value`` for a message (repr itself fails for an int of 4300+ digits)."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 200:
        return f"<an int of {value.bit_length():,} bits>"
    try:
        text = repr(value)
    except Exception:  # a hostile __repr__ must not hide the error being reported
        return f"<a {type(value).__name__}>"
    return text if len(text) <= 80 else text[:77] + "..."


def _check_encodable(text: str, what: str) -> None:
    """Refuse a ``text`` that the OS cannot encode (a lone surrogate such as ``"\\ud800"``);
    ``open`` would raise a raw UnicodeEncodeError, only at write time."""
    try:
        os.fsencode(text)
    except UnicodeEncodeError as error:
        raise PathError(
            f"{what} {text[:200]!r} holds {text[error.start]!r} at position {error.start}, a lone "
            "surrogate that no file name can hold; remove it, or decode the bytes it came from "
            "with errors='replace'"
        ) from None


def _refuse_folder(text: str, what: str, example: str) -> None:
    """Refuse a ``text`` whose last part makes it a folder (``""``, ``"."``, ``".."``): writing
    it would make a folder, or a file where a folder was meant, or fail late in the OS."""
    tail = re.split(r"[/\\]" if os.sep == "\\" else "/", text)[-1]
    if tail not in ("", ".", ".."):
        return
    if tail == text:
        raise PathError(f"{what} {text!r} names no file; give a file name such as {example!r}")
    ending = text[-len(tail) - 1 :]
    raise PathError(
        f"{what} {text!r} names a folder (it ends in {ending!r}), not a file; add a file name, "
        f"e.g. {os.path.join(text, example)!r}, or drop the {ending!r}"
    )


def parse_template(template: str) -> Template:
    """Check ``template`` (see the module doc); raises :class:`PathError` naming the problem."""
    if not isinstance(template, str):
        raise PathError(f"a name must be a str or os.PathLike[str], got {_describe(template)}")
    return _parse_template(template)


@functools.lru_cache(maxsize=256)
def _parse_template(template: str) -> Template:
    if "\x00" in template:  # the OS refuses it (a raw ValueError from deep inside open)
        raise PathError(f"name {template!r} contains a NUL character; no file name may")
    _check_encodable(template, "name")
    _refuse_folder(template, "name", "{index:04d}.png")
    if not template.lower().endswith(SUFFIX):
        suffix = os.path.splitext(template)[1] or "no suffix"
        raise PathError(f"tensorpng writes PNG files, but name {template!r} has {suffix}; end it with .png")
    fields, specs = set(), []
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
        _check_spec(template, name, spec or "")
        fields.add(name)
        specs.append((name, spec or ""))
    return Template(template, frozenset(fields), tuple(specs))


def _check_spec(template: str, name: str, spec: str) -> None:
    """Refuse a spec that is malformed, too wide, or makes characters a name must not hold."""
    match = _SPEC.fullmatch(spec)
    if match is None:
        raise PathError(f"cannot format name template {template!r}: {spec!r} is not a format spec")
    field = f"{{{name}:{spec}}}" if len(spec) <= 20 else f"{{{name}:{spec[:17]}...}}"
    for part in ("width", "precision"):
        digits = (match[part] or "0").lstrip("0") or "0"
        if len(digits) > 3 or int(digits) > MAX_WIDTH:  # the length first: int() of 4300+ digits raises
            shown = digits if len(digits) <= 10 else f"a {len(digits):,}-digit number"
            raise PathError(
                f"name {template[:200]!r}: the {part} in {field} is {shown}, over {MAX_WIDTH}; "
                f"use at most {MAX_WIDTH}, e.g. {{{name}:06d}}"
            )
    if match["fill"] is not None and _UNSAFE_FILL.match(match["fill"]):
        raise PathError(
            f"name {template!r}: the fill character {match['fill']!r} in {field!r} is a path separator, "
            f"dot, control, bidi or surrogate character, which no file name part may hold; fill with "
            f"another, e.g. {{{name}:0>6}} or {{{name}:_>6}}"
        )
    if match["type"] == "c":  # a code point: NUL, a separator, a control...
        raise PathError(
            f"name {template!r}: the field {field} formats a number as a character ('c'); "
            f"use a number format such as {{{name}:d}} or {{{name}:x}}"
        )


def sanitize_field(value: Any) -> Any:
    """A field value safe to put in a file name: numbers as they are, anything else as text
    with separators, control, bidirectional-override and lone surrogate characters replaced
    by ``_``, at most :data:`MAX_WIDTH` characters, and ``.``/``..`` refused."""
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
    _check_encodable(text, "path")
    return text


def file_path(path: str | os.PathLike[str], example: str = "out.png") -> str:
    """:func:`path_text` of a file to write: a path naming a folder (ending in ``/``, ``/.``
    or ``/..``) is refused before anything is made, not turned into a folder or a file."""
    text = path_text(path)
    _refuse_folder(text, "path", example)
    return text


def png_path(path: str | os.PathLike[str], example: str = "out.png") -> str:
    """:func:`file_path` of one PNG file to write (``save_animation``'s): it ends in ``.png``,
    is no existing folder, and holds no ``{field}`` (a path, not a template)."""
    text = file_path(path, example)
    if os.path.isdir(text):
        raise PathError(f"path {text!r} is a folder; name the file, e.g. {os.path.join(text, example)!r}")
    if not text.lower().endswith(SUFFIX):
        suffix = os.path.splitext(text)[1] or "no suffix"
        raise PathError(f"tensorpng writes PNG files, but path {text!r} has {suffix}; end it with .png")
    if "{" in text or "}" in text:
        raise PathError(
            f"path {text!r} holds braces: it names one file, not a template of names; "
            "fill the fields first, e.g. f'clip_{step}.png'"
        )
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
