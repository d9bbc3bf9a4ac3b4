"""Hostile names: templates are fields with format specs only, widths are bounded, field
values lose bidi and control characters, a trailing "/" is refused, and long non-ASCII names
work — through save(), Writer.save() and the CLI's --name."""

from __future__ import annotations

import os
from pathlib import Path

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
