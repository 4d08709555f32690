from __future__ import annotations

import asyncio

import pytest
from virtplane.v1 import vm_pb2

from hostd.journal import Journal
from hostd.model import VmState, VmStatus
from tests.support.waiting import next_item


def _state(vm_id: str) -> VmStatus:
    return VmStatus(vm_id, VmState.RUNNING)


def test_sequences_start_at_one_and_carry_the_epoch() -> None:
    journal = Journal(10, epoch="e1", clock=lambda: 1_700_000_000_123_456_789)
    first = journal.append_vm_state(_state("a"))
    second = journal.append_guest_report("a", vm_pb2.GuestInfo(hostname="g"))
    assert (first.sequence, second.sequence) == (1, 2)
    assert {first.host_epoch, second.host_epoch} == {"e1"}
    assert first.time.ToNanoseconds() == 1_700_000_000_123_456_789
    assert first.WhichOneof("payload") == "vm_state"
    assert second.guest_report.guest.hostname == "g"
    assert journal.last_sequence == 2


def test_epochs_differ_between_journals() -> None:
    assert Journal(1).epoch != Journal(1).epoch


def test_after_returns_the_events_after_a_sequence() -> None:
    journal = Journal(10)
    for i in range(5):
        journal.append_vm_state(_state(str(i)))
    assert [e.sequence for e in journal.after(0)] == [1, 2, 3, 4, 5]
    assert [e.sequence for e in journal.after(3)] == [4, 5]
    assert journal.after(5) == []


def test_the_journal_is_bounded_and_old_cursors_start_at_the_oldest_kept() -> None:
    journal = Journal(3)
    for i in range(10):
        journal.append_vm_state(_state(str(i)))
    assert [e.sequence for e in journal.after(0)] == [8, 9, 10]
    assert [e.sequence for e in journal.after(2)] == [8, 9, 10]
    assert [e.sequence for e in journal.after(8)] == [9, 10]


def test_a_cursor_from_another_epoch_gets_everything_kept() -> None:
    journal = Journal(10)
    journal.append_vm_state(_state("a"))
    assert [e.sequence for e in journal.after(500)] == [1]


def test_size_must_be_positive() -> None:
    with pytest.raises(ValueError):
        Journal(0)


async def test_follow_yields_kept_then_live_events() -> None:
    journal = Journal(10)
    journal.append_vm_state(_state("a"))
    journal.append_vm_state(_state("b"))
    follower = journal.follow(1)
    assert (await next_item(follower, "kept event")).sequence == 2
    waiting = asyncio.ensure_future(anext(follower))
    await asyncio.sleep(0)
    assert not waiting.done()
    journal.append_vm_state(_state("c"))
    assert (await asyncio.wait_for(waiting, 60)).sequence == 3
    journal.close()
    with pytest.raises(StopAsyncIteration):
        await next_item(follower, "the end of the stream")


async def test_several_followers_each_see_every_event() -> None:
    journal = Journal(10)
    followers = [journal.follow(0) for _ in range(3)]
    pending = [asyncio.ensure_future(anext(f)) for f in followers]
    await asyncio.sleep(0)
    journal.append_vm_state(_state("a"))
    done = await asyncio.wait_for(asyncio.gather(*pending), 60)
    assert [e.sequence for e in done] == [1, 1, 1]
    journal.close()


def test_a_snapshot_is_needed_when_the_asked_events_are_no_longer_kept() -> None:
    journal = Journal(3, epoch="e1")
    assert not journal.needs_snapshot(0), "nothing was dropped yet"
    for i in range(3):
        journal.append_vm_state(_state(str(i)))
    assert not journal.needs_snapshot(0)
    journal.append_vm_state(_state("3"))  # the first event is dropped
    assert journal.needs_snapshot(0)
    assert not journal.needs_snapshot(1), "events 2.. are all kept"
    assert not journal.needs_snapshot(4)
    assert journal.needs_snapshot(5), "a cursor beyond the last event is of another epoch"
    assert journal.needs_snapshot(2, "e0"), "another epoch"
    assert not journal.needs_snapshot(2, "e1")
