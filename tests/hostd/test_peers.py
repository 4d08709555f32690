"""A destination's gRPC errors as the source reports them: category kept, words kept."""

from __future__ import annotations

import grpc
import pytest

from hostd.errors import PeerRefused, PeerUnavailable
from hostd.peers import GrpcPeers, _translate
from tests.support.hostd_rig import domain_config
from tests.support.stack import free_port
from virtplane_common.errors import AlreadyExists, ResourceExhausted, VirtplaneError


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
        await GrpcPeers(timeout=5).prepare_incoming(address, domain_config(boot_files[0]), "a:1")
