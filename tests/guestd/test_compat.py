"""guestd runs on the guest's own python3 (>= 3.9) with the standard library and protobuf."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
GUESTD = REPO / "guestd"
GUEST_COMMON = [REPO / "virtplane_common" / name for name in ("__init__.py", "framing.py")]
"""What the guest wheel takes of the shared runtime (guestd/packaging/build.py)."""
MODULES = sorted(GUESTD.glob("*.py")) + GUEST_COMMON
ALLOWED = set(sys.stdlib_module_names) | {"google", "virtplane", "guestd", "virtplane_common"}


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


@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.name)
def test_takes_of_the_shared_runtime_only_what_the_guest_wheel_bundles(path: Path):
    bundled = {f"virtplane_common.{p.stem}" for p in GUEST_COMMON} | {"virtplane_common"}
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("virtplane_common"):
            assert node.module in bundled
