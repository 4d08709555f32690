"""Command line of guestd: ``python3 -m guestd`` or ``virtplane-guestd``.

Reads the configuration file (guestd.config; --config), opens the
virtio-serial port (waiting for it to appear) and runs the agent until
SIGTERM or SIGINT. Logs go to stderr. Command-line options win over the file.
``--fd N`` runs the agent on a descriptor it inherited instead of the port,
for a supervisor that opens the port itself, and for tests.

Runs inside guests: standard library and protobuf only, Python >= 3.9.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Sequence

from guestd import config
from guestd.agent import Agent, AgentConfig

log = logging.getLogger("guestd")

DEFAULT_PORT = Path("/dev/virtio-ports/org.virtplane.guestd.0")
DEFAULT_HEARTBEAT_INTERVAL = 5.0
DEFAULT_LOG_LEVEL = "INFO"
LOG_LEVELS = config.LOG_LEVELS


@dataclass(frozen=True)
class Options:
    port: Path
    fd: int | None
    log_level: str
    agent: AgentConfig
    config_path: Path


def _positive_seconds(text: str) -> float:
    try:
        return config.positive_seconds(text)
    except config.ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc).replace("value: ", "")) from exc


def _descriptor(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"not a file descriptor: {text}")
    return value


def parse_args(argv: Sequence[str] | None = None) -> Options:
    """The options, from the command line and the configuration file it names.

    Exits (status 2, as argparse does) when the file cannot be used.
    """
    parser = argparse.ArgumentParser(prog="guestd", description="The virtplane guest agent.")
    parser.add_argument(
        "--config",
        type=Path,
        default=config.DEFAULT_PATH,
        help=f"the configuration file, if it exists (default {config.DEFAULT_PATH})",
    )
    parser.add_argument(
        "--port", type=Path, default=None, help=f"the virtio-serial port (default {DEFAULT_PORT})"
    )
    parser.add_argument(
        "--fd",
        type=_descriptor,
        default=None,
        metavar="N",
        help="talk over this inherited descriptor instead of opening the port",
    )
    parser.add_argument(
        "--heartbeat-interval",
        type=_positive_seconds,
        default=None,
        metavar="SECONDS",
        help=f"default {DEFAULT_HEARTBEAT_INTERVAL:g}",
    )
    parser.add_argument(
        "--root", type=Path, default=Path("/"), help="the filesystem root facts are read from"
    )
    parser.add_argument("--log-level", type=str.upper, choices=LOG_LEVELS, default=None)
    args = parser.parse_args(argv)
    try:
        file = config.load(args.config)
    except config.ConfigError as exc:
        parser.error(str(exc))
    return Options(
        port=args.port or file.port or DEFAULT_PORT,
        fd=args.fd,
        log_level=args.log_level or file.log_level or DEFAULT_LOG_LEVEL,
        agent=AgentConfig(
            root=args.root,
            heartbeat_interval=(
                args.heartbeat_interval or file.heartbeat_interval or DEFAULT_HEARTBEAT_INTERVAL
            ),
            applications_filter=file.applications_include,
            power_commands=file.power_commands,
        ),
        config_path=args.config,
    )


def open_port(path: Path, retry_delay: float, stop: threading.Event) -> int | None:
    """Opens the port for non-blocking I/O, waiting for it to exist; None if stopped first."""
    logged = False
    while not stop.is_set():
        try:
            return os.open(path, os.O_RDWR | os.O_NONBLOCK | os.O_NOCTTY)
        except FileNotFoundError:
            if not logged:
                log.info("waiting for %s to appear", path)
                logged = True
        stop.wait(retry_delay)
    return None


def main(argv: Sequence[str] | None = None) -> int:
    options = parse_args(argv)
    logging.basicConfig(
        stream=sys.stderr,
        level=options.log_level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    stop = threading.Event()
    agent: Agent | None = None

    def on_signal(signum: int, frame: FrameType | None) -> None:
        log.info("got signal %d, stopping", signum)
        stop.set()
        if agent is not None:
            agent.stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    log.debug("configuration file %s", options.config_path)
    if options.fd is not None:
        fd = options.fd
        try:
            os.set_blocking(fd, False)
        except OSError as exc:
            log.error("cannot use descriptor %d: %s", fd, exc)
            return 1
    else:
        try:
            opened = open_port(options.port, options.agent.retry_delay, stop)
        except OSError as exc:
            log.error("cannot open %s: %s", options.port, exc)
            return 1
        if opened is None:
            return 0
        fd = opened
    try:
        agent = Agent(fd, options.agent)
        if not stop.is_set():
            agent.run()
    finally:
        os.close(fd)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
