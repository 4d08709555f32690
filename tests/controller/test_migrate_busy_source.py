"""MigrateSteps.call_host against a source whose own cap of outgoing
migrations is still held (RESOURCE_EXHAUSTED, controller.errors.HostBusy):
it is asked again until the cap frees, and the refusal stands once the
retry window is over. The host is faked at the client seam; the whole path
with real guests: tests/e2e/test_maintenance.py and the controller_migration
benchmark's evacuations."""

from __future__ import annotations

from typing import cast

import pytest

from controller.errors import HostBusy
from controller.host_client import HostClient
from controller.lifecycle import migrate
from controller.lifecycle.migrate import MigrateSteps
from controller.lifecycle.target import HostTarget
from controller.scheduler import Policy

TARGET = HostTarget(
    "vm-id", "v", "id-h1", "h1", "h1:1", destination_id="id-h2", destination_address="h2:1"
)


class BusySource:
    """A source that refuses busy times, then accepts."""

    def __init__(self, busy: int) -> None:
        self.busy = busy
        self.asked: list[tuple[str, str, str, int]] = []

    async def migrate_vm(
        self,
        vm_id: str,
        destination_id: str,
        destination_address: str,
        max_mib_s: int = 0,
        policy: object = None,
    ) -> None:
        self.asked.append((vm_id, destination_id, destination_address, max_mib_s))
        if len(self.asked) <= self.busy:
            raise HostBusy("h1", "this host already runs 2 outgoing migrations, its cap")


async def test_a_busy_source_is_asked_again_until_its_slot_frees(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(migrate, "BUSY_RETRY_EVERY", 0.0)
    source = BusySource(busy=2)
    steps = MigrateSteps("", Policy.EVEN_SPREAD, max_bandwidth_mib=8)
    await steps.call_host(cast(HostClient, source), TARGET, "op")
    assert source.asked == [("vm-id", "id-h2", "h2:1", 8)] * 3


async def test_a_source_still_busy_after_the_window_refuses(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(migrate, "BUSY_RETRY_EVERY", 0.0)
    monkeypatch.setattr(migrate, "BUSY_RETRY_SECONDS", 0.0)
    source = BusySource(busy=100)
    steps = MigrateSteps("", Policy.EVEN_SPREAD)
    with pytest.raises(HostBusy, match="RESOURCE_EXHAUSTED: this host already runs 2"):
        await steps.call_host(cast(HostClient, source), TARGET, "op")
    assert len(source.asked) == 1
