"""A running domain's migratable XML, retargeted to the destination host's paths.

The destination runs the same domain (libvirt checks that its devices are
the same), but the files hostd keeps per VM live under each host's own state
directory: the guest channel's socket, the console log, and hostd's metadata
naming the state directory that owns the domain. Only those are changed;
everything else in the XML is kept as libvirt wrote it.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET

from hostd.builder import GUEST_CHANNEL_NAME
from hostd.domxml import METADATA_NAMESPACE
from hostd.hypervisor import MigrationTarget


def retarget(xml: str, target: MigrationTarget) -> str:
    """The domain XML for the destination: channel socket, console log and owner moved."""
    root = ET.fromstring(xml)
    for channel in root.iterfind("devices/channel"):
        target_element = channel.find("target")
        source = channel.find("source")
        if (
            target_element is not None
            and target_element.get("name") == GUEST_CHANNEL_NAME
            and source is not None
        ):
            source.set("path", target.channel_socket)
    for kind in ("serial", "console"):
        for device in root.iterfind(f"devices/{kind}"):
            source = device.find("source")
            if device.get("type") == "file" and source is not None:
                source.set("path", target.console_log)
    state_dir = root.find(f"metadata/{{{METADATA_NAMESPACE}}}vm/{{{METADATA_NAMESPACE}}}state-dir")
    if state_dir is not None:
        state_dir.text = target.state_dir
    return ET.tostring(root, encoding="unicode")
