from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from virtplane.v1 import guest_channel_pb2 as gc

from guestd.__main__ import DEFAULT_PORT, open_port, parse_args
from tests.guestd.fakeroot import FakeRoot
from virtplane_common.framing import FrameDecoder

GUARD = 30.0


def test_defaults(tmp_path: Path):
    options = parse_args(["--config", str(tmp_path / "missing.conf")])
    assert options.port == DEFAULT_PORT == Path("/dev/virtio-ports/org.virtplane.guestd.0")
    assert options.fd is None
    assert options.agent.root == Path("/")
    assert options.agent.heartbeat_interval == 5.0
    assert options.agent.applications_filter == ()
    assert options.agent.power_commands
    assert options.log_level == "INFO"


def test_default_config_path():
    assert parse_args([]).config_path == Path("/etc/virtplane/guestd.conf")


def test_options(tmp_path: Path):
    options = parse_args(
        [
            *("--port", "/tmp/p", "--heartbeat-interval", "0.5", "--root", "/x"),
            *("--log-level", "debug", "--config", str(tmp_path / "missing.conf"), "--fd", "7"),
        ]
    )
    assert options.port == Path("/tmp/p")
    assert options.fd == 7
    assert options.agent.heartbeat_interval == 0.5
    assert options.agent.root == Path("/x")
    assert options.log_level == "DEBUG"


def _conf(tmp_path: Path) -> str:
    path = tmp_path / "guestd.conf"
    path.write_text(
        "[guestd]\nport = /dev/vport9p1\nheartbeat_interval = 7\nlog_level = warning\n"
        "power_commands = false\n[applications]\ninclude = kernel*\n"
    )
    return str(path)


def test_the_config_file_sets_defaults(tmp_path: Path):
    options = parse_args(["--config", _conf(tmp_path)])
    assert options.port == Path("/dev/vport9p1")
    assert options.agent.heartbeat_interval == 7.0
    assert options.log_level == "WARNING"
    assert not options.agent.power_commands
    assert options.agent.applications_filter == ("kernel*",)


def test_the_command_line_wins_over_the_file(tmp_path: Path):
    options = parse_args(
        [
            *("--config", _conf(tmp_path), "--port", "/p"),
            *("--heartbeat-interval", "1", "--log-level", "error"),
        ]
    )
    assert (options.port, options.agent.heartbeat_interval, options.log_level) == (
        Path("/p"),
        1.0,
        "ERROR",
    )


def test_a_bad_config_file_stops_the_agent(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    path = tmp_path / "bad.conf"
    path.write_text("[guestd]\nheartbeat_interval = never\n")
    with pytest.raises(SystemExit) as exited:
        parse_args(["--config", str(path)])
    assert exited.value.code == 2
    assert "heartbeat_interval" in capsys.readouterr().err


@pytest.mark.parametrize("bad", ["0", "-1", "nan", "soon", "inf", "3601"])
def test_heartbeat_interval_must_be_positive(bad: str):
    with pytest.raises(SystemExit):
        parse_args(["--heartbeat-interval", bad])


@pytest.mark.parametrize("bad", ["-1", "x"])
def test_fd_must_be_a_descriptor(bad: str):
    with pytest.raises(SystemExit):
        parse_args(["--fd", bad])


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
    assert "--config" in done.stdout


def test_main_on_an_inherited_descriptor_stops_on_sigterm(tmp_path: Path, fake_root: FakeRoot):
    """The agent on --fd answers, then a SIGTERM ends it with status 0."""
    host, guest = socket.socketpair()
    with host, guest:
        agent = subprocess.Popen(
            [
                *(sys.executable, "-m", "guestd", "--fd", str(guest.fileno())),
                *("--root", str(fake_root.path), "--config", str(tmp_path / "none.conf")),
            ],
            pass_fds=[guest.fileno()],
            stderr=subprocess.PIPE,
        )
        try:
            host.settimeout(GUARD)
            frames = FrameDecoder()
            hello: list[bytes] = []
            while not hello:
                data = host.recv(65536)
                assert data, "the agent closed the channel"
                hello = frames.feed(data)
            first = gc.GuestMessage.FromString(hello[0])
            assert first.WhichOneof("body") == "hello"
            agent.send_signal(signal.SIGTERM)
            _, err = agent.communicate(timeout=GUARD)
            assert agent.returncode == 0, err.decode()
        finally:
            if agent.poll() is None:
                agent.kill()
                agent.wait()
