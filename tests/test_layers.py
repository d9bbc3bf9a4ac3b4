"""docs/design.md's layer table is the import structure: every module is listed once, and each
imports (at run time) only modules of lower layers, so the table cannot drift from the code."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "tensorpng"
FOR_ALL = {"errors", "_version"}  # usable from every layer


def layer_table() -> dict[str, int]:
    text = (ROOT / "docs" / "design.md").read_text(encoding="utf-8")
    layers: dict[str, int] = {}
    for row in re.finditer(r"^\| (\d+) \| (.*?) \|", text, re.MULTILINE):
        for module in re.findall(r"`(\w+)`", row.group(2)):
            assert module not in layers, f"{module} is listed twice in docs/design.md"
            layers[module] = int(row.group(1))
    return layers


def runtime_imports(path: Path) -> set[str]:
    """The package modules that ``path`` imports, at module level or in functions, except
    those under ``if TYPE_CHECKING:`` (annotations only)."""
    found: set[str] = set()

    class Visitor(ast.NodeVisitor):
        def visit_If(self, node: ast.If) -> None:
            if isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
                for statement in node.orelse:
                    self.visit(statement)
                return
            self.generic_visit(node)

        def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
            if node.level == 1 and node.module:
                found.add(node.module.split(".")[0])
            elif node.level == 1:  # from . import x: module x, or a name of the package itself
                found.update(
                    a.name if (PACKAGE / f"{a.name}.py").exists() else "__init__" for a in node.names
                )

    Visitor().visit(ast.parse(path.read_text(encoding="utf-8")))
    return {name for name in found if (PACKAGE / f"{name}.py").exists()}


def test_every_module_is_in_the_table_once() -> None:
    modules = {path.stem for path in PACKAGE.glob("*.py")}
    listed = set(layer_table())
    assert modules - listed == set(), "modules missing from docs/design.md's layer table"
    assert listed - modules == set(), "docs/design.md lists modules that do not exist"


def test_each_module_imports_only_lower_layers() -> None:
    layers = layer_table()
    upward = [
        f"{path.stem} (layer {layers[path.stem]}) imports {name} (layer {layers[name]})"
        for path in sorted(PACKAGE.glob("*.py"))
        for name in sorted(runtime_imports(path) - FOR_ALL)
        if layers[name] >= layers[path.stem]
    ]
    assert upward == []


def test_the_check_sees_an_upward_import(tmp_path: Path) -> None:
    """The checker itself: a function-level import counts, a TYPE_CHECKING one does not."""
    module = tmp_path / "probe.py"
    module.write_text(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from .writer import Writer\n"
        "def f():\n    from .convert import prepare\n    from . import png, __version__\n",
        encoding="utf-8",
    )
    assert runtime_imports(module) == {"convert", "png", "__init__"}
