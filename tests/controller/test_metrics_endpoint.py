"""/metrics of a controller and its hostd, scraped over HTTP as Prometheus
does, while real calls go through them: the controller on each engine, one
hostd on libvirt's test driver (a started VM stays POWERING_UP there, as
nothing boots; see tests/controller/test_on_postgres.py)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import grpc
import pytest
from virtplane.v1 import vm_service_pb2 as vm_api
from virtplane.v1 import vm_service_pb2_grpc as vm_grpc

from controller.main import parse
from controller.metrics.wiring import ControllerMetrics
from db.session import Database
from tests.support.controller_rig import error, spec
from tests.support.observed import Observed, boot_files, observed_stack, vm_api_of
from tests.support.scrape import Samples, scrape
from tests.support.stack import free_port, start_controller
from tests.support.waiting import until

VMS = "virtplane.v1.VmService"
AGENT = "virtplane.v1.HostAgentService"
HANDLED = "virtplane_grpc_server_handled_total"
PHASE_COUNT = "virtplane_operation_phase_seconds_count"


async def scraped(
    fetch: Callable[[], Samples], check: Callable[[Samples], bool], what: str
) -> Samples:
    """The first scrape fetch makes that check accepts."""
    return await until(fetch, check, what=what, every=0.1)


async def test_numbers_move_with_a_start_and_a_stop(database_url: str) -> None:
    with observed_stack(database_url) as stack:
        before = await scraped(
            stack.controller_scrape,
            lambda s: s.value("virtplane_hosts", state="UP") == 1,
            "host t1 UP in the controller's metrics",
        )
        assert before.value("virtplane_monitor_connected", host="t1") == 1
        assert before.value(HANDLED, service=VMS, method="StartVm", code="OK") == 0
        assert before.value("virtplane_db_pool_size") >= 1
        assert "process_resident_memory_bytes" in before.names()

        async with vm_api_of(stack.controller) as vms:
            request = vm_api.CreateVmRequest(name="v1", spec=spec(boot_files(stack.workdir)))
            await vms.CreateVm(request)
            created = stack.controller_scrape()
            assert created.value("virtplane_vms", state="DOWN") == 1

            await vms.StartVm(vm_api.StartVmRequest(vm="v1"))
            await _started(stack)
            await _on_host_and_followed(stack)
            await _refused_starts(stack, vms)
            await vms.StopVm(vm_api.StopVmRequest(vm="v1"))
            await _stopped(stack)


async def _started(stack: Observed) -> None:
    """v1 POWERING_UP: the state, the RPC and the start's phases so far."""
    # One scrape is no snapshot: the phases are read before the database
    # is, so the transaction that made v1 POWERING_UP may commit between.
    started = await scraped(
        stack.controller_scrape,
        lambda s: (
            s.value("virtplane_vms", state="POWERING_UP")
            == s.value(PHASE_COUNT, kind="START_VM", phase="powering_up")
            == 1
        ),
        "v1 POWERING_UP in the controller's metrics, its phase counted",
    )
    assert started.value("virtplane_vms", state="DOWN") == 0
    assert started.value(HANDLED, service=VMS, method="StartVm", code="OK") == 1
    latency = "virtplane_grpc_server_handling_seconds_count"
    assert started.value(latency, service=VMS, method="StartVm") == 1
    phases = ("scheduled", "dispatched", "accepted", "powering_up")
    for phase in phases:
        assert started.value(PHASE_COUNT, kind="START_VM", phase=phase) == 1, phase
    assert started.value(PHASE_COUNT, kind="START_VM", phase="up") == 0  # nothing boots
    took = {
        phase: started.value("virtplane_operation_phase_seconds_sum", kind="START_VM", phase=phase)
        for phase in phases
    }
    # Booked in the request's transaction; sent after it, accepted on the
    # answer. The host's POWERING_UP may be recorded before or after that
    # answer is: whichever transaction comes first.
    assert took["scheduled"] == 0
    assert 0 < took["dispatched"] <= took["accepted"]
    assert took["powering_up"] > 0


async def _on_host_and_followed(stack: Observed) -> None:
    """hostd runs v1; the monitor has applied every event hostd journalled."""
    on_host = stack.hostd_scrape()
    assert on_host.value("virtplane_hostd_vms", state="RUNNING") == 1
    assert on_host.value(HANDLED, service=AGENT, method="CreateVm", code="OK") == 1
    assert on_host.total("virtplane_hostd_libvirt_call_seconds_count", outcome="ok") > 0
    sequence = on_host.value("virtplane_hostd_event_sequence")
    assert sequence > 0
    await scraped(
        stack.controller_scrape,
        lambda s: s.value("virtplane_monitor_applied_sequence", host="t1") == sequence,
        f"the monitor at hostd's event {sequence}",
    )


async def _refused_starts(stack: Observed, vms: vm_grpc.VmServiceAsyncStub) -> None:
    code, _ = await error(vms.StartVm(vm_api.StartVmRequest(vm="no-such-vm")))
    assert code is grpc.StatusCode.NOT_FOUND
    code, _ = await error(vms.StartVm(vm_api.StartVmRequest(vm="v1")))
    assert code is grpc.StatusCode.FAILED_PRECONDITION  # it runs already
    # An aborted call's status goes out before its handler has unwound (and
    # counted it): the client may see the status first.
    refused = await scraped(
        stack.controller_scrape,
        lambda s: all(
            s.value(HANDLED, service=VMS, method="StartVm", code=status) == 1
            for status in ("NOT_FOUND", "FAILED_PRECONDITION")
        ),
        "the refused starts counted",
    )
    assert refused.value(HANDLED, service=VMS, method="StartVm", code="OK") == 1
    # A refused start begins no operation: the phases count one start.
    assert refused.value(PHASE_COUNT, kind="START_VM", phase="accepted") == 1


async def _stopped(stack: Observed) -> None:
    stopped = await scraped(
        stack.controller_scrape,
        lambda s: s.value("virtplane_vms", state="DOWN") == 1,
        "v1 DOWN in the controller's metrics",
    )
    assert stopped.value("virtplane_vms", state="POWERING_UP") == 0
    assert stopped.value(PHASE_COUNT, kind="STOP_VM", phase="accepted") == 1
    await scraped(
        stack.hostd_scrape,
        lambda s: s.value("virtplane_hostd_vms", state="RUNNING") == 0,
        "v1 gone from hostd's metrics",
    )


async def test_a_refused_request_is_counted_by_its_code(tmp_path: Path) -> None:
    at = f"127.0.0.1:{free_port()}"
    controller = start_controller(tmp_path, extra=("--metrics-listen", at))
    try:
        async with vm_api_of(controller) as vms:
            bad = vm_api.CreateVmRequest(name="", spec=spec(boot_files(tmp_path)))
            code, _ = await error(vms.CreateVm(bad))
            assert code is grpc.StatusCode.INVALID_ARGUMENT
        # A call without its token: refused before any servicer, counted all the same.
        channel = grpc.aio.secure_channel(
            controller.address,
            grpc.ssl_channel_credentials(controller.ca_file.read_bytes()),
        )
        try:
            code, _ = await error(vm_grpc.VmServiceStub(channel).ListVms(vm_api.ListVmsRequest()))
            assert code is grpc.StatusCode.UNAUTHENTICATED
        finally:
            await channel.close(None)
        samples = await scraped(
            lambda: scrape(at),
            lambda s: (
                s.value(HANDLED, service=VMS, method="CreateVm", code="INVALID_ARGUMENT")
                == s.value(HANDLED, service=VMS, method="ListVms", code="UNAUTHENTICATED")
                == 1
            ),
            "the refusals counted (once their handlers unwound)",
        )
        assert samples.value(HANDLED, service=VMS, method="CreateVm", code="OK") == 0
    finally:
        controller.stop()


@pytest.mark.parametrize("address", ["nonsense", "127.0.0.1:port"])
def test_a_bad_metrics_address_stops_the_start(tmp_path: Path, address: str) -> None:
    config, _ = parse(["--metrics-listen", address])
    db = Database(f"sqlite:///{tmp_path / 'x.db'}")
    try:
        with pytest.raises(ValueError, match="host:port"):
            ControllerMetrics(config.metrics_listen, db)
    finally:
        db.close()
