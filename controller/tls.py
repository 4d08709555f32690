"""The controller's TLS: its CA, its own key pair (renewed while it serves),
the ports it serves clients on, and the credentials it dials hosts with.

At start the CA is opened from ``<state_dir>/pki`` (or the operator's own,
controller.pki.store), and the controller's pair is read or issued again.
``--listen`` serves TLS with server authentication only (clients send bearer
tokens); ``--listen-mtls`` serves mutual TLS (clients present a certificate
the CA signed). Both present the same ServingCertificate, which the renewal
timer replaces once the pair is due: new handshakes get the new certificate,
open connections and streams keep theirs. The same pair is the controller's
client certificate towards hosts; a renewal hands new channel credentials to
whoever dials them (controller.hosts).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Callable

import grpc
from cryptography import x509

from controller.config import ControllerConfig
from controller.pki.ca import CertificateAuthority
from controller.pki.store import PkiSettings, controller_pair, open_ca, renewal_time
from virtplane_common.listening import listen
from virtplane_common.tls.credentials import ServingCertificate, channel_credentials

log = logging.getLogger(__name__)

DEFAULT_NAMES = ("localhost", "127.0.0.1", "::1")
_WILDCARDS = {"", "0.0.0.0", "::", "*"}
_MIN_WAIT = 1.0
_MAX_WAIT = 3600.0
"""Bounds of the wait between two looks at the pair (the clock may jump)."""

Renewed = Callable[[grpc.ChannelCredentials], None]


def listen_host(address: str) -> str:
    """The host part of host:port ([v6]:port too)."""
    host = address.rpartition(":")[0] if ":" in address else address
    return host.strip("[]")


def server_names(config: ControllerConfig) -> tuple[str, ...]:
    """The names in the controller's certificate: the configured ones, else
    the loopback names and the host --listen names."""
    if config.server_names:
        return tuple(config.server_names)
    names = list(DEFAULT_NAMES)
    for address in (config.listen, config.listen_mtls):
        host = listen_host(address)
        if host not in _WILDCARDS and host not in names:
            names.append(host)
    return tuple(names)


def pki_settings(config: ControllerConfig) -> PkiSettings:
    return PkiSettings(
        folder=config.state_dir / "pki",
        ca_cert=config.ca_cert,
        ca_key=config.ca_key,
        controller_lifetime=dt.timedelta(days=config.controller_cert_days),
        host_lifetime=dt.timedelta(days=config.host_cert_days),
        server_names=server_names(config),
    )


def warn_insecure() -> None:
    """The loud warning of a development controller."""
    log.warning(
        "INSECURE DEVELOPMENT MODE (--insecure-plaintext-dev): clients and hosts are"
        " spoken to in PLAINTEXT and NO ONE IS AUTHENTICATED; anyone who reaches"
        " this port controls every VM. Never use it on a network (SECURITY.md)."
    )


class ControllerTls:
    """The CA and the controller's serving certificate."""

    def __init__(self, ca: CertificateAuthority, settings: PkiSettings) -> None:
        self.ca = ca
        self.settings = settings
        self.serving = ServingCertificate(controller_pair(ca, settings))

    @classmethod
    def open(
        cls, config: ControllerConfig, ca: CertificateAuthority | None = None
    ) -> ControllerTls:
        """The TLS of config's state folder; ca: a CA given instead of the
        state folder's (tests)."""
        settings = pki_settings(config)
        return cls(ca or open_ca(settings), settings)

    @property
    def serial(self) -> int:
        """The serial number of the certificate served now."""
        return x509.load_pem_x509_certificate(self.serving.pair.cert).serial_number

    def add_ports(self, server: grpc.aio.Server, config: ControllerConfig) -> tuple[int, int]:
        """Adds --listen (TLS) and --listen-mtls (mutual TLS, if set) to
        server; returns their ports (0 for no mutual TLS port)."""
        port = listen(server, config.listen, self.serving.credentials(require_client_auth=False))
        if not config.listen_mtls:
            return port, 0
        mtls = listen(
            server, config.listen_mtls, self.serving.credentials(require_client_auth=True)
        )
        return port, mtls

    def host_credentials(self) -> grpc.ChannelCredentials:
        """Channel credentials towards hosts: trusting the CA, presenting
        the controller's pair."""
        return channel_credentials(self.ca.cert_pem, self.serving.pair)

    def renew(self) -> bool:
        """Issues the controller's pair again if it is due (or was changed
        on disk); True when the served certificate changed."""
        pair = controller_pair(self.ca, self.settings)
        if pair == self.serving.pair:
            return False
        self.serving.replace(pair)
        log.info("the controller's certificate was renewed (serial %d)", self.serial)
        return True

    def seconds_to_renewal(self) -> float:
        cert = x509.load_pem_x509_certificate(self.serving.pair.cert)
        left = (renewal_time(cert) - dt.datetime.now(dt.UTC)).total_seconds()
        return min(max(left, _MIN_WAIT), _MAX_WAIT)

    async def keep_renewed(self, renewed: Renewed) -> None:
        """Renews the pair whenever it is due, handing renewed the new host
        credentials; runs until cancelled."""
        while True:
            await asyncio.sleep(self.seconds_to_renewal())
            try:
                changed = await asyncio.to_thread(self.renew)
            except OSError:
                log.exception("renewing the controller's certificate failed; retrying")
                continue
            if changed:
                renewed(self.host_credentials())
