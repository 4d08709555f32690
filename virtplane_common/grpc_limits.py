"""Message sizes every gRPC server and channel of virtplane sets explicitly.

gRPC's defaults (4 MiB received, unlimited sent) are implicit and differ by
side; here one limit holds for both directions everywhere: the controller's
server and its channels to hosts, hostd's server and its channels to peers
and to the controller, and the client SDK. No reply is built to approach it:
hostd's ListVms leaves guest facts out (they come with the event stream),
and a VM's guest facts are capped (hostd.config.ChannelLimits).
"""

from __future__ import annotations

MAX_MESSAGE_BYTES = 16 * 1024 * 1024
"""The largest message sent or received, serialised."""

MESSAGE_SIZE_OPTIONS: tuple[tuple[str, int], ...] = (
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
)
"""Options for grpc.aio.server and for every channel."""

EXCLUSIVE_PORT: tuple[str, int] = ("grpc.so_reuseport", 0)
"""A server option: its port is its own. gRPC sets SO_REUSEPORT by default,
which lets a second process bind the same port and take part of the
connections (a second controller started on the port by mistake, or two test
daemons handed the same free port); without it the second bind fails."""

SERVER_OPTIONS: tuple[tuple[str, int], ...] = (*MESSAGE_SIZE_OPTIONS, EXCLUSIVE_PORT)
"""Options for every grpc.aio.server of virtplane."""
