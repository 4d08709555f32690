"""A hostile guest agent, for tests only: it floods the guest channel.

The test guest's /init runs it instead of guestd when the kernel command
line says `virtplane.hostile=SECONDS` or `virtplane.hostile=SECONDS:MODE`
(see tools/guest-image/README.md). MODE is one attack (below; `flood`, the
default, mixes them). It first behaves (a hello and a valid full report, so
the host has facts to keep), then, in mode `flood`, until SECONDS have
passed, writes in turn:

- random garbage;
- oversize frames: a header claiming 16 MiB, and a sound frame whose
  payload is larger than the channel allows;
- valid but huge full reports (thousands of applications, hostile strings);
- tiny valid heartbeats at the highest rate the port takes.

Then headers nested in a payload, each claiming a whole payload that fails
its checksum (one byte read would cost the reader a 256 KiB checksum; hostd
charges it, which stops it reading this channel for a long while), and it
goes quiet and stays alive. The other modes, each for SECONDS:

- `reports`: only maximal valid full reports, as fast as the port takes;
- `frames`: only crafted frames: headers nested in payloads and garbage
  the reader must resync through, each round ended by a valid heartbeat;
- `version`: an agent version full of control and bidi characters in its
  hello, then a full report and a heartbeat every second, like guestd
  (SECONDS is ignored: it goes on for ever).

Everything the host sends is read and dropped. Nothing here runs in a real
image: build.sh puts it in the test guest only, under /usr/lib/virtplane-test.
"""

from __future__ import annotations

import argparse
import os
import struct
import sys
import threading
import time
import zlib

from virtplane.v1 import guest_channel_pb2 as gc

from virtplane_common.framing import HEADER_SIZE, MAGIC, encode

PORT = "/dev/virtio-ports/org.virtplane.guestd.0"
BIG = 1 << 24
PAYLOAD_LIMIT = 256 * 1024


class Flood:
    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.sequence = 0
        self.written = 0

    def message(self, message: gc.GuestMessage) -> bytes:
        self.sequence += 1
        message.sequence = self.sequence
        message.agent_instance = "hostile"
        message.sent_unix_nanos = time.time_ns()
        return encode(message.SerializeToString(), BIG)

    def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            n = os.write(self.fd, view)  # blocks while the host does not read
            self.written += n
            view = view[n:]


def huge_report(n: int) -> gc.GuestMessage:
    apps = [f"pkg-{n}-{i:05d}\x1b[31m\u202e {'x' * 30}" for i in range(5000)]
    report = gc.GuestReport(
        full=True,
        system=gc.SystemSection(hostname="h" * 4000 + "\x00\x07", cpus=1 << 30, uptime_seconds=-1),
        os=gc.OsSection(name="\u0000" * 100 + "EvilOS", version="1" * 1000),
        applications=gc.ApplicationsSection(applications=apps),
    )
    message = gc.GuestMessage(report=report)
    while len(message.SerializeToString()) > PAYLOAD_LIMIT - 64:
        del message.report.applications.applications[-200:]
    return message


def nested_headers(count: int) -> bytes:
    head = struct.pack(">4sII", MAGIC, PAYLOAD_LIMIT - 64, 0)
    return (head + struct.pack(">I", zlib.crc32(head))) * count


def oversize() -> bytes:
    head = struct.pack(">4sII", MAGIC, BIG, 0)
    claim = head + struct.pack(">I", zlib.crc32(head))
    return claim + encode(b"\x07" * (PAYLOAD_LIMIT + 4096), BIG)


BAD_VERSION = "\x1b[2J\u202e1.0\x00\n\t" + "\u200f9" * 200 + "\x07"
"""An agent version made of what a version must never carry."""


def behaving_report(seconds: float) -> gc.GuestMessage:
    report = gc.GuestReport(
        full=True,
        system=gc.SystemSection(hostname="badversion", cpus=1, uptime_seconds=seconds),
        os=gc.OsSection(name="HostileOS", version="1"),
        applications=gc.ApplicationsSection(applications=["hostile-1.0"]),
    )
    return gc.GuestMessage(report=report)


def reports(flood: Flood, deadline: float) -> int:
    rounds = 0
    while time.monotonic() < deadline:
        rounds += 1
        flood.write(flood.message(huge_report(rounds)))
    return rounds


def frames(flood: Flood, deadline: float) -> int:
    rounds = 0
    beat = gc.GuestMessage(heartbeat=gc.Heartbeat(uptime_seconds=1.0))
    while time.monotonic() < deadline:
        rounds += 1
        flood.write(nested_headers(64 * 1024 // HEADER_SIZE))
        flood.write(MAGIC + os.urandom(64 * 1024) + MAGIC * 1024)
        flood.write(oversize())
        flood.write(flood.message(beat))
    return rounds


def behave_forever(flood: Flood) -> None:
    started = time.monotonic()
    while True:
        uptime = time.monotonic() - started
        flood.write(flood.message(behaving_report(uptime)))
        flood.write(flood.message(gc.GuestMessage(heartbeat=gc.Heartbeat(uptime_seconds=uptime))))
        time.sleep(1.0)


def drain(fd: int) -> None:
    while True:
        try:
            if not os.read(fd, 65536):
                time.sleep(0.1)
        except OSError:
            time.sleep(0.1)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", default=PORT)
    parser.add_argument("--seconds", type=float, default=120.0)
    parser.add_argument("--mode", choices=("flood", "reports", "frames", "version"))
    args = parser.parse_args()
    fd = os.open(args.port, os.O_RDWR | os.O_NOCTTY)
    threading.Thread(target=drain, args=(os.dup(fd),), daemon=True).start()
    flood = Flood(fd)
    version = BAD_VERSION if args.mode == "version" else "hostile"
    hello = gc.GuestHello(min_version=1, max_version=1, agent_version=version)
    if args.mode == "version":
        hello.heartbeat_interval_ms = 1000
    flood.write(flood.message(gc.GuestMessage(hello=hello)))
    if args.mode == "version":
        behave_forever(flood)
    report = gc.GuestReport(full=True, system=gc.SystemSection(hostname="hostile"))
    flood.write(flood.message(gc.GuestMessage(report=report)))
    print("hostile:", args.mode or "flood", "for", args.seconds, "s", file=sys.stderr, flush=True)
    deadline = time.monotonic() + args.seconds
    if args.mode in ("reports", "frames"):
        attack = reports if args.mode == "reports" else frames
        rounds = attack(flood, deadline)
        print(f"hostile: {rounds} rounds, {flood.written} bytes; quiet now", file=sys.stderr)
        while True:
            time.sleep(3600)
    tiny = b"".join(
        flood.message(gc.GuestMessage(heartbeat=gc.Heartbeat(uptime_seconds=1.0)))
        for _ in range(2000)
    )
    rounds = 0
    while time.monotonic() < deadline:
        rounds += 1
        flood.write(os.urandom(64 * 1024))
        flood.write(oversize())
        flood.write(flood.message(huge_report(rounds)))
        flood.write(tiny)
    flood.write(nested_headers(64 * 1024 // HEADER_SIZE))
    print(
        f"hostile: {rounds} rounds, {flood.written} bytes; quiet now", file=sys.stderr, flush=True
    )
    while True:
        time.sleep(3600)


if __name__ == "__main__":
    main()
