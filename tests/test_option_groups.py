"""Options are declared once (TypedDict groups, one table of defaults) and every public
function's signature is generated from them; the guards of that generation."""

from __future__ import annotations

import inspect
from typing import TypedDict, Unpack

import pytest

import tensorpng
from tensorpng import UnknownOptionError
from tensorpng._options import DEFAULTS, WriterKeywords, takes_options
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
