"""The guest's time zone, as an IANA name ("Europe/Paris") or "UTC".

Looked for in this order, the first answer winning:

1. the TZ environment variable (real root only): empty means UTC, a name or a
   path under a zoneinfo folder gives that name, ``:/etc/localtime`` means
   the next steps, and a POSIX rule such as ``CET-1CEST,M3.5.0,M10.5.0/3``
   is reported as it is, since it has no name;
2. the target of the /etc/localtime symlink: the part after ``zoneinfo/``
   (what ``timedatectl set-timezone`` and most distributions write);
3. /etc/timezone (Debian's older record, which timedatectl leaves alone, so
   it comes after the symlink);
4. an /etc/localtime that is a copied file: "UTC" if its rule is UTC's,
   else the POSIX rule at the end of the TZif file;
5. no /etc/localtime at all: "UTC", which is what the C library then uses.

The UTC aliases (Etc/UTC, UCT, Zulu, Universal...) are reported as "UTC".
An empty string means the zone could not be told.

Runs inside guests: standard library only, Python >= 3.9.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping

from guestd.facts import MAX_TEXT, read_text

LOCALTIME = "etc/localtime"
UTC_NAMES = frozenset(
    {"UTC", "Etc/UTC", "UCT", "Etc/UCT", "Zulu", "Etc/Zulu", "Universal", "Etc/Universal"}
)
UTC_RULES = frozenset({"", "UTC0", "UCT0", "GMT0", "UTC", "GMT", "<UTC>0", "<GMT>0"})
ZONEINFO = "zoneinfo/"
ZONEINFO_DIRS = ("usr/share/zoneinfo", "usr/lib/zoneinfo", "usr/share/lib/zoneinfo")
MAX_LINKS = 8


def timezone(root: Path, environ: Mapping[str, str] | None = None) -> str:
    """The time zone (see the module docstring); environ is searched for TZ."""
    tz = (environ or {}).get("TZ")
    if tz is not None:
        name = from_tz_variable(root, tz)
        if name is not None:
            return name
    return from_localtime(root)


def normalise(name: str) -> str:
    """A zone name without the posix/ or right/ prefix, UTC aliases as "UTC"."""
    for prefix in ("posix/", "right/"):
        if name.startswith(prefix):
            name = name[len(prefix) :]
    name = name.strip("/")
    return "UTC" if name in UTC_NAMES else name[:MAX_TEXT]


def zone_from_path(path: str) -> str | None:
    """The zone name in a path under a zoneinfo folder, None for other paths."""
    where = path.rfind(ZONEINFO)
    if where < 0:
        return None
    name = normalise(path[where + len(ZONEINFO) :])
    return name or None


def from_tz_variable(root: Path, tz: str) -> str | None:
    """What TZ names; None when it sends us to /etc/localtime."""
    value = tz[1:] if tz.startswith(":") else tz
    if value.startswith("/"):
        if value.rstrip("/") == "/" + LOCALTIME:
            return None
        return zone_from_path(value) or ""
    if value in UTC_RULES:
        return "UTC"
    if any((root / d / value).is_file() for d in ZONEINFO_DIRS if ".." not in value):
        return normalise(value)
    return value[:MAX_TEXT]


def from_localtime(root: Path) -> str:
    """The zone from /etc/localtime and /etc/timezone (steps 2 to 5)."""
    path = root / LOCALTIME
    try:
        for _ in range(MAX_LINKS):
            if not path.is_symlink():
                break
            target = os.readlink(path)
            name = zone_from_path(target)
            if name:
                return name
            path = root / target.lstrip("/") if target.startswith("/") else path.parent / target
    except OSError:
        pass
    recorded = (read_text(root / "etc/timezone", limit=MAX_TEXT) or "").strip()
    if recorded and " " not in recorded:
        return normalise(recorded)
    if not path.exists():
        # A dangling link reads as no zone file, which the C library takes as UTC too.
        return "UTC"
    return rule_name(tzif_rule(path))


def tzif_rule(path: Path) -> str | None:
    """The POSIX TZ rule in the footer of a TZif (version 2 or later) file."""
    try:
        with path.open("rb") as f:
            data = f.read(1 << 16)
    except OSError:
        return None
    if not data.startswith(b"TZif") or data[4:5] in (b"", b"\0") or not data.endswith(b"\n"):
        return None  # not TZif, or version 1, which has no footer
    footer = data[:-1].rsplit(b"\n", 1)
    if len(footer) != 2:
        return None
    try:
        return footer[1].decode("ascii")
    except UnicodeDecodeError:
        return None


def rule_name(rule: str | None) -> str:
    """ "UTC" for UTC's rule, the rule itself for others, "" when there is none."""
    if rule is None:
        return ""
    return "UTC" if rule in UTC_RULES and rule else rule[:MAX_TEXT]
