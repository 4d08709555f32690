from __future__ import annotations

import errno
import os
import socket
from collections.abc import Iterator

import pytest

from guestd.transport import HostGone, Link


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    ours, theirs = socket.socketpair()
    ours.setblocking(False)
    with ours, theirs:
        yield ours, theirs


def test_sends_and_receives(pair):
    ours, theirs = pair
    link = Link(ours.fileno(), max_pending_bytes=1 << 20)
    link.send(b"hello")
    assert link.exchange(1.0) == b""
    assert theirs.recv(100) == b"hello"
    assert link.pending_bytes == 0
    theirs.sendall(b"from host")
    assert link.exchange(1.0) == b"from host"


def test_a_large_frame_goes_out_whole_across_partial_writes(pair):
    ours, theirs = pair
    ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    frames = [bytes([i]) * 300_000 for i in range(3)]
    link = Link(ours.fileno(), max_pending_bytes=10 << 20)
    for frame in frames:
        link.send(frame)
    received = bytearray()
    theirs.settimeout(5)
    while len(received) < 900_000:
        link.exchange(1.0)
        received += theirs.recv(1 << 20)
    assert bytes(received) == b"".join(frames)


def test_forget_unstarted_keeps_a_partly_written_frame(pair):
    ours, _ = pair
    ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    link = Link(ours.fileno(), max_pending_bytes=10 << 20)
    link.send(b"a" * 1_000_000)
    link.send(b"b" * 10)
    link.send(b"c" * 10)
    link.exchange(1.0)
    assert 0 < link.pending_bytes < 1_000_020
    assert link.forget_unstarted() == 2
    assert link.pending_bytes < 1_000_000


def test_forget_unstarted_drops_everything_not_begun(pair):
    ours, _ = pair
    link = Link(ours.fileno(), max_pending_bytes=1 << 20)
    link.send(b"x")
    link.send(b"y")
    assert link.forget_unstarted() == 2
    assert link.pending_bytes == 0


def test_outbox_bound(pair):
    ours, _ = pair
    link = Link(ours.fileno(), max_pending_bytes=10)
    assert link.has_room()
    link.send(b"0123456789")
    assert not link.has_room()


def test_peer_closing_is_host_gone(pair):
    ours, theirs = pair
    link = Link(ours.fileno(), max_pending_bytes=1 << 20)
    theirs.close()
    with pytest.raises(HostGone):
        link.exchange(1.0)
    link.send(b"data")
    with pytest.raises(HostGone):
        link.exchange(1.0)


def test_idle_exchange_returns_nothing(pair):
    ours, _ = pair
    assert Link(ours.fileno(), max_pending_bytes=1).exchange(0.0) == b""


def test_a_closed_descriptor_is_an_error_not_a_disconnect():
    r, w = os.pipe()
    os.close(r)
    os.close(w)
    with pytest.raises(OSError) as caught:
        Link(r, max_pending_bytes=1).exchange(0.0)
    assert caught.value.errno == errno.EBADF
