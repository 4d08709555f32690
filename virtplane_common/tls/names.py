"""Who a certificate names, and how the name is written in it.

Every certificate the virtplane CA signs carries exactly one URI subject
alternative name ``urn:virtplane:<role>[:<name>]``: the controller
(``urn:virtplane:controller``), a host by its id (``urn:virtplane:host:<id>``)
or a user (``urn:virtplane:user:<name>``). A host's certificate also carries
the DNS name ``<id>.hosts.virtplane``: whoever dials a host asks TLS to check
that name (grpc.ssl_target_name_override), so only the host with that id
completes the handshake, whatever address it answers on.
"""

from __future__ import annotations

import datetime as dt
import enum
import functools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from cryptography import x509

URI_PREFIX = "urn:virtplane:"
HOST_DNS_SUFFIX = ".hosts.virtplane"


class Role(enum.StrEnum):
    CONTROLLER = "controller"
    HOST = "host"
    USER = "user"


@dataclass(frozen=True)
class Identity:
    """A peer as its certificate names it."""

    role: Role
    name: str
    """The host id or user name; empty for the controller."""
    serial: int
    not_after: dt.datetime

    def __str__(self) -> str:
        return f"{self.role.value} {self.name}" if self.name else self.role.value


def identity_uri(role: Role, name: str = "") -> str:
    """The URI naming role (and name) in a certificate."""
    if role is Role.CONTROLLER:
        return f"{URI_PREFIX}{role.value}"
    if not name or ":" in name:
        raise ValueError(f"a {role.value} certificate needs a name without ':' (got {name!r})")
    return f"{URI_PREFIX}{role.value}:{name}"


def parse_uri(uri: str) -> tuple[Role, str] | None:
    """The role and name a virtplane URI names; None for any other URI."""
    if not uri.startswith(URI_PREFIX):
        return None
    role_text, _, name = uri[len(URI_PREFIX) :].partition(":")
    try:
        role = Role(role_text)
    except ValueError:
        return None
    if (role is Role.CONTROLLER) != (name == ""):
        return None
    return role, name


def host_dns_name(host_id: str) -> str:
    """The DNS name a host's certificate carries and its callers check."""
    return f"{host_id}{HOST_DNS_SUFFIX}"


def identity_of(cert: x509.Certificate) -> Identity | None:
    """The identity cert names, or None when it names none or more than one."""
    try:
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return None
    named = [
        parsed
        for uri in sans.get_values_for_type(x509.UniformResourceIdentifier)
        if (parsed := parse_uri(uri)) is not None
    ]
    if len(named) != 1:
        return None
    role, name = named[0]
    return Identity(role, name, cert.serial_number, cert.not_valid_after_utc)


@functools.lru_cache(maxsize=1024)
def _identity_of_pem(pem: bytes) -> Identity | None:
    try:
        cert = x509.load_pem_x509_certificate(pem)
    except ValueError:
        return None
    return identity_of(cert)


def peer_identity(auth_context: Mapping[str, Iterable[bytes]]) -> Identity | None:
    """The identity of a call's peer, from gRPC's auth context: None when the
    peer sent no certificate (TLS has verified any it sent against the CA)."""
    pems = list(auth_context.get("x509_pem_cert", ()))
    if len(pems) != 1:
        return None
    return _identity_of_pem(bytes(pems[0]))
