"""Helpers for hostd's tests: waiting on conditions, VM configurations, boot files."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import pytest
from virtplane.v1 import guest_channel_pb2 as gc
from virtplane.v1 import host_agent_service_pb2 as pb
from virtplane.v1 import vm_pb2

from hostd import convert
from hostd.config import ChannelLimits
from hostd.model import VmConfig
from virtplane_common.framing import FrameDecoder, encode

if TYPE_CHECKING:
    from tests.hostd.rig import Rig
    from tests.hostd.served import Served

T = TypeVar("T")

TIMEOUT = 60.0
"""Generous: only reached when something is broken."""


async def eventually(condition: Callable[[], bool], what: str, within: float = TIMEOUT) -> None:
    """Waits until condition() holds; fails the test after `within` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not condition():
        if loop.time() > deadline:
            pytest.fail(f"timed out after {within}s waiting for {what}")
        await asyncio.sleep(0.01)


async def next_item(items: AsyncIterator[T], what: str, within: float = TIMEOUT) -> T:
    """The next item of an async iterator; fails the test after `within` seconds."""
    try:
        return await asyncio.wait_for(anext(items), within)
    except TimeoutError:
        pytest.fail(f"timed out after {within}s waiting for {what}")


@pytest.fixture
def boot_files(tmp_path: Path) -> tuple[str, str]:
    """A kernel and an initrd that exist (the test driver never boots them)."""
    kernel = tmp_path / "vmlinux"
    initrd = tmp_path / "initramfs.img"
    kernel.write_bytes(b"not a kernel")
    initrd.write_bytes(b"not an initrd")
    return str(kernel), str(initrd)


def vm_config(
    kernel: str,
    *,
    vm_id: str | None = None,
    name: str | None = None,
    initrd: str = "",
    memory_mib: int = 64,
    vcpus: int = 1,
    nics: tuple[vm_pb2.Nic, ...] = (),
) -> pb.VmConfig:
    vm_id = vm_id or str(uuid.uuid4())
    return pb.VmConfig(
        vm_id=vm_id,
        name=name or f"test-{vm_id[:8]}",
        spec=vm_pb2.VmSpec(
            vcpus=vcpus,
            memory_mib=memory_mib,
            boot=vm_pb2.BootSource(kernel_path=kernel, initrd_path=initrd, cmdline="console=ttyS0"),
            nics=list(nics),
        ),
    )


def domain_config(kernel: str, **fields: Any) -> VmConfig:
    """vm_config as hostd's domain type, as the servicer hands it on."""
    return convert.config_from_proto(vm_config(kernel, **fields))


@pytest.fixture
async def rig(tmp_path: Path, boot_files: tuple[str, str]) -> AsyncIterator[Rig]:
    """A VmService on a fresh fake hypervisor (tests.hostd.rig)."""
    # Imported here: tests.hostd.rig imports this module.
    from tests.hostd.fakes import FakeHypervisor  # noqa: PLC0415
    from tests.hostd.rig import make_rig  # noqa: PLC0415

    rig = await make_rig(FakeHypervisor(), tmp_path, boot_files[0])
    yield rig
    await rig.vms.stop()


@pytest.fixture
async def served(short_tmp: Path) -> AsyncIterator[Served]:
    """A hostd served over gRPC on libvirt's test driver (tests.hostd.served)."""
    from tests.hostd.served import serve  # noqa: PLC0415

    async with serve(short_tmp / "state", ChannelLimits(connect_timeout_seconds=60)) as served:
        yield served


@pytest.fixture
async def small_journal(short_tmp: Path) -> AsyncIterator[Served]:
    """As served, with a journal of three events."""
    from tests.hostd.served import serve  # noqa: PLC0415

    channel = ChannelLimits(connect_timeout_seconds=0.01, connect_retry_seconds=0.01)
    async with serve(short_tmp / "state", channel, journal_size=3) as served:
        yield served


@pytest.fixture(scope="module")
def state_root() -> Iterator[Path]:
    """A short temporary directory shared by one module's tests (a hostd's state)."""
    path = Path(tempfile.mkdtemp(prefix="vp-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def short_tmp() -> Iterator[Path]:
    """A temporary directory with a short path: unix socket paths are limited to 107 bytes."""
    path = Path(tempfile.mkdtemp(prefix="vp-", dir="/tmp"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


class FakeGuest:
    """The guest end of a channel: a unix socket server speaking framed guest messages."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.connections = 0
        self.received: asyncio.Queue[gc.HostMessage] = asyncio.Queue()
        self._writer: asyncio.StreamWriter | None = None
        self._server: asyncio.Server | None = None
        self._sequence = 0

    async def start(self) -> None:
        self._server = await asyncio.start_unix_server(self._accept, str(self.path))

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self._writer = writer
        decoder = FrameDecoder()
        while data := await reader.read(65536):
            for payload in decoder.feed(data):
                self.received.put_nowait(gc.HostMessage.FromString(payload))

    async def next_message(self, what: str) -> gc.HostMessage:
        try:
            return await asyncio.wait_for(self.received.get(), TIMEOUT)
        except TimeoutError:
            pytest.fail(f"timed out waiting for the host to send {what}")

    async def send(self, message: gc.GuestMessage) -> None:
        self._sequence += 1
        message.sequence = self._sequence
        message.agent_instance = "fake"
        await self.send_raw(encode(message.SerializeToString(), 1 << 24))

    async def send_raw(self, data: bytes) -> None:
        assert self._writer is not None, "nobody connected"
        self._writer.write(data)
        await self._writer.drain()

    async def hang_up(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    async def close(self) -> None:
        await self.hang_up()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
