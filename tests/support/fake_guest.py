"""The guest end of a guest channel, for tests of hostd's side of it: a unix
socket server speaking framed guest messages."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from virtplane.v1 import guest_channel_pb2 as gc

from tests.support.waiting import TIMEOUT
from virtplane_common.framing import FrameDecoder, encode


class FakeGuest:
    """The guest end of a channel: a unix socket server speaking framed guest messages."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.connections = 0
        self.received: asyncio.Queue[gc.HostMessage] = asyncio.Queue()
        self._writer: asyncio.StreamWriter | None = None
        self._server: asyncio.Server | None = None
        self._sequence = 0

    async def start(self) -> None:
        self._server = await asyncio.start_unix_server(self._accept, str(self.path))

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self._writer = writer
        decoder = FrameDecoder()
        while data := await reader.read(65536):
            for payload in decoder.feed(data):
                self.received.put_nowait(gc.HostMessage.FromString(payload))

    async def next_message(self, what: str) -> gc.HostMessage:
        try:
            return await asyncio.wait_for(self.received.get(), TIMEOUT)
        except TimeoutError:
            pytest.fail(f"timed out waiting for the host to send {what}")

    async def send(self, message: gc.GuestMessage) -> None:
        self._sequence += 1
        message.sequence = self._sequence
        message.agent_instance = message.agent_instance or "fake"
        await self.send_raw(encode(message.SerializeToString(), 1 << 24))

    async def send_raw(self, data: bytes) -> None:
        assert self._writer is not None, "nobody connected"
        self._writer.write(data)
        await self._writer.drain()

    async def hang_up(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    async def close(self) -> None:
        await self.hang_up()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
