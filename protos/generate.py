"""Generates the Python code and .pyi stubs of protos/virtplane/v1/*.proto
next to the sources (`make proto`). With --out DIR, writes there instead, so
a test can check the committed code is what generation gives."""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from grpc_tools import protoc

PROTOS = Path(__file__).resolve().parent
PACKAGE = Path("virtplane") / "v1"


def generate(out: Path) -> None:
    venv_bin = Path(sys.executable).parent
    sources = sorted(str(p.relative_to(PROTOS)) for p in (PROTOS / PACKAGE).glob("*.proto"))
    services = [s for s in sources if s.endswith("_service.proto")]
    include = str(Path(protoc.__file__).parent / "_proto")
    base = ["protoc", f"-I{PROTOS}", f"-I{include}"]
    plugins = [
        f"--plugin=protoc-gen-mypy={venv_bin / 'protoc-gen-mypy'}",
        f"--plugin=protoc-gen-mypy_grpc={venv_bin / 'protoc-gen-mypy_grpc'}",
    ]
    runs = [
        [*base, *plugins, f"--python_out={out}", f"--mypy_out={out}", *sources],
        [*base, *plugins, f"--grpc_python_out={out}", f"--mypy_grpc_out={out}", *services],
    ]
    for args in runs:
        if protoc.main(args) != 0:
            raise SystemExit(f"protoc failed: {' '.join(args)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=PROTOS)
    out = parser.parse_args().out
    if out == PROTOS:
        for old in (PROTOS / PACKAGE).glob("*_pb2*.py*"):
            old.unlink()
    (out / PACKAGE).mkdir(parents=True, exist_ok=True)
    generate(out)
    if out != PROTOS:
        for init in ("__init__.py", "v1/__init__.py"):
            shutil.copy(PROTOS / "virtplane" / init, out / "virtplane" / init)


if __name__ == "__main__":
    main()
