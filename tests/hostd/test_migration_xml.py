"""The migratable XML retargeted to the destination's paths; the rest kept as it is."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from hostd.domxml import metadata_in_domain
from hostd.hypervisor import MigrationTarget
from hostd.migration_xml import retarget

VM = "6f1c9a52-3d0e-4b7a-9a51-0c2d8e4f7b13"
SOURCE = f"""<domain type='qemu'>
  <name>vp-x</name>
  <uuid>{VM}</uuid>
  <metadata>
    <vp:vm xmlns:vp="urn:virtplane:hostd:1">
      <vp:id>{VM}</vp:id>
      <vp:state-dir>/srv/a</vp:state-dir>
      <vp:config>Cg==</vp:config>
    </vp:vm>
  </metadata>
  <devices>
    <serial type='file'><source path='/srv/a/consoles/{VM}.log'/><target port='0'/></serial>
    <console type='file'><source path='/srv/a/consoles/{VM}.log'/><target port='0'/></console>
    <channel type='unix'>
      <source mode='bind' path='/srv/a/channels/{VM}.sock'/>
      <target type='virtio' name='org.virtplane.guestd.0'/>
      <address type='virtio-serial' controller='0' bus='0' port='1'/>
    </channel>
    <channel type='unix'>
      <source mode='bind' path='/var/lib/other.sock'/>
      <target type='virtio' name='org.example.other'/>
    </channel>
  </devices>
</domain>"""
TARGET = MigrationTarget(
    hypervisor_uri="qemu+tls://b/system",
    migration_uri="tcp://192.0.2.7:49152",
    channel_socket=f"/srv/b/channels/{VM}.sock",
    console_log=f"/srv/b/consoles/{VM}.log",
    state_dir="/srv/b",
)


def test_the_channel_console_and_owner_move_to_the_destination() -> None:
    root = ET.fromstring(retarget(SOURCE, TARGET))
    channels = {
        c.get("name"): s.get("path")
        for c, s in zip(
            root.iterfind("devices/channel/target"),
            root.iterfind("devices/channel/source"),
            strict=True,
        )
    }
    assert channels == {
        "org.virtplane.guestd.0": TARGET.channel_socket,
        "org.example.other": "/var/lib/other.sock",
    }
    for kind in ("serial", "console"):
        assert root.find(f"devices/{kind}/source").get("path") == TARGET.console_log  # type: ignore[union-attr]
    metadata = metadata_in_domain(retarget(SOURCE, TARGET))
    assert metadata is not None
    assert (metadata.vm_id, metadata.state_dir, metadata.config) == (VM, "/srv/b", b"\n")


def test_everything_else_is_kept() -> None:
    root = ET.fromstring(retarget(SOURCE, TARGET))
    assert root.findtext("uuid") == VM
    assert root.findtext("name") == "vp-x"
    address = root.find("devices/channel/address")
    assert address is not None and address.get("port") == "1"
