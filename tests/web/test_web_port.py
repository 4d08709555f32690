"""The page's HTTP port (controller.web.server) on its own: TLS with the
controller's certificate files, and a renewed certificate presented from the
next handshake on, as the gRPC ports do."""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path
from typing import Any

from cryptography import x509

from controller.web.server import WebServer
from tests.support.pki import TestPki
from virtplane_common.tls.names import Role


async def nothing(scope: Any, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 204, "headers": []})
    await send({"type": "http.response.body", "body": b""})


async def served_serial(port: int, ca: bytes) -> int:
    """The serial number of the certificate the port presents."""
    context = ssl.create_default_context(cadata=ca.decode())
    _, writer = await asyncio.open_connection("127.0.0.1", port, ssl=context)
    der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
    writer.close()
    await writer.wait_closed()
    return x509.load_der_x509_certificate(der).serial_number


async def test_the_port_presents_the_renewed_certificate(tmp_path: Path) -> None:
    pki = TestPki(tmp_path)
    first, second = pki.pair(Role.CONTROLLER), pki.pair(Role.CONTROLLER)
    files = pki.files("controller", first)
    server = WebServer(nothing, "127.0.0.1:0", files)
    server.start()
    try:
        serial = x509.load_pem_x509_certificate(first.cert).serial_number
        assert await served_serial(server.port, pki.ca_pem) == serial
        second.write(files)
        server.renewed()
        serial = x509.load_pem_x509_certificate(second.cert).serial_number
        assert await served_serial(server.port, pki.ca_pem) == serial
    finally:
        await server.stop()
