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


# ---- folders read by pack-npz and gallery: dangling links are skipped and named ----------------


def _samples_with_links(tmp_path: Path, outside: Path) -> Path:
    """Two samples, a link to a sample kept elsewhere (read), and a dangling link (skipped)."""
    samples = tmp_path / "samples"
    tensorpng.save(np.full((2, 4, 4, 3), 7, np.uint8), samples / "{index}.png")
    tensorpng.save(np.full((4, 4, 3), 9, np.uint8), outside / "kept.png")
    (samples / "2.png").symlink_to(outside / "kept.png")
    (samples / "3.png").symlink_to(outside / "gone.png")
    return samples


def test_pack_npz_skips_a_dangling_link_and_names_it(
    tmp_path: Path, outside: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from tensorpng._npz import pack_npz
    from tensorpng.cli import main

    samples = _samples_with_links(tmp_path, outside)
    with pytest.warns(
        UserWarning, match=r"skipped 1 entry under .*samples.*3\.png: a symbolic link to nothing"
    ):
        assert pack_npz(samples, tmp_path / "out.npz") == 3
    with np.load(tmp_path / "out.npz") as npz:
        assert npz["arr_0"][:, 0, 0, 0].tolist() == [7, 7, 9]  # the link to a file is followed
    assert main(["pack-npz", str(samples), "-o", str(tmp_path / "cli.npz"), "-q"]) == 0
    assert "warning: skipped 1 entry" in capsys.readouterr().err


def test_gallery_skips_a_dangling_link_and_names_it(
    tmp_path: Path, outside: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import json

    from tensorpng._gallery import write_gallery
    from tensorpng.cli import main

    samples = _samples_with_links(tmp_path, outside)
    with pytest.warns(UserWarning, match=r"3\.png: a symbolic link to nothing \(dangling\); they are not in"):
        page = write_gallery(samples)
    index = json.loads((page.parent / "index.json").read_text())
    assert [image["path"] for image in index["images"]] == ["0.png", "1.png", "2.png"]
    assert main(["gallery", str(samples)]) == 0
    captured = capsys.readouterr()
    assert "3 images" in captured.out and "gallery: warning: skipped 1 entry" in captured.err
