"""Options are declared once (TypedDict groups, one table of defaults) and every public
function's signature is generated from them; the guards of that generation."""

from __future__ import annotations

import inspect
from typing import TypedDict, Unpack

import numpy as np
import pytest

import tensorpng
from tensorpng import UnknownOptionError
from tensorpng._api import parsed_options
from tensorpng._options import DEFAULTS, WriterKeywords, parse_image_options, parse_png_options, takes_options
from tensorpng.lightning import ImageSaver
from tensorpng.tensorboard import add_image, add_images


def keyword_only(function: object) -> dict[str, inspect.Parameter]:
    parameters = inspect.signature(function).parameters.values()  # type: ignore[arg-type]
    return {p.name: p for p in parameters if p.kind is p.KEYWORD_ONLY}


@pytest.mark.parametrize(
    "function",
    [tensorpng.save, tensorpng.encode, tensorpng.to_array, tensorpng.Writer, tensorpng.save_animation,
     add_images, add_image, ImageSaver],
)  # fmt: skip
def test_every_listed_option_has_the_one_default_and_a_type(function: object) -> None:
    options = {name: p for name, p in keyword_only(function).items() if name in DEFAULTS}
    assert options, "no option listed"
    for name, parameter in options.items():
        assert parameter.default == DEFAULTS[name], name
        assert parameter.annotation is not inspect.Parameter.empty, name
    assert not any(p.kind is p.VAR_KEYWORD for p in inspect.signature(function).parameters.values())  # type: ignore[arg-type]


def test_writer_save_lists_exactly_the_writer_options() -> None:
    """Writer.save spells its options out (its ** is for name fields): they must not drift."""
    listed = keyword_only(tensorpng.Writer.save)
    assert set(listed) == set(WriterKeywords.__annotations__)
    assert all(p.default is tensorpng.writer.DEFAULT for p in listed.values())


def test_add_frame_takes_the_writer_options_left_to_the_writers_default(tmp_path: object) -> None:
    listed = keyword_only(tensorpng.Writer.add_frame)
    assert set(listed) == set(WriterKeywords.__annotations__) | {"fps", "loop", "fields"}
    assert all(listed[name].default is tensorpng.writer.DEFAULT for name in WriterKeywords.__annotations__)
    with (
        tensorpng.Writer(str(tmp_path)) as writer,
        pytest.raises(UnknownOptionError, match="did you mean 'std'"),
    ):
        writer.add_frame([[0]], "a.png", sdt=1)  # type: ignore[call-arg]


def test_defaults_are_filled_and_misspellings_refused() -> None:
    class Group(TypedDict, total=False):
        nrow: int
        bits: int | None

    @takes_options(Group)
    def function(x: int, **options: Unpack[Group]) -> dict[str, object]:
        return dict(options)

    assert function(1) == {"nrow": 8, "bits": None}
    assert function(1, bits=16) == {"nrow": 8, "bits": 16}
    with pytest.raises(
        UnknownOptionError, match=r"tensorpng\..*function\(\) got an unknown option 'nrows'.*'nrow'"
    ):
        function(1, nrows=2)  # type: ignore[call-arg]


def test_a_group_option_without_a_default_is_refused() -> None:
    class Group(TypedDict, total=False):
        no_such_option: int

    with pytest.raises(TypeError, match="no default for"):

        @takes_options(Group)
        def function(**options: Unpack[Group]) -> None:
            pass


def test_the_hint_and_the_decorator_must_name_one_group() -> None:
    class Group(TypedDict, total=False):
        nrow: int

    with pytest.raises(TypeError, match=r"not Unpack\[WriterKeywords\]"):

        @takes_options(WriterKeywords)
        def function(**options: Unpack[Group]) -> None:
            pass


def test_a_call_with_every_option_at_its_default_reuses_the_parsed_records() -> None:
    """encode/save parse their options once per process for the all-defaults call; any option
    given, even equal to its default but another object, is parsed as usual."""
    filled = dict(DEFAULTS)
    first = parsed_options(filled)
    assert parsed_options(dict(DEFAULTS)) is first
    assert first == (parse_image_options(DEFAULTS), parse_png_options(DEFAULTS))
    for name, value in (("bits", 16), ("metadata", False), ("mean", np.array([0.5])), ("pad_value", 0.0 + 0)):
        options = parsed_options({**filled, name: value})
        assert options is not first
        assert options == (
            parse_image_options({**filled, name: value}),
            parse_png_options({**filled, name: value}),
        )
    image = np.arange(48, dtype=np.uint8).reshape(4, 4, 3)
    bit_depth = 24  # IHDR's bit depth: after the signature, the chunk's length and tag, W and H
    assert tensorpng.encode(image, bits=16)[bit_depth] == 16
    assert tensorpng.encode(image)[bit_depth] == 8
