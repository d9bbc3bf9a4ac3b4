"""``tensorpng gallery``: the index (read without decoding pixels) and the page, loaded in
headless Chromium (skipped only where Chromium is not installed)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import tracemalloc
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import tensorpng
from tensorpng._gallery import build_index, read_header, step_of, write_gallery
from tensorpng.cli import main

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None, reason="chromium is not installed (apt-get install chromium)"
)
COLORS = {"red": (255, 0, 0), "green": (0, 200, 0), "blue": (0, 0, 255)}


def solid(color: tuple[int, int, int], size: int = 24) -> np.ndarray:
    return np.broadcast_to(np.array(color, np.uint8), (size, size, 3)).copy()


def make_runs(root: Path) -> None:
    """Two runs with three steps each (solid colours, one per step) and an animation."""
    for run in ("runA", "runB"):
        for step, color in zip((100, 200, 300), COLORS.values(), strict=True):
            tensorpng.save(np.stack([solid(color)] * 2), root / run / f"step{step:06d}" / "{index:02d}.png")
        clip = np.stack([solid(c) for c in COLORS.values()])
        tensorpng.save_animation(clip, root / run / "movie_step=300.png", fps=4)
    tensorpng.save(np.random.default_rng(0).random((16, 16)), root / "loose.png", cmap="viridis")


def chromium(url: str, *switches: str, budget_ms: int = 5000, height: int = 900) -> tuple[str, str]:
    """Chromium's ``--dump-dom`` (or another output switch) of ``url``, and its log."""
    assert CHROMIUM is not None
    with tempfile.TemporaryDirectory() as profile:
        result = subprocess.run(
            [
                CHROMIUM,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
                f"--user-data-dir={profile}",
                "--enable-logging=stderr",
                "--v=0",
                f"--window-size=1280,{height}",
                "--hide-scrollbars",
                f"--virtual-time-budget={budget_ms}",
                *(switches or ("--dump-dom",)),
                url,
            ],
            capture_output=True,
            text=True,
            timeout=180,
        )
    return result.stdout, result.stderr


def console_messages(log: str) -> list[str]:
    return [line for line in log.splitlines() if ":CONSOLE" in line]


def body_attributes(dom: str) -> dict[str, str]:
    body = re.search(r"<body([^>]*)>", dom)
    assert body is not None, dom[:500]
    return dict(re.findall(r'([\w-]+)="([^"]*)"', body.group(1)))


def test_step_from_names_and_record() -> None:
    assert step_of("run/step000100/00.png", None) == 100
    assert step_of("samples_step=42.png", None) == 42
    assert step_of("epoch_3/img.png", None) == 3
    assert step_of("a/step10/b_step20.png", None) == 20  # the innermost field wins
    assert step_of("steps/x.png", None) is None
    assert step_of("x.png", {"step": 7}) == 7


def test_header_is_read_without_the_pixels(tmp_path: Path) -> None:
    path = tensorpng.save_animation(np.zeros((3, 5, 7, 4), np.uint8), tmp_path / "a.png", bits=16)
    data = bytearray(path.read_bytes())
    start = data.index(b"IDAT") + 4
    data[start:] = b"\xff" * (len(data) - start)  # no decoder could read the image data now
    path.write_bytes(bytes(data))
    header = read_header(path)
    assert header is not None
    assert (header.width, header.height, header.bits, header.channels, header.frames) == (7, 5, 16, 4, 3)
    assert json.loads(header.texts["tensorpng"])["shape"] == [3, 5, 7, 4]
    (tmp_path / "not.png").write_bytes(b"nope")
    assert [e["path"] for e in build_index(tmp_path)] == ["a.png"]


def _with_chunks_after_ihdr(path: Path, chunks: list[bytes]) -> None:
    data = path.read_bytes()
    end = 8 + 25  # signature, IHDR
    path.write_bytes(data[:end] + b"".join(chunks) + data[end:])


def _ztxt(key: bytes, inflated: int) -> bytes:
    """A zTXt chunk of ``inflated`` zero bytes (about a thousandth of that in the file)."""
    from tensorpng._png_chunks import chunk

    return chunk(b"zTXt", key + b"\x00\x00" + zlib.compress(bytes(inflated), 9))


def test_text_bombs_are_not_inflated_for_the_index(tmp_path: Path) -> None:
    """64 zTXt chunks of other keys, each inflating to the 1 MiB per-chunk limit, were all
    inflated and kept (64 MiB for a 70 KB file); only tensorpng's record is read now."""
    (path,) = tensorpng.save(np.zeros((5, 7, 3), np.uint8), tmp_path / "a.png")
    _with_chunks_after_ihdr(path, [_ztxt(f"bomb{i}".encode(), 1 << 20) for i in range(64)])
    assert path.stat().st_size < 100_000
    tracemalloc.start()
    try:
        header = read_header(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 8 << 20, f"{peak:,} bytes to read the header of a {path.stat().st_size:,}-byte file"
    assert header is not None and list(header.texts) == ["tensorpng"]
    assert json.loads(header.texts["tensorpng"])["shape"] == [5, 7, 3]
    (entry,) = build_index(tmp_path)
    assert entry["shape"] == [5, 7, 3] and entry["mapping"] == "copy"  # the caption is still read


def test_many_record_chunks_cost_a_bounded_number_of_inflates(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A later record chunk replaces an earlier one, so 300 of them were each inflated (300 MiB
    of work for a 300 KB file); the record's text is now capped in all, and refused past it."""
    (path,) = tensorpng.save(np.zeros((5, 7), np.uint8), tmp_path / "a.png")
    _with_chunks_after_ihdr(path, [_ztxt(b"tensorpng", 1 << 20)] * 300)
    inflaters = 0
    real = zlib.decompressobj

    def counting(*args: object) -> object:
        nonlocal inflaters
        inflaters += 1
        return real(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(zlib, "decompressobj", counting)
    header = read_header(path)
    assert inflaters <= 8, f"{inflaters} record chunks inflated"
    assert header is not None and (header.width, header.height, header.channels) == (7, 5, 1)
    assert header.texts == {}  # the record was refused: the image has no caption, no error
    (entry,) = build_index(tmp_path)
    assert entry["width"] == 7 and "shape" not in entry


def test_a_named_pipe_among_the_images_is_skipped_not_waited_on(tmp_path: Path) -> None:
    """A FIFO named like a PNG blocked the gallery forever in open(); a link to one too."""
    root = tmp_path / "out"
    tensorpng.save(np.zeros((2, 4, 4, 3), np.uint8), root / "{index}.png")
    os.mkfifo(root / "stuck.png")
    (root / "link.png").symlink_to(root / "stuck.png")
    result = subprocess.run(
        [sys.executable, "-m", "tensorpng", "gallery", str(root)],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])},
        timeout=120,  # a hang fails the test here, instead of hanging the suite
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "2 images" in result.stdout
    assert "skipped 2 entries" in result.stderr and "stuck.png: a named pipe (FIFO)" in result.stderr
    assert "link.png: a symbolic link to a named pipe" in result.stderr
    names = [image["path"] for image in json.loads((root / "index.json").read_text())["images"]]
    assert names == ["0.png", "1.png"]


def test_the_page_must_not_be_a_folder(tmp_path: Path) -> None:
    root = tmp_path / "out"
    tensorpng.save(np.zeros((4, 4), np.uint8), root / "a.png")
    (tmp_path / "site").mkdir()
    with pytest.raises(tensorpng.PathError, match=r"site is a folder; name the page"):
        write_gallery(root, tmp_path / "site")
    assert list((tmp_path / "site").iterdir()) == [] and sorted(p.name for p in root.iterdir()) == ["a.png"]


def test_cli_writes_the_page_and_the_index(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    make_runs(tmp_path / "out")
    (tmp_path / "out" / ".hidden.png.123.tmp").write_bytes(b"")  # a temporary file: skipped
    assert main(["gallery", str(tmp_path / "out")]) == 0
    assert "15 images" in capsys.readouterr().out
    index = json.loads((tmp_path / "out" / "index.json").read_text())
    paths = [image["path"] for image in index["images"]]
    assert len(paths) == 15 and "runA/step000100/00.png" in paths and index["base"] == ""
    page = (tmp_path / "out" / "index.html").read_text()
    inline = re.search(r'<script type="application/json" id="tensorpng-index">(.*?)</script>', page, re.S)
    assert inline is not None and json.loads(inline.group(1).replace("<\\/", "</")) == index
    movie = next(image for image in index["images"] if image["name"] == "movie_step=300.png")
    assert movie["frames"] == 3 and movie["step"] == 300 and movie["shape"] == [3, 24, 24, 3]
    still = next(image for image in index["images"] if image["path"] == "runB/step000200/01.png")
    assert still["step"] == 200 and still["shape"] == [24, 24, 3] and still["mapping"] == "copy"
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", page)  # nothing from the network
    main(["gallery", str(tmp_path / "out"), "-o", str(tmp_path / "site" / "view.html")])
    assert json.loads((tmp_path / "site" / "index.json").read_text())["base"] == "../out/"


@needs_chromium
def test_page_in_headless_chromium(tmp_path: Path) -> None:
    root = tmp_path / "out"
    make_runs(root)
    page = write_gallery(root)
    dom, log = chromium(page.as_uri() + "#eager=1")
    attributes = body_attributes(dom)
    assert attributes["data-status"] == "complete", attributes
    assert attributes["data-shown"] == attributes["data-loaded"] == "15" and attributes["data-failed"] == "0"
    assert "data-errors" not in attributes
    assert console_messages(log) == []
    shown = set(re.findall(r'<img[^>]*data-path="([^"]+)"', dom))
    assert shown == {image["path"] for image in build_index(root)}

    dom, log = chromium(page.as_uri() + "#eager=1&step=200")  # one step: both runs' images at it
    attributes = body_attributes(dom)
    assert attributes["data-shown"] == attributes["data-loaded"] == "4"
    assert set(re.findall(r'data-path="([^"]+)"', dom)) == {
        f"run{r}/step000200/0{i}.png" for r in "AB" for i in "01"
    }
    assert console_messages(log) == []

    shot = tmp_path / "shot.png"
    _, log = chromium(page.as_uri() + "#eager=1", f"--screenshot={shot}", height=1600)
    pixels = np.asarray(Image.open(shot).convert("RGB")).reshape(-1, 3)
    for name, color in COLORS.items():  # every step's colour fills tiles on screen
        assert (pixels == color).all(axis=1).sum() > 5000, name


@needs_chromium
def test_page_beside_another_folder(tmp_path: Path) -> None:
    make_runs(tmp_path / "out")
    page = write_gallery(tmp_path / "out", tmp_path / "site" / "view.html")
    dom, log = chromium(page.as_uri() + "#eager=1")
    attributes = body_attributes(dom)
    assert attributes["data-status"] == "complete" and attributes["data-loaded"] == "15"
    assert console_messages(log) == []


@needs_chromium
def test_ten_thousand_images(tmp_path: Path) -> None:
    root = tmp_path / "big"
    tiny = tensorpng.encode(np.arange(48, dtype=np.uint8).reshape(4, 4, 3))
    for folder in range(10):
        for step in range(1000):
            directory = root / f"run{folder}" / f"step{step:06d}"
            directory.mkdir(parents=True)
            (directory / "0.png").write_bytes(tiny)
    started = time.perf_counter()
    page = write_gallery(root)
    seconds = time.perf_counter() - started
    assert seconds < 30, f"indexing 10,000 images took {seconds:.1f} s"
    assert len(json.loads((root / "index.json").read_text())["images"]) == 10_000
    dom, log = chromium(page.as_uri(), budget_ms=10000)
    assert console_messages(log) == []
    assert len(re.findall(r"<img", dom)) == 120  # one page of images in the DOM, not 10,000
    assert "10000 of 10000 images" in dom and "page 1 / 84" in dom
    dom, _ = chromium(page.as_uri() + "#page=84", budget_ms=10000)
    paths = re.findall(r'data-path="([^"]+)"', dom)
    assert len(paths) == 40 and paths[-1] == "run9/step000999/0.png"
    dom, _ = chromium(page.as_uri() + "#eager=1&folder=run3%2Fstep000500", budget_ms=10000)
    attributes = body_attributes(dom)
    assert attributes["data-status"] == "complete" and attributes["data-loaded"] == "1"
    assert re.findall(r'data-path="([^"]+)"', dom) == ["run3/step000500/0.png"]


@needs_chromium
def test_names_from_data_are_paths_not_urls(tmp_path: Path) -> None:
    """A folder named like a URL scheme, and names with "#", "?" and "%": every link and image
    points at its own file (a script link would be an injection; "#" or "%" a broken image)."""
    root = tmp_path / "out"
    with tensorpng.Writer(root) as writer:
        for tag in ("javascript:alert(document.domain)", "50%off#1?x", "plain"):
            writer.save(solid((200, 30, 30)), "{tag}/img.png", tag=tag)
    names = sorted(image["path"] for image in build_index(root))
    assert any(name.startswith("javascript:") for name in names)
    page = write_gallery(root)
    dom, log = chromium(page.as_uri() + "#eager=1")
    attributes = body_attributes(dom)
    assert attributes["data-status"] == "complete", attributes
    assert attributes["data-loaded"] == "3" and attributes["data-failed"] == "0", attributes
    assert console_messages(log) == []
    hrefs = re.findall(r'<a href="([^"]+)"', dom)
    assert len(hrefs) == 3 and all(href.startswith("./") for href in hrefs), hrefs
    assert not any(href.lower().startswith("javascript:") for href in hrefs)
