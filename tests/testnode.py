"""Hosts simulated by libvirt's test driver: each test:///…/node.xml
connection is an independent in-memory host with the memory and CPUs its
file gives."""

from __future__ import annotations

import uuid
from pathlib import Path

from hostd.builder import DOMAIN_NAME_PREFIX


def node_xml(path: Path, *, memory_mib: int = 8192, cpus: int = 8, clash: str = "") -> str:
    """Writes a test-driver host description and returns its URI: an
    independent in-memory host. With clash, a domain of that VM's name is
    defined there already, so that libvirt refuses to start the VM."""
    domain = ""
    if clash:
        domain = f"""
  <domain type="test">
    <name>{DOMAIN_NAME_PREFIX}{clash}</name>
    <uuid>{uuid.uuid4()}</uuid>
    <memory>65536</memory>
    <vcpu>1</vcpu>
    <os><type>hvm</type></os>
  </domain>"""
    path.write_text(
        f"""<node>
  <cpu>
    <mhz>2000</mhz><model>x86_64</model><active>{cpus}</active>
    <nodes>1</nodes><sockets>1</sockets><cores>{cpus}</cores><threads>1</threads>
  </cpu>
  <memory>{memory_mib * 1024}</memory>{domain}
</node>
"""
    )
    return f"test://{path}"
