"""A destination's gRPC errors as the source reports them: category kept, words kept."""

from __future__ import annotations

import grpc
import pytest

from hostd.errors import PeerRefused, PeerUnavailable
from hostd.model import PeerHost
from hostd.peers import GrpcPeers, _translate, address_host, check_template, peer_hypervisor_uri
from tests.support.hostd_rig import domain_config
from tests.support.stack import free_port
from virtplane_common.errors import (
    AlreadyExists,
    InvalidArgument,
    ResourceExhausted,
    VirtplaneError,
)


def _error(code: grpc.StatusCode, details: str) -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(), details, "")


@pytest.mark.parametrize(
    ("code", "category"),
    [
        (grpc.StatusCode.UNAVAILABLE, PeerUnavailable),
        (grpc.StatusCode.DEADLINE_EXCEEDED, PeerUnavailable),
        (grpc.StatusCode.ALREADY_EXISTS, AlreadyExists),
        (grpc.StatusCode.RESOURCE_EXHAUSTED, ResourceExhausted),
        (grpc.StatusCode.FAILED_PRECONDITION, PeerRefused),
        (grpc.StatusCode.INVALID_ARGUMENT, PeerRefused),
    ],
)
def test_errors_keep_their_category_and_words(
    code: grpc.StatusCode, category: type[VirtplaneError]
) -> None:
    error = _translate("host-b:7070", _error(code, "VM 'x' already exists on this host"))
    assert type(error) is category
    assert "host-b:7070" in str(error)
    assert "VM 'x' already exists on this host" in str(error)


async def test_nobody_listening_is_unavailable(boot_files: tuple[str, str]) -> None:
    address = f"127.0.0.1:{free_port()}"
    with pytest.raises(PeerUnavailable, match=f"hostd at {address} cannot be reached"):
        await GrpcPeers(timeout=5).prepare_incoming(
            PeerHost(address), domain_config(boot_files[0]), "a:1"
        )


@pytest.mark.parametrize(
    ("address", "host"),
    [("host-b:7070", "host-b"), ("192.0.2.7:1", "192.0.2.7"), ("[::1]:7070", "[::1]")],
)
def test_the_host_part_of_an_address(address: str, host: str) -> None:
    assert address_host(address) == host


def test_the_peer_hypervisor_uri_is_derived_from_the_template() -> None:
    peer = PeerHost("10.0.0.2:7070", "h2")
    assert peer_hypervisor_uri("qemu+tls://{address_host}/system", peer) == (
        "qemu+tls://10.0.0.2/system"
    )
    assert peer_hypervisor_uri("qemu+ssh://{host_id}.example/system", peer) == (
        "qemu+ssh://h2.example/system"
    )
    with pytest.raises(InvalidArgument, match="destination_host_id: required"):
        peer_hypervisor_uri("qemu+tls://{host_id}/system", PeerHost("10.0.0.2:7070"))
    check_template("qemu+tls://{address_host}/system")
    for bad in ("qemu+tls://{reply}/system", "qemu+tls://{/system", ""):
        with pytest.raises(InvalidArgument, match="peer_hypervisor_uri"):
            check_template(bad)
