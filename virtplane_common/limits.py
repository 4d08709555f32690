"""The bounds of a VM spec, one table for every side: the controller checks what
clients send against them, hostd checks what it is asked to run against the same
(the checks both make alike are virtplane_common.spec_checks).
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
MAX_AGENT_VERSION = 256

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")
"""A VM's or host's name: it names domains and files (use fullmatch)."""
MAC = re.compile(r"[0-9a-f]{2}(:[0-9a-f]{2}){5}")
"""A MAC address, lower case (use fullmatch)."""
