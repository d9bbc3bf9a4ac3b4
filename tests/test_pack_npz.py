"""``tensorpng pack-npz``: a folder of PNG samples as an .npz (arr_0: N x H x W x 3 uint8)."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import tensorpng
from tensorpng import OptionError, ShapeError
from tensorpng._npz import pack_npz
from tensorpng.cli import main
from tensorpng.load import DecodeError

ROOT = Path(__file__).resolve().parents[1]


def pillow_png(path: Path, array: np.ndarray, mode: str | None = None) -> None:
    """Write with Pillow (a writer we did not write), optionally converting the mode."""
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(array)
    if mode is not None:
        image = image.convert(mode)
    image.save(path)


def pillow_rgb(path: Path) -> np.ndarray:
    """What clean-fid / pytorch-fid read from a sample file."""
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def test_packs_sorted_by_relative_path_like_pillow_convert_rgb(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    samples = tmp_path / "samples"
    rgb = rng.integers(0, 256, (5, 6, 7, 3), np.uint8)
    tensorpng.save(rgb, samples / "1_{index:03d}.png")  # rank 1
    tensorpng.save(rgb[:2], samples / "0_{index:03d}.png")  # rank 0
    gray = rng.integers(0, 256, (6, 7), np.uint8)
    pillow_png(samples / "sub" / "a.png", gray)
    rgba = rng.integers(0, 256, (6, 7, 4), np.uint8)
    pillow_png(samples / "sub" / "b.PNG", rgba)
    pillow_png(samples / "sub" / "c.png", rgb[0], mode="P")
    tensorpng.save(rng.integers(0, 65536, (6, 7, 3), np.uint16), samples / "z16.png")
    tensorpng.save(rng.integers(0, 256, (6, 7, 2), np.uint8), samples / "zz_gray_alpha.png")
    (samples / ".hidden.png").write_bytes(b"not even a png")  # an atomic writer's temporary file
    (samples / "notes.txt").write_text("ignored")

    assert main(["pack-npz", str(samples), "-o", str(tmp_path / "out.npz"), "-q"]) == 0
    with np.load(tmp_path / "out.npz") as npz:
        assert list(npz.keys()) == ["arr_0"]
        packed = npz["arr_0"]
    names = [
        "0_000",
        "0_001",
        "1_000",
        "1_001",
        "1_002",
        "1_003",
        "1_004",
        "sub/a",
        "sub/b",
        "sub/c",
        "z16",
        "zz_gray_alpha",
    ]
    files = [samples / f"{name}.png" for name in names]
    files[8] = samples / "sub" / "b.PNG"
    assert packed.shape == (12, 6, 7, 3) and packed.dtype == np.uint8
    for index, path in enumerate(files):
        if path.name == "z16.png":  # Pillow reads 16-bit color as v >> 8; ours is round(v / 257)
            continue
        np.testing.assert_array_equal(packed[index], pillow_rgb(path), err_msg=str(path))
    np.testing.assert_array_equal(packed[:2], rgb[:2])
    np.testing.assert_array_equal(packed[7], np.repeat(gray[..., None], 3, axis=2))
    np.testing.assert_array_equal(packed[8], rgba[..., :3])  # alpha dropped, not composited
    sixteen = tensorpng.load(samples / "z16.png")  # uint16, as saved
    np.testing.assert_array_equal(packed[10], np.round(sixteen / 257).astype(np.uint8))


def test_count_takes_the_first_files(tmp_path: Path) -> None:
    images = np.arange(4 * 2 * 2 * 3, dtype=np.uint8).reshape(4, 2, 2, 3)
    tensorpng.save(images, tmp_path / "s" / "{index:02d}.png")
    assert pack_npz(tmp_path / "s", tmp_path / "three.npz", count=3) == 3
    with np.load(tmp_path / "three.npz") as npz:
        np.testing.assert_array_equal(npz["arr_0"], images[:3])
    with pytest.raises(OptionError, match="4 PNG files, fewer than count=5"):
        pack_npz(tmp_path / "s", tmp_path / "five.npz", count=5)
    assert not (tmp_path / "five.npz").exists()


def test_mixed_sizes_name_both_files_before_writing(tmp_path: Path) -> None:
    tensorpng.save(np.zeros((3, 8, 8, 3), np.uint8), tmp_path / "s" / "a{index}.png")
    tensorpng.save(np.zeros((8, 9, 3), np.uint8), tmp_path / "s" / "b.png")
    (tmp_path / "old.npz").write_bytes(b"previous")
    with pytest.raises(ShapeError, match=r"b\.png is 8x9 \(H x W\) but .*a0\.png is 8x8"):
        pack_npz(tmp_path / "s", tmp_path / "old.npz")
    assert (tmp_path / "old.npz").read_bytes() == b"previous"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["old.npz", "s"]


def test_a_corrupt_file_leaves_no_output(tmp_path: Path) -> None:
    tensorpng.save(np.zeros((2, 8, 8, 3), np.uint8), tmp_path / "s" / "a{index}.png")
    data = tensorpng.encode(np.full((8, 8, 3), 7, np.uint8))
    (tmp_path / "s" / "b.png").write_bytes(data[:60])  # the header is fine, the data is cut
    with pytest.raises(DecodeError, match=r"b\.png"):
        pack_npz(tmp_path / "s", tmp_path / "out.npz")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s"]
    (tmp_path / "s" / "b.png").write_bytes(b"GIF89a" + bytes(40))
    with pytest.raises(DecodeError, match=r"b\.png is not a PNG"):
        pack_npz(tmp_path / "s", tmp_path / "out.npz")


def test_streams_in_one_stored_member(tmp_path: Path) -> None:
    """The .npy is written as a stored zip member that numpy memory-maps-friendly reads back,
    and the whole array is never built: the output's size is the samples' plus headers."""
    import zipfile

    images = np.random.default_rng(1).integers(0, 256, (30, 16, 16, 3), np.uint8)
    tensorpng.save(images, tmp_path / "s" / "{index:03d}.png")
    pack_npz(tmp_path / "s", tmp_path / "out.npz", workers=3)
    with zipfile.ZipFile(tmp_path / "out.npz") as archive:
        (info,) = archive.infolist()
        assert info.filename == "arr_0.npy" and info.compress_type == zipfile.ZIP_STORED
        assert images.nbytes < info.file_size <= images.nbytes + 128
        member = archive.read("arr_0.npy")
    np.testing.assert_array_equal(np.load(io.BytesIO(member)), images)


def test_command_line(tmp_path: Path) -> None:
    tensorpng.save(np.zeros((2, 8, 8), np.uint8), tmp_path / "s" / "{index}.png", layout="NHW")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        [sys.executable, "-m", "tensorpng", "pack-npz", str(tmp_path / "s"), "-o", str(tmp_path / "o.npz")],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "2 images packed" in result.stderr
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "tensorpng",
            "pack-npz",
            str(tmp_path / "none"),
            "-o",
            str(tmp_path / "x.npz"),
        ],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert result.returncode == 1 and "is not a folder" in result.stderr
    assert main(["pack-npz", str(tmp_path / "s"), "-o", str(tmp_path / "o.npz"), "--workers", "0"]) == 1


def _declaring(width: int, height: int) -> bytes:
    """A small PNG whose IHDR declares ``width`` x ``height`` RGB (its data is far too short:
    only the declared size matters, it must be refused before any decoding)."""
    import struct
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + chunk(b"IEND", b"")
    )


def test_a_declared_bomb_is_refused_before_decoding(tmp_path: Path) -> None:
    folder = tmp_path / "bombs"
    folder.mkdir()
    for i in range(3):
        (folder / f"{i}.png").write_bytes(_declaring(30000, 30000))
    out = tmp_path / "out.npz"
    with pytest.raises(DecodeError, match="max_pixels"):
        pack_npz(folder, out)
    assert not out.exists() and not list(tmp_path.glob(".*"))
    assert main(["pack-npz", str(folder), "-o", str(out), "-q"]) == 1
    # a raised limit lets a large (valid) image through; "none" lifts it
    with pytest.raises(DecodeError, match="max_pixels=10"):
        pack_npz(folder, out, max_pixels=10)
    with pytest.raises(OptionError, match="max_pixels"):
        pack_npz(folder, out, max_pixels=1.5)  # type: ignore[arg-type]
    valid = tmp_path / "valid"
    pillow_png(valid / "a.png", np.zeros((4, 5, 3), np.uint8))
    assert main(["pack-npz", str(valid), "-o", str(out), "-q", "--max-pixels", "20"]) == 0
    assert main(["pack-npz", str(valid), "-o", str(out), "-q", "--max-pixels", "none"]) == 0
    assert main(["pack-npz", str(valid), "-o", str(out), "-q", "--max-pixels", "19"]) == 1


def test_long_non_ascii_output_name_and_our_temporary_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import zipfile

    from tensorpng.sinks import TEMP_NAME

    pillow_png(tmp_path / "in" / "a.png", np.zeros((4, 5, 3), np.uint8))
    opened: list[str] = []
    real_init = zipfile.ZipFile.__init__

    def spy(self: zipfile.ZipFile, file: object, *args: object, **kwargs: object) -> None:
        if isinstance(file, (str, os.PathLike)):
            opened.append(os.path.basename(os.fspath(file)))
        real_init(self, file, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(zipfile.ZipFile, "__init__", spy)
    out = tmp_path / ("ü" * 120 + ".npz")  # 245 bytes: a name cut by characters would not fit
    assert pack_npz(tmp_path / "in", out) == 1
    assert np.load(out)["arr_0"].shape == (1, 4, 5, 3)
    assert len(opened) == 1 and TEMP_NAME.match(opened[0]), opened


def _pack_in_subprocess(folder: Path, output: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tensorpng", "pack-npz", str(folder), "-o", str(output)],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        timeout=120,  # a hang fails the test here, instead of hanging the suite
        check=False,
    )


def test_a_named_pipe_among_the_samples_is_skipped_not_waited_on(tmp_path: Path) -> None:
    """A FIFO named like a sample blocked pack-npz forever in open(); so did a link to one."""
    samples = tmp_path / "s"
    images = np.arange(2 * 4 * 4 * 3, dtype=np.uint8).reshape(2, 4, 4, 3)
    tensorpng.save(images, samples / "{index}.png")
    os.mkfifo(samples / "stuck.png")
    (samples / "link.png").symlink_to(samples / "stuck.png")
    result = _pack_in_subprocess(samples, tmp_path / "out.npz")
    assert result.returncode == 0, result.stderr
    assert "warning: skipped 2 entries under" in result.stderr, result.stderr
    assert "stuck.png: a named pipe (FIFO)" in result.stderr
    assert "link.png: a symbolic link to a named pipe (FIFO)" in result.stderr
    assert "2 images packed" in result.stderr
    with np.load(tmp_path / "out.npz") as npz:
        np.testing.assert_array_equal(npz["arr_0"], images)


def test_a_pipe_swapped_in_after_the_walk_is_refused(tmp_path: Path) -> None:
    """The check is repeated on the open descriptor: a file replaced by a FIFO between the
    walk and the read is a ReadError naming it, not a hang (a watchdog unblocks a hang)."""
    import threading

    from tensorpng._npz import read_size

    fifo = tmp_path / "swapped.png"
    os.mkfifo(fifo)
    outcome: list[BaseException | tuple[int, int]] = []

    def read() -> None:
        try:
            outcome.append(read_size(fifo))
        except BaseException as error:
            outcome.append(error)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(timeout=60)
    if reader.is_alive():  # blocked in open(): open the write end so that it returns
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        reader.join(timeout=10)
        pytest.fail("read_size blocked on a named pipe")
    (error,) = outcome
    assert isinstance(error, tensorpng.ReadError), error
    assert "swapped.png" in str(error) and "named pipe" in str(error)


def test_a_file_where_the_output_folder_should_be(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """mkdir ran outside the try: a file in the way raised a raw FileExistsError."""
    tensorpng.save(np.zeros((4, 4, 3), np.uint8), tmp_path / "s" / "a.png")
    (tmp_path / "blocker").write_bytes(b"a file, not a folder")
    with pytest.raises(tensorpng.WriteError, match=r"blocker/x\.npz: .*blocker is a file, not a folder"):
        pack_npz(tmp_path / "s", tmp_path / "blocker" / "x.npz")
    with pytest.raises(tensorpng.WriteError, match=r"blocker is a file"):
        pack_npz(tmp_path / "s", tmp_path / "blocker" / "deeper" / "x.npz")
    assert main(["pack-npz", str(tmp_path / "s"), "-o", str(tmp_path / "blocker" / "x.npz")]) == 1
    assert "blocker is a file, not a folder" in capsys.readouterr().err
    assert (tmp_path / "blocker").read_bytes() == b"a file, not a folder"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["blocker", "s"]


def test_the_output_must_not_be_a_folder(tmp_path: Path) -> None:
    tensorpng.save(np.zeros((4, 4, 3), np.uint8), tmp_path / "s" / "a.png")
    (tmp_path / "out").mkdir()
    with pytest.raises(tensorpng.PathError, match=r"out is a folder; name the \.npz file"):
        pack_npz(tmp_path / "s", tmp_path / "out")
    assert list((tmp_path / "out").iterdir()) == []
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_library_options_are_checked(tmp_path: Path) -> None:
    tensorpng.save(np.zeros((4, 4, 3), np.uint8), tmp_path / "s" / "a.png")
    for options in ({"count": "3"}, {"count": 1.5}, {"workers": -1}, {"workers": 2.0}):
        with pytest.raises(OptionError, match="count|workers"):
            pack_npz(tmp_path / "s", tmp_path / "o.npz", **options)  # type: ignore[arg-type]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s"]
