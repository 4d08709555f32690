"""The rules for a VM's custom properties (the settings its host's hook
scripts get as VIRTPLANE_PROPERTY_<key>), shared by the controller, which
stores them, and hostd, which hands them to the hooks."""

from __future__ import annotations

import re
from collections.abc import Mapping

from virtplane_common.errors import InvalidArgument

MAX_PROPERTIES = 64
MAX_PROPERTY_VALUE = 4096
_KEY = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,63}")


def check_properties(field: str, properties: Mapping[str, str]) -> None:
    """Raises InvalidArgument naming field (or field[key]) for a bad set."""
    if len(properties) > MAX_PROPERTIES:
        raise InvalidArgument(field, f"at most {MAX_PROPERTIES} properties (got {len(properties)})")
    for key in sorted(properties):
        if not _KEY.fullmatch(key):
            raise InvalidArgument(
                field,
                f"keys must be 1-64 letters, digits or '_', starting with a letter (got {key!r})",
            )
        value = properties[key]
        if len(value) > MAX_PROPERTY_VALUE or not value.isprintable():
            raise InvalidArgument(
                f"{field}[{key}]", f"must be at most {MAX_PROPERTY_VALUE} printable characters"
            )
