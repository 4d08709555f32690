"""Keeping one VM's GuestInfo under a byte limit.

A guest's merged report can grow large (thousands of applications, users,
filesystems, each string up to the channel's cap). What is over the limit
is dropped from the end of the bulkiest lists, applications first; the VM
never fails for it. application_count still says how many the guest has.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from virtplane.v1 import vm_pb2

_LISTS = ("applications", "users", "filesystems", "interfaces")
"""Cut in this order, each from its end."""


def cap_guest_info(info: vm_pb2.GuestInfo, max_bytes: int) -> int:
    """Cuts info in place to at most max_bytes serialised; returns the items dropped."""
    excess = info.ByteSize() - max_bytes
    dropped = 0
    for name in _LISTS:
        if excess <= 0:
            break
        items: Any = getattr(info, name)
        keep, freed = _keep_count(items, excess)
        dropped += len(items) - keep
        del items[keep:]
        excess -= freed
    if info.ByteSize() > max_bytes:  # the scalar fields alone: a limit set too low
        dropped += sum(len(getattr(info, name)) for name in _LISTS)
        for name in _LISTS:
            del getattr(info, name)[:]
    return dropped


def _keep_count(items: Sequence[Any], excess: int) -> tuple[int, int]:
    """How many items to keep from the start so that about excess bytes are
    freed, and how many bytes that frees."""
    freed = 0
    keep = len(items)
    while keep and freed < excess:
        keep -= 1
        item = items[keep]
        size = len(item.encode()) if isinstance(item, str) else item.ByteSize()
        freed += size + 2  # at least the tag and a one-byte length: never more than freed
    return keep, freed
