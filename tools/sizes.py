"""Checks the project's size rules, run by `make lint`:

- a module has at most 500 lines,
- a class at most 25 methods,
- a function (or method) at most 60 lines,

outside generated code (protos/virtplane/v1) and alembic migrations
(db/migrations/versions), whose length is their content. Prints each breach as
`path:line: what` and exits 1 if there is any.

    python tools/sizes.py [ROOT]
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

MAX_MODULE_LINES = 500
MAX_CLASS_METHODS = 25
MAX_FUNCTION_LINES = 60
EXEMPT = ("protos/virtplane/v1/", "db/migrations/versions/")


@dataclass(frozen=True)
class Breach:
    path: str
    line: int
    what: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.what}"


def python_files(root: Path) -> list[str]:
    """The tracked and untracked-but-not-ignored .py files under root, relative to it."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "*.py"],
        cwd=root,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    return sorted(p for p in listed if not p.startswith(EXEMPT) and (root / p).is_file())


def breaches(path: str, source: str) -> Iterator[Breach]:
    lines = source.count("\n") + (0 if source.endswith("\n") or not source else 1)
    if lines > MAX_MODULE_LINES:
        yield Breach(path, 1, f"module of {lines} lines (at most {MAX_MODULE_LINES})")
    for node in ast.walk(ast.parse(source, filename=path)):
        if isinstance(node, ast.ClassDef):
            methods = [
                n for n in node.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))
            ]
            if len(methods) > MAX_CLASS_METHODS:
                yield Breach(
                    path,
                    node.lineno,
                    f"class {node.name} has {len(methods)} methods (at most {MAX_CLASS_METHODS})",
                )
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            first = min([node.lineno, *(d.lineno for d in node.decorator_list)])
            length = (node.end_lineno or node.lineno) - first + 1
            if length > MAX_FUNCTION_LINES:
                yield Breach(
                    path,
                    node.lineno,
                    f"function {node.name} of {length} lines (at most {MAX_FUNCTION_LINES})",
                )


def main(argv: list[str]) -> int:
    root = Path(argv[1] if len(argv) > 1 else ".").resolve()
    found = [b for p in python_files(root) for b in breaches(p, (root / p).read_text())]
    for breach in found:
        print(breach)
    if found:
        print(f"sizes: {len(found)} over the project's limits", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
