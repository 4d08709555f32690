"""guestd runs on the guest's own python3 (>= 3.9) with the standard library and protobuf."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

GUESTD = Path(__file__).resolve().parents[2] / "guestd"
MODULES = sorted(GUESTD.glob("*.py"))
ALLOWED = set(sys.stdlib_module_names) | {"google", "virtplane", "guestd"}


@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.name)
def test_parses_as_python_3_9(path: Path):
    ast.parse(path.read_text(), filename=str(path), feature_version=(3, 9))


@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.name)
def test_imports_only_stdlib_and_protobuf(path: Path):
    tree = ast.parse(path.read_text())
    imported: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            imported.add(node.module.split(".")[0])
    assert imported <= ALLOWED


@pytest.mark.parametrize("path", [p for p in MODULES if p.stat().st_size], ids=lambda p: p.name)
def test_postpones_annotations(path: Path):
    assert "from __future__ import annotations" in path.read_text()
