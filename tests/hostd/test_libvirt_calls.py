"""libvirt's blocking calls run on a bounded pool with a timeout each: a
call that hangs fails with UNAVAILABLE naming the operation, and does not
hold the RPC (libvirt's test driver, a call made to block on purpose)."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import grpc
import pytest

from hostd.libvirt_driver import LibvirtHypervisor, calls
from hostd.libvirt_driver.calls import LibvirtCallTimedOut
from hostd.libvirt_driver.guest import LibvirtGuest
from virtplane_common.status import status_code

TEST_URI = "test:///default"


@pytest.fixture
def small_pool() -> Iterator[calls.LibvirtCalls]:
    pool = calls.configure(threads=2, timeout=0.3)
    yield pool
    calls.configure()


async def test_a_hung_call_fails_naming_its_operation(
    small_pool: calls.LibvirtCalls, monkeypatch: pytest.MonkeyPatch
) -> None:
    driver = await LibvirtHypervisor.open(TEST_URI)
    release = threading.Event()
    real_xml = LibvirtGuest.xml

    def hang(self: LibvirtGuest) -> str:
        release.wait(30)  # libvirtd wedged
        return real_xml(self)

    monkeypatch.setattr(LibvirtGuest, "xml", hang)
    try:
        (domain,) = await driver.list_domains()
        for _ in range(small_pool.threads):  # every thread of the pool hangs
            with pytest.raises(LibvirtCallTimedOut) as timed_out:
                await driver.domain_xml(domain.uuid)
            assert "domain_xml" in str(timed_out.value)
            assert domain.uuid in str(timed_out.value)
            assert status_code(timed_out.value) is grpc.StatusCode.UNAVAILABLE
        # the pool is bounded: a call waits for a thread, and that wait is timed too
        with pytest.raises(LibvirtCallTimedOut, match="host_info"):
            await driver.host_info()
        release.set()
        assert (await driver.host_info()).cpus > 0  # the threads came back
    finally:
        release.set()
        await driver.close()


async def test_untimed_calls_wait_for_their_job(small_pool: calls.LibvirtCalls) -> None:
    done = threading.Event()

    def slow() -> str:
        done.wait(0.6)  # twice the timeout
        return "finished"

    assert await calls.blocking(slow, operation="migrate", timed=calls.NO_TIMEOUT) == "finished"
    with pytest.raises(LibvirtCallTimedOut, match="slow"):
        await calls.blocking(slow)


def test_the_pool_is_configured_sanely() -> None:
    with pytest.raises(ValueError, match="at least one thread"):
        calls.LibvirtCalls(threads=0)
    assert calls.current().threads == calls.THREADS
