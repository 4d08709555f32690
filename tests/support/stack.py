"""Running the real daemons (controller, hostd) as processes on loopback, for
the end-to-end tests, the demo and the benchmarks: start one, wait until it
answers, read its log, stop it.

A controller serves TLS with authentication on, as deployed: its CA and the
bootstrap admin's token are in its --state-dir, and Daemon.credentials() is
what a client of it needs (the CLI: Daemon.environment()). Controllers
sharing a database share a state folder (one CA, one admin). It speaks
plaintext to hosts while hostd serves plaintext (plaintext_hosts).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

import virtplane_client as vp
from controller.auth.principals import ADMIN_TOKEN_FILE
from controller.pki.store import PkiSettings, open_ca
from tests.support.connect import TEST_HOST_ID, give_identity, hostd_channel, hostd_sync_channel
from tests.support.pki import TestPki
from tests.support.real import IMAGE_ROOTS
from tests.support.waiting import until_sync
from virtplane_common.tls.files import write_private

BIN = Path(sys.executable).parent


def free_port() -> int:
    """A TCP port free on loopback now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Daemon:
    name: str
    address: str
    log_path: Path
    process: subprocess.Popen[bytes]
    state_dir: Path | None = None
    """A controller's --state-dir (its CA, the admin's token); None: plaintext."""
    pki: TestPki | None = None
    """A hostd's CA when it serves mutual TLS (a controller's pair of it reaches it)."""
    host_id: str = ""

    def channel(self) -> grpc.aio.Channel:
        """An aio channel to the daemon: as the controller, to a hostd with an identity."""
        if self.pki is None:
            return grpc.aio.insecure_channel(self.address)
        return hostd_channel(self.address, self.pki, self.host_id)

    @property
    def ca_file(self) -> Path:
        assert self.state_dir is not None, f"{self.name} serves plaintext"
        return self.state_dir / "pki" / "ca.pem"

    def credentials(self) -> vp.Credentials:
        """The CA and the bootstrap admin's token (plaintext without a state_dir)."""
        if self.state_dir is None:
            return vp.INSECURE_DEVELOPMENT
        token = (self.state_dir / ADMIN_TOKEN_FILE).read_text().strip()
        return vp.Credentials(ca=self.ca_file, token=token)

    def client(self, **options: Any) -> vp.AsyncClient:
        """An AsyncClient of this controller, as the admin."""
        return vp.AsyncClient(self.address, credentials=self.credentials(), **options)

    def environment(self) -> dict[str, str]:
        """The CLI's environment for this controller, as the admin."""
        env = {"VIRTPLANE_ADDRESS": self.address, "VIRTPLANE_CONTROLLER": self.address}
        if self.state_dir is None:
            return {**env, "VIRTPLANE_INSECURE_DEV": "1"}
        token = str(self.credentials().token)
        return {**env, "VIRTPLANE_CA": str(self.ca_file), "VIRTPLANE_TOKEN": token}

    def _sync_channel(self) -> grpc.Channel:
        if self.pki is not None:
            return hostd_sync_channel(self.address, self.pki, self.host_id)
        if self.state_dir is None:
            return grpc.insecure_channel(self.address)
        until_sync(
            self._written,
            what=f"{self.name} to write its CA and token in {self.state_dir}",
            every=0.05,
        )
        creds = grpc.ssl_channel_credentials(self.ca_file.read_bytes())
        return grpc.secure_channel(self.address, creds)

    def _written(self) -> bool:
        if self.process.poll() is not None:
            raise RuntimeError(f"{self.name} exited: {self.log_tail()}")
        assert self.state_dir is not None
        return self.ca_file.is_file() and (self.state_dir / ADMIN_TOKEN_FILE).is_file()

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Waits until the daemon's gRPC port answers; fails with the end of its
        log if it does not, and at once if it exits."""
        with self._sync_channel() as channel:
            until_sync(
                lambda: self._answers(channel),
                lambda answer: answer == "ready",
                what=f"{self.name} to answer at {self.address}",
                within=timeout,
                every=0,
            )

    def _answers(self, channel: grpc.Channel) -> str:
        """'ready', or the end of the log of a daemon not answering yet."""
        if self.process.poll() is not None:
            raise RuntimeError(f"{self.name} exited: {self.log_tail()}")
        ready = grpc.channel_ready_future(channel)
        try:
            ready.result(timeout=0.5)
        except grpc.FutureTimeoutError:
            ready.cancel()  # its polling thread stops before the channel closes
            return self.log_tail()
        return "ready"

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self, timeout: float = 15.0) -> None:
        if self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def kill(self) -> None:
        self.process.kill()
        self.process.wait()


def _spawn(
    name: str,
    argv: list[str],
    log_path: Path,
    address: str,
    env: Mapping[str, str] | None = None,
    *,
    pki: TestPki | None = None,
    host_id: str = "",
) -> Daemon:
    log = log_path.open("ab")
    env = dict(os.environ, PYTHONUNBUFFERED="1", **(env or {}))
    process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env)
    log.close()
    return Daemon(name, address, log_path, process, pki=pki, host_id=host_id)


def start_hostd(
    workdir: Path,
    libvirt_uri: str = "qemu:///system",
    port: int | None = None,
    extra: tuple[str, ...] = (),
    env: Mapping[str, str] | None = None,
    *,
    pki: TestPki | None = None,
    host_id: str = TEST_HOST_ID,
) -> Daemon:
    """A hostd process on the test image roots (tests.support.real.IMAGE_ROOTS);
    extra: more arguments; env: more environment variables.

    With pki, it serves mutual TLS as host host_id, its identity written by
    pki into its state folder (kept when one is there: a restart) unless extra
    enrolls it (--enroll-token-file); without, it runs with
    --insecure-plaintext-dev."""
    address = f"127.0.0.1:{port or free_port()}"
    state = workdir / "hostd"
    enrolling = "--enroll-token-file" in extra
    if pki is not None and not enrolling and not (state / "tls" / "cert.pem").exists():
        give_identity(pki, state, host_id)
    security = () if pki is not None else ("--insecure-plaintext-dev",)
    if "--qemu-tls-dir" not in extra:  # the machine's libvirtd's folder only when asked
        extra = (*extra, "--qemu-tls-dir", str(workdir / "qemu-tls"))
    argv = [
        str(BIN / "virtplane-hostd"),
        "--listen", address,
        "--libvirt-uri", libvirt_uri,
        "--state-dir", str(state),
        *(arg for root in IMAGE_ROOTS for arg in ("--image-root", str(root))),
        *security,
        *extra,
    ]  # fmt: skip
    daemon = _spawn(
        "hostd", argv, workdir / "hostd.log", address, env, pki=pki, host_id=host_id if pki else ""
    )
    daemon.wait_ready()
    return daemon


def start_controller(
    workdir: Path,
    database_url: str | None = None,
    *,
    state_dir: Path | None = None,
    plaintext_hosts: bool = False,
    extra: tuple[str, ...] = (),
) -> Daemon:
    """A controller serving TLS with authentication on; state_dir (default
    workdir/controller-state) holds its CA and the admin's token. It speaks
    mutual TLS to hosts (added with start_host); with plaintext_hosts,
    plaintext to development hostds without an identity (the scale
    benchmark's simulated hosts)."""
    address = f"127.0.0.1:{free_port()}"
    url = database_url or f"sqlite:///{workdir / 'controller.db'}"
    state = state_dir or workdir / "controller-state"
    argv = [
        str(BIN / "virtplane-controller"),
        "--listen", address,
        "--database", url,
        "--state-dir", str(state),
        *(["--plaintext-hosts-dev"] if plaintext_hosts else []),
        *extra,
    ]  # fmt: skip
    daemon = _spawn("controller", argv, workdir / "controller.log", address)
    if "--insecure-plaintext-dev" not in extra:
        daemon.state_dir = state
    daemon.wait_ready()
    return daemon


def controller_pki(controller: Daemon, folder: Path) -> TestPki:
    """A TestPki on the controller's own CA (read from its state folder):
    hostds given identities from it are ones the controller trusts."""
    assert controller.state_dir is not None, "a plaintext controller has no CA"
    return TestPki.of(open_ca(PkiSettings(controller.state_dir / "pki")), folder)


def start_host(
    controller: Daemon,
    workdir: Path,
    name: str,
    libvirt_uri: str = "qemu:///system",
    extra: tuple[str, ...] = (),
) -> Daemon:
    """A hostd added to controller as host name and enrolled as an operator
    enrolls one: AddHost's one-time token in a file, hostd started with the
    controller's address and CA; returns once the controller has it UP. The
    returned Daemon's channel() reaches it as the controller (a controller pair
    from the controller's CA)."""
    host = register_host(controller, name)
    return start_registered(controller, workdir, host, libvirt_uri, extra)


@dataclass(frozen=True)
class Registered:
    """A host AddHost made (its id and one-time enrollment token), not yet enrolled."""

    name: str
    host_id: str
    port: int
    token: str


def register_host(controller: Daemon, name: str) -> Registered:
    """AddHost of name at a free local port: the host's id and token."""
    port = free_port()
    with vp.Client(controller.address, credentials=controller.credentials()) as client:
        added = client.hosts.register(name, f"127.0.0.1:{port}")
    assert added.token is not None, "AddHost returned no enrollment token"
    return Registered(name, added.host.id, port, added.token.secret)


def start_registered(
    controller: Daemon,
    workdir: Path,
    host: Registered,
    libvirt_uri: str = "qemu:///system",
    extra: tuple[str, ...] = (),
) -> Daemon:
    """The hostd of a registered host, enrolled with its token (start_host)."""
    token_file = workdir / f"{host.name}.token"
    write_private(token_file, host.token.encode())
    enroll = (
        "--controller", controller.address,
        "--controller-ca", str(controller.ca_file),
        "--enroll-token-file", str(token_file),
    )  # fmt: skip
    pki = controller_pki(controller, workdir / "pki")
    hostd = start_hostd(
        workdir, libvirt_uri, host.port, (*enroll, *extra), pki=pki, host_id=host.host_id
    )
    with vp.Client(controller.address, credentials=controller.credentials()) as client:
        until_sync(
            lambda: client.hosts.get(host.host_id).status.state,
            lambda state: state == vp.HostState.UP,
            what=f"host {host.name} to be UP once enrolled",
        )
    return hostd


@dataclass
class Stack:
    """A controller and one hostd, added to it as host "local" (mutual TLS,
    the hostd's identity from the controller's CA)."""

    workdir: Path
    controller: Daemon
    hostd: Daemon
    daemons: list[Daemon] = field(default_factory=list)

    def stop(self) -> None:
        for daemon in (self.controller, self.hostd, *self.daemons):
            daemon.stop()


def workdir_db(stack: Stack) -> Path:
    """The SQLite file of the stack's controller."""
    return stack.workdir / "controller.db"


def start_stack(workdir: Path, libvirt_uri: str) -> Stack:
    """A controller (on SQLite) and a hostd on libvirt_uri, both in workdir."""
    controller = start_controller(workdir, plaintext_hosts=False)
    try:
        hostd = start_host(controller, workdir, "local", libvirt_uri)
    except Exception:
        controller.stop()
        raise
    return Stack(workdir, controller, hostd)
