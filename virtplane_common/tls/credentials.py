"""gRPC credentials from virtplane key pairs.

A server's certificate is renewed while it serves: ServingCertificate hands
gRPC a fetcher that gRPC asks at each new handshake, so connections made after
replace() get the new certificate and open ones keep theirs. A channel's
credentials are fixed when it is made: a client whose certificate is renewed
makes new channels (controller.hosts does).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import cast

import grpc

from virtplane_common.tls.files import KeyPair
from virtplane_common.tls.names import host_dns_name


class ServingCertificate:
    """The key pair a server presents, replaceable while it serves."""

    def __init__(self, pair: KeyPair) -> None:
        self._lock = threading.Lock()
        self._pair = pair
        self._version = 0

    @property
    def pair(self) -> KeyPair:
        with self._lock:
            return self._pair

    def replace(self, pair: KeyPair) -> None:
        with self._lock:
            self._pair = pair
            self._version += 1

    def credentials(self, *, require_client_auth: bool) -> grpc.ServerCredentials:
        """Server credentials presenting this certificate; with
        require_client_auth, a client must present a certificate the CA signed."""
        with self._lock:
            seen = self._version
            first = _configuration(self._pair)

        def fetch() -> grpc.ServerCertificateConfiguration | None:
            nonlocal seen
            with self._lock:
                if self._version == seen:
                    return None
                seen = self._version
                return _configuration(self._pair)

        # gRPC takes None from the fetcher as "no change"; its stubs do not say so.
        fetcher = cast(Callable[[], grpc.ServerCertificateConfiguration], fetch)
        return grpc.dynamic_ssl_server_credentials(
            first, fetcher, require_client_authentication=require_client_auth
        )


def _configuration(pair: KeyPair) -> grpc.ServerCertificateConfiguration:
    return grpc.ssl_server_certificate_configuration([(pair.key, pair.cert)], pair.ca)


def channel_credentials(ca: bytes, pair: KeyPair | None = None) -> grpc.ChannelCredentials:
    """Credentials trusting ca, presenting pair's certificate if given."""
    if pair is None:
        return grpc.ssl_channel_credentials(root_certificates=ca)
    return grpc.ssl_channel_credentials(
        root_certificates=ca, private_key=pair.key, certificate_chain=pair.cert
    )


def host_options(host_id: str) -> list[tuple[str, str]]:
    """Channel options that make TLS accept only the host with this id."""
    return [("grpc.ssl_target_name_override", host_dns_name(host_id))]
