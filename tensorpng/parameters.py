"""AUTOMATIC1111's ``parameters`` text: how an image was generated, as the WebUI writes it.

The WebUI stores one ``tEXt``/``iTXt`` chunk with the keyword ``parameters``::

    a photo of a cat, highly detailed
    Negative prompt: blurry, lowres
    Steps: 20, Sampler: DPM++ 2M, CFG scale: 7, Seed: 1234, Size: 512x512, Model: sd_xl_base_1.0

The prompt (any number of lines), then optionally ``Negative prompt:`` (any number of lines),
then one line of ``Key: value`` settings separated by ``", "``. A value holding a comma, a
colon or a newline is written as a JSON string (the WebUI's ``quote``); the reader takes
``"..."`` values as JSON. The WebUI reads the last line as settings only when it holds at
least three of them (it always writes more: Steps, Sampler, CFG scale, Seed, Size, ...), and
so does :func:`parse_parameters`.

    >>> from tensorpng import format_parameters, parse_parameters
    >>> text = format_parameters({"prompt": "a cat", "steps": 20, "sampler": "Euler a",
    ...                           "cfg_scale": 7, "seed": 1, "size": (512, 512)})
    >>> text
    'a cat\\nSteps: 20, Sampler: Euler a, CFG scale: 7, Seed: 1, Size: 512x512'
    >>> parse_parameters(text)["Size"]
    '512x512'
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping

from .errors import OptionError

PROMPT, NEGATIVE_PROMPT = "prompt", "negative_prompt"
NEGATIVE_PREFIX = "Negative prompt:"

# snake_case names accepted by format_parameters for the settings every WebUI image has.
ALIASES: dict[str, str] = {
    "steps": "Steps",
    "sampler": "Sampler",
    "scheduler": "Schedule type",
    "cfg_scale": "CFG scale",
    "cfg": "CFG scale",
    "seed": "Seed",
    "size": "Size",
    "model": "Model",
    "model_hash": "Model hash",
    "denoising_strength": "Denoising strength",
    "clip_skip": "Clip skip",
    "vae": "VAE",
    "version": "Version",
}

# The WebUI's settings pattern (modules/infotext_utils.py): a key of word characters,
# spaces, hyphens and slashes; a JSON string value, or anything up to the next comma.
_SETTING = re.compile(r'\s*(\w[\w \-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)')
_KEY = re.compile(r"\w[\w \-/]+")
_KEY_RUN = re.compile(r"\s*(\w)[\w \-/]*")  # the maximal run a key could be cut from


def _settings(line: str) -> list[tuple[str, str]]:
    """``_SETTING.findall(line)``, in linear time. findall tries a match at every position;
    inside a run of key characters not followed by a colon each try scans to the run's end
    and fails, which made a long line without colons quadratic (80,000 characters: 20 s).
    Every position of such a run fails alike (the key is the whole rest of the run), so the
    run is skipped in one step."""
    found: list[tuple[str, str]] = []
    position = 0
    while position <= len(line):
        match = _SETTING.match(line, position)
        if match:
            found.append((match.group(1), match.group(2)))
            position = max(match.end(), position + 1)
            continue
        run = _KEY_RUN.match(line, position)
        position = run.end() if run and line[run.end() : run.end() + 1] != ":" else position + 1
    return found


_MIN_SETTINGS = 3  # the WebUI's test for "the last line is settings, not prompt"


def _needs_quotes(value: str) -> bool:
    """The WebUI quotes values with a comma, colon or newline; leading or trailing spaces
    and a leading quote would also not read back as written, so they are quoted too."""
    return any(c in value for c in ",:\n") or value != value.strip() or value.startswith('"')


def _quote(value: str) -> str:
    return json.dumps(value, ensure_ascii=False) if _needs_quotes(value) else value


def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == '"' and value[-1] == '"':
        try:
            loaded = json.loads(value)
        except ValueError:
            return value
        return loaded if isinstance(loaded, str) else value
    return value


def _setting_text(key: str, value: object) -> str:
    if key == "Size" and isinstance(value, (tuple, list)):
        if len(value) != 2:
            raise OptionError(f"Size is (width, height), got {value!r}")
        return f"{value[0]}x{value[1]}"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))  # the WebUI writes "CFG scale: 7", not 7.0
    return str(value)


def format_parameters(parameters: Mapping[str, object]) -> str:
    """The WebUI's ``parameters`` text for ``parameters``.

    Args:
        parameters: ``"prompt"`` and ``"negative_prompt"`` (strings, optional), then the
            settings in the order they should appear: the WebUI's own names (``"Steps"``,
            ``"CFG scale"``, ``"Model hash"``, any ``"Key"`` of letters, digits, spaces,
            ``-``, ``/``) or the snake_case names of :data:`ALIASES` (``steps``, ``sampler``,
            ``cfg_scale``, ``seed``, ``size`` as ``(width, height)`` or ``"WxH"``, ``model``,
            ...). Values are written with ``str`` (floats that are whole without ``.0``);
            ``None`` values are left out, as the WebUI does.

    Returns:
        The text, for ``metadata={"parameters": text}``; :func:`parse_parameters` reads it back.
    """
    prompt = str(parameters.get(PROMPT) or "")
    negative = str(parameters.get(NEGATIVE_PROMPT) or "")
    settings: dict[str, str] = {}
    for name, value in parameters.items():
        if name in (PROMPT, NEGATIVE_PROMPT) or value is None:
            continue
        key = ALIASES.get(name, name)
        if not isinstance(key, str) or not _KEY.fullmatch(key):
            raise OptionError(
                f"a parameters key is 2+ letters, digits, spaces, '-' or '/', got {name!r}; "
                f"the snake_case names are {sorted(ALIASES)}"
            )
        if key in settings:
            raise OptionError(f"{key!r} is given twice (as {name!r} and under another name)")
        settings[key] = _setting_text(key, value)
    if len(settings) < _MIN_SETTINGS:
        raise OptionError(
            f"the WebUI reads the settings line only with 3 settings or more, got {sorted(settings)}; "
            "add steps, sampler, cfg_scale, seed or size"
        )
    line = ", ".join(f"{key}: {_quote(value)}" for key, value in settings.items())
    negative_text = f"\n{NEGATIVE_PREFIX} {negative}" if negative else ""
    return f"{prompt}{negative_text}\n{line}".strip()


def parse_parameters(text: str) -> dict[str, str]:
    """Read the WebUI's ``parameters`` text, as its ``parse_generation_parameters`` does.

    Returns:
        ``{"prompt": ..., "negative_prompt": ..., <setting>: <value>, ...}``: every value a
        string (quoted values unquoted), settings under the WebUI's names in their order
        (``"Steps"``, ``"Sampler"``, ``"CFG scale"``, ``"Seed"``, ``"Size"`` as ``"WxH"``,
        ``"Model"``, and any other). ``format_parameters`` of the result gives ``text`` back
        (for text the WebUI wrote). A text without a settings line is all prompt.
    """
    if not isinstance(text, str):
        raise OptionError(f"parse_parameters reads text (str), got {type(text).__name__}")
    *lines, last = text.strip().split("\n")
    settings = _settings(last)
    if len(settings) < _MIN_SETTINGS:
        lines.append(last)
        settings = []
    prompt: list[str] = []
    negative: list[str] = []
    for line in lines:
        if not negative and line.startswith(NEGATIVE_PREFIX):
            negative.append(line[len(NEGATIVE_PREFIX) :].strip())
        elif negative:
            negative.append(line)
        else:
            prompt.append(line)
    result = {PROMPT: "\n".join(prompt), NEGATIVE_PROMPT: "\n".join(negative)}
    for key, value in settings:
        result[key] = _unquote(value)
    return result


__all__ = ["ALIASES", "format_parameters", "parse_parameters"]
