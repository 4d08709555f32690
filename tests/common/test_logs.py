"""The daemons' log lines (virtplane_common.logs): readable by default, JSON
when asked, each carrying what virtplane_common.log_context has bound."""

from __future__ import annotations

import asyncio
import io
import json
import logging
from collections.abc import Iterator

import pytest

from virtplane_common import log_context, logs


@pytest.fixture
def log() -> Iterator[logging.Logger]:
    """A logger of its own, its handlers removed after the test."""
    logger = logging.getLogger("virtplane.test")
    logger.setLevel(logging.INFO)
    logger.propagate = False
    yield logger
    logger.handlers.clear()
    logger.propagate = True


def _lines(log: logging.Logger, fmt: str) -> io.StringIO:
    """Where log's fmt lines go."""
    output = io.StringIO()
    log.addHandler(logs.handler(fmt, output))
    return output


def test_json_lines_carry_the_bound_context(log: logging.Logger) -> None:
    output = _lines(log, "json")
    log.info("before")
    with log_context.bound(request_id="r-1", operation_id="op-1", vm="vm-1", host="h1"):
        log.warning("during %s", "the call")
    first, second = (json.loads(line) for line in output.getvalue().splitlines())
    assert first["message"] == "before"
    assert "request_id" not in first
    assert second == {
        "time": second["time"],
        "level": "WARNING",
        "logger": "virtplane.test",
        "message": "during the call",
        "request_id": "r-1",
        "operation_id": "op-1",
        "vm": "vm-1",
        "host": "h1",
    }
    assert second["time"].endswith("+00:00")


def test_json_records_keep_the_traceback(log: logging.Logger) -> None:
    output = _lines(log, "json")
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        log.exception("failed")
    record = json.loads(output.getvalue())
    assert "RuntimeError: boom" in record["exception"]


def test_text_lines_end_with_the_bound_context(log: logging.Logger) -> None:
    output = _lines(log, "text")
    with log_context.bound(request_id="r-2", vm="vm-2"):
        log.info("hello")
    log.info("plain")
    bound, plain = output.getvalue().splitlines()
    assert bound.endswith("INFO virtplane.test: hello request_id=r-2 vm=vm-2")
    assert plain.endswith("INFO virtplane.test: plain")


def test_an_unknown_format_is_refused() -> None:
    with pytest.raises(ValueError, match="text, json"):
        logs.handler("xml")


async def test_each_task_keeps_its_own_binding() -> None:
    async def call(request_id: str) -> dict[str, str]:
        log_context.bind(request_id=request_id)
        await asyncio.sleep(0)
        return log_context.current()

    assert list(await asyncio.gather(call("a"), call("b"))) == [
        {"request_id": "a"},
        {"request_id": "b"},
    ]
    assert log_context.current() == {}


async def test_only_clears_what_a_long_lived_task_inherited() -> None:
    async def monitor() -> dict[str, str]:
        log_context.only(host="h1")
        return log_context.current()

    with log_context.bound(request_id="the-call-that-started-it", vm="v1"):
        assert await asyncio.create_task(monitor()) == {"host": "h1"}
        assert log_context.current() == {"request_id": "the-call-that-started-it", "vm": "v1"}


async def test_work_only_for_a_vm_names_no_request() -> None:
    async def channel_loop() -> dict[str, str]:
        await asyncio.sleep(0)
        return log_context.current()

    with log_context.bound(request_id="create-call", operation_id="op-1"):
        work = log_context.only_for(channel_loop, vm="v1")
        assert await asyncio.create_task(work) == {"vm": "v1"}
        assert log_context.current() == {"request_id": "create-call", "operation_id": "op-1"}
