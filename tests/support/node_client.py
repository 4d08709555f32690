"""The Node client (tests/node/client.js, @grpc/grpc-js with the protos
loaded at run time) as a process: run one of its commands against a
controller with a CA file and a token, and read the JSON lines it prints.

It needs Node and the client's npm packages (`make setup` installs both);
without them a test is skipped (failed, in CI).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.support.real import REPO, skip_or_fail
from tests.support.stack import Daemon

NODE_DIR = REPO / "tests" / "node"
CLIENT = NODE_DIR / "client.js"
PACKAGES = NODE_DIR / "node_modules" / "@grpc"


@dataclass(frozen=True)
class NodeRun:
    """What one run of client.js did: its exit status, the JSON lines it
    printed on stdout, and its stderr."""

    returncode: int
    lines: list[dict[str, Any]]
    stderr: str

    @property
    def steps(self) -> list[str]:
        return [str(line.get("step")) for line in self.lines]

    def step(self, name: str) -> dict[str, Any]:
        """The first line of step name; fails the test when there is none."""
        for line in self.lines:
            if line.get("step") == name:
                return line
        pytest.fail(f"client.js printed no {name!r} step: {self}")

    @property
    def error(self) -> dict[str, Any]:
        """The line of the call that failed (the last line of a failed run)."""
        assert self.returncode != 0 and self.lines, f"client.js did not fail: {self}"
        return self.lines[-1]


def environment(address: str, ca: Path, token: str | None) -> dict[str, str]:
    """What client.js reads: the controller, the CA file, the token (if any)."""
    env = {"VIRTPLANE_ADDRESS": address, "VIRTPLANE_CA": str(ca)}
    return env if token is None else {**env, "VIRTPLANE_TOKEN": token}


def controller_environment(controller: Daemon) -> dict[str, str]:
    """What client.js needs to reach a stack's controller: the stack's own
    Daemon.environment() (its address, its CA file and the admin's token,
    where the stack serves TLS); {} from a stack that does not offer it."""
    environment = getattr(controller, "environment", None)
    return dict(environment()) if callable(environment) else {}


@pytest.fixture(scope="session")
def node() -> str:
    """The path of the node executable, with the client's packages installed."""
    found = shutil.which("node")
    if found is None:
        skip_or_fail("no node executable; run `make setup` (Debian's nodejs)")
    if not PACKAGES.is_dir():
        skip_or_fail(f"no npm packages in {NODE_DIR}; run `make setup`")
    return found


async def run_node(
    node: str, args: Sequence[str], env: Mapping[str, str], within: float = 60.0
) -> NodeRun:
    """Runs `node client.js ARGS` with env (and PATH alone of this process's
    environment): the controller may be served by this very event loop."""
    process = await asyncio.create_subprocess_exec(
        node,
        str(CLIENT),
        *args,
        cwd=NODE_DIR,
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **env},
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(process.communicate(), within)
    except TimeoutError:
        process.kill()
        await process.wait()
        pytest.fail(f"client.js {' '.join(args)} did not end within {within:g} s")
    lines = [json.loads(line) for line in out.decode().splitlines() if line.strip()]
    return NodeRun(process.returncode or 0, lines, err.decode(errors="replace"))
