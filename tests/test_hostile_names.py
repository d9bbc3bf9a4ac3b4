"""Hostile names: templates are fields with format specs only, widths are bounded, field
values lose bidi and control characters, a trailing "/" is refused, and long non-ASCII names
work — through save(), Writer.save() and the CLI's --name."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import tensorpng
from tensorpng.cli import main
from tensorpng.errors import PathError

IMAGE = np.arange(16, dtype=np.uint8).reshape(4, 4)
ATTACKS = [
    "{index.__class__.__mro__}.png",  # attribute access: would evaluate code paths
    "{index.__class__.__init__.__globals__}.png",
    "{index[0]}.png",  # item access
    "{index:300000000}.png",  # a 300 MB name
    "{index:>99999}.png",
    "{index:065d}.png",  # just past the bound
    "{0}.png",  # positional fields
    "{}.png",
    "{index!r}.png",  # conversions
    "{index!s:10}.png",
    "a/",  # a folder, not a file
    "a/b/",
    "a\x00b.png",  # NUL: the OS raises a raw ValueError
    "d\x00ir/{index}.png",
]
BIDI = "\u202e\u202d\u202a\u2066\u2067\u2068\u2069\u200e\u200f\u061c"


@pytest.mark.parametrize("name", ATTACKS)
def test_save_refuses_hostile_templates(tmp_path: Path, name: str) -> None:
    with pytest.raises(PathError):
        tensorpng.save(IMAGE, str(tmp_path) + "/" + name)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("name", ATTACKS)
def test_writer_refuses_hostile_templates(tmp_path: Path, name: str) -> None:
    with tensorpng.Writer(tmp_path / "out") as writer, pytest.raises(PathError):
        writer.save(IMAGE, name)
    assert not any(p.is_file() for p in tmp_path.rglob("*"))


@pytest.mark.parametrize("name", ATTACKS)
def test_cli_refuses_hostile_names(tmp_path: Path, name: str, capsys: pytest.CaptureFixture[str]) -> None:
    source = tmp_path / "x.npy"
    np.save(source, IMAGE[None])
    with pytest.raises(SystemExit) as exit_info:
        main(["convert", str(source), "-o", str(tmp_path / "out"), "-q", "--name", name])
    assert exit_info.value.code == 2
    assert "name" in capsys.readouterr().err
    assert not (tmp_path / "out").exists() or not any(p.is_file() for p in (tmp_path / "out").rglob("*"))


def test_width_bound_is_64(tmp_path: Path) -> None:
    [path] = tensorpng.save(IMAGE, tmp_path / "{index:064d}.png")
    assert len(path.name) == 64 + 4


def test_bidi_and_control_characters_are_stripped_from_fields(tmp_path: Path) -> None:
    with tensorpng.Writer(tmp_path) as writer:
        writer.save(IMAGE, "{tag}.png", tag=f"cat{BIDI}gnp.exe\x00\x1b[31m")
    [written] = [p.name for p in tmp_path.iterdir()]
    assert not set(written) & set(BIDI + "\x00\x1b")
    assert written.startswith("cat") and written.endswith(".png")


def test_field_values_cannot_climb_out(tmp_path: Path) -> None:
    with tensorpng.Writer(tmp_path / "root") as writer:
        writer.save(IMAGE, "{tag}.png", tag="../../escape")
    assert [p.parent for p in tmp_path.rglob("*.png")] == [tmp_path / "root"]


NON_ASCII_200_BYTES = "ä" * 98  # 196 bytes; with ".png" 200 bytes: valid on every file system


def test_long_non_ascii_names_work_everywhere(tmp_path: Path) -> None:
    name = NON_ASCII_200_BYTES + ".png"
    assert len(os.fsencode(name)) == 200
    [path] = tensorpng.save(IMAGE, tmp_path / "save" / name)
    with tensorpng.Writer(tmp_path / "writer") as writer:
        writer.save(IMAGE, name)
    source = tmp_path / "x.npy"
    np.save(source, IMAGE[None])
    assert main(["convert", str(source), "-o", str(tmp_path / "cli"), "-q", "--name", name]) == 0
    for folder in ("save", "writer", "cli"):
        [written] = list((tmp_path / folder).iterdir())
        assert written.name == name
        np.testing.assert_array_equal(np.asarray(tensorpng.load(written)).reshape(4, 4), IMAGE)
    assert path.name == name


def test_long_non_ascii_names_leave_no_temporary_files(tmp_path: Path) -> None:
    name = "日本語" * 22 + ".png"  # 202 bytes, 70 characters: a cut by characters overflows
    tensorpng.save(IMAGE, tmp_path / name)
    assert [p.name for p in tmp_path.iterdir()] == [name]


def test_nul_in_any_path_is_a_path_error(tmp_path: Path) -> None:
    clip = np.zeros((2, 4, 4), np.uint8)
    calls = [
        lambda: tensorpng.Writer(str(tmp_path) + "/r\x00oot"),
        lambda: tensorpng.save_animation(clip, str(tmp_path) + "/a\x00b.png"),
        lambda: tensorpng.save_image(np.zeros((3, 4, 4), np.float32), str(tmp_path) + "/a\x00b.png"),
        lambda: tensorpng.load(str(tmp_path) + "/a\x00b.png"),
    ]
    for call in calls:
        with pytest.raises(tensorpng.TensorPNGError, match="NUL|null"):
            call()
    assert list(tmp_path.iterdir()) == []
    with tensorpng.Writer(tmp_path) as writer:  # from data, in a field: sanitized
        writer.save(IMAGE, "{tag}.png", tag="a\x00b")
    assert [p.name for p in tmp_path.iterdir()] == ["a_b.png"]


# ----------------------------------------------------------------- every entry point, before any I/O
# Each entry point below takes a name (relative to tmp_path), name fields and metadata, and returns
# the text of the error it reported: the exception's message for the library, stderr for the CLI
# (convert: a usage error, exit 2; pack-npz: exit 1). The tests check that error and that tmp_path
# is exactly as the setup left it: no file, no folder.

CLIP = np.zeros((2, 4, 4), np.uint8)


@dataclass
class Folder:
    """tmp_path, made ready by the ``setup`` fixture, and the captured output of the CLI."""

    root: Path
    capsys: pytest.CaptureFixture[str]


Fields = dict[str, Any]
Error = type[Exception]


def _raises(error: Error, call: Callable[[], object]) -> str:
    with pytest.raises(error) as info:
        call()
    return str(info.value)


def _save(folder: Folder, name: str, fields: Fields, metadata: Any, error: Error) -> str:
    return _raises(error, lambda: tensorpng.save(IMAGE, f"{folder.root}/{name}", metadata=metadata))


def _writer_save(folder: Folder, name: str, fields: Fields, metadata: Any, error: Error) -> str:
    with tensorpng.Writer(folder.root) as writer:  # raised by save itself, not later by a worker
        return _raises(error, lambda: writer.save(IMAGE, name, metadata=metadata, **fields))


def _add_frame(folder: Folder, name: str, fields: Fields, metadata: Any, error: Error) -> str:
    with tensorpng.Writer(folder.root) as writer:
        return _raises(error, lambda: writer.add_frame(IMAGE, name, fields=fields, metadata=metadata))


def _animation(folder: Folder, name: str, fields: Fields, metadata: Any, error: Error) -> str:
    return _raises(error, lambda: tensorpng.save_animation(CLIP, f"{folder.root}/{name}", metadata=metadata))


def _save_image(folder: Folder, name: str, fields: Fields, metadata: Any, error: Error) -> str:
    image = np.zeros((3, 4, 4), np.float32)
    return _raises(error, lambda: tensorpng.save_image(image, f"{folder.root}/{name}", metadata=metadata))


def _encode(folder: Folder, name: str, fields: Fields, metadata: Any, error: Error) -> str:
    return _raises(error, lambda: tensorpng.encode(IMAGE, metadata=metadata))


def _cli_convert(folder: Folder, name: str, fields: Fields, metadata: Any, error: Error) -> str:
    texts = [f"--metadata={key}={value}" for key, value in (metadata or {}).items()]
    source, out = str(folder.root / "x.npy"), str(folder.root / "out")
    with pytest.raises(SystemExit) as exit_info:
        main(["convert", source, "-o", out, "-q", "--name", name, *texts])
    assert exit_info.value.code == 2
    return folder.capsys.readouterr().err


def _cli_pack(folder: Folder, name: str, fields: Fields, metadata: Any, error: Error) -> str:
    assert main(["pack-npz", str(folder.root / "src"), "-o", f"{folder.root}/{name}", "-q"]) == 1
    return folder.capsys.readouterr().err


@pytest.fixture
def setup(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Iterator[Folder]:
    """tmp_path with the CLI's inputs in it; afterwards, checks that nothing was added."""
    np.save(tmp_path / "x.npy", IMAGE[None])
    tensorpng.save(np.zeros((4, 4, 3), np.uint8), tmp_path / "src" / "a.png")
    before = sorted(tmp_path.rglob("*"))
    capsys.readouterr()
    yield Folder(tmp_path, capsys)
    assert sorted(tmp_path.rglob("*")) == before, "a file or folder was made before the error"


TEMPLATES = {"save": _save, "Writer.save": _writer_save, "add_frame": _add_frame, "cli convert": _cli_convert}
PATHS = {"save_animation": _animation, "save_image": _save_image, "cli pack-npz": _cli_pack}
WRITERS = {"Writer.save": _writer_save, "add_frame": _add_frame}
RAW_ERRORS = [
    *[(entry, "{index:0" + "9" * 5000 + "d}.png", {}, "5,000-digit") for entry in TEMPLATES],
    *[(entry, "{index:c}.png", {}, "{index:c}") for entry in TEMPLATES],
    *[(entry, "a\ud800.png", {}, "surrogate") for entry in [*TEMPLATES, *PATHS]],
    *[(entry, "{s:c}.png", {"s": 0x110000}, "{s:c}") for entry in WRITERS],
    *[(entry, "{s}.png", {"s": 10**5000}, "{s}") for entry in WRITERS],
    *[(entry, "{s:d}.png", {"s": -(10**5000)}, "{s:d}") for entry in WRITERS],
]


def _id(value: object) -> str:
    return ascii(value)[1:21] if isinstance(value, str) else ",".join(map(str, value))  # type: ignore[call-overload]


@pytest.mark.parametrize(("entry", "name", "fields", "named"), RAW_ERRORS, ids=_id)
def test_raw_python_errors_are_path_errors(
    setup: Folder, entry: str, name: str, fields: dict[str, Any], named: str
) -> None:
    # Before: int() of a 5000-digit width, "embedded null byte", OverflowError, the int string
    # limit, and UnicodeEncodeError at write time (for the Writer, in a worker, after save returned).
    message = {**TEMPLATES, **PATHS}[entry](setup, name, fields, None, PathError)
    assert named in message


@pytest.mark.parametrize("entry", ["save", "encode", "save_image", "save_animation", *WRITERS, "cli convert"])
def test_lone_surrogates_in_metadata_are_option_errors(setup: Folder, entry: str) -> None:
    call = {"encode": _encode, "save_image": _save_image, "save_animation": _animation, **TEMPLATES}[entry]
    for metadata, named in [({"comment": "a\ud800b"}, "'comment'"), ({"k\ud800": "v"}, r"'k\ud800'")]:
        message = call(setup, "m.png", {}, metadata, tensorpng.errors.OptionError)
        assert named in message and ("surrogate" in message or "Latin-1" in message)


FOLDERS = ["adir/", "a.png/", "a.png/.", "adir/.."]


@pytest.mark.parametrize("entry", [*TEMPLATES, *PATHS])
@pytest.mark.parametrize("name", FOLDERS)
def test_names_of_folders_are_refused(setup: Folder, entry: str, name: str) -> None:
    message = {**TEMPLATES, **PATHS}[entry](setup, name, {}, None, PathError)
    assert "names a folder" in message and repr(name)[1:-1] in message


class _Sneaky(int):
    """A number whose format holds a separator: sanitize_field passes numbers as they are."""

    def __format__(self, spec: str) -> str:
        return "sub/dir"


FILLS = ["/>5", "\\>5", ".>5", "\u202e>5", "\x1b>5", "\n^5", "c"]


@pytest.mark.parametrize("entry", TEMPLATES)
@pytest.mark.parametrize("spec", FILLS, ids=ascii)
def test_format_specs_cannot_bring_back_separators_or_controls(setup: Folder, entry: str, spec: str) -> None:
    # "{index:/>5}.png" relative to the working folder wrote /0.png at the file system root.
    message = TEMPLATES[entry](setup, f"{{index:{spec}}}.png", {}, None, PathError)
    assert ("fill character" in message and repr(spec[0]) in message) or "'c'" in message
    if entry in WRITERS:  # each formatted field is checked too, whatever made it
        cases: list[tuple[str, Fields]] = [("{tag:/^9}.png", {"tag": "x"}), ("{s}.png", {"s": _Sneaky(1)})]
        for name, fields in cases:
            message = TEMPLATES[entry](setup, name, fields, None, PathError)
            assert repr(name) in message and "/" in message


@pytest.mark.parametrize("entry", WRITERS)
def test_lone_surrogates_in_field_values_are_sanitized(tmp_path: Path, entry: str) -> None:
    # Field values come from data: like NUL and bidi characters, a lone surrogate becomes "_"
    # in the caller's thread (before: a UnicodeEncodeError in a worker, reported later).
    with tensorpng.Writer(tmp_path) as writer:
        if entry == "Writer.save":
            writer.save(IMAGE, "{tag}.png", tag="a\ud800b")
        else:
            writer.add_frame(IMAGE, "{tag}.png", fields={"tag": "a\udcffb"})  # an escaped byte too
    assert [p.name for p in tmp_path.iterdir()] == ["a_b.png"]
