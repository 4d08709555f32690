"""The guest's network interfaces and their addresses, read under a filesystem root.

Interfaces are the entries of /sys/class/net except the loopback ``lo``. IPv4
addresses come from two places, merged:

- /proc/net/fib_trie lists every local address; each is given to the interface
  of the most specific directly connected route in /proc/net/route that
  contains it (an address without such a route is found only the next way);
- for the real root only, the SIOCGIFADDR ioctl gives each interface's primary
  address (a fake root in tests has no interfaces to ask).

IPv6 addresses come from /proc/net/if_inet6 and include link-local ones
(fe80::/10) so that the host can tell an interface that is up from one that
is not; addresses carry no prefix length or zone.

Runs inside guests: standard library only, Python >= 3.9.
"""

from __future__ import annotations

import fcntl
import ipaddress
import socket
import struct
from dataclasses import dataclass
from pathlib import Path

from guestd.facts import read_text

MAX_INTERFACES = 32
MAX_ADDRESSES = 16
"""Per interface and address family."""
SIOCGIFADDR = 0x8915
IFNAMSIZ = 16
_ADDR_OFFSET = 20
"""Where the IPv4 address sits in the struct ifreq SIOCGIFADDR fills in."""


@dataclass(frozen=True)
class Interface:
    name: str
    mac_address: str
    ipv4_addresses: tuple[str, ...]
    ipv6_addresses: tuple[str, ...]


@dataclass(frozen=True)
class Route:
    """A directly connected route; addresses as /proc/net/route prints them."""

    interface: str
    destination: int
    mask: int


def interfaces(root: Path) -> list[Interface]:
    """The interfaces except lo, sorted by name."""
    names = interface_names(root)
    ipv4 = ipv4_from_proc(root)
    if root.resolve() == Path("/").resolve():
        for name in names:
            addr = ipv4_by_ioctl(name)
            if addr:
                ipv4.setdefault(name, set()).add(addr)
    ipv6 = ipv6_from_proc(root)
    return [
        Interface(
            name=name,
            mac_address=mac_address(root, name),
            ipv4_addresses=_bounded(ipv4.get(name, set())),
            ipv6_addresses=_bounded(ipv6.get(name, set())),
        )
        for name in names
    ]


def _bounded(addresses: set[str]) -> tuple[str, ...]:
    return tuple(sorted(addresses)[:MAX_ADDRESSES])


def interface_names(root: Path) -> list[str]:
    try:
        entries = list((root / "sys/class/net").iterdir())
    except OSError:
        return []
    names = [e.name for e in entries if e.name != "lo" and len(e.name) < IFNAMSIZ and e.is_dir()]
    return sorted(names)[:MAX_INTERFACES]


def mac_address(root: Path, name: str) -> str:
    text = read_text(root / "sys/class/net" / name / "address", limit=64)
    return text.strip().lower() if text else ""


def parse_fib_trie(text: str) -> set[str]:
    """The local unicast addresses ('/32 host LOCAL' leaves) in /proc/net/fib_trie."""
    found: set[str] = set()
    leaf = ""
    for line in text.splitlines():
        words = line.split()
        if len(words) == 2 and words[0] == "|--":
            leaf = words[1]
        elif words[:3] == ["/32", "host", "LOCAL"] and leaf:
            found.add(leaf)
    return found


def parse_routes(text: str) -> list[Route]:
    """Routes without a gateway, from /proc/net/route."""
    routes: list[Route] = []
    for line in text.splitlines()[1:]:
        words = line.split()
        if len(words) < 8:
            continue
        try:
            destination, gateway, mask = (int(words[i], 16) for i in (1, 2, 7))
        except ValueError:
            continue
        if gateway == 0 and mask != 0:
            routes.append(Route(words[0], destination, mask))
    return routes


def route_form(address: str) -> int:
    """An IPv4 address as /proc/net/route prints one (network bytes read natively)."""
    value: int = struct.unpack("=I", socket.inet_aton(address))[0]
    return value


def ipv4_from_proc(root: Path) -> dict[str, set[str]]:
    """IPv4 addresses by interface, from fib_trie and the routing table."""
    local = parse_fib_trie(read_text(root / "proc/net/fib_trie") or "")
    routes = parse_routes(read_text(root / "proc/net/route") or "")
    found: dict[str, set[str]] = {}
    for address in local:
        try:
            if ipaddress.IPv4Address(address).is_loopback:
                continue
            value = route_form(address)
        except (ValueError, OSError):
            continue
        matching = [r for r in routes if value & r.mask == r.destination & r.mask]
        if matching:
            best = max(matching, key=lambda r: bin(r.mask).count("1"))
            found.setdefault(best.interface, set()).add(address)
    return found


def ipv4_by_ioctl(name: str) -> str | None:
    """The primary IPv4 address of an interface of this machine, if it has one."""
    request = struct.pack("256s", name.encode()[: IFNAMSIZ - 1])
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            reply = fcntl.ioctl(sock.fileno(), SIOCGIFADDR, request)
    except OSError:
        return None
    return socket.inet_ntoa(reply[_ADDR_OFFSET : _ADDR_OFFSET + 4])


def ipv6_from_proc(root: Path) -> dict[str, set[str]]:
    """IPv6 addresses by interface, from /proc/net/if_inet6."""
    found: dict[str, set[str]] = {}
    for line in (read_text(root / "proc/net/if_inet6") or "").splitlines():
        words = line.split()
        if len(words) < 6 or words[5] == "lo":
            continue
        try:
            address = ipaddress.IPv6Address(bytes.fromhex(words[0]))
        except ValueError:
            continue
        found.setdefault(words[5], set()).add(str(address))
    return found
