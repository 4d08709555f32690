"""A controller and its hostd (libvirt's test driver), each serving /metrics,
for the tests of metrics and logs: started as processes (tests.support.stack),
scraped over HTTP (tests.support.scrape)."""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

from virtplane.v1 import vm_pb2
from virtplane.v1 import vm_service_pb2_grpc as vm_grpc

from tests.support.scrape import Samples, scrape
from tests.support.stack import Daemon, free_port, start_controller, start_host
from virtplane_client.credentials import open_channel


@dataclass
class Observed:
    """A controller and its hostd, each with its metrics address."""

    controller: Daemon
    controller_metrics: str
    hostd: Daemon
    hostd_metrics: str
    workdir: Path

    def controller_scrape(self) -> Samples:
        return scrape(self.controller_metrics)

    def hostd_scrape(self) -> Samples:
        return scrape(self.hostd_metrics)


@contextlib.contextmanager
def observed_stack(database_url: str | None, *log: str) -> Iterator[Observed]:
    """A controller and an enrolled hostd on test:///default, both with
    --metrics-listen (and the log arguments given)."""
    folder = Path(tempfile.mkdtemp(prefix="vp-"))  # short: socket paths must fit
    at_controller, at_hostd = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
    controller = start_controller(
        folder, database_url, extra=("--metrics-listen", at_controller, *log)
    )
    try:
        hostd = start_host(
            controller, folder, "t1", "test:///default", extra=("--metrics-listen", at_hostd, *log)
        )
        try:
            yield Observed(controller, at_controller, hostd, at_hostd, folder)
        finally:
            hostd.stop()
    finally:
        controller.stop()
        shutil.rmtree(folder, ignore_errors=True)


@contextlib.asynccontextmanager
async def vm_api_of(daemon: Daemon) -> AsyncIterator[vm_grpc.VmServiceAsyncStub]:
    channel = open_channel(daemon.address, daemon.credentials(), ())
    try:
        yield vm_grpc.VmServiceStub(channel)
    finally:
        await channel.close(None)


def boot_files(folder: Path) -> vm_pb2.BootSource:
    # The test driver boots nothing, but hostd checks that the files exist.
    (folder / "vmlinuz").write_bytes(b"")
    (folder / "initrd").write_bytes(b"")
    return vm_pb2.BootSource(
        kernel_path=str(folder / "vmlinuz"), initrd_path=str(folder / "initrd")
    )
