"""Hooks: the operator's executable scripts, run at points of a VM's life.

Under the hooks folder (HostdConfig.hooks_dir) one sub-folder per point
(HookPoint) holds the scripts; the executable files of a point run one after
the other, in the sorted order of their names. Each gets:

- the domain XML in a file, its path in ``_hook_domxml``; the script may
  rewrite it, and the next script sees the rewritten file. Only at
  before_vm_start does the rewrite matter: it is what libvirt starts;
- VIRTPLANE_VM_ID, VIRTPLANE_VM_NAME and VIRTPLANE_HOOK_POINT, and each of
  the VM's custom properties as VIRTPLANE_PROPERTY_<key> (hostd.validation
  keeps the keys to letters, digits and '_');
- otherwise a minimal environment (BASE_ENVIRONMENT: PATH and LANG), not
  hostd's: nothing hostd was started with reaches a script; stdin from
  /dev/null, and a process group of its own: a script still running after
  the timeout is killed with its whole group.

A script fails when it exits non-zero or times out. At a before_ point the
first failure ends the run (the operation fails with the script's name and
the end of its stderr); at an after_ point every script runs and the
failures are only reported. The scripts run as child processes of the
asyncio loop: nothing here blocks it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import tempfile
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path

from virtplane_common.errors import FailedPrecondition

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT_SECONDS = 30.0
STDERR_TAIL = 2000
"""Characters kept from the end of a failed script's stderr."""
STDERR_CAP = 64 * 1024
"""Bytes of a script's stderr held while it runs (its last ones); the rest is
read and dropped, and the failure says how much."""
PROPERTY_PREFIX = "VIRTPLANE_PROPERTY_"
BASE_ENVIRONMENT = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"}
"""All a script gets besides the variables that describe the VM and the hook."""
DOMXML_VARIABLE = "_hook_domxml"


class HookPoint(Enum):
    BEFORE_VM_START = "before_vm_start"
    """Before a fresh start; may rewrite the domain XML; a failure fails the start."""
    AFTER_VM_START = "after_vm_start"
    """Once a started VM runs (or is paused, when started paused)."""
    BEFORE_VM_DESTROY = "before_vm_destroy"
    """Before DestroyVm powers the domain off; a failure does not stop the destroy."""
    AFTER_VM_DESTROY = "after_vm_destroy"
    """Once the VM is DOWN after DestroyVm."""
    BEFORE_VM_HIBERNATE = "before_vm_hibernate"
    """Before the save to file begins; a failure fails the hibernation."""
    AFTER_VM_DEHIBERNATE = "after_vm_dehibernate"
    """Once a restored VM runs (or is paused)."""
    BEFORE_VM_MIGRATE_SOURCE = "before_vm_migrate_source"
    """On the source host, before an outgoing migration; a failure fails it."""
    BEFORE_VM_MIGRATE_DESTINATION = "before_vm_migrate_destination"
    """On the destination host, before it accepts the incoming domain; a failure
    refuses the migration. (Its XML is what a start there would define; changes to
    it are not applied: the migrating domain keeps the source's.)"""

    @property
    def before(self) -> bool:
        return self.value.startswith("before_")


@dataclass(frozen=True)
class HookSettings:
    directory: Path | None = None
    """None: no hooks."""
    timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS
    """How long one script may run before it is killed."""


@dataclass(frozen=True)
class HookVm:
    """What the scripts are told about the VM."""

    vm_id: str
    name: str = ""
    properties: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class HookFailure:
    point: HookPoint
    hook: str
    """The script's file name."""
    message: str

    def __str__(self) -> str:
        return f"hook {self.point.value}/{self.hook} {self.message}"


@dataclass(frozen=True)
class HookRun:
    xml: str
    """The domain XML as the scripts left it."""
    failures: tuple[HookFailure, ...] = ()
    ran: tuple[str, ...] = ()


class HookFailed(FailedPrecondition):
    """A before_ hook failed: the operation it guards does not happen."""

    def __init__(self, failure: HookFailure) -> None:
        super().__init__(str(failure))
        self.failure = failure


class Hooks:
    def __init__(self, settings: HookSettings) -> None:
        self.settings = settings

    def scripts(self, point: HookPoint) -> list[Path]:
        """The executable files of a point, in the order they run."""
        if self.settings.directory is None:
            return []
        folder = self.settings.directory / point.value
        try:
            entries = sorted(folder.iterdir(), key=lambda p: p.name)
        except (FileNotFoundError, NotADirectoryError):
            return []
        return [p for p in entries if p.is_file() and os.access(p, os.X_OK)]

    async def run(self, point: HookPoint, vm: HookVm, xml: str) -> HookRun:
        """Runs the point's scripts on xml; a before_ point stops at the first failure.

        Failures are returned, never raised: see check() for before_ points.
        """
        scripts = self.scripts(point)
        if not scripts:
            return HookRun(xml)
        path = _write_xml(vm.vm_id, xml)
        failures: list[HookFailure] = []
        ran: list[str] = []
        try:
            env = _environment(point, vm, path)
            for script in scripts:
                ran.append(script.name)
                message = await self._run_one(script, env)
                if message is None:
                    continue
                failure = HookFailure(point, script.name, message)
                log.warning("VM %s: %s", vm.vm_id, failure)
                failures.append(failure)
                if point.before:
                    break
        finally:
            xml = _take_xml(path, xml)
        return HookRun(xml, tuple(failures), tuple(ran))

    async def check(self, point: HookPoint, vm: HookVm, xml: str) -> str:
        """Runs a before_ point's scripts; returns the XML they leave, which must
        still be this VM's domain. Raises HookFailed on a failure."""
        result = await self.run(point, vm, xml)
        if result.failures:
            raise HookFailed(result.failures[0])
        if result.xml != xml:
            problem = domain_problem(result.xml, vm.vm_id)
            if problem is not None:
                raise HookFailed(
                    HookFailure(point, result.ran[-1], f"left unusable domain XML: {problem}")
                )
        return result.xml

    async def _run_one(self, script: Path, env: dict[str, str]) -> str | None:
        """Runs one script; None when it succeeded, else what went wrong."""
        timeout = self.settings.timeout_seconds
        try:
            process = await asyncio.create_subprocess_exec(
                str(script),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE,
                env=env,
                start_new_session=True,  # its own process group, killed as one
            )
        except OSError as exc:
            return f"could not be run: {exc.strerror or exc}"
        assert process.stderr is not None  # PIPE above
        try:
            stderr, dropped = await asyncio.wait_for(_read_capped(process.stderr), timeout)
        except TimeoutError:
            _kill_group(process.pid)
            await process.wait()
            return f"timed out after {timeout:g} s"
        except asyncio.CancelledError:
            _kill_group(process.pid)
            raise
        status = await process.wait()
        if status == 0:
            return None
        tail = stderr.decode(errors="replace").strip()[-STDERR_TAIL:]
        how = f"killed by signal {-status}" if status < 0 else f"exit status {status}"
        if dropped:
            how += f"; {dropped} earlier bytes of its stderr dropped"
        return f"failed ({how})" + (f": {tail}" if tail else "")


async def _read_capped(stream: asyncio.StreamReader) -> tuple[bytes, int]:
    """The last STDERR_CAP bytes of stream up to its end, and how many were dropped."""
    kept = bytearray()
    dropped = 0
    while chunk := await stream.read(65536):
        kept += chunk
        if len(kept) > STDERR_CAP:
            dropped += len(kept) - STDERR_CAP
            del kept[: len(kept) - STDERR_CAP]
    return bytes(kept), dropped


def domain_problem(xml: str, vm_id: str) -> str | None:
    """Why xml cannot be started as the VM's domain; None when it can be tried."""
    try:
        root = ET.fromstring(xml)
    except ET.ParseError as exc:
        return f"not well-formed XML ({exc})"
    if root.tag != "domain":
        return f"the root element is <{root.tag}>, not <domain>"
    uuid = (root.findtext("uuid") or "").strip().lower()
    if uuid != vm_id:
        return f"its <uuid> is {uuid or 'missing'}, not the VM's {vm_id}"
    return None


def _write_xml(vm_id: str, xml: str) -> Path:
    """The file the scripts get (0600, in the temporary folder): small, written at once."""
    fd, name = tempfile.mkstemp(prefix=f"hook-{vm_id}-", suffix=".xml")
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(xml)
    return Path(name)


def _take_xml(path: Path, fallback: str) -> str:
    """The XML the scripts left, and the file removed."""
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return fallback
    finally:
        path.unlink(missing_ok=True)


def _environment(point: HookPoint, vm: HookVm, xml_path: Path) -> dict[str, str]:
    env = dict(BASE_ENVIRONMENT)
    env.update(
        {
            DOMXML_VARIABLE: str(xml_path),
            "VIRTPLANE_HOOK_POINT": point.value,
            "VIRTPLANE_VM_ID": vm.vm_id,
            "VIRTPLANE_VM_NAME": vm.name,
        }
    )
    for key, value in vm.properties.items():
        env[PROPERTY_PREFIX + key] = value
    return env


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)
