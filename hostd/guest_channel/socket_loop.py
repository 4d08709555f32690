"""The channel's socket: connecting, reconnecting, reading and writing.

The loop connects to the socket libvirt binds (retrying until the connect
timeout), sends the opening message, then reads: the bytes go to the
session, which says how long to stop reading (the byte budget), and what the
session posted meanwhile is written, each message numbered in turn. While
connected a watchdog ticks the session (heartbeats, calm). When the socket
closes the session is told, and the loop connects again; it returns when the
socket cannot be reached within the connect timeout.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from virtplane.v1 import guest_channel_pb2 as gc

from hostd.config import ChannelLimits
from hostd.guest_channel.budget import ChannelCounters
from virtplane_common.framing import FrameTooLarge, encode

log = logging.getLogger(__name__)

READ_SIZE = 64 * 1024


@dataclass(frozen=True)
class Session:
    """What the loop calls as a connection comes, talks and goes."""

    opening: Callable[[], gc.HostMessage]
    """The first message of a connection."""
    feed: Callable[[bytes], float]
    """Bytes read; returns how long to stop reading (seconds)."""
    tick: Callable[[], None]
    """Called every tick_seconds() while connected."""
    tick_seconds: Callable[[], float]
    closed: Callable[[], None]
    """The connection is closing (in its finally)."""
    reset: Callable[[], None]
    """The connection closed; another is about to be tried."""


class SocketLoop:
    """One channel's unix socket connection, kept up. Run run() as a task."""

    def __init__(
        self,
        vm_id: str,
        socket_path: Path,
        limits: ChannelLimits,
        counters: ChannelCounters,
        session: Session,
    ) -> None:
        self._vm_id = vm_id
        self._socket_path = socket_path
        self._limits = limits
        self._counters = counters
        self._session = session
        self._writer: asyncio.StreamWriter | None = None
        self._outbox: list[gc.HostMessage] = []
        self._sequence = 0

    @property
    def connected(self) -> bool:
        return self._writer is not None

    def post(self, message: gc.HostMessage) -> int:
        """Queues a message; returns the sequence number it will be sent with."""
        self._outbox.append(message)
        return self._sequence + len(self._outbox)

    async def flush(self) -> None:
        """Writes what was posted, if connected."""
        writer = self._writer
        if writer is not None:
            await self._flush(writer)

    async def run(self) -> None:
        """Connects and talks, reconnecting after the socket closes; returns when the
        socket cannot be reached within the connect timeout."""
        while True:
            streams = await self._connect()
            if streams is None:
                return
            reader, writer = streams
            try:
                await self._talk(reader, writer)
            except OSError as exc:
                log.info("guest channel of VM %s: %s", self._vm_id, exc)
            finally:
                writer.close()
            self._session.reset()
            await asyncio.sleep(self._limits.connect_retry_seconds)

    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._limits.connect_timeout_seconds
        while True:
            try:
                return await asyncio.open_unix_connection(str(self._socket_path))
            except OSError as exc:
                if loop.time() >= deadline:
                    log.warning(
                        "guest channel of VM %s: cannot connect to %s (%s); giving up",
                        self._vm_id,
                        self._socket_path,
                        exc,
                    )
                    return None
            await asyncio.sleep(self._limits.connect_retry_seconds)

    async def _talk(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        log.debug("guest channel of VM %s connected", self._vm_id)
        self._outbox[:] = [self._session.opening()]  # nothing stale from a past connection
        await self._flush(writer)
        self._writer = writer
        watchdog = asyncio.create_task(self._watch())
        try:
            while data := await reader.read(READ_SIZE):
                pause = self._session.feed(data)
                await self._flush(writer)
                if pause > 0:
                    self._counters.throttled_seconds += pause
                    await asyncio.sleep(pause)
        finally:
            watchdog.cancel()
            self._writer = None
            self._session.closed()
        log.debug("guest channel of VM %s closed", self._vm_id)

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self._session.tick_seconds())
            self._session.tick()

    async def _flush(self, writer: asyncio.StreamWriter) -> None:
        if not self._outbox:
            return
        for message in self._outbox:
            self._sequence += 1
            message.sequence = self._sequence
            try:
                writer.write(encode(message.SerializeToString(), self._limits.max_payload))
            except FrameTooLarge:
                log.error("guest channel of VM %s: host message too large", self._vm_id)
        self._outbox.clear()
        try:
            await asyncio.wait_for(writer.drain(), self._limits.write_timeout_seconds)
        except TimeoutError:
            log.warning("guest channel of VM %s: the guest is not reading", self._vm_id)
