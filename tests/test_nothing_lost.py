"""Nothing lost: every image is counted once, a worker error costs no later image, fork
does not hang, overwrite=False is exclusive on fsspec, idle memory is bounded, and stale
temporary files can be cleaned."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import tensorpng
from tensorpng.cli import main
from tensorpng.errors import TargetExistsError, TensorPNGError
from tensorpng.writer import MAX_IDLE_BUFFER_BYTES

REPO = Path(__file__).resolve().parents[1]
IMAGE = np.zeros((8, 8), np.uint8)


def test_every_image_is_counted_once_and_a_later_save_is_written(tmp_path: Path) -> None:
    (tmp_path / "taken.png").mkdir()  # the write of this name fails in a worker
    writer = tensorpng.Writer(tmp_path, workers=1)
    writer.save(IMAGE, "taken.png")
    while writer.stats.images_pending:  # the failure has happened; the next save must still land
        time.sleep(0.01)
    with pytest.raises(TensorPNGError):
        writer.save(IMAGE, "later.png")
    writer.close()
    stats = writer.stats
    assert (tmp_path / "later.png").is_file()
    assert stats.images_written == 1 and stats.images_failed == 1 and stats.images_dropped == 0
    assert stats.images_written + stats.images_dropped + stats.images_failed + stats.images_pending == 2


class _HeldSink:
    """A sink whose writes wait for ``release``: keeps the first image pending."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.names: list[str] = []

    def write(self, name: str, data: bytes, overwrite: bool) -> int:
        self.release.wait(30)
        self.names.append(name)
        return len(data)

    def check_absent(self, names: list[str]) -> None:
        pass


def test_refused_saves_count_nothing_dropped_ones_count_dropped(tmp_path: Path) -> None:
    sink = _HeldSink()
    writer = tensorpng.Writer(tmp_path, workers=1, max_pending=IMAGE.nbytes, on_full="error", sink=sink)
    writer.save(IMAGE, "a.png")
    with pytest.raises(tensorpng.QueueFullError):
        writer.save(IMAGE, "b.png")
    with pytest.raises(tensorpng.ShapeError):
        writer.save(np.zeros((2, 3, 4, 5, 6)), "c.png")
    sink.release.set()
    writer.close()
    assert sink.names == ["a.png"]
    stats = writer.stats
    assert (stats.images_written, stats.images_dropped, stats.images_failed, stats.images_pending) == (
        1,
        0,
        0,
        0,
    )

    sink = _HeldSink()
    writer = tensorpng.Writer(tmp_path, workers=1, max_pending=IMAGE.nbytes, on_full="drop", sink=sink)
    writer.save(IMAGE, "a.png")
    with pytest.warns(RuntimeWarning, match="dropped"):
        writer.save(IMAGE, "b.png")
    sink.release.set()
    writer.close()
    stats = writer.stats
    assert sink.names == ["a.png"]
    assert (stats.images_written, stats.images_dropped, stats.images_failed, stats.images_pending) == (
        1,
        1,
        0,
        0,
    )


def _run_child(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_fork_with_queued_work_exits_and_inherited_writer_errors(tmp_path: Path) -> None:
    result = _run_child(
        f"""
        import os, sys, numpy as np, tensorpng
        from tensorpng.errors import ForkedWriterError
        writer = tensorpng.Writer({str(tmp_path)!r}, workers=1)
        for i in range(50):
            writer.save(np.zeros((256, 256), np.uint8), f"parent_{{i}}.png")
        pid = os.fork()
        if pid == 0:
            try:
                writer.save(np.zeros((4, 4), np.uint8), "child.png")
            except ForkedWriterError as error:
                print("child error:", error, flush=True)
            writer.close()  # must not hang
            sys.exit(0)  # the atexit flush must not hang either
        _, status = os.waitpid(pid, 0)
        print("child status", os.waitstatus_to_exitcode(status), flush=True)
        writer.close()
        print("parent written", writer.stats.images_written, flush=True)
        """
    )
    assert result.returncode == 0, result.stderr
    assert "child error: this tensorpng.Writer" in result.stdout
    assert "child status 0" in result.stdout
    assert "parent written 50" in result.stdout
    assert not (tmp_path / "child.png").exists()


def test_fsspec_overwrite_false_is_exclusive() -> None:
    import fsspec  # installed with the tests (the s3 extra)

    root = f"memory://exclusive-{os.getpid()}-{time.monotonic_ns()}"
    names = [f"{i}.png" for i in range(300)]
    outcomes: list[list[str]] = [[], []]

    def run(slot: int) -> None:
        writer = tensorpng.Writer(root, workers=4, overwrite=False)
        for i, name in enumerate(names):
            try:
                writer.save(np.full((4, 4), slot * 100 + i % 100, np.uint8), name)
            except TargetExistsError:
                outcomes[slot].append(name)
        with contextlib.suppress(TargetExistsError):
            writer.close()
        outcomes[slot].append(f"stats:{writer.stats.images_written}:{writer.stats.images_failed}")

    threads = [threading.Thread(target=run, args=(slot,)) for slot in (0, 1)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    fs = fsspec.filesystem("memory")
    stored = fs.ls(root.removeprefix("memory://"), detail=False)
    assert len(stored) == 300
    written = [int(o[-1].split(":")[1]) for o in outcomes]
    # every name written exactly once: the two writers' successful writes add up to 300
    assert sum(written) == 300, outcomes


def test_idle_buffers_are_bounded_and_freed_at_close(tmp_path: Path) -> None:
    writer = tensorpng.Writer(tmp_path, workers=2)
    peak = 0
    for i in range(120):
        side = 200 + i
        writer.save(np.zeros((side, side + 1, 3), np.uint8), f"{i}.png")
        peak = max(peak, writer.idle_buffer_bytes)
    writer.flush()
    peak = max(peak, writer.idle_buffer_bytes)
    assert peak <= MAX_IDLE_BUFFER_BYTES
    writer.close()
    assert writer.idle_buffer_bytes == 0


def test_clean_removes_only_our_stale_temporaries(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ours = [
        tmp_path / ".a.png.tpng-1a2b3c4d5e-0.tmp",  # write_atomic, APNG, pack-npz, fsspec
        tmp_path / "sub" / ".b.png.tpng-1a2b3c4d5e6f-12.tmp",
    ]
    others = [
        tmp_path / "keep.tmp",
        tmp_path / ".keep.tmp",
        tmp_path / ".x.png.tpng-nothex-0.tmp",
        tmp_path / "a.png",
        tmp_path / ".a.png.tpng-1a2b-0.tmp",  # tag too short
        tmp_path / ".a.png.1a2b3c4d5e.0.tmp",  # another tool's names (no tpng marker)
        tmp_path / ".x.1a2b3c4d5e6f7a.tmp",
    ]
    (tmp_path / "sub").mkdir()
    old = time.time() - 7200
    for path in ours + others:
        path.write_bytes(b"x")
        os.utime(path, (old, old))
    fresh = tmp_path / ".c.png.tpng-1a2b3c4d5e-3.tmp"  # a write in progress
    fresh.write_bytes(b"x")
    assert main(["clean", str(tmp_path)]) == 0
    assert all(not p.exists() for p in ours)
    assert all(p.exists() for p in [*others, fresh])
    assert sorted(capsys.readouterr().out.split()) == sorted(map(str, ours))
    assert main(["clean", str(tmp_path), "--older-than", "0"]) == 0
    assert not fresh.exists()


def test_clean_matches_the_temporary_names_we_write(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tensorpng import _clean, sinks

    seen: list[str] = []
    real_open = os.open

    def spy(path: str, *args: object, **kwargs: object) -> int:
        seen.append(os.path.basename(os.fspath(path)))
        return real_open(path, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(sinks.os, "open", spy)
    sinks.write_atomic(tmp_path / ("ü" * 90 + ".png"), b"x")
    sinks.write_atomic(tmp_path / "short.png", b"x")
    temporaries = [name for name in seen if name.endswith(".tmp")]
    assert len(temporaries) == 2
    assert all(_clean.TEMP_NAME.match(name) for name in temporaries)


def test_clean_never_removes_a_live_animations_file(tmp_path: Path) -> None:
    """One frame an epoch: the temporary file may be hours old while its animation lives.
    Its lock keeps `clean` off it; once its process dies, the lock goes and `clean` may act."""
    with tensorpng.Writer(tmp_path) as writer:
        for step in range(3):
            writer.add_frame(np.full((8, 8), step * 40, np.uint8), "epochs.png")
        writer.flush()
        [temp] = [p for p in tmp_path.iterdir() if p.name.startswith(".epochs.png.tpng-")]
        old = time.time() - 7200
        os.utime(temp, (old, old))
        assert main(["clean", str(tmp_path), "--older-than", "0"]) == 0
        assert temp.exists()  # locked: left alone, whatever its age
        writer.add_frame(np.full((8, 8), 200, np.uint8), "epochs.png")
    with Image.open(tmp_path / "epochs.png") as image:
        assert image.n_frames == 4
    # A process killed mid-animation: its lock dies with it, and clean removes the file.
    code = (
        "import os, numpy as np, tensorpng\n"
        f"w = tensorpng.Writer({str(tmp_path / 'killed')!r})\n"
        "w.add_frame(np.zeros((8, 8), np.uint8), 'a.png'); w.flush()\n"
        "os._exit(0)\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
    [orphan] = list((tmp_path / "killed").iterdir())
    assert main(["clean", str(tmp_path / "killed"), "--older-than", "0"]) == 0
    assert not orphan.exists()


class ForgetfulSink:
    """A custom sink that writes but forgets to return the byte count (or returns a bad one)."""

    def __init__(self, returns: object = None) -> None:
        self.names: list[str] = []
        self.returns = returns

    def write(self, name: str, data: bytes, overwrite: bool) -> None:
        self.names.append(name)
        return self.returns  # type: ignore[return-value]

    def check_absent(self, names: list[str]) -> None:
        pass


@pytest.mark.timeout(60)  # it hung forever: the worker's bookkeeping raised TypeError
@pytest.mark.parametrize("returns", [None, -1, "12", True])
def test_a_sink_returning_no_byte_count_fails_the_image_and_never_hangs(returns: object) -> None:
    sink = ForgetfulSink(returns)
    writer = tensorpng.Writer("unused", sink=sink)  # type: ignore[arg-type]
    writer.save(np.zeros((2, 4, 4), np.uint8), "{index}.png", layout="NHW")
    with pytest.raises(tensorpng.WriteError, match=f"ForgetfulSink.write returned {returns!r}"):
        writer.close()
    stats = writer.stats
    assert (stats.images_written, stats.images_failed, stats.images_pending) == (0, 2, 0)
    assert sorted(sink.names) == ["0.png", "1.png"]  # two workers: either order
