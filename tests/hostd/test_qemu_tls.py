"""hostd.qemu_tls: the host's pair where QEMU reads it, readable by QEMU's group
only, replaced whole (a QEMU that reads them in real migrations:
test_real_migration_tls.py)."""

from __future__ import annotations

import grp
import pwd
import stat
from pathlib import Path

import pytest

from hostd import qemu_tls
from hostd.main import parse_args
from tests.support.pki import TestPki
from virtplane_common.tls.files import KeyPair
from virtplane_common.tls.names import Role


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _group_name(gid: int) -> str:
    return grp.getgrgid(gid).gr_name


@pytest.fixture
def pki(tmp_path: Path) -> TestPki:
    return TestPki(tmp_path / "pki")


def test_the_pair_is_written_for_both_ends_of_a_migration(tmp_path: Path, pki: TestPki) -> None:
    pair = pki.pair(Role.HOST, "h1")
    folder = tmp_path / "migrate"
    qemu_tls.install(pair, folder)
    assert sorted(p.name for p in folder.iterdir()) == sorted(qemu_tls.FILES)
    assert qemu_tls.installed(folder)
    assert (folder / "ca-cert.pem").read_bytes() == pair.ca
    for end in ("server", "client"):
        assert (folder / f"{end}-cert.pem").read_bytes() == pair.cert
        assert (folder / f"{end}-key.pem").read_bytes() == pair.key
    group = qemu_tls.qemu_group()
    assert folder.stat().st_gid == group and _mode(folder) == 0o750
    for name in ("server-key.pem", "client-key.pem"):
        path = folder / name
        assert _mode(path) == 0o640, "QEMU's group reads the key, others nothing"
        assert path.stat().st_gid == group, _group_name(path.stat().st_gid)


def test_a_renewed_pair_replaces_the_old_whole(tmp_path: Path, pki: TestPki) -> None:
    folder = tmp_path / "migrate"
    qemu_tls.install(pki.pair(Role.HOST, "h1"), folder)
    renewed = pki.pair(Role.HOST, "h1")
    qemu_tls.install(renewed, folder)
    assert (
        KeyPair(
            (folder / "ca-cert.pem").read_bytes(),
            (folder / "client-cert.pem").read_bytes(),
            (folder / "client-key.pem").read_bytes(),
        )
        == renewed
    )
    assert sorted(p.name for p in folder.iterdir()) == sorted(qemu_tls.FILES), "no leftovers"


def test_qemus_group_comes_from_qemu_conf(tmp_path: Path) -> None:
    conf = tmp_path / "qemu.conf"
    root_group = grp.getgrgid(0).gr_name
    conf.write_text(f'# user = "nobody"\ngroup = "{root_group}"  # set\n')
    assert qemu_tls.qemu_group(conf) == 0
    conf.write_text('user = "+0"\n')
    assert qemu_tls.qemu_group(conf) == pwd.getpwuid(0).pw_gid
    conf.write_text('group = "+4242"\n')
    assert qemu_tls.qemu_group(conf) == 4242
    missing = tmp_path / "none.conf"
    expected = next(
        (grp.getgrnam(u).gr_gid for u in ("libvirt-qemu", "qemu") if _has_group(u)), None
    )
    if expected is not None:
        assert qemu_tls.qemu_group(missing) == expected
    else:
        assert qemu_tls.qemu_group(missing) == 0


def _has_group(name: str) -> bool:
    try:
        pwd.getpwnam(name)
        grp.getgrnam(name)
    except KeyError:
        return False
    return True


def test_hostd_flags() -> None:
    config, _ = parse_args([])
    assert config.migration.tls and config.migration.qemu_tls_dir == qemu_tls.DEFAULT_FOLDER
    config, _ = parse_args(["--qemu-tls-dir", "/srv/tls", "--insecure-plaintext-dev"])
    assert not config.migration.tls and config.migration.qemu_tls_dir == Path("/srv/tls")
