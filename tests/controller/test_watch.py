from __future__ import annotations

import pytest
from virtplane.v1 import vm_pb2

from controller.watch import Change, Kind, WatchHub
from virtplane_common.errors import ResourceExhausted


def _change(rev: int) -> Change:
    return Change(Kind.KIND_CHANGED, vm_pb2.Vm(id="v"), rev)


async def test_every_subscriber_gets_every_change_in_order() -> None:
    hub = WatchHub(queue_size=10)
    a, b = hub.subscribe(), hub.subscribe()
    for rev in (1, 2, 3):
        hub.publish(_change(rev))
    assert [(await a.next()).revision for _ in range(3)] == [1, 2, 3]
    assert [(await b.next()).revision for _ in range(3)] == [1, 2, 3]


async def test_a_slow_subscriber_is_cut_off_without_affecting_others() -> None:
    hub = WatchHub(queue_size=2)
    slow, fast = hub.subscribe(), hub.subscribe()
    for rev in (1, 2):
        hub.publish(_change(rev))
    assert (await fast.next()).revision == 1
    assert (await fast.next()).revision == 2
    hub.publish(_change(3))  # slow's queue is full
    with pytest.raises(ResourceExhausted):
        await slow.next()
    assert (await fast.next()).revision == 3
    slow.close()
    assert hub.subscriber_count == 1
