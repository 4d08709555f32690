"""The bounds of what the API stores and runs, one table for every side: the
controller checks what clients send against them, hostd checks what it is asked
to run against the same (virtplane_common.validation), and the database's
columns are declared with the widths below (db.models), so that nothing the
validator passes is too long for its column.
"""

from __future__ import annotations

import re

MIN_MEMORY_MIB = 16
MAX_MEMORY_MIB = 16 * 1024 * 1024
MAX_VCPUS = 512
MAX_CMDLINE = 4096
MAX_PATH = 4096
MAX_NICS = 16
MAX_DISKS = 16
"""As many as a host attaches, on the virtio bus."""

# Column widths (db.models declares its columns with these).
NAME_COLUMN = 255
"""A VM's, host's, cluster's or affinity group's name."""
DEVICE_NAME_COLUMN = 64
"""A NIC's or disk's name."""
NETWORK_COLUMN = 255
ADDRESS_COLUMN = 255
"""A host's address, host:port."""
MAC_COLUMN = 17
AGENT_VERSION_COLUMN = 256

# The longest each field may be: never more than its column.
MAX_NAME = 63
MAX_NIC_NAME = 32
MAX_DISK_NAME = 63
MAX_NETWORK = 64
MAX_ADDRESS = ADDRESS_COLUMN
MAX_AGENT_VERSION = AGENT_VERSION_COLUMN

NAME = re.compile(rf"[A-Za-z0-9][A-Za-z0-9._-]{{0,{MAX_NAME - 1}}}")
"""A VM's or host's name: it names domains and files (use fullmatch)."""
NIC_NAME = re.compile(rf"[A-Za-z0-9][A-Za-z0-9._-]{{0,{MAX_NIC_NAME - 1}}}")
DISK_NAME = re.compile(rf"[A-Za-z0-9][A-Za-z0-9._-]{{0,{MAX_DISK_NAME - 1}}}")
NETWORK = re.compile(rf"[A-Za-z0-9][A-Za-z0-9._-]{{0,{MAX_NETWORK - 1}}}")
"""A libvirt network's name (use fullmatch)."""
MAC = re.compile(r"[0-9a-f]{2}(:[0-9a-f]{2}){5}")
"""A MAC address, lower case (use fullmatch)."""
