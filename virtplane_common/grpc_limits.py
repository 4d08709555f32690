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
