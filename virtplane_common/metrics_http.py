"""Serving a Prometheus registry over plain HTTP, as Prometheus scrapes it:
GET /metrics on the address the operator gives (--metrics-listen host:port).

The server runs on its own thread (prometheus_client's), so a scrape never
waits on the daemon's event loop; collectors it calls must be thread-safe
reads.
"""

from __future__ import annotations

import threading
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, start_http_server


def split_address(listen: str) -> tuple[str, int]:
    """host:port (or [v6]:port) -> (host, port); ValueError when malformed."""
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"metrics address {listen!r}: expected host:port")
    return host.strip("[]") or "0.0.0.0", int(port)


class MetricsEndpoint:
    """/metrics of one registry; start() binds (port 0: any free one)."""

    def __init__(self, listen: str, registry: CollectorRegistry) -> None:
        self.host, self.port = split_address(listen)
        self._registry = registry
        self._server: WSGIServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> int:
        """Serves; returns the bound port."""
        self._server, self._thread = start_http_server(self.port, self.host, self._registry)
        self.port = self._server.server_port
        return self.port

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None
