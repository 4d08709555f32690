"""The built page (web/dist, made by `make web`): its few files, read once at
start and served from memory; everything else is the gRPC-Web application's."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]

FILES = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/app.js": ("app.js", "text/javascript; charset=utf-8"),
    "/app.css": ("app.css", "text/css; charset=utf-8"),
}

_HEADERS = [
    (b"cache-control", b"no-cache"),
    (b"x-content-type-options", b"nosniff"),
    (b"content-security-policy", b"default-src 'self'; frame-ancestors 'none'"),
    (b"referrer-policy", b"no-referrer"),
]


class PageNotBuilt(OSError):
    """web/dist lacks a file of the page: `make web` builds it."""


@dataclass(frozen=True)
class _File:
    body: bytes
    content_type: bytes


def read_page(root: Path) -> dict[str, _File]:
    """The page's files under root; raises PageNotBuilt if one is missing."""
    files = {}
    for path, (name, content_type) in FILES.items():
        try:
            files[path] = _File((root / name).read_bytes(), content_type.encode())
        except FileNotFoundError as exc:
            raise PageNotBuilt(f"{root / name} is missing: build the page with `make web`") from exc
    return files


class PageApp:
    """Serves the page's files on GET and HEAD; hands every other request to rpc."""

    def __init__(self, root: Path, rpc: App) -> None:
        self._files = read_page(root)
        self._rpc = rpc

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return  # lifespan and websockets: nothing to do
        found = self._files.get(scope["path"])
        if found is None or scope["method"] not in ("GET", "HEAD"):
            await self._rpc(scope, receive, send)
            return
        headers = [
            (b"content-type", found.content_type),
            (b"content-length", str(len(found.body)).encode()),
            *_HEADERS,
        ]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        body = found.body if scope["method"] == "GET" else b""
        await send({"type": "http.response.body", "body": body})
