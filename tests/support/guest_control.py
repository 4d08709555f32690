"""Commands run inside a real Debian guest, for the tests (the image's
virtplane-test-control.service; tools/debian-image).

The test listens on the host's loopback; the guest, booted with
`virtplane.test.control=10.0.2.2:PORT` on its kernel command line (user-mode
networking reaches the host's 127.0.0.1 as 10.0.2.2), connects, says which
boot it is ({"boot_id": ...}), then runs each command sent as a line of JSON
and answers with a line {"rc": ..., "output": ...}. The newest connection is
the one used: a rebooted or restored guest connects again.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from dataclasses import dataclass

GUEST_SIDE_HOST = "10.0.2.2"
"""The host's loopback as user-mode networking shows it to the guest."""


class GuestControlError(Exception):
    """The guest could not be reached, or lost the connection mid-command."""


@dataclass(frozen=True)
class Ran:
    """What a command run in the guest gave."""

    argv: tuple[str, ...]
    rc: int
    output: str

    def check(self) -> Ran:
        """self, if the command succeeded; else an AssertionError saying what it printed."""
        assert self.rc == 0, f"{' '.join(self.argv)} in the guest: exit {self.rc}\n{self.output}"
        return self


@dataclass
class _Connection:
    boot_id: str
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter


class GuestControl:
    """The test's end: a listener on 127.0.0.1 and the guest's newest connection."""

    def __init__(self) -> None:
        self._server: asyncio.Server | None = None
        self._current: _Connection | None = None
        self._connected = asyncio.Condition()
        self._lock = asyncio.Lock()  # one command at a time
        self.port = 0

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    @property
    def cmdline(self) -> str:
        """What the guest's kernel command line needs (with a leading space)."""
        return f" virtplane.test.control={GUEST_SIDE_HOST}:{self.port}"

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        if self._current is not None:
            self._current.writer.close()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            hello = json.loads(await reader.readline())
        except (ValueError, ConnectionError):
            writer.close()
            return
        async with self._connected:
            if self._current is not None:
                self._current.writer.close()
            self._current = _Connection(str(hello["boot_id"]), reader, writer)
            self._connected.notify_all()

    async def boot_id(self, within: float = 300.0) -> str:
        """The boot the guest's newest connection came from (waits for one)."""
        return (await self._connection(within)).boot_id

    async def _connection(self, within: float) -> _Connection:
        """The newest connection still open (a restored guest's old one has ended)."""
        async with self._connected:
            if self._current is not None and self._current.reader.at_eof():
                self._current.writer.close()
                self._current = None
            try:
                async with asyncio.timeout(within):
                    await self._connected.wait_for(lambda: self._current is not None)
            except TimeoutError:
                raise GuestControlError(f"the guest did not connect in {within:.0f} s") from None
            assert self._current is not None
            return self._current

    async def run(self, *argv: str, time_limit: float = 120.0, within: float = 300.0) -> Ran:
        """Runs argv in the guest (as root) and returns its exit status and output."""
        async with self._lock:
            connection = await self._connection(within)
            request = {"argv": list(argv), "timeout": time_limit}
            try:
                connection.writer.write((json.dumps(request) + "\n").encode())
                await connection.writer.drain()
                async with asyncio.timeout(time_limit + 30):
                    line = await connection.reader.readline()
            except (ConnectionError, TimeoutError) as exc:
                line, reason = b"", repr(exc)
            else:
                reason = "the connection ended"
            if not line:
                await self._forget(connection)
                raise GuestControlError(f"no answer to {argv} from the guest: {reason}")
            reply = json.loads(line)
            return Ran(tuple(argv), int(reply["rc"]), str(reply["output"]))

    async def _forget(self, connection: _Connection) -> None:
        async with self._connected:
            if self._current is connection:
                self._current = None
        with contextlib.suppress(ConnectionError):
            connection.writer.close()
