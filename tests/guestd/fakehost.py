"""The host end of the guest channel, for tests: frames HostMessages, reads GuestMessages."""

from __future__ import annotations

import socket
from collections import deque

from virtplane.v1 import guest_channel_pb2 as gc

from virtplane_common.framing import FrameDecoder, encode

GUARD = 10.0
"""Seconds before a test gives up waiting; never reached when things work."""


class FakeHost:
    """The host end of the channel."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        sock.settimeout(GUARD)
        self.decoder = FrameDecoder()
        self.sequence = 0
        self.unread: deque[gc.GuestMessage] = deque()
        self.received: list[gc.GuestMessage] = []

    def send(self, message: gc.HostMessage) -> None:
        self.sequence += 1
        message.sequence = self.sequence
        self.sock.sendall(encode(message.SerializeToString()))

    def next(self) -> gc.GuestMessage:
        while not self.unread:
            data = self.sock.recv(1 << 16)
            assert data, "the agent closed the channel"
            for payload in self.decoder.feed(data):
                message = gc.GuestMessage.FromString(payload)
                self.unread.append(message)
                self.received.append(message)
        return self.unread.popleft()

    def expect(self, body: str, skip: tuple[str, ...] = ("heartbeat",)) -> gc.GuestMessage:
        """The next message with the given body, passing over those in skip."""
        while True:
            message = self.next()
            kind = message.WhichOneof("body")
            if kind == body:
                return message
            assert kind in skip, f"expected {body}, got {message}"

    def agree(self, version: int = 1) -> gc.GuestReport:
        self.send(gc.HostMessage(version_choice=gc.VersionChoice(version=version)))
        report = self.expect("report").report
        assert report.full
        return report
