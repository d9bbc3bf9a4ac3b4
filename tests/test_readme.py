"""The README's examples are what users try first: every Python block runs as written."""

from __future__ import annotations

import inspect
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import tensorpng

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text()
BLOCKS = re.findall(r"```python\n(.*?)```", README, re.S)


def test_the_readme_has_python_examples() -> None:
    assert len(BLOCKS) >= 8


@pytest.mark.parametrize("number", range(len(BLOCKS)))
def test_readme_python_block_runs_as_written(number: int, tmp_path: Path) -> None:
    """Each block in a fresh interpreter, in an empty folder: self-contained, no prelude."""
    script = tmp_path / "example.py"
    script.write_text(BLOCKS[number])
    env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONWARNINGS": "error::UserWarning"}
    result = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, f"README block {number} failed:\n{BLOCKS[number]}\n{result.stderr[-3000:]}"


def test_the_readme_shows_the_full_signature_of_save() -> None:
    block = re.search(r"tensorpng\.save\(x, path, \*,(.*?)\) ->", README, re.S)
    assert block is not None
    shown = re.findall(r"(\w+)=([^,\s]+)", block.group(1))
    parameters = [
        p for p in inspect.signature(tensorpng.save).parameters.values() if p.kind is p.KEYWORD_ONLY
    ]
    assert [name for name, _ in shown] == [p.name for p in parameters]
    assert [default.strip('"') for _, default in shown] == [str(p.default) for p in parameters]


def test_help_lists_every_option_with_type_and_default() -> None:
    text = subprocess.run(
        [sys.executable, "-c", "import tensorpng; help(tensorpng.save)"],
        capture_output=True, text=True, cwd=REPO, env={**os.environ, "PAGER": "cat"}, check=True,
    ).stdout  # fmt: skip
    for parameter in inspect.signature(tensorpng.save).parameters.values():
        if parameter.kind is parameter.KEYWORD_ONLY:
            assert re.search(rf"{parameter.name}: [^=]+ = {re.escape(repr(parameter.default))}", text), (
                parameter.name
            )
