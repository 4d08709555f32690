"""The configuration file, /etc/virtplane/guestd.conf: INI, read with configparser.

::

    [guestd]
    port = /dev/virtio-ports/org.virtplane.guestd.0
    heartbeat_interval = 5
    log_level = INFO
    # whether the host may power off or reboot the guest through the agent
    power_commands = yes

    [applications]
    # report only packages whose name matches one of these fnmatch patterns,
    # separated by spaces, commas or new lines; empty: report every package
    include = linux-image-* kernel kernel-core cloud-init virtplane-guestd

Every key is optional. A missing file means every default; a value that does
not parse is an error (ConfigError), since running with a setting other than
the one written would surprise. Unknown sections and keys are only warned
about, so that a newer file does not stop an older agent. Command-line
options win over the file.

Runs inside guests: standard library only, Python >= 3.9.
"""

from __future__ import annotations

import configparser
import logging
import math
import re
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

DEFAULT_PATH = Path("/etc/virtplane/guestd.conf")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
KNOWN = {
    "guestd": {"port", "heartbeat_interval", "log_level", "power_commands"},
    "applications": {"include"},
}
MAX_FILE_BYTES = 64 * 1024
MAX_PATTERNS = 200
MAX_HEARTBEAT_INTERVAL = 3600.0


class ConfigError(Exception):
    """The configuration file cannot be read or holds a bad value."""


@dataclass(frozen=True)
class FileConfig:
    """What the file sets; None where it leaves the default."""

    port: Path | None = None
    heartbeat_interval: float | None = None
    log_level: str | None = None
    power_commands: bool = True
    applications_include: tuple[str, ...] = ()


def load(path: Path) -> FileConfig:
    """Reads the file; the defaults when it does not exist."""
    try:
        with path.open("rb") as f:
            data = f.read(MAX_FILE_BYTES + 1)
    except FileNotFoundError:
        log.debug("no configuration file at %s: using defaults", path)
        return FileConfig()
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from exc
    if len(data) > MAX_FILE_BYTES:
        raise ConfigError(f"{path} is larger than {MAX_FILE_BYTES} bytes")
    return parse(data.decode("utf-8", errors="replace"), str(path))


def parse(text: str, source: str = "<config>") -> FileConfig:
    parser = configparser.ConfigParser(interpolation=None, inline_comment_prefixes=("#", ";"))
    try:
        parser.read_string(text, source=source)
    except configparser.Error as exc:
        raise ConfigError(f"{source}: {exc}") from exc
    for section in parser.sections():
        if section not in KNOWN:
            log.warning("%s: unknown section [%s] ignored", source, section)
            continue
        for key in parser[section]:
            if key not in KNOWN[section]:
                log.warning("%s: unknown key %s in [%s] ignored", source, key, section)
    main = parser["guestd"] if parser.has_section("guestd") else None
    apps = parser["applications"] if parser.has_section("applications") else None

    def where(key: str) -> str:
        return f"{source}: [guestd] {key}"

    port = main.get("port", "").strip() if main else ""
    interval = main.get("heartbeat_interval", "").strip() if main else ""
    level = main.get("log_level", "").strip().upper() if main else ""
    if level and level not in LOG_LEVELS:
        raise ConfigError(f"{where('log_level')}: must be one of {', '.join(LOG_LEVELS)}")
    try:
        power = main.getboolean("power_commands", fallback=True) if main else True
    except ValueError as exc:
        raise ConfigError(f"{where('power_commands')}: {exc}") from exc
    patterns = tuple(p for p in re.split(r"[\s,]+", apps.get("include", "") if apps else "") if p)
    if len(patterns) > MAX_PATTERNS:
        raise ConfigError(f"{source}: [applications] include: more than {MAX_PATTERNS} patterns")
    return FileConfig(
        port=Path(port) if port else None,
        heartbeat_interval=positive_seconds(interval, where("heartbeat_interval"))
        if interval
        else None,
        log_level=level or None,
        power_commands=power,
        applications_include=patterns,
    )


def positive_seconds(text: str, what: str = "value") -> float:
    """A number of seconds in (0, MAX_HEARTBEAT_INTERVAL]; ConfigError otherwise."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0 < value <= MAX_HEARTBEAT_INTERVAL:
        raise ConfigError(
            f"{what}: must be a number of seconds above 0 and at most "
            f"{MAX_HEARTBEAT_INTERVAL:g}, not {text!r}"
        )
    return value
