"""The page's files as the controller serves them: from memory, with their
content types and headers, on GET and HEAD only; everything else goes to the
gRPC-Web application; a page not built stops the start with what to run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from controller.web.assets import PageApp, PageNotBuilt


def built(folder: Path) -> Path:
    for name, body in (("index.html", "<!doctype html>"), ("app.js", "1"), ("app.css", "a{}")):
        (folder / name).write_text(body)
    return folder


class Recorder:
    """An ASGI application (or send) that keeps what reached it."""

    def __init__(self) -> None:
        self.calls: list[Any] = []

    async def __call__(self, *args: Any) -> None:
        self.calls.append(args)

    async def send(self, message: Any) -> None:
        self.calls.append(message)


async def get(app: PageApp, path: str, method: str = "GET") -> list[Any]:
    sent = Recorder()

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    await app({"type": "http", "path": path, "method": method}, receive, sent.send)
    return sent.calls


async def test_the_page_is_served_with_its_type_and_headers(tmp_path: Path) -> None:
    rpc = Recorder()
    app = PageApp(built(tmp_path), rpc)
    start, body = await get(app, "/")
    headers = dict(start["headers"])
    assert start["status"] == 200
    assert headers[b"content-type"] == b"text/html; charset=utf-8"
    assert headers[b"content-security-policy"].startswith(b"default-src 'self'")
    assert body["body"] == b"<!doctype html>"
    start, body = await get(app, "/app.js", "HEAD")
    assert dict(start["headers"])[b"content-length"] == b"1" and body["body"] == b""
    assert rpc.calls == []


async def test_anything_else_goes_to_grpc_web(tmp_path: Path) -> None:
    rpc = Recorder()
    app = PageApp(built(tmp_path), rpc)
    assert await get(app, "/virtplane.v1.VmService/ListVms", "POST") == []
    assert await get(app, "/", "POST") == []
    assert [call[0]["path"] for call in rpc.calls] == ["/virtplane.v1.VmService/ListVms", "/"]


def test_a_page_not_built_names_make_web(tmp_path: Path) -> None:
    (tmp_path / "index.html").write_text("x")
    with pytest.raises(PageNotBuilt, match="make web"):
        PageApp(tmp_path, Recorder())
