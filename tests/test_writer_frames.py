"""Writer.add_frame: animations streamed frame by frame on the workers, finished at close.

Read back with Pillow (8-bit), a minimal APNG reader over imagecodecs (16-bit, from
test_animation) and pngcheck."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from test_animation import pillow_frames, read_apng

import tensorpng
from conftest import killed_after_ready, pngcheck
from tensorpng import Writer
from tensorpng._clean import TEMP_NAME
from tensorpng.load import read_text

REPO = Path(__file__).resolve().parents[1]


def step_frame(step: int, size: int = 64) -> np.ndarray:
    """A ``3 x size x size`` float32 frame: a fixed gradient with a noisy square that moves."""
    rng = np.random.default_rng(step)
    frame = np.broadcast_to(np.linspace(0, 1, size, dtype=np.float32), (3, size, size)).copy()
    y, x = (3 * step) % (size - 10), (5 * step) % (size - 12)
    frame[:, y : y + 10, x : x + 12] = rng.random((3, 10, 12), dtype=np.float32)
    return frame


def files_in(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


def test_many_steps_stream_with_bounded_memory_and_decode_exactly(tmp_path: Path) -> None:
    steps, frame_bytes = 120, step_frame(0).nbytes
    tracemalloc.start()
    try:
        with Writer(tmp_path, workers=2, max_pending=3 * frame_bytes) as writer:
            for step in range(steps):
                writer.add_frame(step_frame(step), "samples.png", fps=4)
            writer.flush()  # every frame is queued and appended, and the file is not finished
            assert files_in(tmp_path) != ["samples.png"] and not (tmp_path / "samples.png").exists()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # The clip is 120 frames of 48 KiB; the writer holds a bounded number whatever the step
    # count: 3 queued (max_pending), as many idle capture buffers, the previous frame, each
    # worker's conversion and filtering (12 to 21 frames' worth seen, on idle and busy machines).
    assert peak < 32 * frame_bytes < steps * frame_bytes / 3, (peak, steps * frame_bytes)
    assert files_in(tmp_path) == ["samples.png"]  # the temporary file was renamed
    path = tmp_path / "samples.png"
    frames, image = pillow_frames(path)
    assert image.n_frames == steps and image.info["duration"] == pytest.approx(250.0)
    for step, frame in enumerate(frames):
        np.testing.assert_array_equal(frame, tensorpng.to_array(step_frame(step)), err_msg=f"frame {step}")
    pngcheck(path)
    stats = writer.stats
    assert (stats.images_written, stats.images_failed, stats.images_pending, stats.errors) == (steps, 0, 0, 0)
    record = json.loads(read_text(path.read_bytes())["tensorpng"])  # the first frame's record
    assert (record["shape"], record["layout"], record["fps"], record["loop"]) == ([3, 64, 64], "CHW", 4.0, 0)
    np.testing.assert_allclose(tensorpng.load(path, as_tensor=False), step_frame(0), atol=0.5 / 255 + 1e-6)


@pytest.mark.parametrize("workers", [1, 3])
def test_two_interleaved_animations_and_saves_in_one_writer(tmp_path: Path, workers: int) -> None:
    rgba = [np.random.default_rng(t).integers(0, 256, (20, 24, 4), dtype=np.uint8) for t in range(9)]
    for frame in rgba[1::2]:
        frame[:5] = rgba[0][:5]  # some frames change only part of the canvas
    with Writer(tmp_path, workers=workers) as writer:  # one worker: the turns never deadlock
        for step in range(9):
            writer.add_frame(
                step_frame(step, 32),
                "run/{tag}.png",
                fields={"tag": "gray-ish"},
                loop=3 if step == 0 else None,
            )
            writer.save(step_frame(step, 32), "stills/{step:02d}.png", step=step)
            writer.add_frame(torch.from_numpy(rgba[step]), "run/rgba.png", layout="HWC", fps=25)
    for name, expected in [
        ("run/gray-ish.png", [tensorpng.to_array(step_frame(t, 32)) for t in range(9)]),
        ("run/rgba.png", rgba),
    ]:
        frames, image = pillow_frames(tmp_path / name)
        assert image.n_frames == 9, name
        np.testing.assert_array_equal(np.stack(frames), np.stack(expected), err_msg=name)
        pngcheck(tmp_path / name)
    with Image.open(tmp_path / "run/gray-ish.png") as image:
        assert image.info["loop"] == 3
    assert len(list((tmp_path / "stills").iterdir())) == 9
    assert files_in(tmp_path) == sorted(
        ["run/gray-ish.png", "run/rgba.png", *[f"stills/{t:02d}.png" for t in range(9)]]
    )
    stats = writer.stats
    assert (stats.images_written, stats.images_failed, stats.images_pending) == (27, 0, 0)


def test_sixteen_bit_frames_and_device_conversion_read_back_exactly(tmp_path: Path) -> None:
    clip = [torch.rand(3, 12, 16, dtype=torch.float64) for _ in range(6)]
    clip[3] = clip[2].clone()  # an unchanged frame
    with Writer(tmp_path, bits=16) as writer:
        for frame in clip:
            writer.add_frame(frame, "deep.png")  # converted through NumPy
            writer.add_frame(frame, "deep_torch.png", encoder="device")  # converted by torch, pinned path
    expected = np.stack([tensorpng.to_array(frame, bits=16) for frame in clip])
    assert expected.dtype == np.uint16
    for name in ("deep.png", "deep_torch.png"):
        pngcheck(tmp_path / name)
        frames, info = read_apng(tmp_path / name)
        assert info["count"] == 6
        np.testing.assert_array_equal(np.stack(frames), expected, err_msg=name)


def test_bad_frames_raise_before_anything_is_queued(tmp_path: Path) -> None:
    with Writer(tmp_path) as writer:
        writer.add_frame(np.zeros((3, 8, 10), np.float32), "a.png", fps=5)
        writer.flush()  # the first frame written: the counters stand still from here
        before = writer.stats
        with pytest.raises(
            tensorpng.ShapeError, match=r"8 x 11 \(H x W\).*'a.png' has frames of 8 x 10 \(H x W\)"
        ):
            writer.add_frame(np.zeros((3, 8, 11), np.float32), "a.png")
        with pytest.raises(tensorpng.ShapeError, match=r"1 channel\(s\).* 3 channel\(s\)"):
            writer.add_frame(np.zeros((8, 10), np.float32), "a.png")
        with pytest.raises(tensorpng.DTypeError, match="16-bit frame.* 8-bit"):
            writer.add_frame(np.zeros((3, 8, 10), np.float32), "a.png", bits=16)
        with pytest.raises(tensorpng.OptionError, match="fps=5"):
            writer.add_frame(np.zeros((3, 8, 10), np.float32), "a.png", fps=6)
        with pytest.raises(tensorpng.OptionError, match="loop=0"):
            writer.add_frame(np.zeros((3, 8, 10), np.float32), "a.png", loop=1)
        with pytest.raises(tensorpng.OptionError, match="compression='fast'"):
            writer.add_frame(np.zeros((3, 8, 10), np.float32), "a.png", compression="small")
        with pytest.raises(tensorpng.OptionError, match="metadata=None"):
            writer.add_frame(np.zeros((3, 8, 10), np.float32), "a.png", metadata={"k": "v"})
        with pytest.raises(tensorpng.OptionError, match="record=True"):
            writer.add_frame(np.zeros((3, 8, 10), np.float32), "a.png", metadata=False)
        with pytest.raises(tensorpng.OptionError, match="overwrite=True"):
            writer.add_frame(np.zeros((3, 8, 10), np.float32), "a.png", overwrite=False)
        with pytest.raises(tensorpng.ShapeError, match="grid=True"):
            writer.add_frame(np.zeros((2, 3, 8, 10), np.float32), "b.png")
        with pytest.raises(tensorpng.OptionError, match="palette"):
            writer.add_frame(np.zeros((8, 10), np.uint8), "c.png", palette=True)
        with pytest.raises(tensorpng.OptionError, match="fps"):
            writer.add_frame(np.zeros((3, 8, 10), np.float32), "d.png", fps=0)
        assert writer.stats == before  # nothing queued, nothing counted
        writer.add_frame(np.full((3, 8, 10), 0.5, np.float32), "a.png", fps=5.0)  # the same fps
        writer.add_frame(np.zeros((5, 3, 4, 6), np.float32), "grid.png", grid=True, nrow=5, padding=1)
        writer.add_frame(np.ones((5, 3, 4, 6), np.float32), "grid.png", grid=True, nrow=5, padding=1)
    assert files_in(tmp_path) == ["a.png", "grid.png"]
    with Image.open(tmp_path / "a.png") as image:
        assert image.n_frames == 2
    frames, grid = pillow_frames(tmp_path / "grid.png")
    assert grid.n_frames == 2 and grid.size == (5 * 7 + 1, 4 + 2)  # 5 tiles of 4 x 6, padding 1
    assert frames[0].max() == 0 and frames[1][1:5, 1:7].min() == 255 and frames[1][0].max() == 0


def test_overwrite_false_is_checked_at_the_first_frame_and_at_close(tmp_path: Path) -> None:
    (tmp_path / "taken.png").write_bytes(b"mine")
    writer = Writer(tmp_path, overwrite=False)
    with pytest.raises(tensorpng.TargetExistsError, match="taken.png"):
        writer.add_frame(np.zeros((4, 4), np.uint8), "taken.png")
    writer.add_frame(np.zeros((4, 4), np.uint8), "late.png")
    writer.add_frame(np.zeros((4, 4), np.uint8), "free.png")
    writer.flush()
    (tmp_path / "late.png").write_bytes(b"theirs")  # made by someone else before close
    with pytest.raises(tensorpng.TargetExistsError, match="late.png"):
        writer.close()
    assert (tmp_path / "taken.png").read_bytes() == b"mine" and (
        tmp_path / "late.png"
    ).read_bytes() == b"theirs"
    assert files_in(tmp_path) == ["free.png", "late.png", "taken.png"]  # no temporary file left
    with Image.open(tmp_path / "free.png") as image:
        assert image.n_frames == 1
    assert (writer.stats.images_written, writer.stats.images_failed) == (1, 1)


def test_symlinks_and_non_local_roots_are_refused_at_the_first_frame(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (tmp_path / "root").mkdir()
    (tmp_path / "root" / "link").symlink_to(outside)
    with Writer(tmp_path / "root") as writer, pytest.raises(tensorpng.PathError, match="symbolic link"):
        writer.add_frame(np.zeros((4, 4), np.uint8), "link/anim.png")
    assert list(outside.iterdir()) == []
    with (
        Writer("memory://tensorpng-frames") as remote,
        pytest.raises(tensorpng.OptionError, match="local folder"),
    ):
        remote.add_frame(np.zeros((4, 4), np.uint8), "x.png")


def test_an_exception_in_the_with_block_still_finishes_the_animation(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="training crashed"), Writer(tmp_path) as writer:
        for step in range(3):
            writer.add_frame(step_frame(step, 16), "crash.png")
        raise RuntimeError("training crashed")
    frames, image = pillow_frames(tmp_path / "crash.png")
    assert image.n_frames == 3
    np.testing.assert_array_equal(frames[2], tensorpng.to_array(step_frame(2, 16)))
    assert files_in(tmp_path) == ["crash.png"]


def test_a_failing_animation_loses_nothing_else(tmp_path: Path) -> None:
    """Disk full for one animation (RLIMIT_FSIZE): it is dropped; the other one and the
    saves are written, and close raises the error."""
    script = f"""
        import resource, signal, numpy as np, tensorpng
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (20000, 20000))
        rng = np.random.default_rng(0)
        writer = tensorpng.Writer({str(tmp_path)!r}, workers=2)
        for step in range(6):
            calls = [
                lambda: writer.add_frame(np.full((8, 8), step, np.uint8), "small.png"),
                lambda: writer.add_frame(rng.integers(0, 256, (128, 128, 3), dtype=np.uint8), "noise.png"),
                lambda: writer.save(np.full((4, 4), step, np.uint8), "still{{step}}.png", step=step),
            ]
            for call in calls:  # each queues its own image, then raises an earlier error
                try:
                    call()
                except tensorpng.TensorPNGError as error:  # the WriteError, then "an earlier frame failed"
                    print("RAISED", error)
        try:
            writer.close()
        except tensorpng.TensorPNGError as error:
            print("CLOSE", error)
        print("STATS", writer.stats.images_written, writer.stats.images_failed)
    """
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)],
        cwd=REPO, capture_output=True, text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(REPO)},
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "noise.png" in result.stdout and "RLIMIT_FSIZE" in result.stdout  # at a call or close
    assert files_in(tmp_path) == ["small.png", *[f"still{step}.png" for step in range(6)]]
    frames, image = pillow_frames(tmp_path / "small.png")
    assert image.n_frames == 6 and [int(f.max()) for f in frames] == list(range(6))
    assert result.stdout.splitlines()[-1] == "STATS 12 6"


KILLED_WRITER = textwrap.dedent(
    """
    import sys, time
    import numpy as np
    import tensorpng
    writer = tensorpng.Writer(sys.argv[1])
    for step in range(5):
        writer.add_frame(np.full((16, 16, 3), step, np.uint8), "run/anim.png")
    writer.flush()  # the frames are in the temporary file
    print("ready", flush=True)
    while True:
        writer.add_frame(np.full((16, 16, 3), 7, np.uint8), "run/anim.png")
        time.sleep(0.01)
    """
)


def test_a_killed_process_leaves_no_file_under_the_final_name(tmp_path: Path) -> None:
    with killed_after_ready(KILLED_WRITER, str(tmp_path)):  # killed while it adds frames
        temps = list((tmp_path / "run").iterdir())
        assert len(temps) == 1 and temps[0].stat().st_size > 0  # frames were streamed to disk
    assert not (tmp_path / "run" / "anim.png").exists()
    [temp] = (tmp_path / "run").iterdir()
    assert TEMP_NAME.match(temp.name) and temp.name.startswith(".anim.png.")  # tensorpng clean's pattern
    cleaned = subprocess.run(
        [sys.executable, "-m", "tensorpng", "clean", "--older-than", "0", str(tmp_path)],
        capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)}, check=True,
    )  # fmt: skip
    assert cleaned.stdout.strip() == str(temp)
    assert list((tmp_path / "run").iterdir()) == []


def test_a_still_saved_to_an_open_animations_name_is_refused(tmp_path: Path) -> None:
    """close() would move the animation over it: say so at the save, not lose it silently."""
    with Writer(tmp_path) as writer:
        writer.add_frame(np.zeros((8, 8), np.uint8), "a.png")
        with pytest.raises(tensorpng.PathError, match="animation this Writer is streaming"):
            writer.save(np.ones((8, 8), np.uint8), "a.png")
        writer.save(np.ones((8, 8), np.uint8), "still.png")
    assert files_in(tmp_path) == ["a.png", "still.png"]
    with Image.open(tmp_path / "a.png") as image:
        assert image.n_frames == 1
