"""Fixtures shared by the whole suite: access to the real parts.

A test that needs libvirt, a real guest or PostgreSQL and cannot get it is
skipped with the reason; `make test` sets everything up, so on a prepared
machine they run.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import tempfile
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import libvirt
import pytest
from sqlalchemy import Engine, create_engine, make_url, text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.pool import NullPool

REPO = Path(__file__).resolve().parent.parent
GUEST_IMAGE_DIR = Path(os.environ.get("VIRTPLANE_GUEST_IMAGE", REPO / "build" / "guest"))
SYSTEM_URI = "qemu:///system"
# The PostgreSQL server the tests make their databases on: by default the
# local one, over its unix socket, as the role `make setup` creates.
POSTGRES_URL = os.environ.get("VIRTPLANE_TEST_POSTGRES", "postgresql+psycopg:///postgres")
TEST_DB_PREFIX = "virtplane_test_"


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


SECOND_LIBVIRTD = REPO / "tools" / "second-libvirtd.sh"


@pytest.fixture(scope="session")
def second_libvirt(system_libvirt: str) -> Iterator[str]:
    """The URI of a second privileged libvirtd on this machine: a second host to
    migrate to (tools/second-libvirtd.sh; hostd/README.md, "Two hosts on one
    machine"). Started once per session, when first asked for; at the end every
    domain on it is destroyed and it is stopped. Use it like system_libvirt,
    e.g. as a second hostd's --libvirt-uri."""
    directory = Path(tempfile.mkdtemp(prefix="vp-l2-", dir="/tmp"))
    started = subprocess.run(
        ["bash", str(SECOND_LIBVIRTD), "start", str(directory)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if started.returncode != 0:
        shutil.rmtree(directory, ignore_errors=True)
        _skip_or_fail(f"cannot start a second libvirtd: {started.stderr.strip() or 'no reason'}")
    try:
        yield started.stdout.strip().splitlines()[-1]
    finally:
        subprocess.run(
            ["bash", str(SECOND_LIBVIRTD), "stop", str(directory)],
            capture_output=True,
            timeout=120,
            check=False,
        )
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(scope="session")
def guest_image(system_libvirt: str) -> GuestImage:
    """The test guest image; needs `make guest-image`."""
    meta = GUEST_IMAGE_DIR / "image.json"
    if not meta.exists():
        _skip_or_fail(f"no test guest image at {GUEST_IMAGE_DIR}; run `make guest-image`")
    data = json.loads(meta.read_text())
    return GuestImage(kernel=data["kernel"], initrd=data["initrd"], cmdline=data["cmdline"])


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _drop_leftovers(admin: Engine) -> None:
    """Drops the test databases of test runs that died before their clean-up."""
    with admin.connect() as conn:
        names = conn.scalars(
            text("SELECT datname FROM pg_database WHERE datname LIKE :p"),
            {"p": TEST_DB_PREFIX + "%"},
        ).all()
        for name in names:
            pid = name.removeprefix(TEST_DB_PREFIX).split("_", 1)[0]
            if pid.isdigit() and not _pid_alive(int(pid)):
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(scope="session")
def postgres_admin() -> Iterator[Engine]:
    """An autocommit engine on the PostgreSQL server's maintenance database,
    for creating and dropping test databases."""
    url = make_url(POSTGRES_URL)
    try:
        admin = create_engine(url, isolation_level="AUTOCOMMIT", poolclass=NullPool)
        with admin.connect() as conn:
            can_create = conn.scalar(
                text("SELECT rolcreatedb FROM pg_roles WHERE rolname = current_user")
            )
    except (SQLAlchemyError, ImportError) as exc:
        first = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
        _skip_or_fail(f"PostgreSQL at {url} is not reachable ({first}); run `make setup`")
    if not can_create:
        _skip_or_fail(f"the role at {url} may not create databases; run `make setup`")
    _drop_leftovers(admin)
    yield admin
    admin.dispose()


@pytest.fixture
def postgres_url(postgres_admin: Engine) -> Iterator[str]:
    """The URL of a fresh, empty PostgreSQL database, dropped after the test."""
    name = f"{TEST_DB_PREFIX}{os.getpid()}_{uuid.uuid4().hex[:12]}"
    with postgres_admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}" TEMPLATE template0'))
    try:
        yield postgres_admin.url.set(database=name).render_as_string(hide_password=False)
    finally:
        with postgres_admin.connect() as conn:
            # FORCE: a daemon under test may still hold connections.
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The URL of a fresh, empty database, on each engine the controller
    supports: a file for SQLite, a database of its own on PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'virtplane.db'}"
    url: str = request.getfixturevalue("postgres_url")
    return url


def domain_exists(uri: str, vm_id: str) -> bool:
    """Whether libvirt at uri has a domain with this UUID."""
    conn = libvirt.open(uri)
    try:
        conn.lookupByUUIDString(vm_id)
        return True
    except libvirt.libvirtError:
        return False
    finally:
        conn.close()


def remove_domains(uri: str, vm_ids: Iterable[str], *, undefine: bool = True) -> None:
    """Destroys (and with undefine, undefines) the domains of these VM ids that
    libvirt at uri still has: a test's clean-up, whatever hostd left."""
    conn = libvirt.open(uri)
    try:
        for vm_id in vm_ids:
            try:
                dom = conn.lookupByUUIDString(vm_id)
            except libvirt.libvirtError:
                continue
            for step in (dom.destroy, dom.undefine) if undefine else (dom.destroy,):
                with contextlib.suppress(libvirt.libvirtError):
                    step()
    finally:
        conn.close()


def disk_image(path: Path, fmt: str, size_mib: int = 8) -> str:
    """Makes an empty disk image at path, raw (a sparse file) or qcow2 (by
    qemu-img, from qemu-utils); returns its path. QEMU runs as another user:
    path's folders must be searchable by others."""
    if fmt == "raw":
        subprocess.run(["truncate", "-s", f"{size_mib}M", str(path)], check=True)
        return str(path)
    if shutil.which("qemu-img") is None:
        _skip_or_fail("qemu-img is not installed (qemu-utils); run `make setup`")
    subprocess.run(
        ["qemu-img", "create", "-q", "-f", fmt, str(path), f"{size_mib}M"],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return str(path)


def disks_of(xml: str) -> list[tuple[str, str, str, bool]]:
    """(format, image, target, read-only) of each file disk in a domain's XML."""
    found = []
    for disk in ET.fromstring(xml).iterfind("devices/disk[@type='file']"):
        driver, source, target = disk.find("driver"), disk.find("source"), disk.find("target")
        assert driver is not None and source is not None and target is not None, xml
        found.append(
            (
                driver.get("type", ""),
                source.get("file", ""),
                target.get("dev", ""),
                disk.find("readonly") is not None,
            )
        )
    return found
