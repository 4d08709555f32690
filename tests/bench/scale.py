"""The controller at scale: hosts on libvirt's test driver, each a hostd
(several to a process, tests.bench.fleet) with its own test:///…/node.xml.

One run per engine (SQLite, PostgreSQL), each with a fresh controller and
fresh hosts, in phases:

- populate: the hosts added (and waited for UP), vms_defined VMs created;
- starts: `starts` of them started, `concurrency` StartVm calls in flight;
  a VM's latency runs from its StartVm call to a WatchVms subscriber seeing
  it running. On the test driver no guest boots, so "running" is
  POWERING_UP (the host reports the domain running);
- watch: `subscribers` WatchVms clients open (the first
  snapshot_subscribers with a snapshot of every VM, the others resuming
  from the current revision), then `changes` VMs are stopped and each
  change's delivery latency is measured at every subscriber, from the time
  the controller stamped it (its state_changed_time) to its arrival;
- reconcile: the controller is stopped and started again on the same
  database; the time until every host's monitor has reconciled with its
  host (each host's last_seen_time after the restart).

Everything shares this machine's cores — the controller, the hosts, the
database and the clients — so the numbers are an upper bound on the
controller's own cost. With VIRTPLANE_BENCH_PROFILE=DIR, py-spy samples the
controller in each phase (tests.bench.profiling).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import statistics
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

from tests.bench import profiling
from tests.bench.fleet import launched
from tests.bench.scale_watch import Watcher
from tests.support import postgres
from tests.support.stack import Daemon, start_controller
from virtplane_client import AsyncClient, BootSource, HostState, VmSpec
from virtplane_client.errors import Unavailable

ENGINES = ("sqlite", "postgresql")
# The calls the benchmark makes carry no request_id, as a client that does
# not retry sends them.
NO_KEY = ""
# The figures the growth table follows, per engine and host count.
GROWTH_KEYS = ("startvm_per_s", "powering_up_p99_s", "watch_p99_s", "controller_rss_mib")


@dataclass(frozen=True)
class Size:
    hosts: int = 100
    vms_defined: int = 300
    starts: int = 300
    subscribers: int = 100
    snapshot_subscribers: int = 100
    changes: int = 300
    concurrency: int = 20
    processes: int = 4


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(p / 100 * len(ordered)) - 1))
    return ordered[index]


@contextmanager
def postgres_database() -> Iterator[str]:
    """A fresh PostgreSQL database for one run, dropped afterwards."""
    admin = postgres.admin_engine()
    try:
        with postgres.fresh_database(admin, "virtplane_bench_") as url:
            yield url
    finally:
        admin.dispose()


async def _bounded(limit: int, items: Iterable[Awaitable[object]]) -> None:
    gate = asyncio.Semaphore(limit)

    async def one(item: Awaitable[object]) -> None:
        async with gate:
            await item

    await asyncio.gather(*(one(i) for i in items))


async def _until(check: Callable[[], Awaitable[bool]], what: str) -> None:
    """Polls check until it holds; a run that never gets there fails."""
    limit = 900
    try:
        async with asyncio.timeout(limit):
            while True:
                if await check():
                    return
                await asyncio.sleep(0.2)
    except TimeoutError:
        raise TimeoutError(f"not {what} after {limit} s") from None


async def _hosts_seen_since(client: AsyncClient, since: dt.datetime, count: int) -> bool:
    try:
        hosts = await client.hosts.list()
    except Unavailable:  # a controller busy reconciling may miss a handshake: ask again
        return False
    return len(hosts) == count and all(
        h.status.state is HostState.UP
        and h.status.last_seen_time is not None
        and h.status.last_seen_time >= since
        for h in hosts
    )


async def _populate(
    client: AsyncClient, hosts: list[str], size: Size, kernel: str
) -> tuple[list[str], float]:
    """Adds the hosts (waits for them UP) and creates the VMs; returns the
    VMs' ids and the seconds it took."""
    began = time.monotonic()
    since = dt.datetime.now(dt.UTC)
    await _bounded(size.concurrency, (
        client.hosts.add(f"h{i:04d}", a, request_id=NO_KEY) for i, a in enumerate(hosts)
    ))  # fmt: skip
    await _until(lambda: _hosts_seen_since(client, since, len(hosts)), "every host UP")
    spec = VmSpec(vcpus=1, memory_mib=64, boot=BootSource(kernel_path=kernel))
    ids: dict[int, str] = {}

    async def create(i: int) -> None:
        ids[i] = (await client.vms.create(f"vm{i:05d}", spec, request_id=NO_KEY)).id

    await _bounded(size.concurrency, (create(i) for i in range(size.vms_defined)))
    return [ids[i] for i in range(size.vms_defined)], time.monotonic() - began


async def _starts(client: AsyncClient, ids: list[str], size: Size) -> dict[str, float]:
    watcher = Watcher(client.channel, keep_latency=False)
    await watcher.opened()
    latencies: list[float] = []
    gate = asyncio.Semaphore(size.concurrency)

    async def start(vm_id: str) -> None:
        async with gate:
            began = time.monotonic()
            await client.vms.start(vm_id, request_id=NO_KEY)
        latencies.append(await watcher.seen_running(vm_id) - began)

    began = time.monotonic()
    await asyncio.gather(*(start(i) for i in ids))
    wall = time.monotonic() - began
    await watcher.close()
    return {
        "startvm_per_s": len(ids) / wall,
        "powering_up_p50_s": statistics.median(latencies),
        "powering_up_p99_s": percentile(latencies, 99),
    }


async def _open_watches(client: AsyncClient, size: Size) -> tuple[list[Watcher], float]:
    """Opens the subscribers' watches; returns them and the seconds until
    every one had its snapshot (or its resumed changes)."""
    began = time.monotonic()
    fans = [
        Watcher(client.channel, keep_latency=True)
        for _ in range(min(size.snapshot_subscribers, size.subscribers))
    ]
    await asyncio.gather(*(f.opened() for f in fans))
    revision = max((f.revision for f in fans), default=0)
    fans += [
        Watcher(client.channel, keep_latency=True, after_revision=revision)
        for _ in range(size.subscribers - len(fans))
    ]
    await asyncio.gather(*(f.opened() for f in fans))
    return fans, time.monotonic() - began


async def _fan_out(
    client: AsyncClient, fans: list[Watcher], ids: list[str], size: Size
) -> dict[str, float]:
    """Stops VMs; every subscriber sees each one go POWERING_DOWN, then DOWN."""
    await _bounded(size.concurrency, (client.vms.stop(i, request_id=NO_KEY) for i in ids))
    expected = 2 * len(ids)
    waits = [asyncio.ensure_future(f.received(expected)) for f in fans]
    _done, pending = await asyncio.wait(waits, timeout=300)
    for task in pending:
        task.cancel()
    delivered = [x for f in fans for x in f.latencies]
    return {
        "watch_changes": float(expected),
        "watch_subscribers_complete": float(sum(len(f.latencies) >= expected for f in fans)),
        "watch_messages": float(len(delivered)),
        "watch_p50_s": statistics.median(delivered) if delivered else float("nan"),
        "watch_p99_s": percentile(delivered, 99),
    }


def _peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def _drive(
    controller: Daemon, hosts: list[str], size: Size, kernel: str, engine: str
) -> dict[str, float]:
    pid = controller.process.pid
    async with controller.client() as client:
        with profiling.recorded(pid, f"{engine}-{size.hosts}-populate"):
            ids, populate_s = await _populate(client, hosts, size, kernel)
        with profiling.recorded(pid, f"{engine}-{size.hosts}-starts"):
            started = await _starts(client, ids[: size.starts], size)
        with profiling.recorded(pid, f"{engine}-{size.hosts}-watch-open"):
            fans, open_s = await _open_watches(client, size)
        with profiling.recorded(pid, f"{engine}-{size.hosts}-fan-out"):
            fanned = await _fan_out(client, fans, ids[: min(size.changes, size.starts)], size)
        for f in fans:
            await f.close()
    return {
        "populate_s": populate_s,
        **started,
        "watch_open_s": open_s,
        **fanned,
        "controller_rss_mib": _peak_rss_mib(pid),
    }


async def _reconciled(controller: Daemon, since: dt.datetime, hosts: int) -> None:
    async with controller.client() as client:
        await _until(lambda: _hosts_seen_since(client, since, hosts), "every host reconciled")


def _flags(size: Size) -> tuple[str, ...]:
    # Every subscriber is the one admin principal: room for all of them.
    return ("--max-streams-per-client", str(size.subscribers + 8))


def _one(
    run_dir: Path, url: str | None, addresses: list[str], size: Size, engine: str
) -> dict[str, float]:
    # The test driver boots nothing; hostd checks the file is under its image roots.
    kernel = run_dir / "vmlinux"
    kernel.write_bytes(b"never booted by the test driver")
    controller = start_controller(run_dir, url, plaintext_hosts=True, extra=_flags(size))
    try:
        numbers = asyncio.run(_drive(controller, addresses, size, str(kernel), engine))
    finally:
        controller.stop()
    # A full reconcile after a restart: from the new process's start until
    # every host's monitor has listed its host and written what it found.
    since = dt.datetime.now(dt.UTC)
    began = time.monotonic()
    controller = start_controller(run_dir, url, plaintext_hosts=True, extra=_flags(size))
    try:
        with profiling.recorded(controller.process.pid, f"{engine}-{size.hosts}-reconcile"):
            asyncio.run(_reconciled(controller, since, len(addresses)))
        numbers["reconcile_s"] = time.monotonic() - began
    finally:
        controller.stop()
    return numbers


def run(workdir: Path, size: Size, engines: Iterable[str] = ENGINES) -> dict[str, dict[str, float]]:
    """One group per engine, scale_HOSTS_ENGINE: each with a fresh controller
    and fresh hosts."""
    groups: dict[str, dict[str, float]] = {}
    for engine in engines:
        run_dir = workdir / engine
        run_dir.mkdir()
        with launched(run_dir, size.hosts, size.processes) as addresses:
            if engine == "sqlite":
                numbers = _one(run_dir, None, addresses, size, engine)
            else:
                with postgres_database() as url:
                    numbers = _one(run_dir, url, addresses, size, engine)
        sizes = {k: float(v) for k, v in asdict(size).items()}
        groups[f"scale_{size.hosts}_{engine}"] = {
            "hosts": sizes["hosts"],
            "vms_defined": sizes["vms_defined"],
            "starts": sizes["starts"],
            "watch_subscribers": sizes["subscribers"],
            "watch_snapshot_subscribers": sizes["snapshot_subscribers"],
            "start_concurrency": sizes["concurrency"],
            **numbers,
        }
    return groups


def growth(groups: dict[str, dict[str, float]]) -> dict[str, float]:
    """The growth table from every scale_HOSTS_ENGINE group: for each engine
    and host count, throughput, p99s and RSS (ENGINE_HOSTSh_KEY)."""
    table: dict[str, float] = {}
    for name, values in sorted(groups.items(), key=lambda kv: kv[1].get("hosts", 0)):
        parts = name.split("_")
        if len(parts) != 3 or parts[0] != "scale" or parts[2] not in ENGINES:
            continue
        for key in GROWTH_KEYS:
            if key in values:
                table[f"{parts[2]}_{parts[1]}h_{key}"] = values[key]
    return table
