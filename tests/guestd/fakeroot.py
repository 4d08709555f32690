"""A fake guest filesystem tree for the fact collectors, built under a temporary directory."""

from __future__ import annotations

import os
import socket
import struct
from collections.abc import Callable
from pathlib import Path

OS_RELEASE = """\
PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"
NAME="Debian GNU/Linux"
VERSION_ID="12"
VERSION="12 (bookworm)"
# a comment
ID=debian
"""

DPKG_STATUS = """\
Package: bash
Status: install ok installed
Priority: required
Version: 5.2.15-2+b2
Description: GNU Bourne Again SHell
 Bash is an sh-compatible command language interpreter.
 .
 Status: install ok installed

Package: python3
Status: install ok installed
Version: 3.11.2-1+b1

Package: vim
Status: deinstall ok config-files
Version: 2:9.0.1378-2

Package: nano
Status: install ok not-installed

Package: curl
Status: install ok half-configured
Version: 7.88.1-10
"""

HOSTS = """\
127.0.0.1\tlocalhost
127.0.1.1\tguest-1.example.org guest-1
::1\tlocalhost ip6-localhost ip6-loopback
"""

MEMINFO = """\
MemTotal:         250000 kB
MemFree:          100000 kB
MemAvailable:     180000 kB
Buffers:            1000 kB
"""

IF_INET6 = """\
00000000000000000000000000000001 01 80 10 80       lo
fd000000000000000000000000000002 02 40 00 80     eth0
fe80000000000000505400fffe1234ab 02 40 20 80     eth0
"""

FIB_TRIE_HEAD = """\
Main:
  +-- 0.0.0.0/0 3 0 5
     |-- 0.0.0.0
        /0 universe UNICAST
     +-- 127.0.0.0/8 2 0 2
        +-- 127.0.0.0/31 1 0 0
           |-- 127.0.0.0
              /8 host LOCAL
           |-- 127.0.0.1
              /32 host LOCAL
"""


USER_PROCESS = 7
DEAD_PROCESS = 8


def utmp_record(
    kind: int, pid: int, line: str, user: str, host: str = "", *, seconds: int = 0
) -> bytes:
    """One glibc struct utmp (384 bytes), laid out field by field."""
    return struct.pack(
        "=h2xi32s4s32s256shhiii16s20x",
        kind,
        pid,
        line.encode(),
        line[-4:].encode(),
        user.encode(),
        host.encode(),
        0,
        0,
        0,
        seconds,
        0,
        b"",
    )


def route_hex(address: str) -> str:
    """An IPv4 address the way /proc/net/route prints it on this machine."""
    value: int = struct.unpack("=I", socket.inet_aton(address))[0]
    return f"{value:08X}"


def fib_trie(addresses: list[str]) -> str:
    """A fib_trie listing the given local addresses (and their broadcast neighbours)."""
    leaves = "".join(
        f"           |-- {a}\n              /32 host LOCAL\n"
        f"           |-- {a.rsplit('.', 1)[0]}.255\n              /32 link BROADCAST\n"
        for a in addresses
    )
    return FIB_TRIE_HEAD + leaves


def route_table(routes: list[tuple[str, str, str, str]]) -> str:
    """/proc/net/route for (interface, destination, gateway, mask) rows."""
    head = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n"
    rows = "".join(
        f"{i}\t{route_hex(d)}\t{route_hex(g)}\t0001\t0\t0\t0\t{route_hex(m)}\t0\t0\t0\n"
        for i, d, g, m in routes
    )
    return head + rows


class FakeRoot:
    """Writes files under path; every write is atomic, as the agent may be reading."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def write(self, rel: str, text: str) -> None:
        self._replace(rel, lambda tmp: tmp.write_text(text))

    def write_bytes(self, rel: str, data: bytes) -> None:
        self._replace(rel, lambda tmp: tmp.write_bytes(data))

    def _replace(self, rel: str, write: Callable[[Path], object]) -> None:
        """Writes a temporary file beside rel with write, then renames it over rel."""
        target = self.path / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(target.name + ".tmp")
        write(tmp)
        os.replace(tmp, target)

    def set_logins(self, logins: list[tuple[int, str, str, str, int]]) -> None:
        """Writes run/utmp with a live USER_PROCESS per (pid, terminal, user, host, seconds)."""
        records = b""
        for pid, line, user, host, seconds in logins:
            (self.path / "proc" / str(pid)).mkdir(parents=True, exist_ok=True)
            records += utmp_record(USER_PROCESS, pid, line, user, host, seconds=seconds)
        self.write_bytes("run/utmp", records)

    def add_interface(self, name: str, mac: str) -> None:
        self.write(f"sys/class/net/{name}/address", mac + "\n")

    def set_ipv4(self, addresses: dict[str, str]) -> None:
        """Gives each interface one /24 address: {interface: address}."""
        routes = [("eth0", "0.0.0.0", "10.0.2.2", "0.0.0.0")] if addresses else []
        for name, address in addresses.items():
            net = address.rsplit(".", 1)[0] + ".0"
            routes.append((name, net, "0.0.0.0", "255.255.255.0"))
        self.write("proc/net/fib_trie", fib_trie(list(addresses.values())))
        self.write("proc/net/route", route_table(routes))

    @classmethod
    def typical(cls, path: Path) -> FakeRoot:
        """A small Debian guest with eth0 up (IPv6 only, DHCP not done yet) and eth1."""
        root = cls(path)
        root.write("proc/sys/kernel/hostname", "guest-1\n")
        root.write("etc/hosts", HOSTS)
        (path / "etc/localtime").symlink_to("/usr/share/zoneinfo/Europe/Paris")
        root.write("etc/os-release", OS_RELEASE)
        root.write("proc/uptime", "123.45 100.00\n")
        root.write("proc/meminfo", MEMINFO)
        root.write("var/lib/dpkg/status", DPKG_STATUS)
        root.write("proc/net/if_inet6", IF_INET6)
        root.add_interface("eth0", "52:54:00:12:34:AB")
        root.add_interface("eth1", "52:54:00:12:34:cd")
        root.add_interface("lo", "00:00:00:00:00:00")
        root.set_ipv4({})
        return root
