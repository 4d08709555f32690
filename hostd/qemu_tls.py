"""This host's key pair where QEMU's native TLS migration reads it.

libvirtd's qemu.conf names a folder (``migrate_tls_x509_cert_dir``, hostd's
``--qemu-tls-dir``) from which QEMU loads its credentials for each migration
(VIR_MIGRATE_TLS): ``ca-cert.pem``, and the host's own certificate and key
twice, as the server (the destination's QEMU) and as the client (the
source's), in ``server-cert.pem``/``server-key.pem`` and
``client-cert.pem``/``client-key.pem``. A host's certificate is good for both
(serverAuth and clientAuth) and names ``<host id>.hosts.virtplane``: the
source's QEMU checks the destination's certificate for that name
(VIR_MIGRATE_PARAM_TLS_DESTINATION) and the destination's QEMU requires the
source's certificate signed by the same CA.

QEMU runs as another user than hostd (Debian: libvirt-qemu): the folder and
the keys belong to QEMU's group and are readable by it (0750, 0640), not by
others. Each file is replaced whole (a new file renamed over the old), all
five renamed together once written. install() is called at hostd's start and
after each renewal of its certificate.
"""

from __future__ import annotations

import grp
import os
import pwd
import re
from collections.abc import Callable
from pathlib import Path

from hostd.config import DEFAULT_QEMU_TLS_DIR
from virtplane_common.tls.files import KeyPair

DEFAULT_FOLDER = DEFAULT_QEMU_TLS_DIR
QEMU_CONF = Path("/etc/libvirt/qemu.conf")
CA = "ca-cert.pem"
SERVER_CERT, SERVER_KEY = "server-cert.pem", "server-key.pem"
CLIENT_CERT, CLIENT_KEY = "client-cert.pem", "client-key.pem"
FILES = (CA, SERVER_CERT, SERVER_KEY, CLIENT_CERT, CLIENT_KEY)
_DEFAULT_USERS = ("libvirt-qemu", "qemu")
"""QEMU's user when qemu.conf names none: Debian's, then Fedora's; else root."""


def install(pair: KeyPair, folder: Path = DEFAULT_FOLDER, *, qemu_conf: Path = QEMU_CONF) -> None:
    """Writes pair into folder as QEMU's migration credentials, readable by the
    group QEMU runs as (qemu_conf's ``group``, else its user's), not by others."""
    gid = qemu_group(qemu_conf)
    folder.mkdir(parents=True, exist_ok=True)
    os.chown(folder, -1, gid)
    folder.chmod(0o750)
    files = (
        (CA, pair.ca, 0o644),
        (SERVER_KEY, pair.key, 0o640),
        (CLIENT_KEY, pair.key, 0o640),
        (SERVER_CERT, pair.cert, 0o644),
        (CLIENT_CERT, pair.cert, 0o644),
    )
    # Every file written first, then all renamed in one go: a migration
    # starting meanwhile reads the old pair or the new, but for that instant.
    written = [_write_aside(folder / name, data, mode, gid) for name, data, mode in files]
    for (name, _data, _mode), temporary in zip(files, written, strict=True):
        os.replace(temporary, folder / name)


def installed(folder: Path = DEFAULT_FOLDER) -> bool:
    """Whether folder holds every file QEMU reads."""
    return all((folder / name).is_file() for name in FILES)


def qemu_group(qemu_conf: Path = QEMU_CONF) -> int:
    """The group id QEMU's processes run as under the libvirtd of qemu_conf."""
    settings = _settings(qemu_conf)
    if "group" in settings:
        return _group_id(settings["group"])
    user = settings.get("user") or next(
        (name for name in _DEFAULT_USERS if _exists(pwd.getpwnam, name)), "root"
    )
    if user.startswith("+"):
        return pwd.getpwuid(int(user[1:])).pw_gid
    # libvirt's packages give QEMU's user a group of the same name.
    if _exists(grp.getgrnam, user):
        return grp.getgrnam(user).gr_gid
    return pwd.getpwnam(user).pw_gid


_SETTING = re.compile(r'^\s*(user|group)\s*=\s*"([^"]*)"\s*(?:#.*)?$')


def _settings(qemu_conf: Path) -> dict[str, str]:
    try:
        text = qemu_conf.read_text()
    except FileNotFoundError:
        return {}
    return {m[1]: m[2] for line in text.splitlines() if (m := _SETTING.match(line))}


def _group_id(name: str) -> int:
    return int(name[1:]) if name.startswith("+") else grp.getgrnam(name).gr_gid


def _exists(lookup: Callable[[str], object], name: str) -> bool:
    try:
        lookup(name)
    except KeyError:
        return False
    return True


def _write_aside(path: Path, data: bytes, mode: int, gid: int) -> Path:
    """Writes data next to path, with mode and group gid from its first byte;
    returns the file to rename over path."""
    temporary = path.with_name(f".{path.name}.new")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchown(fd, -1, gid)
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as out:
            fd = -1
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
    finally:
        if fd >= 0:
            os.close(fd)
    return temporary
