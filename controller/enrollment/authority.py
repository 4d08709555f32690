"""The controller's certificate authority, shared by whoever signs.

The CA lives in ``<state_dir>/pki`` (controller.pki.store.open_ca), or is
the operator's own (--ca-cert/--ca-key). The controller opens it at start
when it requires authentication or was given a CA, otherwise when first
needed, so that a controller that never signs (plaintext development, no
host ever enrolled) writes no key; a CA handed in (tests, or the TLS set-up
that opened it at start) is used as it is.
"""

from __future__ import annotations

import datetime as dt
import threading

from controller.config import ControllerConfig
from controller.pki.ca import CertificateAuthority
from controller.pki.store import PkiSettings, open_ca

PKI_FOLDER = "pki"


def pki_settings(config: ControllerConfig) -> PkiSettings:
    """Where the controller's CA is, and the lifetimes of what it signs."""
    return PkiSettings(
        folder=config.state_dir / PKI_FOLDER,
        ca_cert=config.ca_cert,
        ca_key=config.ca_key,
        host_lifetime=dt.timedelta(days=config.host_cert_days),
    )


class Authority:
    """The CA, opened once, on first use (from any thread: the database's
    workers sign)."""

    def __init__(self, settings: PkiSettings, ca: CertificateAuthority | None = None) -> None:
        self.settings = settings
        self._ca = ca
        self._lock = threading.Lock()

    def get(self) -> CertificateAuthority:
        with self._lock:  # two first uses must not make two CAs
            if self._ca is None:
                self._ca = open_ca(self.settings)
            return self._ca
