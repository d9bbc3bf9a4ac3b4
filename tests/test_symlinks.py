"""Symlinks below a Writer's root are refused at the moment of writing; save() follows the
caller's own paths."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

import tensorpng
from tensorpng.errors import PathError
from tensorpng.sinks import LocalSink

IMAGE = np.zeros((4, 4), np.uint8)
pytestmark = pytest.mark.skipif(not hasattr(os, "O_NOFOLLOW"), reason="needs O_NOFOLLOW (POSIX)")


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    folder = tmp_path / "outside"
    folder.mkdir()
    return folder


def _save_through_writer(root: Path, name: str) -> None:
    with tensorpng.Writer(root) as writer:
        writer.save(IMAGE, name)


def test_symlinked_subfolder_is_refused(tmp_path: Path, outside: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    (root / "sub").symlink_to(outside, target_is_directory=True)
    with pytest.raises(PathError, match="symbolic link"):
        _save_through_writer(root, "sub/a.png")
    assert list(outside.iterdir()) == []


def test_symlinked_deeper_folder_is_refused(tmp_path: Path, outside: Path) -> None:
    root = tmp_path / "root"
    (root / "a").mkdir(parents=True)
    (root / "a" / "b").symlink_to(outside, target_is_directory=True)
    with pytest.raises(PathError):
        _save_through_writer(root, "a/b/c/x.png")
    assert list(outside.iterdir()) == []


def test_symlinked_final_component_is_refused(tmp_path: Path, outside: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    victim = outside / "victim.png"
    victim.write_bytes(b"keep me")
    (root / "a.png").symlink_to(victim)
    with pytest.raises(PathError, match="symbolic link"):
        _save_through_writer(root, "a.png")
    assert victim.read_bytes() == b"keep me"
    assert (root / "a.png").is_symlink()


def test_symlink_made_after_the_name_check_is_refused(tmp_path: Path, outside: Path) -> None:
    # The sink is the moment of writing: the Writer checked the name textually earlier; a link
    # swapped in since then must still be refused there.
    root = tmp_path / "root"
    (root / "sub").mkdir(parents=True)
    sink = LocalSink(root)
    assert sink.write("sub/first.png", b"x", overwrite=True) == 1
    (root / "sub").rename(root / "old")
    (root / "sub").symlink_to(outside, target_is_directory=True)
    with pytest.raises(PathError):
        sink.write("sub/second.png", b"y", overwrite=True)
    assert list(outside.iterdir()) == []


def test_writer_root_itself_may_be_a_symlink(tmp_path: Path, outside: Path) -> None:
    link = tmp_path / "link"
    link.symlink_to(outside, target_is_directory=True)
    _save_through_writer(link, "sub/a.png")
    assert tensorpng.load(outside / "sub" / "a.png").shape == (4, 4)


def test_writer_makes_missing_folders(tmp_path: Path) -> None:
    _save_through_writer(tmp_path / "new", "x/y/z.png")
    assert (tmp_path / "new" / "x" / "y" / "z.png").is_file()


def test_save_follows_the_callers_own_symlinks(tmp_path: Path, outside: Path) -> None:
    link = tmp_path / "link"
    link.symlink_to(outside, target_is_directory=True)
    tensorpng.save(IMAGE, link / "a.png")
    assert (outside / "a.png").is_file()
