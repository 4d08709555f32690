"""The checks of a VM spec's fields that the controller and hostd make alike, worded once.

Each takes the field's path as the caller names it ("spec.vcpus",
"config.spec.vcpus", ...) and raises InvalidArgument naming that field. What
only one side checks stays with it: the controller requires vcpus and memory
(hostd fills in vcpus), hostd checks paths on its own filesystem, NIC and
network names against libvirt's, and MACs for unicast.
"""

from __future__ import annotations

from virtplane_common.errors import InvalidArgument
from virtplane_common.limits import MAC, MAX_DISKS, MAX_MEMORY_MIB, MAX_VCPUS, MIN_MEMORY_MIB


def check_vcpus(field: str, vcpus: int) -> None:
    if vcpus > MAX_VCPUS:
        raise InvalidArgument(field, f"must be at most {MAX_VCPUS} (got {vcpus})")


def check_memory(field: str, memory_mib: int) -> None:
    if not MIN_MEMORY_MIB <= memory_mib <= MAX_MEMORY_MIB:
        raise InvalidArgument(
            field, f"must be between {MIN_MEMORY_MIB} and {MAX_MEMORY_MIB} MiB (got {memory_mib})"
        )


def check_mac(field: str, mac: str) -> str:
    """Returns a set MAC address in lower case; raises when it is not one."""
    lower = mac.lower()
    if not MAC.fullmatch(lower):
        raise InvalidArgument(field, f"must look like 52:54:00:12:34:56 (got {mac!r})")
    return lower


def check_disk_count(field: str, count: int) -> None:
    if count > MAX_DISKS:
        raise InvalidArgument(field, f"at most {MAX_DISKS} disks (got {count})")
