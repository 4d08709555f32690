"""How the client proves who it is and whom it talks to.

Credentials name the CA that signed the controller's certificate (PEM, or
the path of a PEM file), and the client's own credential: an API token
(sent as ``authorization: Bearer …`` through gRPC call credentials, on top
of the TLS channel) or a client key pair (mutual TLS). The channel is TLS
unless insecure_development is set, which only a development controller
serving plaintext (no TLS, no authentication) accepts. Secrets are never
part of repr().
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from virtplane_common.grpc_limits import MESSAGE_SIZE_OPTIONS

Pem = bytes | str | Path
"""PEM text (bytes, or str starting with -----BEGIN), or a file's path."""


def read_pem(value: Pem) -> bytes:
    """The PEM bytes value holds or names."""
    if isinstance(value, bytes):
        return value
    if isinstance(value, str) and value.lstrip().startswith("-----BEGIN"):
        return value.encode()
    return Path(value).expanduser().read_bytes()


@dataclass(frozen=True)
class Credentials:
    """A CA to trust and one credential; or insecure_development alone."""

    ca: Pem | None = None
    """The CA of the controller's certificate; None: the system's roots."""
    token: str | None = field(default=None, repr=False)
    cert: Pem | None = None
    """The client certificate, for mutual TLS (with key)."""
    key: Pem | None = field(default=None, repr=False)
    insecure_development: bool = False
    """Plaintext, for a development controller without TLS: nothing is
    verified and nothing is secret."""

    def __post_init__(self) -> None:
        if (self.cert is None) != (self.key is None):
            raise ValueError("a client certificate needs its key, and a key its certificate")
        if self.insecure_development and (self.token or self.cert or self.ca):
            raise ValueError("insecure_development sends no credentials: drop them or it")

    def channel_credentials(self) -> grpc.ChannelCredentials:
        """TLS trusting ca, presenting the key pair, sending the token."""
        ca = read_pem(self.ca) if self.ca is not None else None
        if self.cert is not None and self.key is not None:
            tls = grpc.ssl_channel_credentials(ca, read_pem(self.key), read_pem(self.cert))
        else:
            tls = grpc.ssl_channel_credentials(ca)
        if not self.token:
            return tls
        return grpc.composite_channel_credentials(
            tls, grpc.access_token_call_credentials(self.token)
        )


INSECURE_DEVELOPMENT = Credentials(insecure_development=True)
TLS_DEFAULT = Credentials()
"""TLS trusting the system's roots, sending nothing: a client's default."""


def open_channel(
    target: str, credentials: Credentials, options: Sequence[tuple[str, int]]
) -> grpc.aio.Channel:
    """A channel to target with credentials."""
    if credentials.insecure_development:
        return grpc.aio.insecure_channel(target, options=[*MESSAGE_SIZE_OPTIONS, *options])
    return grpc.aio.secure_channel(
        target, credentials.channel_credentials(), [*MESSAGE_SIZE_OPTIONS, *options]
    )
