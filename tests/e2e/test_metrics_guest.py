"""StartVm's phases on a real guest: the controller's /metrics counts the
start's UP phase (which libvirt's test driver never reaches), well after the
host accepted the start and the domain began POWERING_UP."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.support.guests import guest_spec
from tests.support.real import GuestImage
from tests.support.scrape import scrape
from tests.support.stack import free_port, start_controller, start_host
from tests.support.waiting import until

pytestmark = pytest.mark.guest
PHASES = ("scheduled", "dispatched", "accepted", "powering_up", "up")


async def test_a_real_start_is_timed_to_up(
    system_libvirt: str, guest_image: GuestImage, short_tmp: Path
) -> None:
    at = f"127.0.0.1:{free_port()}"
    controller = start_controller(short_tmp, extra=("--metrics-listen", at))
    try:
        hostd = start_host(controller, short_tmp, "local", system_libvirt)
        try:
            async with controller.client() as client:
                vm = await client.vms.create(f"metrics-{os.getpid()}", guest_spec(guest_image))
                await client.vms.start(vm.id)
                try:
                    up = await until(
                        lambda: scrape(at),
                        lambda s: s.value("virtplane_vms", state="UP") == 1,
                        what="the VM UP in the metrics",
                        every=0.5,
                    )
                finally:
                    await client.vms.stop(vm.id)
                await client.vms.delete(vm.id)
        finally:
            hostd.stop()
    finally:
        controller.stop()
    count = "virtplane_operation_phase_seconds_count"
    assert [up.value(count, kind="START_VM", phase=p) for p in PHASES] == [1] * 5
    took = {
        p: up.value("virtplane_operation_phase_seconds_sum", kind="START_VM", phase=p)
        for p in PHASES
    }
    assert took["dispatched"] <= took["accepted"]
    # The guest boots for a while after its domain starts and the host answers.
    assert took["up"] > max(took["accepted"], took["powering_up"]) > 0
