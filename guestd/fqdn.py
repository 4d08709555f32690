"""The guest's fully qualified domain name, found without ever making the agent wait.

``socket.getfqdn()`` asks the resolver, which may wait for a DNS server for
many seconds. The agent therefore answers from files at once and leaves the
resolver to a background thread whose answer it uses once there is one:

1. the hostname itself when it has a dot;
2. /etc/hosts: on the first line that lists the hostname, the canonical
   (first) name if it has a dot, else the first dotted alias, as the
   resolver's "files" source would answer;
3. the resolver's answer (``socket.getfqdn``), looked up in the background
   for the real root only, again after LOOKUP_TTL seconds or when the
   hostname changes; at most one lookup runs at a time;
4. the hostname and the domain of /etc/resolv.conf (its last ``domain`` or
   ``search`` line, the first domain of a ``search``);
5. the hostname.

So the first report may carry a name from the files and a later one the
resolver's, as a change of the system section.

Runs inside guests: standard library only, Python >= 3.9.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from pathlib import Path
from typing import Callable

from guestd.facts import MAX_TEXT, read_text

log = logging.getLogger(__name__)

LOOKUP_TTL = 600.0
"""Seconds a resolver answer is used before it is asked again."""


class ResolverLookup:
    """Runs ``socket.getfqdn`` in a background thread; never waits for it."""

    def __init__(
        self,
        resolve: Callable[[str], str] = socket.getfqdn,
        ttl: float = LOOKUP_TTL,
        clock: Callable[[], float] = time.monotonic,
        spawn: Callable[[Callable[[], None]], None] | None = None,
    ) -> None:
        self._resolve = resolve
        self._spawn = spawn or _in_daemon_thread
        self._ttl = ttl
        self._clock = clock
        self._lock = threading.Lock()
        self._answer: tuple[str, str, float] | None = None
        """(hostname asked, answer, when) of the last finished lookup."""
        self._running = False

    def get(self, hostname: str) -> str | None:
        """The last answer for hostname, if any; starts a lookup when none is fresh."""
        with self._lock:
            answer = self._answer
            fresh = (
                answer is not None
                and answer[0] == hostname
                and self._clock() - answer[2] < self._ttl
            )
            start = not fresh and not self._running
            if start:
                self._running = True
        if start:
            try:
                self._spawn(lambda: self._lookup(hostname))
            except RuntimeError as exc:  # no thread to be had: try again next time
                log.warning("cannot start the resolver lookup: %s", exc)
                with self._lock:
                    self._running = False
        with self._lock:
            answer = self._answer
        if answer is not None and answer[0] == hostname:
            return answer[1]
        return None

    def _lookup(self, hostname: str) -> None:
        try:
            found = self._resolve(hostname)
        except Exception as exc:  # the resolver of a broken guest may raise anything
            log.debug("resolver lookup of %s failed: %s", hostname, exc)
            found = ""
        with self._lock:
            self._answer = (hostname, found.strip().rstrip(".")[:MAX_TEXT], self._clock())
            self._running = False


def _in_daemon_thread(target: Callable[[], None]) -> None:
    threading.Thread(target=target, name="guestd-fqdn", daemon=True).start()


def fqdn(root: Path, hostname: str, resolver: ResolverLookup | None = None) -> str:
    """The guest's FQDN (see the module docstring); hostname when nothing better is known."""
    if not hostname or "." in hostname:
        return hostname
    for candidate in (
        from_hosts(read_text(root / "etc/hosts") or "", hostname),
        resolver.get(hostname) if resolver is not None else None,
    ):
        if candidate and "." in candidate:
            return candidate[:MAX_TEXT]
    domain = resolv_conf_domain(read_text(root / "etc/resolv.conf") or "")
    return f"{hostname}.{domain}"[:MAX_TEXT] if domain else hostname


def from_hosts(text: str, hostname: str) -> str | None:
    """The dotted name /etc/hosts gives hostname, if any."""
    wanted = hostname.lower()
    for line in text.splitlines():
        names = line.partition("#")[0].split()[1:]
        if wanted not in (n.lower() for n in names):
            continue
        dotted = [n for n in names if "." in n.strip(".")]
        return dotted[0].rstrip(".") if dotted else None
    return None


def resolv_conf_domain(text: str) -> str | None:
    """The local domain of resolv.conf: its last domain or search line, as the resolver takes it."""
    domain: str | None = None
    for line in text.splitlines():
        words = line.split()
        if len(words) >= 2 and words[0] in ("domain", "search"):
            domain = words[1].strip(".") or None
    return domain
