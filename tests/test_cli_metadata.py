"""``tensorpng convert --metadata KEY=VALUE`` and ``--metadata-file KEY=PATH``: the text chunks
of ``metadata=``, read back by Pillow and by tensorpng.read_text; bad ones exit 2 before any file."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import tensorpng
from conftest import parse_chunks, pngcheck
from tensorpng.cli import main

REPO = Path(__file__).resolve().parents[1]
PARAMETERS = "a cat\nNegative prompt: blurry\nSteps: 20, Sampler: Euler a, CFG scale: 7, Seed: 1"


def write_input(folder: Path) -> Path:
    path = folder / "x.npy"
    np.save(path, np.random.default_rng(0).random((2, 3, 8, 10), dtype=np.float32))
    return path


def workflow(size: int) -> str:
    nodes = [
        {"id": i, "type": "KSampler", "widgets_values": [i, "fixed", 20, 7.5]} for i in range(size // 60)
    ]
    return json.dumps({"nodes": nodes, "links": [], "version": 0.4})


def tags(path: Path) -> dict[str, bytes]:
    return {
        body.split(b"\x00", 1)[0].decode("latin-1"): tag
        for tag, body in parse_chunks(path.read_bytes())
        if tag in (b"tEXt", b"zTXt", b"iTXt")
    }


def test_metadata_options_round_trip_through_pillow_and_read_text(tmp_path: Path) -> None:
    flow = workflow(81_000)
    assert len(flow) >= 80_000
    (tmp_path / "workflow.json").write_text(flow, encoding="utf-8")
    (tmp_path / "prompt.json").write_text('{"3": {"inputs": {"text": "猫"}}}', encoding="utf-8")
    out = tmp_path / "out"
    code = main(
        [
            "convert", str(write_input(tmp_path)), "-o", str(out), "-q",
            "--metadata", f"parameters={PARAMETERS}",
            "--metadata", "Title=Café = crème",  # Latin-1; only the first '=' splits
            "--metadata", "Comment=猫の写真 🐱",  # not Latin-1: iTXt
            "--metadata", "Empty=",
            "--metadata-file", f"workflow={tmp_path / 'workflow.json'}",
            "--metadata-file", f"prompt={tmp_path / 'prompt.json'}",
        ]
    )  # fmt: skip
    assert code == 0
    expected = {
        "parameters": PARAMETERS,
        "Title": "Café = crème",
        "Comment": "猫の写真 🐱",
        "Empty": "",
        "workflow": flow,
        "prompt": '{"3": {"inputs": {"text": "猫"}}}',
    }
    files = sorted(out.rglob("*.png"))
    assert len(files) == 2
    for path in files:
        pngcheck(path)
        with Image.open(path) as image:
            pillow = dict(image.text)  # type: ignore[attr-defined]
        assert pillow.pop("tensorpng")  # the mapping record is still written
        assert pillow == expected
        assert {k: v for k, v in tensorpng.read_text(path).items() if k != "tensorpng"} == expected
        kinds = tags(path)
        assert kinds["Title"] == b"tEXt" and kinds["Comment"] == b"iTXt" and kinds["prompt"] == b"iTXt"
        assert kinds["workflow"] == b"zTXt"
        assert path.stat().st_size < 15_000, "the 80 KB workflow must be stored compressed"


def test_metadata_file_may_hold_up_to_the_reader_limit(tmp_path: Path) -> None:
    value = "w" * (1 << 20)
    (tmp_path / "big.txt").write_text(value)
    code = main(["convert", str(write_input(tmp_path)), "-o", str(tmp_path / "out"), "-q", "--grid",
                 "--metadata-file", f"big={tmp_path / 'big.txt'}"])  # fmt: skip
    assert code == 0
    (path,) = (tmp_path / "out").rglob("*.png")
    assert tensorpng.read_text(path)["big"] == value


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--metadata", "no-equals-sign"], "KEY=VALUE"),
        (["--metadata", "=value"], "key"),
        (["--metadata", " lead=x"], "key"),
        (["--metadata", f"{'k' * 80}=x"], "key"),
        (["--metadata", "Ωmega=x"], "Latin-1"),
        (["--metadata", "a=1", "--metadata", "a=2"], "twice"),
        (["--metadata", "tensorpng=x"], "tensorpng's own record"),
        (["--metadata-file", "k"], "KEY=PATH"),
        (["--metadata-file", "k=/nonexistent/flow.json"], "No such file"),
        (["--metadata-file", "k={big}"], "more than 1,048,576 bytes"),
        (["--metadata-file", "k={latin1}"], "not UTF-8"),
        (["--metadata-file", "k={nul}"], "NUL"),
        (["--metadata", "k=x", "--metadata-file", "k={latin1}"], "twice"),
    ],
)
def test_bad_metadata_exits_2_before_any_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    (tmp_path / "big.txt").write_bytes(b"x" * ((1 << 20) + 1))
    (tmp_path / "latin1.txt").write_bytes("café".encode("latin-1"))
    (tmp_path / "nul.txt").write_bytes(b"a\x00b")
    files = {"big": tmp_path / "big.txt", "latin1": tmp_path / "latin1.txt", "nul": tmp_path / "nul.txt"}
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as exit_info:
        main(["convert", str(write_input(tmp_path)), "-o", str(out), *(a.format(**files) for a in args)])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert message in error and "Traceback" not in error
    assert not out.exists()


def test_a_bad_key_from_the_shell_is_a_clean_usage_error(tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = subprocess.run(
        [sys.executable, "-m", "tensorpng", "convert", str(write_input(tmp_path)), "-o", str(out),
         "--metadata", "two  spaces=x"],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 2
    assert "Traceback" not in result.stderr and "'two  spaces' is not valid" in result.stderr
    assert not out.exists()
