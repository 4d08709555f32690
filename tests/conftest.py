"""Fixtures shared by the whole suite: access to the real parts (libvirt, a
second libvirtd, the test guest image, PostgreSQL).

A test that needs one and cannot get it is skipped with the reason (failed,
in CI); the building blocks are in tests.support.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import libvirt
import pytest
from sqlalchemy import Engine

from tests.support import postgres
from tests.support.real import SYSTEM_URI, GuestImage, require_guest_image, skip_or_fail
from tests.support.virt import SecondLibvirtdError, second_libvirtd


@pytest.fixture(scope="session")
def system_libvirt() -> Iterator[str]:
    """The URI of a working qemu:///system libvirtd."""
    try:
        conn = libvirt.open(SYSTEM_URI)
    except libvirt.libvirtError as exc:
        skip_or_fail(f"libvirtd at {SYSTEM_URI} is not reachable ({exc}); run `make setup`")
    conn.close()
    yield SYSTEM_URI


@pytest.fixture(scope="session")
def second_libvirt(system_libvirt: str) -> Iterator[str]:
    """The URI of a second privileged libvirtd on this machine, a second host to
    migrate to (tests.support.virt.second_libvirtd). Started once per session,
    when first asked for; at the end every domain on it is destroyed and it is
    stopped. Use it like system_libvirt, e.g. as a second hostd's --libvirt-uri."""
    try:
        with second_libvirtd() as uri:
            yield uri
    except SecondLibvirtdError as exc:
        skip_or_fail(str(exc))


@pytest.fixture(scope="session")
def guest_image(system_libvirt: str) -> GuestImage:
    """The test guest image; needs `make guest-image`."""
    return require_guest_image()


@pytest.fixture(scope="session")
def postgres_admin() -> Iterator[Engine]:
    """An autocommit engine on the PostgreSQL server's maintenance database,
    for creating and dropping test databases."""
    admin = postgres.usable_admin()
    yield admin
    admin.dispose()


@pytest.fixture
def postgres_url(postgres_admin: Engine) -> Iterator[str]:
    """The URL of a fresh, empty PostgreSQL database, dropped after the test."""
    with postgres.fresh_database(postgres_admin) as url:
        yield url


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The URL of a fresh, empty database, on each engine the controller
    supports: a file for SQLite, a database of its own on PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'virtplane.db'}"
    url: str = request.getfixturevalue("postgres_url")
    return url
