"""Fixtures shared by the whole suite: access to the real parts.

A test that needs libvirt or a real guest and cannot get it is skipped with
the reason; `make test` sets everything up, so on a prepared machine they run.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import libvirt
import pytest

REPO = Path(__file__).resolve().parent.parent
GUEST_IMAGE_DIR = Path(os.environ.get("VIRTPLANE_GUEST_IMAGE", REPO / "build" / "guest"))
SYSTEM_URI = "qemu:///system"


@dataclass(frozen=True)
class GuestImage:
    """The test guest built by `make guest-image`."""

    kernel: str
    initrd: str
    cmdline: str


def _skip_or_fail(reason: str) -> None:
    # In CI a missing real part is a failure, never a silent skip.
    if os.environ.get("VIRTPLANE_REQUIRE_REAL") == "1":
        pytest.fail(reason)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def system_libvirt() -> Iterator[str]:
    """The URI of a working qemu:///system libvirtd."""
    try:
        conn = libvirt.open(SYSTEM_URI)
    except libvirt.libvirtError as exc:
        _skip_or_fail(f"libvirtd at {SYSTEM_URI} is not reachable ({exc}); run `make setup`")
    conn.close()
    yield SYSTEM_URI


@pytest.fixture(scope="session")
def guest_image(system_libvirt: str) -> GuestImage:
    """The test guest image; needs `make guest-image`."""
    meta = GUEST_IMAGE_DIR / "image.json"
    if not meta.exists():
        _skip_or_fail(f"no test guest image at {GUEST_IMAGE_DIR}; run `make guest-image`")
    data = json.loads(meta.read_text())
    return GuestImage(kernel=data["kernel"], initrd=data["initrd"], cmdline=data["cmdline"])
