"""Writer: snapshot semantics, policies, errors, exit, crashes, disk full, names, DDP, fsspec."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import tensorpng
from conftest import SlowSink, decode_imagecodecs, decode_pypng, pngcheck
from tensorpng import Writer
from tensorpng._names import sanitize_field
from tensorpng.errors import PathError, QueueFullError, TensorPNGError, WriteError

REPO = Path(__file__).resolve().parents[1]


def read(path: Path) -> np.ndarray:
    return decode_imagecodecs(path.read_bytes())


def all_pngs(root: Path) -> list[Path]:
    return sorted(root.rglob("*.png"))


def test_batch_written_one_file_per_image_with_fields(tmp_path: Path, photo: np.ndarray) -> None:
    batch = np.stack([photo, photo[::-1], photo[:, ::-1]])
    with Writer(tmp_path) as writer:
        writer.save(batch, "step{step:03d}/{tag}_{index}_{rank}.png", step=7, tag="val")
    files = all_pngs(tmp_path)
    assert [p.relative_to(tmp_path).as_posix() for p in files] == [
        "step007/val_0_0.png",
        "step007/val_1_0.png",
        "step007/val_2_0.png",
    ]
    for path, expected in zip(files, batch, strict=True):
        assert np.array_equal(read(path), expected)
        assert np.array_equal(decode_pypng(path.read_bytes()), expected)
    pngcheck(*files)
    stats = writer.stats
    assert (stats.images_written, stats.images_pending, stats.errors) == (3, 0, 0)
    assert stats.bytes_written == sum(p.stat().st_size for p in files)


def test_default_options_apply_and_can_be_overridden(tmp_path: Path, photo: np.ndarray) -> None:
    mean, std = np.array(tensorpng.IMAGENET_MEAN), np.array(tensorpng.IMAGENET_STD)
    normalized = ((photo.astype(np.float32) / 255 - mean) / std).astype(np.float32).transpose(2, 0, 1)
    with Writer(tmp_path, mean=tensorpng.IMAGENET_MEAN, std=tensorpng.IMAGENET_STD, layout="CHW") as writer:
        writer.save(normalized, "a.png")
        writer.save(photo, "b.png", mean=None, std=None, layout="HWC")
    assert np.array_equal(read(tmp_path / "a.png"), photo)
    assert np.array_equal(read(tmp_path / "b.png"), photo)


def test_snapshot_semantics_cpu_tensor(tmp_path: Path) -> None:
    gate = threading.Event()
    tensor = torch.zeros(2, 3, 16, 16)
    with Writer(tmp_path, sink=SlowSink(tmp_path, gate=gate)) as writer:
        writer.save(tensor, "{index}.png")
        tensor.fill_(1.0)  # the caller reuses its tensor right away
        numpy_image = np.zeros((8, 8), np.uint8)
        writer.save(numpy_image, "np.png")
        numpy_image[...] = 200
        gate.set()
    assert read(tmp_path / "0.png").max() == 0
    assert read(tmp_path / "1.png").max() == 0
    assert read(tmp_path / "np.png").max() == 0


def test_bad_input_raises_in_caller_before_queueing(tmp_path: Path) -> None:
    with Writer(tmp_path) as writer:
        with pytest.raises(tensorpng.ShapeError, match=r"shape \(7, 9, 9, 9\)"):
            writer.save(np.zeros((7, 9, 9, 9), np.float32), "{index}.png")
        with pytest.raises(tensorpng.OptionError, match="bits"):
            writer.save(np.zeros((4, 4), np.float32), "x.png", bits=12)
        with pytest.raises(PathError, match=r"has \.jpg; end it with \.png"):
            writer.save(np.zeros((2, 4, 4), np.float32), "x.jpg", layout="NHW")
        with pytest.raises(PathError, match="unknown field"):
            writer.save(np.zeros((4, 4), np.float32), "{epoch}.png")
    assert writer.stats.images_pending == 0
    assert not any(tmp_path.iterdir())


def test_worker_error_is_raised_at_next_call(tmp_path: Path) -> None:
    (tmp_path / "taken.png").mkdir()  # a folder where the file should go: os.replace fails
    writer = Writer(tmp_path)
    writer.save(np.zeros((4, 4), np.uint8), "taken.png")
    with pytest.raises(WriteError, match="taken.png"):
        writer.flush()
    assert writer.stats.errors == 1
    writer.save(np.zeros((4, 4), np.uint8), "fine.png")  # the writer keeps working
    writer.close()
    assert read(tmp_path / "fine.png").shape == (4, 4)
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_worker_error_surfaces_in_save_and_close(tmp_path: Path) -> None:
    (tmp_path / "a.png").mkdir()
    writer = Writer(tmp_path)
    writer.save(np.zeros((4, 4), np.uint8), "a.png")
    while writer.stats.images_pending:
        time.sleep(0.01)
    with pytest.raises(WriteError):
        writer.save(np.zeros((4, 4), np.uint8), "b.png")  # raises a's error; b is still queued
    (tmp_path / "c.png").mkdir()
    writer.save(np.zeros((4, 4), np.uint8), "c.png")
    with pytest.raises(WriteError):
        writer.close()
    with pytest.raises(TensorPNGError, match="closed"):
        writer.save(np.zeros((4, 4), np.uint8), "d.png")
    assert (tmp_path / "b.png").is_file()  # an earlier failure costs no later image
    stats = writer.stats
    assert (stats.images_written, stats.images_failed, stats.images_dropped) == (1, 2, 0)


def test_on_full_block_waits_for_room(tmp_path: Path) -> None:
    image = np.zeros((32, 32), np.uint8)  # 1024 bytes captured per save
    writer = Writer(
        tmp_path, workers=1, max_pending=1024, on_full="block", sink=SlowSink(tmp_path, delay=0.2)
    )
    writer.save(image, "0.png")
    start = time.perf_counter()
    writer.save(image, "1.png")  # must wait until the first one is written
    waited = time.perf_counter() - start
    writer.close()
    assert waited >= 0.1
    assert writer.stats.images_written == 2 and writer.stats.images_dropped == 0


def full_writer(tmp_path: Path, on_full: str) -> tuple[Writer, threading.Event, np.ndarray]:
    """A writer whose queue is full: one 1024-byte image held in a sink until the gate opens."""
    gate = threading.Event()
    image = np.zeros((32, 32), np.uint8)
    writer = Writer(
        tmp_path, workers=1, max_pending=1024, on_full=on_full, sink=SlowSink(tmp_path, gate=gate)
    )  # type: ignore[arg-type]
    writer.save(image, "0.png")
    return writer, gate, image


def test_on_full_drop_counts_and_warns_once(tmp_path: Path) -> None:
    writer, gate, image = full_writer(tmp_path, "drop")
    with pytest.warns(RuntimeWarning, match="dropped"):
        writer.save(image, "1.png")
    writer.save(np.stack([image, image]), "x{index}.png", layout="NHW")  # dropped too, silently
    gate.set()
    writer.close()
    assert writer.stats.images_dropped == 3
    assert writer.stats.images_written == 1
    assert [p.name for p in all_pngs(tmp_path)] == ["0.png"]


def test_on_full_error_raises(tmp_path: Path) -> None:
    writer, gate, image = full_writer(tmp_path, "error")
    with pytest.raises(QueueFullError, match="max_pending=1024"):
        writer.save(image, "1.png")
    gate.set()
    writer.close()
    assert [p.name for p in all_pngs(tmp_path)] == ["0.png"]


def test_one_save_larger_than_max_pending_is_accepted_when_idle(tmp_path: Path) -> None:
    with Writer(tmp_path, max_pending=10, on_full="error") as writer:
        writer.save(np.zeros((64, 64), np.uint8), "big.png")
    assert read(tmp_path / "big.png").shape == (64, 64)


def test_memory_stays_bounded_in_a_long_loop(tmp_path: Path) -> None:
    image = np.zeros((3, 64, 64), np.float32)  # 49152 bytes a save
    peak = 0
    writer = Writer(tmp_path, workers=1, max_pending=4 * image.nbytes, sink=SlowSink(tmp_path, delay=0.005))
    for step in range(40):
        writer.save(image, "{step}.png", step=step)
        peak = max(peak, writer.stats.bytes_pending)
    writer.close()
    assert peak <= 4 * image.nbytes
    assert writer.stats.images_written == 40


@pytest.mark.parametrize(
    ("value", "expected"),
    [("a/b", "a_b"), ("..", "_"), ("x/../y", "x____y"), ("a\x00b", "a_b"), ("tab\there", "tab_here"), (7, 7)],
)
def test_sanitize_field(value: object, expected: object) -> None:
    assert sanitize_field(value) == expected


def test_names_cannot_escape_root(tmp_path: Path) -> None:
    root = tmp_path / "root"
    image = np.zeros((4, 4), np.uint8)
    with Writer(root) as writer:
        writer.save(image, "{tag}.png", tag="../../etc/passwd")
        for bad in ("../x.png", "a/../../x.png", "/abs.png", "sub/..", ""):
            with pytest.raises(PathError):
                writer.save(image, bad)
    assert [p.relative_to(tmp_path).as_posix() for p in all_pngs(tmp_path)] == ["root/______etc_passwd.png"]


def test_atexit_writes_everything_queued(tmp_path: Path) -> None:
    script = f"""
        import numpy as np, tensorpng
        writer = tensorpng.Writer({str(tmp_path)!r}, workers=1)
        for step in range(20):
            writer.save(np.full((2, 64, 64), step, np.uint8), "{{step}}_{{index}}.png", step=step, layout="NHW")
        # no close(): the interpreter exits normally
    """
    subprocess.run([sys.executable, "-c", textwrap.dedent(script)], check=True, cwd=REPO, timeout=120)
    files = all_pngs(tmp_path)
    assert len(files) == 40
    assert read(tmp_path / "19_1.png").max() == 19
    pngcheck(*files)


def test_keyboard_interrupt_in_with_block_still_flushes(tmp_path: Path) -> None:
    with (
        pytest.raises(KeyboardInterrupt),
        Writer(tmp_path, workers=1, sink=SlowSink(tmp_path, delay=0.01)) as writer,
    ):
        for step in range(10):
            writer.save(np.zeros((8, 8), np.uint8), "{step}.png", step=step)
        raise KeyboardInterrupt
    assert len(all_pngs(tmp_path)) == 10


def test_sigkill_leaves_only_complete_pngs(tmp_path: Path) -> None:
    script = f"""
        import sys, numpy as np, tensorpng
        rng = np.random.default_rng(0)
        images = rng.integers(0, 256, (4, 256, 256, 3), dtype=np.uint8)
        writer = tensorpng.Writer({str(tmp_path)!r})
        step = 0
        while True:
            writer.save(images, "{{step}}/{{index}}.png", step=step)
            if step == 3:
                print("ready", flush=True)
            step += 1
    """
    process = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(script)], cwd=REPO, stdout=subprocess.PIPE, text=True
    )
    assert process.stdout is not None
    assert process.stdout.readline().strip() == "ready"
    deadline = time.monotonic() + 60
    while len(all_pngs(tmp_path)) < 4 and time.monotonic() < deadline:  # a loaded machine is slow
        time.sleep(0.05)
    time.sleep(0.1)  # and kill it while it is writing more
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    files = all_pngs(tmp_path)
    assert len(files) >= 4
    pngcheck(*files)  # every .png under its final name is complete
    for path in files:
        assert read(path).shape == (256, 256, 3)


def test_disk_full_raises_clear_error_and_leaves_no_truncated_file(tmp_path: Path) -> None:
    script = f"""
        import resource, signal, sys, numpy as np, tensorpng
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        small = np.zeros((8, 8), np.uint8)
        noise = np.random.default_rng(0).integers(0, 256, (512, 512, 3), dtype=np.uint8)
        writer = tensorpng.Writer({str(tmp_path)!r})
        writer.save(small, "small.png")
        writer.flush()
        resource.setrlimit(resource.RLIMIT_FSIZE, (20000, 20000))
        writer.save(noise, "noise.png")
        try:
            writer.flush()
        except tensorpng.WriteError as error:
            print("ERROR", error)
            sys.exit(3)
        sys.exit(0)
    """
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 3, result.stdout + result.stderr
    assert "noise.png" in result.stdout and "RLIMIT_FSIZE" in result.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["small.png"]
    pngcheck(tmp_path / "small.png")


def test_rank_zero_only_and_rank_field_under_gloo(tmp_path: Path) -> None:
    script = f"""
        import os, sys, numpy as np, torch, torch.distributed as dist, tensorpng
        rank = int(sys.argv[1])
        dist.init_process_group("gloo", init_method="file://{tmp_path}/rendezvous", rank=rank, world_size=2)
        image = torch.full((1, 8, 8), float(rank))
        with tensorpng.Writer({str(tmp_path / "out")!r}) as writer:
            writer.save(image, "all/{{rank}}.png")
        with tensorpng.Writer({str(tmp_path / "out")!r}, rank_zero_only=True) as writer:
            writer.save(image, "zero/{{rank}}.png")
        dist.barrier()
        dist.destroy_process_group()
    """
    code = textwrap.dedent(script)
    processes = [subprocess.Popen([sys.executable, "-c", code, str(rank)], cwd=REPO) for rank in (0, 1)]
    assert [p.wait(timeout=120) for p in processes] == [0, 0]
    out = tmp_path / "out"
    assert [p.relative_to(out).as_posix() for p in all_pngs(out)] == ["all/0.png", "all/1.png", "zero/0.png"]
    assert read(out / "all/1.png").max() == 255 and read(out / "all/0.png").max() == 0


def test_fsspec_memory_root(photo: np.ndarray) -> None:
    import fsspec

    with Writer("memory://tensorpng-test/run") as writer:
        writer.save(np.stack([photo, photo]), "s/{index}.png")
    fs = fsspec.filesystem("memory")
    data = fs.cat_file("/tensorpng-test/run/s/1.png")
    assert np.array_equal(decode_imagecodecs(data), photo)
    assert not [p for p in fs.find("/tensorpng-test") if p.endswith(".tmp")]


@pytest.fixture
def s3_endpoint(monkeypatch: pytest.MonkeyPatch) -> str:
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    yield endpoint
    server.stop()


def test_s3_root_on_loopback(s3_endpoint: str, photo: np.ndarray) -> None:
    import boto3

    client = boto3.client("s3", endpoint_url=s3_endpoint)
    client.create_bucket(Bucket="runs")
    options = {"client_kwargs": {"endpoint_url": s3_endpoint}, "skip_instance_cache": True}
    with Writer("s3://runs/exp1", storage_options=options) as writer:
        writer.save(np.stack([photo, photo[::-1]]), "step{step}/{index}.png", step=3)
    keys = sorted(o["Key"] for o in client.list_objects_v2(Bucket="runs")["Contents"])
    assert keys == ["exp1/step3/0.png", "exp1/step3/1.png"]
    body = client.get_object(Bucket="runs", Key="exp1/step3/1.png")["Body"].read()
    assert np.array_equal(decode_imagecodecs(body), photo[::-1])

    # An upload that fails (the bucket does not exist) raises and leaves no object at all.
    with (
        pytest.raises(WriteError, match="missing-bucket"),
        Writer("s3://missing-bucket/x", storage_options=options) as writer,
    ):
        writer.save(photo, "a.png")
    assert "missing-bucket" not in [b["Name"] for b in client.list_buckets()["Buckets"]]


def test_s3_upload_interrupted_midway_leaves_no_object(s3_endpoint: str, photo: np.ndarray) -> None:
    import boto3
    import s3fs

    client = boto3.client("s3", endpoint_url=s3_endpoint)
    client.create_bucket(Bucket="interrupted")
    options = {"client_kwargs": {"endpoint_url": s3_endpoint}, "skip_instance_cache": True}
    original = s3fs.S3FileSystem._call_s3

    async def failing_call(self: object, method: str, *args: object, **kwargs: object) -> object:
        if method == "put_object":
            raise ConnectionResetError("connection lost during upload")
        return await original(self, method, *args, **kwargs)

    s3fs.S3FileSystem._call_s3 = failing_call  # type: ignore[method-assign]
    try:
        writer = Writer("s3://interrupted/exp", storage_options=options)
        writer.save(photo, "a.png")
        with pytest.raises(WriteError, match="connection lost"):
            writer.close()
    finally:
        s3fs.S3FileSystem._call_s3 = original  # type: ignore[method-assign]
    assert client.list_objects_v2(Bucket="interrupted").get("KeyCount", 0) == 0


def test_overwrite_false_refuses_existing(tmp_path: Path) -> None:
    (tmp_path / "a.png").write_bytes(b"old")
    with Writer(tmp_path, overwrite=False) as writer:
        with pytest.raises(tensorpng.TargetExistsError, match="a.png"):
            writer.save(np.zeros((4, 4), np.uint8), "a.png")
        writer.save(np.zeros((4, 4), np.uint8), "b.png")
    assert (tmp_path / "a.png").read_bytes() == b"old"


def test_writer_saves_grid(tmp_path: Path) -> None:
    batch = np.random.default_rng(1).random((5, 3, 8, 8), dtype=np.float32)
    with Writer(tmp_path, layout="NCHW") as writer:
        writer.save(batch, "grid_{step}.png", step=1, grid=True, nrow=3, padding=1)
    assert np.array_equal(
        read(tmp_path / "grid_1.png"), tensorpng.to_array(batch, layout="NCHW", grid=True, nrow=3, padding=1)
    )


def test_invalid_writer_arguments() -> None:
    with pytest.raises(tensorpng.OptionError, match="on_full"):
        Writer("x", on_full="wait")  # type: ignore[arg-type]
    with pytest.raises(tensorpng.OptionError, match="unknown option"):
        Writer("x", colour="red")
    with pytest.raises(tensorpng.OptionError, match="max_pending"):
        Writer("x", max_pending=0)
    with pytest.raises(tensorpng.OptionError, match="bits"):
        Writer("x", bits=3)


def test_worker_threads_yield_cpu_to_the_caller(tmp_path: Path) -> None:
    writer = Writer(tmp_path, workers=1)
    writer.save(np.zeros((4, 4), np.uint8), "a.png")
    writer.flush()
    (thread,) = [t for t in threading.enumerate() if t.name.startswith("tensorpng-writer")]
    assert thread.native_id is not None
    assert os.getpriority(os.PRIO_PROCESS, thread.native_id) > os.getpriority(os.PRIO_PROCESS, 0)
    writer.close()


def test_writer_keeps_palette_and_colormap_options(tmp_path: Path) -> None:
    labels = np.random.default_rng(0).integers(0, 4, (2, 8, 8)).astype(np.uint8)
    depth = np.linspace(0, 1, 64, dtype=np.float32).reshape(1, 8, 8)
    with Writer(tmp_path) as writer:
        writer.save(labels, "seg{index}.png", palette="voc", layout="NHW")
        writer.save(depth, "depth.png", cmap="magma")
    from PIL import Image

    with Image.open(tmp_path / "seg1.png") as image:
        assert image.mode == "P"
        assert np.array_equal(np.asarray(image), labels[1])
    assert np.array_equal(read(tmp_path / "depth.png"), tensorpng.to_array(depth, cmap="magma"))
    pngcheck(tmp_path / "seg0.png", tmp_path / "depth.png")


def test_one_worker_at_a_time_filters_while_all_deflate(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Converting and filtering (NumPy's short calls) is serialized across the workers; the
    deflate that follows runs on several at once."""
    import tensorpng._capture as writer_module

    lock = threading.Lock()
    running = {"filter": 0, "finish": 0}
    peak = {"filter": 0, "finish": 0}

    def counted(stage: str, function: Any) -> Any:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            with lock:
                running[stage] += 1
                peak[stage] = max(peak[stage], running[stage])
            try:
                time.sleep(0.01)
                return function(*args, **kwargs)
            finally:
                with lock:
                    running[stage] -= 1

        return wrapper

    monkeypatch.setattr(writer_module, "filtered_image", counted("filter", writer_module.filtered_image))
    # small images are converted and filtered a chunk at a time (see tensorpng._chunks)
    monkeypatch.setattr(writer_module, "filtered_chunk", counted("filter", writer_module.filtered_chunk))
    monkeypatch.setattr(writer_module, "finish_png", counted("finish", writer_module.finish_png))
    x = torch.rand(12, 3, 16, 16, generator=torch.Generator().manual_seed(3))
    with Writer(tmp_path, workers=3) as writer:
        writer.save(x, "{index:02d}.png")
    assert peak["filter"] == 1 and peak["finish"] >= 2, peak
    for index, path in enumerate(sorted(tmp_path.glob("*.png"))):
        np.testing.assert_array_equal(decode_imagecodecs(path.read_bytes()), tensorpng.to_array(x[index]))
