"""Where the CLI finds its controller and credential: a config file, with
environment overrides.

The file is ``$VIRTPLANE_CONFIG``, else ``$XDG_CONFIG_HOME/virtplane/config.toml``
(``~/.config/virtplane/config.toml``), written by ``virtplane login`` with mode
0600 (it holds the token)::

    address = "ctl.example:7000"
    ca = "/etc/virtplane/ca.pem"
    token = "vp_…"

VIRTPLANE_ADDRESS (or the older VIRTPLANE_CONTROLLER), VIRTPLANE_CA and
VIRTPLANE_TOKEN override the file's values; --controller overrides the
address. The CLI always speaks TLS (trusting the system's roots when no CA is
named), except to a development controller started with
--insecure-plaintext-dev: ``insecure_development = "1"`` in the file,
VIRTPLANE_INSECURE_DEV=1 or ``virtplane --insecure-plaintext-dev``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from virtplane_client.credentials import INSECURE_DEVELOPMENT, Credentials

DEFAULT_ADDRESS = "127.0.0.1:7000"
KEYS = ("address", "ca", "token", "cert", "key", "insecure_development")
ENVIRONMENT = {
    "VIRTPLANE_CONTROLLER": "address",
    "VIRTPLANE_ADDRESS": "address",
    "VIRTPLANE_CA": "ca",
    "VIRTPLANE_TOKEN": "token",
    "VIRTPLANE_INSECURE_DEV": "insecure_development",
}
"""Overrides, in order: a later one wins (VIRTPLANE_ADDRESS over the older name)."""


@dataclass(frozen=True)
class Settings:
    address: str = DEFAULT_ADDRESS
    ca: str = ""
    """The path of the CA's certificate."""
    token: str = field(default="", repr=False)
    cert: str = ""
    key: str = ""
    """The paths of a client certificate and its key."""
    insecure_development: str = ""
    """"1": plaintext to a development controller (no credentials sent)."""

    def credentials(self) -> Credentials:
        if self.insecure_development not in ("", "0", "false"):
            return INSECURE_DEVELOPMENT
        return Credentials(
            ca=Path(self.ca) if self.ca else None,
            token=self.token or None,
            cert=Path(self.cert) if self.cert else None,
            key=Path(self.key) if self.key else None,
        )


def config_path(environ: Mapping[str, str] = os.environ) -> Path:
    if environ.get("VIRTPLANE_CONFIG"):
        return Path(environ["VIRTPLANE_CONFIG"])
    base = environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "virtplane" / "config.toml"


def read(path: Path) -> Settings:
    """The file's settings; the defaults when there is no file."""
    if not path.is_file():
        return Settings()
    with path.open("rb") as source:
        values = tomllib.load(source)
    return Settings(**{k: str(v) for k, v in values.items() if k in KEYS})


def load(environ: Mapping[str, str] = os.environ) -> Settings:
    """The file's settings with the environment's overrides."""
    settings = read(config_path(environ))
    overrides = {key: environ[name] for name, key in ENVIRONMENT.items() if environ.get(name)}
    return dataclasses.replace(settings, **overrides)


def write(path: Path, settings: Settings) -> None:
    """Writes settings to path, readable by its owner only (0600)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    values = dataclasses.asdict(settings)
    # TOML basic strings take JSON's string escapes.
    text = "".join(f"{key} = {json.dumps(values[key])}\n" for key in KEYS if values[key])
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text)
