"""hostd's /metrics (hostd.metrics), scraped over HTTP: the registry's VMs by
state and their migrations, guest channels a flood throttled, the journal's
sequence, and the latency of libvirt calls run through the call pool."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import libvirt
import pytest
from virtplane.v1 import guest_channel_pb2 as gc

from hostd.config import ChannelLimits
from hostd.errors import HypervisorError
from hostd.guest_channel import GuestChannel
from hostd.journal import Journal
from hostd.libvirt_driver.calls import LibvirtCalls
from hostd.metrics import HostdMetrics
from hostd.model import VmConfig, VmState, VmStatus
from hostd.registry import Vm
from tests.support.scrape import scrape
from virtplane_common.framing import encode

NOW = 1_700_000_000 * 10**9


def _frame(message: gc.GuestMessage) -> bytes:
    return encode(message.SerializeToString())


def _channel(vm_id: str) -> GuestChannel:
    limits = ChannelLimits(max_messages_per_second=1, max_messages_burst=5, calm_seconds=10)
    return GuestChannel(
        vm_id, Path("/nonexistent"), limits, lambda _vm, _info: None, clock=lambda: NOW,
        monotonic=lambda: 1000.0,
    )  # fmt: skip


def _vm(vm_id: str, state: VmState, channel: GuestChannel | None = None) -> Vm:
    return Vm(config=VmConfig(vm_id=vm_id, name=vm_id), state=state, channel=channel)


@pytest.fixture
def metrics() -> Iterator[HostdMetrics]:
    metrics = HostdMetrics("127.0.0.1:0")
    metrics.start()
    yield metrics
    metrics.stop()


def test_vms_channels_and_the_journal_as_the_registry_holds_them(metrics: HostdMetrics) -> None:
    hello = gc.GuestMessage(
        hello=gc.GuestHello(min_version=1, max_version=1, heartbeat_interval_ms=1000)
    )
    heartbeat = gc.GuestMessage(heartbeat=gc.Heartbeat(uptime_seconds=9.0))
    flooded, calm = _channel("flood"), _channel("calm")
    flooded.feed(_frame(hello) + _frame(heartbeat) * 20)  # 15 over the burst of 5
    calm.feed(_frame(hello) + _frame(heartbeat))
    vms = [
        _vm("flood", VmState.RUNNING, flooded),
        _vm("calm", VmState.RUNNING, calm),
        _vm("leaving", VmState.MIGRATING_FROM),
        _vm("coming", VmState.MIGRATING_TO),
        _vm("booting", VmState.WAIT_FOR_LAUNCH),
    ]
    journal = Journal(100)
    metrics.watch(lambda: vms, journal)

    samples = scrape(metrics.endpoint.address)
    assert samples.value("virtplane_hostd_vms", state="RUNNING") == 2
    assert samples.value("virtplane_hostd_vms", state="WAIT_FOR_LAUNCH") == 1
    assert samples.value("virtplane_hostd_vms", state="PAUSED") == 0
    assert samples.value("virtplane_hostd_migrations_in_flight", direction="outgoing") == 1
    assert samples.value("virtplane_hostd_migrations_in_flight", direction="incoming") == 1
    assert samples.value("virtplane_hostd_guest_channels", state="throttled") == 1
    assert samples.value("virtplane_hostd_guest_channels", state="ok") == 1
    assert samples.value("virtplane_hostd_guest_messages_dropped") == flooded.dropped_messages > 0
    assert samples.value("virtplane_hostd_event_sequence") == 0

    journal.append_vm_state(VmStatus("calm", VmState.PAUSED))
    vms[1].state = VmState.PAUSED
    vms.pop(0)  # the flooded VM went away, its channel with it
    again = scrape(metrics.endpoint.address)
    assert again.value("virtplane_hostd_event_sequence") == 1
    assert again.value("virtplane_hostd_vms", state="RUNNING") == 0
    assert again.value("virtplane_hostd_vms", state="PAUSED") == 1
    assert again.value("virtplane_hostd_guest_channels", state="throttled") == 0
    assert again.value("virtplane_hostd_guest_messages_dropped") == 0


async def test_libvirt_calls_are_timed_by_operation_and_outcome(metrics: HostdMetrics) -> None:
    pool = LibvirtCalls(threads=1)
    pool.observer = metrics.libvirt_call

    def refused() -> None:
        raise libvirt.libvirtError("refused")

    try:
        assert await pool.run(lambda: 42, "lookup") == 42
        assert await pool.run(lambda: 43, "lookup") == 43
        with pytest.raises(HypervisorError):
            await pool.run(refused, "define")
    finally:
        pool.shutdown()
    samples = scrape(metrics.endpoint.address)
    count = "virtplane_hostd_libvirt_call_seconds_count"
    assert samples.value(count, operation="lookup", outcome="ok") == 2
    assert samples.value(count, operation="define", outcome="error") == 1
    assert samples.value(count, operation="define", outcome="ok") == 0
