"""The rules for a VM's custom properties (the settings its host's hook
scripts get as VIRTPLANE_PROPERTY_<key>), shared by the controller, which
stores them, and hostd, which hands them to the hooks.

A property is accepted only when its key is one the configuration allows and
its value fully matches the pattern configured for that key (oVirt's
UserDefinedVMProperties). Each daemon has its own allowlist (`--vm-property
KEY=REGEX`): hostd refuses what its own configuration does not allow, even
from the controller. With none configured, no property is accepted.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Mapping
from dataclasses import dataclass

from virtplane_common.errors import InvalidArgument

MAX_PROPERTIES = 64
MAX_PROPERTY_VALUE = 4096
_KEY = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,63}")
_KEY_RULE = "1-64 letters, digits or '_', starting with a letter"


class BadPropertyRule(ValueError):
    """A configured allowlist entry that cannot be used: a startup error."""


@dataclass(frozen=True)
class AllowedProperties:
    """The allowlist: each allowed key with its compiled value pattern."""

    patterns: Mapping[str, re.Pattern[str]]

    @classmethod
    def compile(cls, rules: Mapping[str, str]) -> AllowedProperties:
        """Compiles key -> regex; raises BadPropertyRule naming a bad key or pattern."""
        patterns: dict[str, re.Pattern[str]] = {}
        for key, pattern in rules.items():
            if not _KEY.fullmatch(key):
                raise BadPropertyRule(f"custom property key {key!r}: must be {_KEY_RULE}")
            try:
                patterns[key] = re.compile(pattern)
            except re.error as exc:
                raise BadPropertyRule(
                    f"custom property {key}: the pattern {pattern!r} is not a regular"
                    f" expression ({exc})"
                ) from exc
        return cls(patterns)


NONE_ALLOWED = AllowedProperties({})


def add_rule_argument(parser: argparse.ArgumentParser) -> None:
    """`--vm-property KEY=REGEX` (repeatable): args.vm_property is a list of
    (key, regex), each checked, or None."""
    parser.add_argument(
        "--vm-property",
        type=parse_rule,
        action="append",
        metavar="KEY=REGEX",
        help="allow the custom property KEY with values fully matching REGEX; repeatable"
        " (default: none allowed)",
    )


def parse_rule(text: str) -> tuple[str, str]:
    """argparse type of `--vm-property KEY=REGEX`: (key, regex), checked."""
    key, sep, pattern = text.partition("=")
    if not sep:
        raise argparse.ArgumentTypeError(f"{text!r} is not KEY=REGEX")
    try:
        AllowedProperties.compile({key: pattern})
    except BadPropertyRule as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc
    return key, pattern


def check_properties(field: str, properties: Mapping[str, str], allowed: AllowedProperties) -> None:
    """Raises InvalidArgument naming field (or field[key]) for a bad set: a
    malformed key or value, a key not allowed, a value not matching its
    pattern. The value itself is never repeated in the message."""
    if len(properties) > MAX_PROPERTIES:
        raise InvalidArgument(field, f"at most {MAX_PROPERTIES} properties (got {len(properties)})")
    for key in sorted(properties):
        if not _KEY.fullmatch(key):
            raise InvalidArgument(field, f"keys must be {_KEY_RULE} (got {key!r})")
        value = properties[key]
        if len(value) > MAX_PROPERTY_VALUE or not value.isprintable():
            raise InvalidArgument(
                f"{field}[{key}]", f"must be at most {MAX_PROPERTY_VALUE} printable characters"
            )
        pattern = allowed.patterns.get(key)
        if pattern is None:
            known = ", ".join(sorted(allowed.patterns)) or "none"
            raise InvalidArgument(
                f"{field}[{key}]", f"is not an allowed property (allowed: {known})"
            )
        if not pattern.fullmatch(value):
            raise InvalidArgument(
                f"{field}[{key}]", f"does not match the pattern allowed for it: {pattern.pattern}"
            )
