"""Animated PNGs: save_animation and the AnimationStream under it, read back by Pillow,
imagecodecs (16-bit frames, through a minimal APNG frame reader here) and pngcheck."""

from __future__ import annotations

import json
import shutil
import struct
import subprocess
import textwrap
import zlib
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageSequence

import tensorpng
from conftest import killed_after_ready
from tensorpng._apng import AnimationStream
from tensorpng.load import read_text
from tensorpng.sinks import TEMP_NAME


def moving_clip(
    count: int, height: int = 12, width: int = 16, channels: int = 3, seed: int = 0
) -> np.ndarray:
    """``T x H x W x C`` uint8 frames: a noisy background with a square that moves and
    changes, and now and then a frame that is all new or unchanged."""
    rng = np.random.default_rng(seed)
    frame = rng.integers(0, 256, (height, width, channels), dtype=np.uint8)
    frames = []
    for t in range(count):
        frame = frame.copy()
        if t % 7 == 3:
            frame = rng.integers(0, 256, frame.shape, dtype=np.uint8)
        elif t % 5 != 4:  # every fifth frame unchanged
            y, x = t % (height - 3), (2 * t) % (width - 4)
            frame[y : y + 3, x : x + 4] = rng.integers(0, 256, (3, 4, channels), dtype=np.uint8)
        frames.append(frame)
    return np.stack(frames)


def pillow_frames(path: Path) -> tuple[list[np.ndarray], Image.Image]:
    image = Image.open(path)
    mode = {1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}
    frames = []
    for frame in ImageSequence.Iterator(image):
        frames.append(np.asarray(frame.convert(mode[len(frame.getbands())] if frame.mode != "P" else "RGB")))
    return frames, image


def pngcheck(path: Path) -> None:
    if shutil.which("pngcheck") is None:
        pytest.fail("pngcheck is not installed (apt-get install pngcheck)")
    result = subprocess.run(["pngcheck", "-v", str(path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def read_apng(path: Path) -> tuple[list[np.ndarray], dict[str, object]]:
    """Every frame of an APNG as composited ``H x W [x C]`` samples, decoding each frame's
    rectangle with imagecodecs (a standalone PNG of its IHDR and data) and checking the
    chunk CRCs, the sequence numbers and acTL's frame count on the way."""
    import imagecodecs  # a test dependency: never skipped

    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    position, chunks = 8, []
    while position < len(data):
        (length,) = struct.unpack(">I", data[position : position + 4])
        kind, body = data[position + 4 : position + 8], data[position + 8 : position + 8 + length]
        (crc,) = struct.unpack(">I", data[position + 8 + length : position + 12 + length])
        assert zlib.crc32(kind + body) == crc, kind
        chunks.append((kind, body))
        position += 12 + length
    assert chunks[0][0] == b"IHDR" and chunks[-1][0] == b"IEND"
    width, height, depth, color = struct.unpack(">IIBB", chunks[0][1][:10])
    (frame_count, plays) = struct.unpack(">II", next(b for k, b in chunks if k == b"acTL"))
    sequence, controls, pieces = 0, [], []
    for kind, body in chunks:
        if kind in (b"fcTL", b"fdAT"):
            assert struct.unpack(">I", body[:4])[0] == sequence
            sequence += 1
        if kind == b"fcTL":
            controls.append(struct.unpack(">IIIIIHHBB", body))
            pieces.append(b"")
        elif kind in (b"IDAT", b"fdAT"):
            pieces[-1] += body if kind == b"IDAT" else body[4:]
    assert len(controls) == frame_count
    dtype = np.dtype(np.uint16 if depth == 16 else np.uint8)
    channels = {0: 1, 4: 2, 2: 3, 6: 4}[color]
    canvas = np.zeros((height, width, channels), dtype=dtype)
    frames, delays = [], []
    for control, piece in zip(controls, pieces, strict=True):
        _, w, h, x, y, num, den, dispose, blend = control
        assert dispose == 0
        header = struct.pack(">IIBBBBB", w, h, depth, color, 0, 0, 0)
        sub_png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", piece) + chunk(b"IEND", b"")
        rect = np.asarray(imagecodecs.png_decode(sub_png)).reshape(h, w, channels)
        target = canvas[y : y + h, x : x + w]
        if blend == 0:
            target[...] = rect
        else:  # OVER: this writer makes every pixel fully transparent or fully opaque
            alpha = rect[..., -1]
            assert np.isin(alpha, [0, np.iinfo(dtype).max]).all()
            target[alpha != 0] = rect[alpha != 0]
        frames.append(canvas.copy())
        delays.append(Fraction(num, den or 100))
    return frames, {"plays": plays, "delays": delays, "count": frame_count}


def chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


@pytest.mark.parametrize("count", [1, 2, 300])
def test_every_frame_decodes_exactly_with_pillow(tmp_path: Path, count: int) -> None:
    clip = moving_clip(count, height=8 if count == 300 else 12, width=10 if count == 300 else 16)
    path = tensorpng.save_animation(clip, tmp_path / "clip.png", fps=25, loop=2)
    assert path == tmp_path / "clip.png"
    frames, image = pillow_frames(path)
    assert image.n_frames == count and len(frames) == count
    assert image.info["loop"] == 2
    for index, frame in enumerate(frames):
        np.testing.assert_array_equal(frame, clip[index], err_msg=f"frame {index}")
    assert Image.open(path).info["duration"] == pytest.approx(40.0)
    pngcheck(path)
    ours, info = read_apng(path)
    np.testing.assert_array_equal(np.stack(ours), clip)
    assert info["delays"] == [Fraction(1, 25)] * count


def test_torch_layout_and_the_record(tmp_path: Path) -> None:
    import torch  # a test dependency: never skipped

    clip = torch.rand(6, 3, 10, 14)
    path = tensorpng.save_animation(
        clip, tmp_path / "t.png", fps=Fraction(30000, 1001), metadata={"run": "a"}
    )
    expected = tensorpng.to_array(clip, layout="NCHW")
    frames, image = pillow_frames(path)
    np.testing.assert_array_equal(np.stack(frames), expected)
    assert image.info["duration"] == pytest.approx(1001 / 30)
    texts = read_text(path.read_bytes())
    record = json.loads(texts["tensorpng"])
    assert texts["run"] == "a"
    assert record["shape"] == [6, 3, 10, 14] and record["frames"] == 6 and record["layout"] == "NCHW"
    assert record["min"] == pytest.approx(float(clip.min())) and record["max"] == pytest.approx(
        float(clip.max())
    )
    first = tensorpng.load(path, as_tensor=False)  # the default image: frame 0, as values
    np.testing.assert_allclose(first, clip[0].numpy(), atol=1 / 255 + 1e-6)


def test_scale_batch_maps_the_whole_clip(tmp_path: Path) -> None:
    clip = np.linspace(0, 10, 4 * 6 * 5, dtype=np.float32).reshape(4, 6, 5)  # T x H x W gray
    path = tensorpng.save_animation(clip, tmp_path / "g.png", scale="batch")
    frames, _ = pillow_frames(path)
    np.testing.assert_array_equal(np.stack(frames), tensorpng.to_array(clip, layout="NHW", scale="batch"))
    assert frames[0].min() == 0 and frames[-1].max() == 255


@pytest.mark.parametrize("channels", [1, 3, 4])
def test_16_bit_frames_read_back_exactly(tmp_path: Path, channels: int) -> None:
    rng = np.random.default_rng(channels)
    clip = moving_clip(9, channels=channels).astype(np.uint16) * 257
    clip[2, 1:4, 2:6] += rng.integers(0, 200, (3, 4, channels), dtype=np.uint16)  # not multiples of 257
    path = tensorpng.save_animation(clip if channels > 1 else clip[..., 0], tmp_path / "deep.png", bits=16)
    pngcheck(path)
    frames, info = read_apng(path)
    assert info["count"] == 9
    np.testing.assert_array_equal(np.stack(frames), clip)


def test_alpha_frames_use_over_and_stay_exact(tmp_path: Path) -> None:
    clip = moving_clip(12, height=24, width=24, channels=4)
    clip[..., 3] = 255
    clip[5, :4, :4, 3] = 0  # a transparent corner, then opaque again
    path = tensorpng.save_animation(clip, tmp_path / "rgba.png")
    frames, _ = pillow_frames(path)
    np.testing.assert_array_equal(np.stack(frames), clip)
    ours, _ = read_apng(path)
    np.testing.assert_array_equal(np.stack(ours), clip)
    blends = [struct.unpack(">IIIIIHHBB", body)[-1] for body in _chunks_of(path, b"fcTL")]
    assert 1 in blends  # OVER was smaller for some frame: the test covers it
    pngcheck(path)


def _chunks_of(path: Path, kind: bytes) -> list[bytes]:
    data, position, found = path.read_bytes(), 8, []
    while position < len(data):
        (length,) = struct.unpack(">I", data[position : position + 4])
        if data[position + 4 : position + 8] == kind:
            found.append(data[position + 8 : position + 8 + length])
        position += 12 + length
    return found


def test_bad_inputs_raise_before_any_file(tmp_path: Path) -> None:
    target = tmp_path / "x.png"
    with pytest.raises(
        tensorpng.ShapeError, match=r"frame 1 has shape \(4, 5, 3\) but frame 0 has \(4, 4, 3\)"
    ):
        tensorpng.save_animation([np.zeros((4, 4, 3)), np.zeros((4, 5, 3))], target)
    with pytest.raises(tensorpng.OptionError, match="fps"):
        tensorpng.save_animation(np.zeros((2, 4, 4, 3)), target, fps=0)
    with pytest.raises(tensorpng.OptionError, match="loop"):
        tensorpng.save_animation(np.zeros((2, 4, 4, 3)), target, loop=-1)
    with pytest.raises(tensorpng.ShapeError, match="T frames"):
        tensorpng.save_animation(np.zeros((4, 4)), target)
    target.write_bytes(b"old")
    with pytest.raises(tensorpng.TargetExistsError):
        tensorpng.save_animation(np.zeros((2, 4, 4, 3)), target, overwrite=False)
    assert target.read_bytes() == b"old" and sorted(p.name for p in tmp_path.iterdir()) == ["x.png"]


@pytest.mark.parametrize(
    ("name", "match"),
    [
        ("x.gif", "has .gif; end it with .png"),
        ("x", "no suffix"),
        ("x{index}.png", "braces"),
        ("folder", "is a folder"),
    ],
)
def test_names_follow_the_rule_of_save(tmp_path: Path, name: str, match: str) -> None:
    (tmp_path / "folder").mkdir()
    with pytest.raises(tensorpng.PathError, match=match):
        tensorpng.save_animation(np.zeros((2, 4, 4, 3)), tmp_path / name)
    assert [p.name for p in tmp_path.iterdir()] == ["folder"] and not any((tmp_path / "folder").iterdir())


@pytest.mark.parametrize("fps", [65536, 1e6, float("nan"), float("inf"), 0, -1, "10", True])
def test_fps_an_apng_cannot_store_is_refused(tmp_path: Path, fps: object) -> None:
    with pytest.raises(tensorpng.OptionError, match="fps"):
        tensorpng.save_animation(np.zeros((2, 4, 4, 3)), tmp_path / "x.png", fps=fps)  # type: ignore[arg-type]
    assert not any(tmp_path.iterdir())


def test_numpy_numbers_for_fps_and_loop(tmp_path: Path) -> None:
    path = tensorpng.save_animation(
        np.zeros((2, 4, 4, 3)), tmp_path / "x.png", fps=np.float32(4), loop=np.int64(2)
    )
    record = json.loads(read_text(path)["tensorpng"])
    assert (record["fps"], record["loop"]) == (4.0, 2)
    with Image.open(path) as image:
        assert image.info["duration"] == pytest.approx(250.0) and image.info["loop"] == 2


def test_stream_rejects_a_frame_of_another_size(tmp_path: Path) -> None:
    target = tmp_path / "s.png"
    with AnimationStream(target, fps=5) as stream:
        stream.add(np.zeros((6, 8, 3), np.uint8))
        with pytest.raises(tensorpng.ShapeError, match=r"frame 1 is 6 x 9 \(H x W\).* is 6 x 8"):
            stream.add(np.zeros((6, 9, 3), np.uint8))
        with pytest.raises(tensorpng.DTypeError, match="16-bit"):
            stream.add(np.zeros((6, 8, 3), np.uint16))
        assert not target.exists()  # nothing under the final name until the end
        stream.add(np.full((6, 8, 3), 7, np.uint8))
    frames, image = pillow_frames(target)
    assert image.n_frames == 2 and frames[1].min() == 7
    assert [p.name for p in tmp_path.iterdir()] == ["s.png"]


def test_stream_abort_and_exception_leave_nothing(tmp_path: Path) -> None:
    target = tmp_path / "a.png"
    stream = AnimationStream(target)
    stream.add(np.zeros((4, 4), np.uint8))
    stream.abort()
    with pytest.raises(RuntimeError), AnimationStream(target) as other:
        other.add(np.zeros((4, 4), np.uint8))
        raise RuntimeError("training crashed")
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(tensorpng.OptionError, match="at least one"):
        AnimationStream(target).finish()


KILLED_WRITER = textwrap.dedent(
    """
    import sys, time
    import numpy as np
    from tensorpng._apng import AnimationStream
    stream = AnimationStream(sys.argv[1], fps=10)
    for step in range(5):
        stream.add(np.full((16, 16, 3), step, np.uint8))
    print("ready", flush=True)
    time.sleep(60)
    """
)


def test_a_killed_process_leaves_no_file_under_the_final_name(tmp_path: Path) -> None:
    target = tmp_path / "killed.png"
    with killed_after_ready(KILLED_WRITER, str(target)):
        temps = [p for p in tmp_path.iterdir() if p.name != "killed.png"]
        assert len(temps) == 1 and temps[0].stat().st_size > 0  # frames were streamed to disk
    assert not target.exists()
    assert all(p.name.startswith(".killed.png.") and TEMP_NAME.match(p.name) for p in tmp_path.iterdir())


def test_long_non_ascii_name(tmp_path: Path) -> None:
    target = tmp_path / ("ü" * 120 + ".png")  # 244 bytes: a temporary name cut by characters is too long
    frames = np.zeros((2, 4, 5, 3), np.uint8)
    frames[1] = 200
    tensorpng.save_animation(frames, target)
    with Image.open(target) as image:
        assert image.n_frames == 2
