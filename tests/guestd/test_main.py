from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from guestd.__main__ import DEFAULT_PORT, open_port, parse_args


def test_defaults():
    options = parse_args([])
    assert options.port == DEFAULT_PORT == Path("/dev/virtio-ports/org.virtplane.guestd.0")
    assert options.agent.root == Path("/")
    assert options.agent.heartbeat_interval == 5.0
    assert options.log_level == "INFO"


def test_options():
    options = parse_args(
        ["--port", "/tmp/p", "--heartbeat-interval", "0.5", "--root", "/x", "--log-level", "debug"]
    )
    assert options.port == Path("/tmp/p")
    assert options.agent.heartbeat_interval == 0.5
    assert options.agent.root == Path("/x")
    assert options.log_level == "DEBUG"


@pytest.mark.parametrize("bad", ["0", "-1", "nan", "soon"])
def test_heartbeat_interval_must_be_positive(bad: str):
    with pytest.raises(SystemExit):
        parse_args(["--heartbeat-interval", bad])


def test_open_port_waits_for_the_port(tmp_path: Path):
    port = tmp_path / "port"
    stop = threading.Event()
    result: list[int | None] = []
    opener = threading.Thread(target=lambda: result.append(open_port(port, 0.01, stop)))
    opener.start()
    port.write_bytes(b"")
    opener.join(10)
    assert result and result[0] is not None
    os.close(result[0])


def test_open_port_gives_up_when_stopped(tmp_path: Path):
    stop = threading.Event()
    stop.set()
    assert open_port(tmp_path / "never", 0.01, stop) is None


def test_runs_as_a_module():
    done = subprocess.run(
        [sys.executable, "-m", "guestd", "--help"], capture_output=True, text=True, check=True
    )
    assert "--heartbeat-interval" in done.stdout
