"""A non-blocking byte link over one file descriptor: the agent's transport seam.

In a guest the descriptor is the virtio-serial port, opened O_RDWR | O_NONBLOCK;
tests pass one end of a socket pair. While no host is connected the port
reports POLLHUP, reads return end-of-file and writes fail with EAGAIN; the
link turns all of these into HostGone and leaves waiting to the caller.

Outgoing frames queue in an outbox bounded in bytes. A frame partly written
is always finished, even across a disconnect, so the host's decoder never
sees half a frame followed by the next one.

Runs inside guests: standard library only, Python >= 3.9.
"""

from __future__ import annotations

import errno
import math
import os
import select
from collections import deque

READ_SIZE = 64 * 1024


class HostGone(Exception):
    """The host side of the channel is not connected (now)."""


class Link:
    """Reads and writes one descriptor without blocking; does not own it."""

    def __init__(self, fd: int, max_pending_bytes: int) -> None:
        self._fd = fd
        self._max_pending = max_pending_bytes
        self._frames: deque[bytes] = deque()
        self._written = 0
        """Bytes of the first queued frame already written."""
        self._pending = 0

    @property
    def pending_bytes(self) -> int:
        return self._pending - self._written

    def has_room(self) -> bool:
        """Whether the outbox takes another frame."""
        return self._pending < self._max_pending

    def send(self, frame: bytes) -> None:
        """Queues a frame; it goes out during later exchanges."""
        self._frames.append(frame)
        self._pending += len(frame)

    def forget_unstarted(self) -> int:
        """Drops queued frames not yet begun (stale after a disconnect); returns how many."""
        keep = 1 if self._written else 0
        dropped = len(self._frames) - keep
        while len(self._frames) > keep:
            self._pending -= len(self._frames.pop())
        return dropped

    def exchange(self, timeout: float) -> bytes:
        """Waits up to timeout seconds for the descriptor, writes what it can.

        Returns the bytes read, possibly none. Raises HostGone if the host
        side is not connected.
        """
        poller = select.poll()
        poller.register(self._fd, select.POLLIN | (select.POLLOUT if self._frames else 0))
        ready = poller.poll(max(0, math.ceil(timeout * 1000)))
        revents = ready[0][1] if ready else 0
        if revents & select.POLLNVAL:
            raise OSError(errno.EBADF, "the channel's descriptor is not open")
        if revents & select.POLLOUT:
            self._flush()
        data = self._read() if revents & select.POLLIN else b""
        if not data and revents & (select.POLLHUP | select.POLLERR):
            raise HostGone("the channel reports hang-up")
        return data

    def _read(self) -> bytes:
        try:
            data = os.read(self._fd, READ_SIZE)
        except (BlockingIOError, InterruptedError):
            return b""
        except OSError as exc:
            _reraise_if_closed(exc)
            raise HostGone(f"read failed: {exc}") from exc
        if not data:
            raise HostGone("end of stream")
        return data

    def _flush(self) -> None:
        while self._frames:
            frame = self._frames[0]
            try:
                n = os.write(self._fd, memoryview(frame)[self._written :])
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                _reraise_if_closed(exc)
                raise HostGone(f"write failed: {exc}") from exc
            self._written += n
            if self._written < len(frame):
                continue
            self._frames.popleft()
            self._pending -= len(frame)
            self._written = 0


def _reraise_if_closed(exc: OSError) -> None:
    if exc.errno == errno.EBADF:
        raise exc
