"""The agent over a socket pair, driven by a test host that frames HostMessages.

No assertion depends on timing: the host waits (with a generous guard) for the
message it expects, and absence is shown by ordering (the agent handles host
messages in order, so the answer to a later message proves an earlier one
produced nothing).
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest
from virtplane.v1 import guest_channel_pb2 as gc

from guestd.agent import PROTOCOL_MAX_VERSION, PROTOCOL_MIN_VERSION, Agent, AgentConfig
from guestd.power import POWEROFF, REBOOT, PowerScheduler
from guestd.report import SECTIONS
from tests.guestd.fakehost import GUARD, FakeHost
from tests.guestd.fakeroot import DPKG_STATUS, FakeRoot
from virtplane_common.framing import encode


class FakePower:
    """Stands in for powering the machine off: records the action."""

    def __init__(self) -> None:
        self.actions: list[str] = []
        self.acted = threading.Event()

    def __call__(self, action: str) -> None:
        self.actions.append(action)
        self.acted.set()


class Running:
    def __init__(self, root: FakeRoot, interval: float, power_commands: bool = True) -> None:
        host_sock, agent_sock = socket.socketpair()
        agent_sock.setblocking(False)
        self.sockets = (host_sock, agent_sock)
        self.root = root
        config = AgentConfig(
            root=root.path,
            heartbeat_interval=interval,
            retry_delay=0.02,
            agent_version="9.9",
            power_commands=power_commands,
        )
        self.power = FakePower()
        self.scheduler = PowerScheduler(root.path, power=self.power)
        self.agent = Agent(agent_sock.fileno(), config, power=self.scheduler)
        self.host = FakeHost(host_sock)
        self.errors: list[BaseException] = []
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            self.agent.run()
        except BaseException as exc:
            self.errors.append(exc)
            raise

    def close(self) -> None:
        self.agent.stop()
        self.thread.join(GUARD)
        for sock in self.sockets:
            sock.close()
        assert not self.thread.is_alive()
        assert not self.errors


def _start(root: FakeRoot, interval: float) -> Iterator[Running]:
    yield from _start_with(root, interval)


def _start_with(
    root: FakeRoot, interval: float = 0.05, power_commands: bool = True
) -> Iterator[Running]:
    running = Running(root, interval, power_commands)
    running.thread.start()
    try:
        yield running
    finally:
        running.close()


@pytest.fixture
def running(fake_root: FakeRoot) -> Iterator[Running]:
    """An agent with a heartbeat interval short enough for tests to see ticks."""
    yield from _start(fake_root, 0.05)


@pytest.fixture
def quiet(fake_root: FakeRoot) -> Iterator[Running]:
    """An agent whose first tick is far beyond any test."""
    yield from _start(fake_root, 3600.0)


def _sections(report: gc.GuestReport) -> set[str]:
    return {f.name for f, _ in report.ListFields() if f.name != "full"}


def test_hello_on_start_and_on_request(quiet: Running):
    host = quiet.host
    first = host.next()
    assert first.WhichOneof("body") == "hello"
    assert first.hello.min_version == PROTOCOL_MIN_VERSION
    assert first.hello.max_version == PROTOCOL_MAX_VERSION
    assert first.hello.agent_version == "9.9"
    assert first.hello.heartbeat_interval_ms == 3_600_000
    assert first.sequence == 1
    assert first.agent_instance == quiet.agent.instance
    assert first.sent_unix_nanos > 0
    host.send(gc.HostMessage(hello=gc.HostHello(min_version=1, max_version=3)))
    assert host.next().WhichOneof("body") == "hello"


def test_version_choice_brings_a_full_report(quiet: Running):
    host = quiet.host
    host.expect("hello")
    report = host.agree()
    assert _sections(report) == set(SECTIONS)
    assert report.system.hostname == "guest-1"
    assert report.os.name == "Debian GNU/Linux"
    assert [i.mac_address for i in report.network.interfaces] == [
        "52:54:00:12:34:ab",
        "52:54:00:12:34:cd",
    ]
    assert list(report.applications.applications) == ["bash 5.2.15-2+b2", "python3 3.11.2-1+b1"]
    assert quiet.agent.version == 1


def test_heartbeats_after_agreement(running: Running):
    host = running.host
    host.expect("hello")
    host.agree()
    heartbeat = host.expect("heartbeat").heartbeat
    assert heartbeat.free_memory_kib == 180000
    assert heartbeat.uptime_seconds == 123.45
    host.expect("heartbeat")


def test_a_new_ipv4_address_comes_as_a_network_only_report(running: Running):
    host = running.host
    host.expect("hello")
    host.agree()
    host.expect("heartbeat")
    running.root.set_ipv4({"eth0": "10.0.2.15"})
    report = host.expect("report").report
    assert not report.full
    assert _sections(report) == {"network"}
    assert list(report.network.interfaces[0].ipv4_addresses) == ["10.0.2.15"]


def test_changed_os_release_comes_as_an_os_only_report(running: Running):
    host = running.host
    host.expect("hello")
    host.agree()
    running.root.write("etc/os-release", "NAME=Upgraded\nVERSION_ID=13\nID=debian\n")
    report = host.expect("report").report
    assert not report.full
    assert _sections(report) == {"os"}
    assert (report.os.name, report.os.version) == ("Upgraded", "13")


def test_installed_package_comes_as_an_applications_only_report(running: Running):
    host = running.host
    host.expect("hello")
    host.agree()
    running.root.write(
        "var/lib/dpkg/status",
        DPKG_STATUS + "\nPackage: curl\nStatus: install ok installed\nVersion: 8.0\n",
    )
    report = host.expect("report").report
    assert _sections(report) == {"applications"}
    assert "curl 8.0" in report.applications.applications


def test_ping_pong(quiet: Running):
    host = quiet.host
    host.expect("hello")
    host.agree()
    host.send(gc.HostMessage(ping=gc.Ping(payload=b"\x00echo\xff")))
    assert host.expect("pong").pong.payload == b"\x00echo\xff"


def test_refresh_brings_a_full_report(quiet: Running):
    host = quiet.host
    host.expect("hello")
    host.agree()
    quiet.root.write("proc/sys/kernel/hostname", "renamed\n")
    host.send(gc.HostMessage(refresh=gc.Refresh()))
    report = host.expect("report").report
    assert report.full
    assert _sections(report) == set(SECTIONS)
    assert report.system.hostname == "renamed"


def test_unsupported_version_brings_nothing_but_hellos(running: Running):
    host = running.host
    host.expect("hello")
    host.send(gc.HostMessage(version_choice=gc.VersionChoice(version=PROTOCOL_MAX_VERSION + 1)))
    host.send(gc.HostMessage(refresh=gc.Refresh()))
    host.send(gc.HostMessage(ping=gc.Ping(payload=b"p")))
    host.send(gc.HostMessage(hello=gc.HostHello()))
    # Had any of the first three produced a message, it would come before this hello.
    assert host.expect("hello", skip=()).hello.max_version == PROTOCOL_MAX_VERSION
    assert running.agent.version is None


def test_unsupported_version_ends_a_session(running: Running):
    host = running.host
    host.expect("hello")
    host.agree()
    host.send(gc.HostMessage(version_choice=gc.VersionChoice(version=0)))
    host.send(gc.HostMessage(hello=gc.HostHello()))
    host.expect("hello")
    # Once the agent answered the hello it had ended the session: nothing follows it.
    host.send(gc.HostMessage(ping=gc.Ping()))
    host.send(gc.HostMessage(hello=gc.HostHello()))
    assert host.expect("hello", skip=()).WhichOneof("body") == "hello"
    assert running.agent.version is None


def test_sequences_strictly_increase(running: Running):
    host = running.host
    host.expect("hello")
    host.agree()
    host.send(gc.HostMessage(ping=gc.Ping()))
    host.expect("pong")
    host.send(gc.HostMessage(refresh=gc.Refresh()))
    host.expect("report")
    host.expect("heartbeat")
    sequences = [m.sequence for m in host.received]
    assert sequences == list(range(1, len(sequences) + 1))
    assert {m.agent_instance for m in host.received} == {running.agent.instance}


def test_garbage_does_not_kill_the_agent(quiet: Running):
    host = quiet.host
    host.expect("hello")
    host.agree()
    host.sock.sendall(b"\xf0VPG" + bytes(range(256)) * 8)
    host.sock.sendall(encode(b"\xff\xff\xff not a protobuf"))
    host.sock.sendall(encode(b"\x80\x01\x02"))
    # Unknown fields only: parses as a HostMessage without a body, which is ignored.
    host.sock.sendall(encode(b"\xa8\x06\x01"))
    host.send(gc.HostMessage(ping=gc.Ping(payload=b"still here")))
    assert host.expect("pong").pong.payload == b"still here"


def test_every_host_body_has_a_handler(quiet: Running):
    oneof = gc.HostMessage.DESCRIPTOR.oneofs_by_name["body"]
    assert quiet.agent.handled_bodies == {f.name for f in oneof.fields}


def test_agent_survives_the_host_going_away(fake_root: FakeRoot):
    running = Running(fake_root, 0.05)
    running.thread.start()
    running.host.expect("hello")
    running.host.agree()
    running.sockets[0].close()
    deadline = time.monotonic() + GUARD
    while running.agent.host_connected and time.monotonic() < deadline:
        time.sleep(0.01)
    # The agent now waits for a host that will not come back; it must stay up and stop cleanly.
    assert not running.agent.host_connected
    assert running.agent.version is None
    assert running.thread.is_alive()
    running.close()


def test_a_failing_collector_does_not_kill_the_agent(
    running: Running, monkeypatch: pytest.MonkeyPatch
):
    host = running.host
    host.expect("hello")
    host.agree()

    def broken(root: object) -> None:
        raise RuntimeError("collector bug")

    monkeypatch.setattr("guestd.report.os_section", broken)
    host.send(gc.HostMessage(refresh=gc.Refresh()))
    host.expect("heartbeat")
    monkeypatch.undo()
    host.send(gc.HostMessage(ping=gc.Ping(payload=b"ok")))
    assert host.expect("pong", skip=("heartbeat", "report")).pong.payload == b"ok"


def test_shutdown_is_answered_then_carried_out(running: Running):
    host = running.host
    running.root.write("dev/console", "")
    host.expect("hello")
    host.agree()
    host.send(gc.HostMessage(shutdown=gc.Shutdown(delay_seconds=0, message="bye")))
    result = host.expect("command_result", skip=("heartbeat", "report")).command_result
    assert (result.command_sequence, result.accepted, result.error) == (host.sequence, True, "")
    assert running.power.acted.wait(GUARD)
    assert running.power.actions == [POWEROFF]
    assert b"power off now: bye" in (running.root.path / "dev/console").read_bytes()


def test_a_delayed_reboot_does_not_stop_heartbeats(running: Running):
    host = running.host
    host.expect("hello")
    host.agree()
    host.send(gc.HostMessage(reboot=gc.Reboot(delay_seconds=3600, message="later")))
    result = host.expect("command_result", skip=("heartbeat", "report")).command_result
    assert result.accepted and result.command_sequence == host.sequence
    host.expect("heartbeat")
    host.expect("heartbeat")
    host.send(gc.HostMessage(ping=gc.Ping(payload=b"alive")))
    assert host.expect("pong", skip=("heartbeat", "report")).pong.payload == b"alive"
    assert running.power.actions == []


def test_a_later_command_replaces_a_pending_one(running: Running):
    host = running.host
    host.expect("hello")
    host.agree()
    host.send(gc.HostMessage(shutdown=gc.Shutdown(delay_seconds=3600)))
    host.send(gc.HostMessage(reboot=gc.Reboot(delay_seconds=0)))
    results = [
        host.expect("command_result", skip=("heartbeat", "report")).command_result for _ in range(2)
    ]
    assert [r.command_sequence for r in results] == [host.sequence - 1, host.sequence]
    assert running.power.acted.wait(GUARD)
    assert running.power.actions == [REBOOT]


def test_power_commands_can_be_disabled(fake_root: FakeRoot):
    for running in _start_with(fake_root, power_commands=False):
        host = running.host
        host.expect("hello")
        host.agree()
        host.send(gc.HostMessage(reboot=gc.Reboot()))
        result = host.expect("command_result", skip=("heartbeat", "report")).command_result
        assert not result.accepted
        assert "disabled" in result.error
        assert running.power.actions == []


def test_commands_before_a_version_is_agreed_are_ignored(quiet: Running):
    host = quiet.host
    host.expect("hello")
    host.send(gc.HostMessage(shutdown=gc.Shutdown()))
    host.send(gc.HostMessage(hello=gc.HostHello()))
    assert host.expect("hello", skip=()).WhichOneof("body") == "hello"
    assert quiet.power.actions == []


def test_full_report_has_the_new_sections(quiet: Running):
    host = quiet.host
    quiet.root.set_logins([(31337, "ttyS0", "root", "", 1_700_000_000)])
    host.expect("hello")
    report = host.agree()
    assert report.system.fqdn == "guest-1.example.org"
    assert report.system.timezone == "Europe/Paris"
    assert report.system.memory_total_kib == 250000
    assert [u.name for u in report.users.users] == ["root"]
    assert report.HasField("filesystems")
    assert all(getattr(report, name).content_hash for name in SECTIONS)


def test_a_login_comes_as_a_users_only_report(running: Running):
    host = running.host
    host.expect("hello")
    host.agree()
    running.root.set_logins([(31337, "pts/0", "alice", "10.1.1.1", 1_700_000_000)])
    report = host.expect("report").report
    assert _sections(report) == {"users"}
    assert report.users.users[0].host == "10.1.1.1"


def test_a_pending_action_is_cancelled_when_the_agent_stops(fake_root: FakeRoot):
    running = Running(fake_root, 3600.0)
    running.thread.start()
    running.host.expect("hello")
    running.host.agree()
    running.host.send(gc.HostMessage(reboot=gc.Reboot(delay_seconds=3600)))
    running.host.expect("command_result")
    assert running.scheduler.pending
    running.close()
    assert not running.scheduler.pending
    assert running.power.actions == []
