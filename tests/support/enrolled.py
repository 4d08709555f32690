"""Enrolled hosts in end-to-end tests: a hostd run once to enroll (and
expected to be refused), what a hostd's tls/ folder holds, what the
controller says of a host, and the certificate a hostd serves now.

hostds here run on libvirt's test driver (TEST_URI) unless a test gives
another URI: enrollment, identity and revocation need no guest.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import subprocess
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509

import virtplane_client as vp
from hostd.identity import host_id_of, tls_files
from tests.support.connect import served_certificate
from tests.support.real import IMAGE_ROOTS
from tests.support.stack import BIN, Daemon, free_port
from virtplane_common.tls.files import write_private

TEST_URI = "test:///default"


@dataclass(frozen=True)
class Refusal:
    """A hostd run that ended: its exit code and what it printed."""

    returncode: int
    output: str


def enroll_once(controller: Daemon, state_dir: Path, token: str, within: float = 60) -> Refusal:
    """Runs a hostd on state_dir that enrolls with token, as an operator
    would start it, until it exits (it is expected to be refused). Fails
    (TimeoutExpired) if it is still running after `within` seconds: it enrolled."""
    state_dir.mkdir(parents=True, exist_ok=True)
    token_file = state_dir.parent / f"{state_dir.name}.token"
    write_private(token_file, token.encode())
    argv = [
        str(BIN / "virtplane-hostd"),
        "--listen", f"127.0.0.1:{free_port()}",
        "--libvirt-uri", TEST_URI,
        "--state-dir", str(state_dir),
        "--qemu-tls-dir", str(state_dir.parent / f"{state_dir.name}-qemu-tls"),
        *(arg for root in IMAGE_ROOTS for arg in ("--image-root", str(root))),
        "--controller", controller.address,
        "--controller-ca", str(controller.ca_file),
        "--enroll-token-file", str(token_file),
    ]  # fmt: skip
    done = subprocess.run(argv, capture_output=True, text=True, timeout=within, check=False)
    return Refusal(done.returncode, done.stdout + done.stderr)


def state_dir(hostd: Daemon) -> Path:
    """The --state-dir of a hostd started by tests.support.stack."""
    return hostd.log_path.parent / "hostd"


def certificate(hostd: Daemon) -> x509.Certificate:
    """The certificate in the hostd's tls/ folder."""
    return x509.load_pem_x509_certificate(tls_files(state_dir(hostd)).cert.read_bytes())


def named_host(hostd: Daemon) -> str | None:
    """The host id the certificate in the hostd's tls/ folder names."""
    return host_id_of(tls_files(state_dir(hostd)).cert.read_bytes())


def revoked_serials(hostd: Daemon) -> set[int]:
    """The serials in the CRL the hostd holds (tls/crl.pem; none without one)."""
    crl_file = tls_files(state_dir(hostd)).crl
    if not crl_file.is_file():
        return set()
    crl = x509.load_pem_x509_crl(crl_file.read_bytes())
    return {revoked.serial_number for revoked in crl}


async def served_serial(hostd: Daemon) -> int:
    """The serial of the certificate the hostd presents to a new connection."""
    assert hostd.pki is not None, "a plaintext hostd serves no certificate"
    cert = await asyncio.to_thread(served_certificate, hostd.address, hostd.pki, hostd.host_id)
    return cert.serial_number


async def host_states(client: vp.AsyncClient) -> dict[str, vp.HostState]:
    """Each host's state by its name, as ListHosts shows it."""
    return {h.name: h.status.state for h in await client.hosts.list()}


async def host_state(client: vp.AsyncClient, name: str) -> vp.HostState:
    return (await client.hosts.get(name)).status.state


def host_cert_lifetime(seconds: float) -> tuple[str, ...]:
    """The controller's arguments that give hosts certificates of `seconds`
    (renewed after 2/3 of it: controller.enrollment.records.renew_at)."""
    return ("--host-cert-days", repr(seconds / 86400))


async def renewed_while(
    serving: Callable[[], Awaitable[int]],
    serial: int,
    steady: Callable[[], Awaitable[None]],
    within: float = 60.0,
) -> int:
    """Waits until serving() (the serial a daemon serves now) is other than
    serial, awaiting steady() (which asserts what must hold meanwhile) every
    half second, and once more a second after the change; returns the new
    serial."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while loop.time() < deadline:
        await steady()
        served = await serving()
        if served != serial:
            await asyncio.sleep(1)
            await steady()
            return served
        await asyncio.sleep(0.5)
    raise AssertionError(f"serial {serial} still served after {within} s")


def controller_serial(controller: Daemon) -> int:
    """The serial of the certificate the controller presents on --listen now
    (a TLS handshake of its own; blocking: call it in a thread)."""
    context = ssl.create_default_context(cafile=str(controller.ca_file))
    context.set_alpn_protocols(["h2"])
    host, _, port = controller.address.rpartition(":")
    with (
        socket.create_connection((host, int(port)), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname=host) as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der).serial_number
