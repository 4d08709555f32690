"""One StartVm followed from the controller's JSON log into hostd's by its
request id: both processes run with --log-format json, the controller
sends its call's request id with its call to hostd."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

from virtplane.v1 import vm_service_pb2 as vm_api

from tests.support.controller_rig import spec
from tests.support.observed import boot_files, observed_stack, vm_api_of
from tests.support.waiting import until


def records(log: Path, request_id: str) -> list[dict[str, Any]]:
    """The JSON records of log that carry request_id (every record is checked
    to be JSON with a time, a level and a message)."""
    found = []
    for line in log.read_text().splitlines():
        if not line.startswith("{"):
            continue  # not a log record: what a library printed itself
        record = json.loads(line)
        assert {"time", "level", "logger", "message"} <= record.keys(), record
        if record.get("request_id") == request_id:
            found.append(record)
    return found


async def test_one_start_is_followed_into_hostd_by_its_request_id() -> None:
    request_id = f"follow-{uuid.uuid4().hex[:12]}"
    with observed_stack(None, "--log-format", "json") as stack:
        async with vm_api_of(stack.controller) as vms:
            request = vm_api.CreateVmRequest(name="v1", spec=spec(boot_files(stack.workdir)))
            vm = (await vms.CreateVm(request)).vm
            started = await vms.StartVm(vm_api.StartVmRequest(vm="v1", request_id=request_id))
        operation = started.operation.id
        in_hostd = await until(
            lambda: records(stack.workdir / "hostd.log", request_id),
            what=f"hostd's log records of {request_id}",
        )
        in_controller = records(stack.workdir / "controller.log", request_id)

    assert in_controller, "the controller logged nothing of the start"
    verb = [r for r in in_controller if r.get("operation_id")]
    assert verb, in_controller
    assert {(r["operation_id"], r["vm"], r["host"]) for r in verb} == {(operation, vm.id, "t1")}
    assert {(r.get("operation_id"), r.get("vm")) for r in in_hostd} == {(operation, vm.id)}
    assert any("started" in r["message"] for r in in_hostd), in_hostd
