"""Command line of guestd: ``python3 -m guestd`` or ``virtplane-guestd``.

Opens the virtio-serial port (waiting for it to appear) and runs the agent
until SIGTERM or SIGINT. Logs go to stderr.

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

from guestd.agent import Agent, AgentConfig

log = logging.getLogger("guestd")

DEFAULT_PORT = Path("/dev/virtio-ports/org.virtplane.guestd.0")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


@dataclass(frozen=True)
class Options:
    port: Path
    log_level: str
    agent: AgentConfig


def _positive_seconds(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds: {text}")
    return value


def parse_args(argv: Sequence[str] | None = None) -> Options:
    parser = argparse.ArgumentParser(prog="guestd", description="The virtplane guest agent.")
    parser.add_argument("--port", type=Path, default=DEFAULT_PORT, help="the virtio-serial port")
    parser.add_argument(
        "--heartbeat-interval", type=_positive_seconds, default=5.0, metavar="SECONDS"
    )
    parser.add_argument(
        "--root", type=Path, default=Path("/"), help="the filesystem root facts are read from"
    )
    parser.add_argument("--log-level", type=str.upper, choices=LOG_LEVELS, default="INFO")
    args = parser.parse_args(argv)
    return Options(
        port=args.port,
        log_level=args.log_level,
        agent=AgentConfig(root=args.root, heartbeat_interval=args.heartbeat_interval),
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
    try:
        fd = open_port(options.port, options.agent.retry_delay, stop)
    except OSError as exc:
        log.error("cannot open %s: %s", options.port, exc)
        return 1
    if fd is None:
        return 0
    try:
        agent = Agent(fd, options.agent)
        if not stop.is_set():
            agent.run()
    finally:
        os.close(fd)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
