"""A test hostd's identity, and channels to it over mutual TLS as the
controller dials it.

A hostd in the tests has an identity written by TestPki (give_identity) or
got by enrollment; a test reaches it with a controller-role certificate from
the same TestPki, and TLS accepts only the hostd whose certificate names
host_id (host_options).
"""

from __future__ import annotations

import weakref
from pathlib import Path

import grpc

from hostd.identity import tls_files
from tests.support.pki import TestPki
from virtplane_common.tls.credentials import channel_credentials, host_options
from virtplane_common.tls.files import KeyPair
from virtplane_common.tls.names import Role

TEST_HOST_ID = "host-under-test"
"""The host id of a test hostd given its identity by TestPki."""


def give_identity(pki: TestPki, state_dir: Path, host_id: str = TEST_HOST_ID) -> KeyPair:
    """Writes a host pair of pki for host_id into state_dir/tls, as enrollment
    would; a hostd started on state_dir serves mutual TLS with it."""
    pair = pki.pair(Role.HOST, host_id)
    pair.write(tls_files(state_dir))
    return pair


_CONTROLLERS: weakref.WeakKeyDictionary[TestPki, KeyPair] = weakref.WeakKeyDictionary()


def controller_pair(pki: TestPki) -> KeyPair:
    """A controller's pair from pki (made once per TestPki)."""
    pair = _CONTROLLERS.get(pki)
    if pair is None:
        pair = _CONTROLLERS[pki] = pki.pair(Role.CONTROLLER)
    return pair


def hostd_channel(
    address: str, pki: TestPki, host_id: str, pair: KeyPair | None = None
) -> grpc.aio.Channel:
    """An aio channel to the hostd at address that names host_id, presenting
    pair (by default a controller's)."""
    pair = pair or controller_pair(pki)
    return grpc.aio.secure_channel(
        address, channel_credentials(pki.ca_pem, pair), options=host_options(host_id)
    )


def hostd_sync_channel(
    address: str, pki: TestPki, host_id: str, pair: KeyPair | None = None
) -> grpc.Channel:
    """hostd_channel, blocking (for readiness waits outside an event loop)."""
    pair = pair or controller_pair(pki)
    return grpc.secure_channel(
        address, channel_credentials(pki.ca_pem, pair), options=host_options(host_id)
    )
