"""Keys and certificates on disk: one folder per identity.

A folder holds ``ca.pem`` (the CA's certificate), ``cert.pem`` and
``key.pem`` (this identity's), and, where revocations are kept, ``crl.pem``.
Writes are atomic (a new file renamed over the old), so a reader sees the old
file or the new, never half; private keys are 0600 from their first byte.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class TlsFiles:
    folder: Path

    @property
    def ca(self) -> Path:
        return self.folder / "ca.pem"

    @property
    def cert(self) -> Path:
        return self.folder / "cert.pem"

    @property
    def key(self) -> Path:
        return self.folder / "key.pem"

    @property
    def crl(self) -> Path:
        return self.folder / "crl.pem"

    def complete(self) -> bool:
        return self.ca.is_file() and self.cert.is_file() and self.key.is_file()


@dataclass(frozen=True)
class KeyPair:
    """An identity's key and certificate, and the CA certificate to trust (PEM)."""

    ca: bytes
    cert: bytes
    key: bytes

    @classmethod
    def read(cls, files: TlsFiles) -> KeyPair:
        return cls(files.ca.read_bytes(), files.cert.read_bytes(), files.key.read_bytes())

    def write(self, files: TlsFiles) -> None:
        write_public(files.ca, self.ca)
        write_private(files.key, self.key)
        write_public(files.cert, self.cert)


def write_private(path: Path, data: bytes) -> None:
    """Writes data to path atomically, readable by its owner only (0600)."""
    _write(path, data, 0o600)


def write_public(path: Path, data: bytes) -> None:
    """Writes data to path atomically, world-readable (0644)."""
    _write(path, data, 0o644)


def _write(path: Path, data: bytes, mode: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    temporary = path.with_name(f".{path.name}.new")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    os.fchmod(fd, mode)  # an older file of that name kept its own mode
    with os.fdopen(fd, "wb") as out:
        out.write(data)
        out.flush()
        os.fsync(out.fileno())
    os.replace(temporary, path)
