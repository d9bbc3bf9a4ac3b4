"""Command line: formats, dict inputs, options, safety, exit codes and sharding."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.numpy import load_file, save_file

import tensorpng
from conftest import decode_imagecodecs, decode_pypng, pngcheck
from tensorpng.cli import main

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "examples" / "sample.safetensors"
MEAN = np.array(tensorpng.IMAGENET_MEAN)[:, None, None]
STD = np.array(tensorpng.IMAGENET_STD)[:, None, None]


def run_cli(*args: str | Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tensorpng", *map(str, args)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, **(env or {})},
    )


def read(path: Path) -> np.ndarray:
    return decode_imagecodecs(path.read_bytes())


def images(seed: int = 0, count: int = 3) -> np.ndarray:
    """``count`` random RGB float32 images in [0, 1], NCHW."""
    return np.random.default_rng(seed).random((count, 3, 20, 30), dtype=np.float32)


def expected_uint8(x: np.ndarray) -> np.ndarray:
    """Independent reference: [0, 1] floats to uint8, round half up, NHWC."""
    return np.floor(np.clip(x.astype(np.float64), 0, 1) * 255 + 0.5).astype(np.uint8).transpose(0, 2, 3, 1)


def test_main_job_on_the_bundled_sample(tmp_path: Path) -> None:
    result = run_cli("convert", SAMPLE, "-o", tmp_path, "--imagenet")
    assert result.returncode == 0, result.stderr
    assert "1 of 1 inputs converted: 8 files, 8 images" in result.stderr
    stored = load_file(str(SAMPLE))["images"].astype(np.float64)
    pixels = np.rint((stored * STD + MEAN) * 255).transpose(0, 2, 3, 1)
    assert pixels.min() >= 0 and pixels.max() <= 255  # the sample holds real photos
    files = sorted((tmp_path / "images").glob("*.png"))
    assert [f.name for f in files] == [f"{i:05d}.png" for i in range(8)]
    for index, path in enumerate(files):
        assert np.array_equal(read(path), pixels[index])
        assert np.array_equal(decode_pypng(path.read_bytes()), pixels[index])
    pngcheck(*files)


@pytest.mark.parametrize("suffix", [".pt", ".pth", ".npy", ".safetensors"])
def test_single_array_formats(tmp_path: Path, suffix: str) -> None:
    x = images()
    source = tmp_path / f"batch{suffix}"
    if suffix in (".pt", ".pth"):
        torch.save(torch.from_numpy(x), source)
    elif suffix == ".npy":
        np.save(source, x)
    else:
        save_file({"batch": x}, str(source))
    assert main(["convert", str(source), "-o", str(tmp_path / "out"), "-q"]) == 0
    expected = expected_uint8(x)
    for index in range(3):
        assert np.array_equal(read(tmp_path / "out" / "batch" / f"{index:05d}.png"), expected[index])


def test_dict_inputs_make_subfolders_and_skip_non_images(tmp_path: Path) -> None:
    x, y = images(0), images(1, count=2)
    masks = np.random.default_rng(2).integers(0, 21, (2, 20, 30), dtype=np.uint8)
    torch.save(
        {"samples": torch.from_numpy(x), "nested": {"recon": torch.from_numpy(y)}, "labels": torch.arange(5)},
        tmp_path / "state.pt",
    )
    np.savez(tmp_path / "arrays.npz", masks=masks, scalar=np.float32(3))
    assert main(["convert", str(tmp_path / "state.pt"), "-o", str(tmp_path / "a"), "-q"]) == 0
    assert sorted(p.relative_to(tmp_path / "a").as_posix() for p in (tmp_path / "a").rglob("*.png")) == [
        "nested/recon/00000.png",
        "nested/recon/00001.png",
        "samples/00000.png",
        "samples/00001.png",
        "samples/00002.png",
    ]
    assert np.array_equal(read(tmp_path / "a/nested/recon/00001.png"), expected_uint8(y)[1])
    assert (
        main(["convert", str(tmp_path / "arrays.npz"), "-o", str(tmp_path / "b"), "-q", "--layout", "NHW"])
        == 0
    )
    assert np.array_equal(read(tmp_path / "b/masks/00001.png"), masks[1])


def test_key_option_picks_one_and_names_missing_keys(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    save_file({"a": images(0), "b": images(1)}, str(tmp_path / "two.safetensors"))
    assert (
        main(["convert", str(tmp_path / "two.safetensors"), "-o", str(tmp_path / "o"), "--key", "b", "-q"])
        == 0
    )
    assert sorted(p.parent.name for p in (tmp_path / "o").rglob("*.png")) == ["b", "b", "b"]
    assert (
        main(["convert", str(tmp_path / "two.safetensors"), "-o", str(tmp_path / "p"), "--key", "zz", "-q"])
        == 1
    )
    assert "no key 'zz'" in capsys.readouterr().err


def test_several_inputs_prefix_keys_with_file_stems(tmp_path: Path) -> None:
    for name in ("run1", "run2"):
        save_file({"images": images()}, str(tmp_path / f"{name}.safetensors"))
    inputs = [str(tmp_path / f"{name}.safetensors") for name in ("run1", "run2")]
    assert main(["convert", *inputs, "-o", str(tmp_path / "o"), "-q"]) == 0
    assert len(list((tmp_path / "o" / "run1" / "images").glob("*.png"))) == 3
    assert len(list((tmp_path / "o" / "run2" / "images").glob("*.png"))) == 3


def test_options_end_to_end(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    depth = (rng.random((2, 1, 16, 24)) * 80 + 20).astype(np.float32)  # values 20..100
    np.save(tmp_path / "depth.npy", depth)
    out = tmp_path / "o"
    args = ["convert", str(tmp_path / "depth.npy"), "-o", str(out), "-q"]
    assert main([*args, "--value-range", "20,100", "--bits", "16", "--name", "vr/{file}_{index}.png"]) == 0
    expected16 = np.floor((depth[:, 0].astype(np.float64) - 20) / 80 * 65535 + 0.5).astype(np.uint16)
    assert np.array_equal(read(out / "vr" / "depth_1.png"), expected16[1])
    assert main([*args, "--scale", "image", "--name", "sc/{index}.png"]) == 0
    for index in range(2):
        image = depth[index, 0].astype(np.float64)
        scaled = np.floor((image - image.min()) / (image.max() - image.min()) * 255 + 0.5)
        assert np.array_equal(read(out / "sc" / f"{index}.png"), scaled)
    assert main([*args, "--grid", "--nrow", "1", "--name", "grid.png"]) == 0
    assert read(out / "grid.png").shape == (2 * 16 + 3 * 2, 24 + 2 * 2)
    assert (
        main([*args, "--mean", "0.5", "--std", "0.25", "--layout", "NCHW", "--name", "ms/{index}.png"]) == 0
    )
    assert read(out / "ms" / "0.png").min() == 255  # 20 * 0.25 + 0.5 > 1: white, no wrap-around


def test_no_overwrite_keeps_existing_files(tmp_path: Path) -> None:
    np.save(tmp_path / "x.npy", images())
    target = tmp_path / "o" / "x" / "00000.png"
    target.parent.mkdir(parents=True)
    target.write_bytes(b"keep me")
    assert main(["convert", str(tmp_path / "x.npy"), "-o", str(tmp_path / "o"), "--no-overwrite", "-q"]) == 1
    assert target.read_bytes() == b"keep me"
    assert not (tmp_path / "o" / "x" / "00001.png").exists()


class Payload:
    """Unpickling this runs code: it creates a marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return (open, (str(self.marker), "w"))


def test_malicious_pickle_is_refused_and_never_runs(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    torch.save({"images": torch.zeros(2, 3, 8, 8), "evil": Payload(marker)}, tmp_path / "evil.pt")
    assert not marker.exists()
    np.save(tmp_path / "good.npy", images())
    result = run_cli(
        "convert", tmp_path / "evil.pt", tmp_path / "good.npy", "-o", tmp_path / "o",
        env={"TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD": "1"},
    )  # fmt: skip
    assert result.returncode == 1
    assert "refused" in result.stderr and "evil.pt" in result.stderr
    assert "Traceback" not in result.stderr
    assert not marker.exists()
    assert len(list((tmp_path / "o").rglob("*.png"))) == 3  # the good file still converted


def test_pickled_numpy_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    np.save(tmp_path / "objects.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    assert main(["convert", str(tmp_path / "objects.npy"), "-o", str(tmp_path / "o"), "-q"]) == 1
    assert "allow_pickle" in capsys.readouterr().err


def test_corrupt_file_fails_alone(tmp_path: Path) -> None:
    save_file({"images": images()}, str(tmp_path / "good.safetensors"))
    data = (tmp_path / "good.safetensors").read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(data[: len(data) // 2])
    torch.save(torch.zeros(2, 3, 8, 8), tmp_path / "cut.pt")
    (tmp_path / "cut.pt").write_bytes((tmp_path / "cut.pt").read_bytes()[:100])
    (tmp_path / "notes.txt").write_text("hello")
    result = run_cli(
        "convert", tmp_path / "cut.safetensors", tmp_path / "cut.pt", tmp_path / "notes.txt",
        tmp_path / "good.safetensors", "-o", tmp_path / "o",
    )  # fmt: skip
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("tensorpng: ")]
    assert len(errors) == 3, result.stderr
    assert "Traceback" not in result.stderr
    assert "1 of 4 inputs converted" in result.stderr
    assert len(list((tmp_path / "o" / "good").rglob("*.png"))) == 3
    debug = run_cli("convert", tmp_path / "cut.pt", "-o", tmp_path / "o", "--debug")
    assert "Traceback" in debug.stderr


def test_value_limit_refuses_before_reading(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # A 128-byte file whose header claims 30 billion values: refused from the header alone.
    hostile = tmp_path / "bomb.npy"
    with hostile.open("wb") as file:
        np.lib.format.write_array_header_1_0(
            file, {"descr": "|u1", "fortran_order": False, "shape": (100_000, 100_000, 3)}
        )
    np.savez_compressed(tmp_path / "zeros.npz", big=np.zeros((64, 1000, 1000), np.uint8))
    assert (tmp_path / "zeros.npz").stat().st_size < 200_000
    code = main(
        [
            "convert",
            str(hostile),
            str(tmp_path / "zeros.npz"),
            "-o",
            str(tmp_path / "o"),
            "-q",
            "--max-values",
            "10000000",
        ]
    )
    assert code == 1
    err = capsys.readouterr().err
    assert "bomb.npy would expand to more than" in err and "zeros.npz would expand" in err
    assert not (tmp_path / "o").exists()
    assert main(["convert", str(tmp_path / "zeros.npz"), "-o", str(tmp_path / "o"), "-q", "--layout", "NHW",
                 "--max-values", "64000000"]) == 0  # fmt: skip


@pytest.mark.parametrize(
    "args",
    [
        [],
        ["convert", "x.npy"],
        ["convert", "x.npy", "-o", "o", "--mean", "a,b"],
        ["convert", "x.npy", "-o", "o", "--bits", "12"],
        ["convert", "x.npy", "-o", "o", "--name", "{epoch}.png"],
        ["convert", "x.npy", "-o", "o", "--std", "0"],
    ],
)
def test_usage_errors_exit_2(args: list[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    assert exit_info.value.code == 2


def test_sharding_with_torchrun(tmp_path: Path) -> None:
    inputs = []
    for index in range(5):
        path = tmp_path / f"in{index}.npy"
        np.save(path, images(index, count=2))
        inputs.append(path)
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", "0",
         "-m", "tensorpng", "convert", *map(str, inputs), "-o", str(tmp_path / "o")],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "3 of 3 inputs converted (rank 0 of 2)" in result.stderr
    assert "2 of 2 inputs converted (rank 1 of 2)" in result.stderr
    files = sorted(p.relative_to(tmp_path / "o").as_posix() for p in (tmp_path / "o").rglob("*.png"))
    assert files == sorted(f"in{i}/{j:05d}.png" for i in range(5) for j in range(2))
    assert np.array_equal(read(tmp_path / "o" / "in3" / "00001.png"), expected_uint8(images(3, count=2))[1])


def test_sharding_with_slurm_variables(tmp_path: Path) -> None:
    inputs = []
    for index in range(3):
        np.save(tmp_path / f"s{index}.npy", images(index, count=1))
        inputs.append(tmp_path / f"s{index}.npy")
    for rank in (0, 1):
        result = run_cli(
            "convert",
            *inputs,
            "-o",
            tmp_path / f"r{rank}",
            env={"SLURM_PROCID": str(rank), "SLURM_NTASKS": "2"},
        )
        assert result.returncode == 0, result.stderr
    assert sorted(p.parent.name for p in (tmp_path / "r0").rglob("*.png")) == ["s0", "s2"]
    assert sorted(p.parent.name for p in (tmp_path / "r1").rglob("*.png")) == ["s1"]


def test_progress_bar_on_a_terminal_only(tmp_path: Path) -> None:
    import fcntl
    import pty
    import struct
    import termios

    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # a 100x24 terminal
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tensorpng",
            "convert",
            str(SAMPLE),
            "-o",
            str(tmp_path / "tty"),
            "--imagenet",
        ],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=follower,
    )
    os.close(follower)
    chunks = []
    while True:
        try:
            chunk = os.read(leader, 4096)
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        chunks.append(chunk)
    assert process.wait(timeout=120) == 0
    os.close(leader)
    shown = b"".join(chunks).decode(errors="replace")
    assert "1/1" in shown and "images=8" in shown  # tqdm's bar over files
    assert "1 of 1 inputs converted" in shown
    piped = run_cli("convert", SAMPLE, "-o", tmp_path / "pipe", "--imagenet")
    assert "1/1" not in piped.stderr  # not a terminal: the summary line only
    quiet = run_cli("convert", SAMPLE, "-o", tmp_path / "quiet", "--imagenet", "-q")
    assert quiet.stderr == ""


def test_warnings_speak_the_flags_and_bad_palettes_are_usage_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "x.npy"
    np.save(source, np.linspace(0, 255, 2 * 3 * 8 * 8, dtype=np.float32).reshape(2, 3, 8, 8))
    assert main(["convert", str(source), "-o", str(tmp_path / "out")]) == 0
    err = capsys.readouterr().err
    assert "tensorpng: warning:" in err and "--value-range 0,255" in err and "--scale image" in err
    assert "value_range=" not in err and "scale='image'" not in err
    with pytest.raises(SystemExit) as info:  # as --cmap nope: a usage error, before any file
        main(["convert", str(source), "-o", str(tmp_path / "p"), "--palette", "rainbow"])
    assert info.value.code == 2 and not (tmp_path / "p").exists()
    assert "unknown palette 'rainbow'" in capsys.readouterr().err
