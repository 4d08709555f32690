"""The controller at scale: 100 hosts on libvirt's test driver.

- StartVm throughput and latency: N VMs started with a bounded number of
  calls in flight; a VM's latency runs from its StartVm call to a WatchVms
  client seeing it running. On the test driver no guest boots and no agent
  reports, so "running" is POWERING_UP (the host reports the domain
  running), which is also when a real VM's domain runs.
- WatchVms fan-out: 100 subscribers; every VM is stopped, and each change's
  delivery latency is measured at every subscriber, from the time the
  controller stamped the change (its state_changed_time) to its arrival.

The hosts are hostd instances, several to a process (tests.bench.fleet),
each with its own test:///…/node.xml connection. Everything shares this
machine's cores — the controller, the hosts, the database and the clients —
so the numbers are an upper bound on the controller's own cost.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.support import postgres
from tests.support.stack import Daemon, start_controller
from virtplane_client import AsyncClient, BootSource, ChangeKind, VmSpec, VmState

RUNNING = (VmState.POWERING_UP, VmState.UP)
# The calls the benchmark makes carry no request_id, as a client that does
# not retry sends them.
NO_KEY = ""


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(p / 100 * len(ordered)) - 1))
    return ordered[index]


@contextmanager
def fleet(workdir: Path, hosts: int, processes: int) -> Iterator[list[str]]:
    """hosts hostd instances in `processes` processes; yields their addresses."""
    procs: list[subprocess.Popen[str]] = []
    addresses: list[str] = []
    per = -(-hosts // processes)
    root = Path(tempfile.mkdtemp(prefix="vpf-"))  # short: socket paths fit
    try:
        for first in range(0, hosts, per):
            count = min(per, hosts - first)
            log = (workdir / f"fleet-{first}.log").open("w")
            proc = subprocess.Popen(
                [sys.executable, "-m", "tests.bench.fleet", str(root), str(count),
                 "--first", str(first)],
                stdout=subprocess.PIPE, stderr=log, text=True,
                env=dict(os.environ, PYTHONUNBUFFERED="1"),
            )  # fmt: skip
            procs.append(proc)
        for proc in procs:
            assert proc.stdout is not None
            for line in proc.stdout:
                if line.strip() == "READY":
                    break
                addresses.append(line.strip())
            else:
                raise RuntimeError("a hostd fleet exited before it was ready")
        yield addresses
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        shutil.rmtree(root, ignore_errors=True)


@contextmanager
def postgres_database() -> Iterator[str]:
    """A fresh PostgreSQL database for one run, dropped afterwards."""
    admin = postgres.admin_engine()
    try:
        with postgres.fresh_database(admin, "virtplane_bench_") as url:
            yield url
    finally:
        admin.dispose()


class Watcher:
    """One WatchVms subscriber noting when each VM's state is first seen."""

    def __init__(self, client: AsyncClient, keep_latency: bool) -> None:
        self.running: dict[str, asyncio.Future[float]] = {}
        self.latencies: list[float] = []
        self.snapshot_done = asyncio.Event()
        self._grew = asyncio.Condition()
        self._keep_latency = keep_latency
        self._task = asyncio.create_task(self._pump(client))

    async def _pump(self, client: AsyncClient) -> None:
        last: dict[str, VmState] = {}
        async for change in client.vms.watch():
            now = time.time()
            if change.kind is ChangeKind.SNAPSHOT_COMPLETE:
                self.snapshot_done.set()
                continue
            if change.kind is not ChangeKind.CHANGED or change.vm is None:
                continue
            vm_id, status = change.vm.id, change.vm.status
            if last.get(vm_id) is status.state:
                continue
            last[vm_id] = status.state
            if status.state in RUNNING:
                seen = self._future(vm_id)
                if not seen.done():
                    seen.set_result(time.monotonic())
            if self._keep_latency:
                changed_at = status.state_changed_time
                stamped = changed_at.timestamp() if changed_at is not None else 0.0
                async with self._grew:
                    self.latencies.append(now - stamped)
                    self._grew.notify_all()

    def _future(self, vm_id: str) -> asyncio.Future[float]:
        if vm_id not in self.running:
            self.running[vm_id] = asyncio.get_running_loop().create_future()
        return self.running[vm_id]

    async def seen_running(self, vm_id: str) -> float:
        """When (monotonic) the VM was first seen running."""
        return await asyncio.wait_for(self._future(vm_id), 120)

    async def received(self, count: int) -> None:
        """Until count changes have arrived."""
        async with self._grew:
            await self._grew.wait_for(lambda: len(self.latencies) >= count)

    async def close(self) -> None:
        self._task.cancel()  # the watch's stream is cancelled with it
        await asyncio.gather(self._task, return_exceptions=True)


async def _populate(client: AsyncClient, hosts: list[str], vms: int, kernel: str) -> list[str]:
    """Adds the hosts and creates the VMs; returns the VMs' ids."""
    await asyncio.gather(*(
        client.hosts.add(f"h{i:03d}", a, request_id=NO_KEY) for i, a in enumerate(hosts)
    ))  # fmt: skip
    spec = VmSpec(vcpus=1, memory_mib=64, boot=BootSource(kernel_path=kernel))
    ids = []
    for i in range(vms):
        created = await client.vms.create(f"vm{i:04d}", spec, request_id=NO_KEY)
        ids.append(created.id)
    return ids


async def _drive(controller: Daemon, hosts: list[str], *, vms: int, concurrency: int,
                 subscribers: int, kernel: str) -> dict[str, float]:  # fmt: skip
    async with controller.client() as client:
        ids = await _populate(client, hosts, vms, kernel)
        watcher = Watcher(client, keep_latency=False)
        await watcher.snapshot_done.wait()
        limit = asyncio.Semaphore(concurrency)
        latencies: list[float] = []

        async def start(vm_id: str) -> None:
            async with limit:
                began = time.monotonic()
                await client.vms.start(vm_id, request_id=NO_KEY)
            seen = await watcher.seen_running(vm_id)
            latencies.append(seen - began)

        began = time.monotonic()
        await asyncio.gather(*(start(i) for i in ids))
        wall = time.monotonic() - began
        await watcher.close()

        # Fan-out: every subscriber sees every VM stopped.
        fans = [Watcher(client, keep_latency=True) for _ in range(subscribers)]
        await asyncio.gather(*(f.snapshot_done.wait() for f in fans))
        stop_limit = asyncio.Semaphore(concurrency)

        async def stop(vm_id: str) -> None:
            async with stop_limit:
                await client.vms.stop(vm_id, request_id=NO_KEY)

        await asyncio.gather(*(stop(i) for i in ids))
        expected = 2 * len(ids)  # POWERING_DOWN, then DOWN
        await asyncio.wait([asyncio.ensure_future(f.received(expected)) for f in fans], timeout=120)
        delivered = [x for f in fans for x in f.latencies]
        complete = sum(1 for f in fans if len(f.latencies) >= expected)
        for f in fans:
            await f.close()
    return {
        "start_vms": float(vms),
        "start_concurrency": float(concurrency),
        "start_throughput_per_s": vms / wall,
        "start_to_running_p50_s": statistics.median(latencies),
        "start_to_running_p99_s": percentile(latencies, 99),
        "fanout_subscribers": float(subscribers),
        "fanout_subscribers_complete": float(complete),
        "fanout_messages": float(len(delivered)),
        "fanout_delivery_p50_s": statistics.median(delivered) if delivered else float("nan"),
        "fanout_delivery_p99_s": percentile(delivered, 99),
    }


def run(workdir: Path, *, hosts: int = 100, vms: int = 300, concurrency: int = 20,
        subscribers: int = 100, processes: int = 4) -> dict[str, float]:  # fmt: skip
    """Both engines, each with a fresh controller and fresh hosts."""
    results: dict[str, float] = {"hosts": float(hosts)}
    sizes = {"vms": vms, "concurrency": concurrency, "subscribers": subscribers}
    for engine in ("sqlite", "postgresql"):
        run_dir = workdir / engine
        run_dir.mkdir()
        with fleet(run_dir, hosts, processes) as addresses:
            if engine == "sqlite":
                numbers = _one(run_dir, None, addresses, **sizes)
            else:
                with postgres_database() as url:
                    numbers = _one(run_dir, url, addresses, **sizes)
        results.update({f"{engine}_{key}": value for key, value in numbers.items()})
    return results


def _one(run_dir: Path, url: str | None, addresses: list[str], *, vms: int, concurrency: int,
         subscribers: int) -> dict[str, float]:  # fmt: skip
    # The test driver boots nothing; hostd checks the file is under its image roots.
    kernel = run_dir / "vmlinux"
    kernel.write_bytes(b"never booted by the test driver")
    controller = start_controller(run_dir, url, plaintext_hosts=True)
    try:
        return asyncio.run(
            _drive(
                controller, addresses, vms=vms, concurrency=concurrency,
                subscribers=subscribers, kernel=str(kernel),
            )
        )  # fmt: skip
    finally:
        controller.stop()
