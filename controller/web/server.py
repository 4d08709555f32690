"""The page's HTTP port: uvicorn serving the page and its gRPC-Web in the
controller's own event loop, over TLS with the controller's certificate
(read from its files; a renewal is loaded for the handshakes that follow)
unless the controller serves plaintext."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Iterator

import uvicorn

from controller.tls import listen_host
from controller.web.assets import App
from virtplane_common.tls.files import TlsFiles

log = logging.getLogger(__name__)


class _EmbeddedServer(uvicorn.Server):
    """Leaves SIGINT and SIGTERM to the controller: uvicorn's own serve()
    would take them over while it runs."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def _bind(address: str) -> socket.socket:
    host = listen_host(address)
    port = int(address.rpartition(":")[2])
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise OSError(f"cannot listen on {address}: {exc}") from exc
    sock.listen(128)  # connections wait here until uvicorn accepts them
    return sock


class WebServer:
    """The HTTP port; start() binds it and begins serving, stop() ends it."""

    def __init__(self, app: App, address: str, tls: TlsFiles | None) -> None:
        self._tls = tls
        self._socket = _bind(address)
        self.port = int(self._socket.getsockname()[1])
        config = uvicorn.Config(
            app,
            lifespan="off",
            access_log=False,
            log_level="warning",
            ssl_certfile=tls.cert if tls else None,
            ssl_keyfile=tls.key if tls else None,
            timeout_graceful_shutdown=2,
        )
        config.load()  # TLS files read now: a problem fails the start
        self._config = config
        self._server = _EmbeddedServer(config)
        self._task: asyncio.Task[None] | None = None

    @property
    def scheme(self) -> str:
        return "https" if self._tls else "http"

    def start(self) -> None:
        serve = self._server.serve(sockets=[self._socket])
        self._task = asyncio.create_task(serve, name="web-port")

    def renewed(self) -> None:
        """Presents the controller's renewed certificate from the next handshake on."""
        if self._tls is not None and self._config.ssl is not None:
            self._config.ssl.load_cert_chain(self._tls.cert, self._tls.key)

    async def stop(self) -> None:
        if self._task is None:
            self._socket.close()
            return
        self._server.should_exit = True
        await asyncio.gather(self._task, return_exceptions=True)
        self._socket.close()
