"""Where the real parts are (the repository, the test guest image, libvirt,
PostgreSQL), and what a test does when one is missing: skip, or fail in CI.

A test that needs libvirt, a real guest or PostgreSQL and cannot get it is
skipped with the reason; `make test` sets everything up, so on a prepared
machine they run. With VIRTPLANE_REQUIRE_REAL=1 (CI) a missing part fails.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

import pytest

REPO = Path(__file__).resolve().parent.parent.parent
GUEST_IMAGE_DIR = Path(os.environ.get("VIRTPLANE_GUEST_IMAGE", REPO / "build" / "guest"))
IMAGE_ROOTS = (GUEST_IMAGE_DIR, Path(tempfile.gettempdir()))
"""The image roots every test hostd is given (--image-root): the test guest
image's folder, and the temporary folder the tests write their stand-in
kernels and disks under."""
SYSTEM_URI = "qemu:///system"
# The PostgreSQL server the tests make their databases on: by default the
# local one, over its unix socket, as the role `make setup` creates.
POSTGRES_URL = os.environ.get("VIRTPLANE_TEST_POSTGRES", "postgresql+psycopg:///postgres")


@dataclass(frozen=True)
class GuestImage:
    """The test guest built by `make guest-image`."""

    kernel: str
    initrd: str
    cmdline: str


def skip_or_fail(reason: str) -> NoReturn:
    """Skips the test for want of a real part; in CI, fails it instead."""
    if os.environ.get("VIRTPLANE_REQUIRE_REAL") == "1":
        pytest.fail(reason)
    pytest.skip(reason)


def load_guest_image(directory: Path = GUEST_IMAGE_DIR) -> GuestImage:
    """The test guest image described in directory/image.json."""
    data = json.loads((directory / "image.json").read_text())
    return GuestImage(kernel=data["kernel"], initrd=data["initrd"], cmdline=data["cmdline"])


def require_guest_image(directory: Path = GUEST_IMAGE_DIR) -> GuestImage:
    """load_guest_image, skipping (or failing) the test when there is none."""
    if not (directory / "image.json").exists():
        skip_or_fail(f"no test guest image at {directory}; run `make guest-image`")
    return load_guest_image(directory)
