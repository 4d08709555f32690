"""Logging set-up for the daemons: readable lines by default, one JSON object
per line with --log-format json.

Every record carries what virtplane_common.log_context has bound where it
was logged (request_id, operation_id, vm, host): as key=value pairs after
the message in the readable format, as fields in JSON. One StartVm can then
be followed from the controller's log into hostd's with one grep of its
request id.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
from dataclasses import dataclass
from typing import Final, TextIO

from virtplane_common import log_context

FORMATS: Final = ("text", "json")
_TEXT = "%(asctime)s %(levelname)s %(name)s: %(message)s%(context)s"


class ContextFilter(logging.Filter):
    """Copies the bound context onto each record (record.context_fields) and
    renders it for the readable format (record.context)."""

    def filter(self, record: logging.LogRecord) -> bool:
        fields = log_context.current()
        record.context_fields = fields
        record.context = "".join(f" {k}={v}" for k, v in fields.items())
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time (UTC, ISO 8601), level, logger,
    message, the bound context fields, and the traceback when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        when = dt.datetime.fromtimestamp(record.created, dt.UTC)
        entry: dict[str, object] = {
            "time": when.isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update(getattr(record, "context_fields", None) or log_context.current())
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def handler(fmt: str = "text", stream: TextIO | None = None) -> logging.Handler:
    """A handler writing fmt (text or json) lines to stream (default stderr)."""
    if fmt not in FORMATS:
        raise ValueError(f"log format {fmt!r}: one of {', '.join(FORMATS)}")
    written = logging.StreamHandler(stream)
    written.addFilter(ContextFilter())
    written.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(_TEXT))
    return written


def setup(level: str = "INFO", fmt: str = "text") -> None:
    """Configures the root logger for a daemon: level, and text or json."""
    logging.basicConfig(level=level, handlers=[handler(fmt)], force=True)


@dataclass(frozen=True)
class LogSettings:
    """A daemon's --log-level and --log-format."""

    level: str = "INFO"
    format: str = "text"

    def apply(self) -> None:
        setup(self.level, self.format)


def add_arguments(parser: argparse.ArgumentParser, levels: list[str] | None = None) -> None:
    """--log-level and --log-format; settings() reads them back."""
    parser.add_argument("--log-level", default="INFO", choices=levels)
    parser.add_argument(
        "--log-format",
        choices=FORMATS,
        default="text",
        help="readable lines (text) or one JSON object per line (json); each carries"
        " the request id, operation, VM and host it is about when known",
    )


def settings(args: argparse.Namespace) -> LogSettings:
    return LogSettings(args.log_level, args.log_format)
