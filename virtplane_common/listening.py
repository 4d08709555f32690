"""Adding a listening address to a gRPC server, with one error for a port
that cannot be had.

The servers set SO_REUSEPORT off (virtplane_common.grpc_limits.SERVER_OPTIONS),
so an address another process listens on is refused here instead of being
shared with it. gRPC returns 0 for a failed bind in some versions and raises
RuntimeError in others; both become OSError naming the address.
"""

from __future__ import annotations

import grpc


def listen(
    server: grpc.aio.Server, address: str, credentials: grpc.ServerCredentials | None = None
) -> int:
    """Adds address (TLS with credentials, else plaintext) to server; its port."""
    try:
        if credentials is None:
            port = server.add_insecure_port(address)
        else:
            port = server.add_secure_port(address, credentials)
    except RuntimeError:
        port = 0
    if port == 0:
        raise OSError(
            f"cannot listen on {address}: another process has the port, "
            "or the address is not one of this machine's"
        )
    return port
