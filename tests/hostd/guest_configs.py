"""The VmConfig of a real test guest, shared by hostd's tests that boot one."""

from __future__ import annotations

import os

from virtplane.v1 import host_agent_service_pb2 as pb
from virtplane.v1 import vm_pb2

from tests.support.hostd_rig import vm_config
from tests.support.real import GuestImage


def guest_config(image: GuestImage, name: str, cmdline_extra: str = "") -> pb.VmConfig:
    """A 256 MiB guest of the test image named NAME-PID, on user networking.

    cmdline_extra, when given, is appended to the image's kernel command line.
    """
    config = vm_config(
        image.kernel,
        initrd=image.initrd,
        name=f"{name}-{os.getpid()}",
        memory_mib=256,
        nics=(vm_pb2.Nic(kind=vm_pb2.Nic.KIND_USER),),
    )
    config.spec.boot.cmdline = (
        f"{image.cmdline} {cmdline_extra}" if cmdline_extra else image.cmdline
    )
    return config
