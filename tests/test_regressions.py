"""Regression tests for bugs found in review: each failed before its fix."""

from __future__ import annotations

import gc
import json
import multiprocessing
import os
import subprocess
import sys
import textwrap
import threading
import time
import weakref
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import tensorpng
from conftest import GatedSink, decode_imagecodecs, pngcheck
from tensorpng.cli import main
from tensorpng.loaders import LoadError, load_file
from tensorpng.png import encode_png

REPO = Path(__file__).resolve().parents[1]


def occupied_writer(root: Path, **options: Any) -> tuple[tensorpng.Writer, threading.Event]:
    """A one-worker Writer whose worker is busy until the returned event is set: a first
    1-byte save whose write waits in the sink."""
    sink = GatedSink(root)
    writer = tensorpng.Writer(root, workers=1, sink=sink, **options)
    writer.save(torch.zeros(1, 1, dtype=torch.uint8), "occupy.png")
    assert sink.entered.wait(30)
    return writer, sink.gate


def test_device_encoder_snapshots_integer_input(tmp_path: Path) -> None:
    x = torch.zeros(32, 32, dtype=torch.uint8)
    writer, gate = occupied_writer(tmp_path, encoder="device")
    with writer:
        writer.save(x, "mask.png")
        x += 255  # the caller reuses its tensor at once
        gate.set()
    assert decode_imagecodecs((tmp_path / "mask.png").read_bytes()).max() == 0


def test_exit_without_close_with_the_device_encoder(tmp_path: Path) -> None:
    script = f"""
        import torch, tensorpng
        writer = tensorpng.Writer({str(tmp_path)!r}, workers=2, encoder="device")
        writer.save(torch.rand(6, 3, 64, 64), "a{{index}}.png")
    """
    subprocess.run([sys.executable, "-c", textwrap.dedent(script)], check=True, cwd=REPO, timeout=120)
    files = sorted(tmp_path.glob("*.png"))
    assert len(files) == 6
    pngcheck(*files)


def test_save_blocked_while_the_writer_closes(tmp_path: Path) -> None:
    writer, gate = occupied_writer(tmp_path, max_pending=17, on_full="block")  # 1 + 16 bytes fit
    writer.save(np.zeros((4, 4), np.uint8), "a.png")
    outcome: list[BaseException | None] = []

    def blocked_save() -> None:
        try:
            writer.save(np.zeros((4, 4), np.uint8), "b.png")
            outcome.append(None)
        except BaseException as error:
            outcome.append(error)

    thread = threading.Thread(target=blocked_save)
    thread.start()
    time.sleep(0.2)  # the second save now waits for room
    closer = threading.Thread(target=writer.close)
    closer.start()
    time.sleep(0.1)
    gate.set()
    closer.join(30)
    thread.join(30)
    assert not closer.is_alive() and not thread.is_alive()
    assert len(outcome) == 1
    assert outcome[0] is None or isinstance(outcome[0], tensorpng.TensorPNGError)
    assert writer.stats.images_pending == 0


def test_queued_work_does_not_keep_the_callers_array(tmp_path: Path) -> None:
    x = np.random.default_rng(0).random((4, 32, 32, 3)).astype(np.float32)
    alive = weakref.ref(x)
    writer, gate = occupied_writer(tmp_path)
    with writer:
        writer.save(x, "f{index}.png")
        del x
        gc.collect()
        assert alive() is None  # the writer holds its own copy only
        gate.set()
    assert len(list(tmp_path.glob("f*.png"))) == 4


def _save_in_child(folder: str) -> None:
    tensorpng.save(np.zeros((4, 8, 8, 3), np.uint8), folder + "/child_{index}.png")


def test_save_works_in_a_forked_child(tmp_path: Path) -> None:
    tensorpng.save(np.zeros((4, 8, 8, 3), np.uint8), tmp_path / "parent_{index}.png")  # pool started
    child = multiprocessing.get_context("fork").Process(target=_save_in_child, args=(str(tmp_path),))
    child.start()
    child.join(60)
    assert child.exitcode == 0
    assert len(list(tmp_path.glob("child_*.png"))) == 4


def test_long_file_names_within_the_os_limit(tmp_path: Path) -> None:
    name = "x" * 246 + ".png"  # 250 bytes: legal on Linux file systems
    tensorpng.save(np.zeros((4, 4), np.uint8), tmp_path / name)
    assert (tmp_path / name).exists()
    assert [p.name for p in tmp_path.iterdir()] == [name]


def test_cli_inputs_with_the_same_stem_never_overwrite_each_other(tmp_path: Path) -> None:
    for run in ("run1", "run2"):
        (tmp_path / run).mkdir()
        np.save(
            tmp_path / run / "samples.npy",
            np.random.default_rng(len(run)).random((2, 3, 8, 8)).astype(np.float32),
        )
    inputs = [str(tmp_path / run / "samples.npy") for run in ("run1", "run2")]
    assert main(["convert", *inputs, "-o", str(tmp_path / "out"), "-q"]) == 0
    assert sorted(p.relative_to(tmp_path / "out").as_posix() for p in (tmp_path / "out").rglob("*.png")) == [
        "run1/samples/00000.png",
        "run1/samples/00001.png",
        "run2/samples/00000.png",
        "run2/samples/00001.png",
    ]
    # a --name that cannot tell them apart: the second input fails instead of overwriting
    assert main(["convert", *inputs, "-o", str(tmp_path / "o2"), "-q", "--name", "{file}/{index}.png"]) == 1
    assert len(list((tmp_path / "o2").rglob("*.png"))) == 2


def test_cli_workers_zero_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["convert", "x.npy", "-o", str(tmp_path), "--workers", "0"])
    assert exit_info.value.code == 2


def test_npz_members_that_are_not_arrays_are_neither_counted_nor_read(tmp_path: Path) -> None:
    np.savez(tmp_path / "a.npz", images=np.zeros((2, 8, 8), np.uint8))
    with zipfile.ZipFile(tmp_path / "a.npz", "a") as archive:
        archive.writestr("blob", b"x" * 100_000)  # not .npy: np.load would read it as bytes
    assert [entry.key for entry in load_file(tmp_path / "a.npz", max_values=1000)] == ["images"]
    np.save(tmp_path / "void.npy", np.zeros(1, dtype="V100000"))
    with pytest.raises(LoadError, match="V100000"):
        load_file(tmp_path / "void.npy", max_values=1000)


def test_cmap_on_wide_integers_is_refused_before_writing(tmp_path: Path) -> None:
    with pytest.raises(tensorpng.OptionError, match="value_range"):
        tensorpng.save(np.full((4, 4), 1000, np.uint16), tmp_path / "d.png", cmap="turbo")
    assert not list(tmp_path.iterdir())


def test_palette_grid_pads_with_label_zero() -> None:
    labels = np.ones((2, 4, 4), np.uint8)
    grid = tensorpng.to_array(
        labels, layout="NHW", palette=[(0, 0, 0), (255, 0, 0)], grid=True, pad_value=1.0
    )
    assert set(np.unique(grid).tolist()) == {0, 1}
    assert tensorpng.encode(labels, layout="NHW", palette=[(0, 0, 0), (255, 0, 0)], grid=True, pad_value=1.0)


@pytest.mark.parametrize(
    "make",
    [lambda: torch.zeros(4, 4).to_sparse(), lambda: torch.zeros(4, 4, device="meta")],
)
def test_tensors_without_dense_data_raise_our_error(make: object) -> None:
    with pytest.raises(tensorpng.DTypeError, match="dense"):
        tensorpng.to_array(make())  # type: ignore[operator]


def test_float8_and_uint32_tensors(tmp_path: Path) -> None:
    x = torch.tensor([[0.0, 0.5, 1.0]]).to(torch.float8_e4m3fn)
    assert tensorpng.to_array(x).tolist() == [[0, 128, 255]]
    labels = torch.tensor([[0, 7, 300]], dtype=torch.uint32)
    data = tensorpng.encode(labels, encoder="device")
    assert decode_imagecodecs(data).tolist() == [[0, 7, 300]]


@pytest.mark.parametrize(
    "record",
    [
        {"mapping": "colormap"},
        {"mapping": "affine", "value_range": 5},
        {"mapping": "affine", "bits": "x"},
        {"mapping": "affine", "value_range": [0, 1], "mean": [1, 2], "std": [1, 2]},
    ],
)
def test_malformed_records_are_ignored_with_a_warning(tmp_path: Path, record: dict[str, object]) -> None:
    path = tmp_path / "bad.png"
    image = np.random.default_rng(3).integers(0, 256, (4, 4, 3), dtype=np.uint8)
    path.write_bytes(encode_png(image, text={"tensorpng": json.dumps(record)}))
    with pytest.warns(tensorpng.RecordWarning, match="ignored"):
        loaded = tensorpng.load(path)
    np.testing.assert_array_equal(loaded, image)


def test_environment_is_clean() -> None:
    assert "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD" not in os.environ


def test_writer_pinned_copy_path_on_cpu_tensors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The path CUDA inputs take to the CPU encoder (convert on the device, copy to host
    buffers, workers read after an event), run with CPU torch tensors kept as tensors."""

    import tensorpng.writer as writer_module
    from tensorpng.convert import prepare

    def torch_batch(x: object, image_options: object, png_options: object) -> tuple[object, bool]:
        return prepare(x, image_options, keep_torch=True), False  # type: ignore[arg-type]

    monkeypatch.setattr(writer_module, "prepare_for", torch_batch)
    x = torch.rand(3, 3, 16, 16)
    x[1, 0, 0, :2] = float("nan")
    original = x.clone()
    with pytest.warns(RuntimeWarning, match="2 NaN"):
        expected = tensorpng.to_array(x)
    with pytest.warns(RuntimeWarning, match="2 NaN"), tensorpng.Writer(tmp_path, workers=1) as writer:
        writer.save(x, "{index}.png")
        x.fill_(0.5)  # converted already: the files show the old values
    for index in range(3):
        assert np.array_equal(decode_imagecodecs((tmp_path / f"{index}.png").read_bytes()), expected[index])
    record = json.loads(tensorpng.read_text(tmp_path / "2.png")["tensorpng"])
    assert record["min"] == pytest.approx(float(original[2].min()))
    assert record["max"] == pytest.approx(float(original[2].max()))
    assert writer.stats.images_written == 3 and writer.stats.errors == 0
