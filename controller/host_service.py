"""Host registration, the host verbs (remove, maintenance, activate, confirm
down) and the monitors that watch each host.

A host's states, and what moves it::

    UP ⇄ NON_RESPONSIVE            the monitor: hostd stops / starts answering
                                   (its VMs UNKNOWN meanwhile, never DOWN)
    NON_RESPONSIVE → DOWN          ConfirmHostDown: the operator fenced it; its
                                   VMs become DOWN (HOST_FENCED)
    DOWN → UP                      the monitor: hostd answers again
    UP → PREPARING_FOR_MAINTENANCE SetHostMaintenance while VMs run there: they
    → MAINTENANCE                  are migrated away (controller.maintenance)
    PREPARING_FOR_MAINTENANCE → UP ActivateHost: the evacuation is cancelled
    UP, NON_RESPONSIVE, DOWN,      SetHostMaintenance, refused while VMs run
    NON_OPERATIONAL → MAINTENANCE  on a host that is not UP
    MAINTENANCE, NON_OPERATIONAL   ActivateHost, then the monitor once hostd
    → CONNECTING → UP              answers

A host in MAINTENANCE is not monitored; neither it nor one preparing for
maintenance takes VMs. RemoveHost is refused while VMs are on the host.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple, TypeAlias, overload

from sqlalchemy.orm import Session
from virtplane.v1 import host_service_pb2, vm_pb2
from virtplane.v1.host_agent_service_pb2 import GetHostCapabilitiesResponse

from controller import audit, convert, maintenance, requests
from controller.audit import seen
from controller.batched_writes import BatchedUpdates
from controller.enrollment.tokens import IssuedToken
from controller.enrollment.wiring import HostIdentity
from controller.errors import (
    HostExists,
    HostHasVms,
    HostNotFound,
    HostUnreachable,
    IllegalHostState,
)
from controller.host_state import set_host_state
from controller.hosts import HostClients
from controller.lifecycle.placement import Starter
from controller.lifecycle.states import set_state
from controller.lifecycle.stranded import StrandedMigrations
from controller.monitor import HostMonitor, MonitorSettings
from controller.requests import Call, StoredAnswer
from controller.vm_store import VmStore
from db import repositories as repo
from db.enums import ACTIVE_VM_STATES, ExitReason, HostState, VmState
from db.models import Host, utcnow

# The states SetHostMaintenance and ActivateHost accept.
_MAINTAINABLE = frozenset(
    {HostState.UP, HostState.NON_RESPONSIVE, HostState.NON_OPERATIONAL, HostState.DOWN}
)
_ACTIVATABLE = frozenset(
    {HostState.MAINTENANCE, HostState.NON_OPERATIONAL, HostState.PREPARING_FOR_MAINTENANCE}
)
_WAITING = "added; waiting for hostd to enroll and answer"

# The calls of a verb asked without a request id (e.g. not through the API).
_ADD = Call("AddHost")
_REMOVE = Call("RemoveHost")
_MAINTAIN = Call("SetHostMaintenance")
_ACTIVATE = Call("ActivateHost")
_CONFIRM_DOWN = Call("ConfirmHostDown")


@dataclass(frozen=True)
class HostView:
    """A host as the API shows it: its row, what its VMs use (memory MiB,
    vCPUs, VM count) and what starts booked on it still wait for (memory
    MiB, VM count; GetHost and ListHosts count them, the verbs' answers
    leave them at zero). The servicer converts it."""

    row: Host
    usage: tuple[int, int, int]
    pending: tuple[int, int] = (0, 0)
    enrollment: IssuedToken | None = None
    """AddHost's first enrollment token (never stored with its answer)."""

    @property
    def id(self) -> str:
        return self.row.id


@dataclass(frozen=True)
class FencedHost:
    """ConfirmHostDown's answer: the host, and the ids of the VMs it made
    DOWN."""

    host: HostView
    vm_ids: tuple[str, ...]


# What a host verb answers: the host as it left it or, to a repeat of an API
# call, the answer the first call gave, as its request id stored it.
HostAnswer: TypeAlias = HostView | StoredAnswer


def _locked(session: Session, host_ref: str) -> Host:
    host = repo.lock_host(session, host_ref)
    if host is None:
        raise HostNotFound(host_ref)
    return host


def _new_host(
    host_id: str, name: str, address: str, caps: GetHostCapabilitiesResponse | None
) -> Host:
    """A host as AddHost registers it: UP with its capacity if it answered."""
    if caps is None:
        return Host(
            id=host_id,
            name=name,
            address=address,
            state=HostState.CONNECTING,
            state_message=_WAITING,
        )
    return Host(
        id=host_id,
        name=name,
        address=address,
        state=HostState.UP,
        state_message="",
        hostname=caps.hostname,
        cpus=caps.cpus,
        memory_total_mib=caps.memory_total_mib,
        hypervisor_type=caps.hypervisor_type,
        last_seen_at=utcnow(),
    )


def _view(session: Session, host: Host) -> HostView:
    """host as a verb answers it, with what its VMs use now."""
    return HostView(host, repo.host_usage(session).get(host.id, (0, 0, 0)))


def enter_maintenance(session: Session, host_ref: str, call: Call | None = None) -> Host:
    """Moves the host to MAINTENANCE in the caller's transaction (for call,
    if an API call asked), unless VMs run on it. The host row is locked
    first, as a booking locks it, so a concurrent StartVm either books
    before (and is seen here) or waits and then finds the host in
    maintenance."""
    host = _locked(session, host_ref)
    if host.state not in _MAINTAINABLE:
        allowed = " or ".join(sorted(s.value for s in _MAINTAINABLE))
        raise IllegalHostState(host.name, host.state.value, "maintain", allowed)
    running = [
        vm.name for vm in repo.list_vms(session, host_id=host.id) if vm.state in ACTIVE_VM_STATES
    ]
    if running:
        raise HostHasVms(
            host.name, "move to maintenance", running, "run on it (stop or move them first)"
        )
    request_id = call.request_id if call else ""
    set_host_state(session, host, HostState.MAINTENANCE, "in maintenance", request_id)
    session.flush()
    return host


class _Fenced(NamedTuple):
    """ConfirmHostDown's VMs changed now (none for a repeat), and its answer."""

    changed: list[vm_pb2.Vm]
    answer: FencedHost | StoredAnswer


def _replay(_session: Session, prior: requests.Prior) -> StoredAnswer:
    return prior.answer()


class HostService:
    def __init__(
        self,
        store: VmStore,
        clients: HostClients,
        starter: Starter,
        settings: MonitorSettings,
        identity: HostIdentity | None = None,
    ) -> None:
        self._identity = identity
        self._store = store
        self._db = store.db
        self._clients = clients
        self._starter = starter
        self._settings = settings
        self._monitors: dict[str, HostMonitor] = {}
        # The monitors' event writes, grouped (controller.batched_writes).
        self.event_writes = BatchedUpdates(store, writers=1 if store.db.dialect == "sqlite" else 2)
        self._stranded = StrandedMigrations(store, clients)
        # Wakes the evacuation when a host starts preparing for maintenance
        # (set by the application once the evacuator exists).
        self.evacuate_now: Callable[[], None] = _nothing

    @overload
    async def add(self, name: str, address: str) -> HostView: ...
    @overload
    async def add(self, name: str, address: str, call: Call) -> HostAnswer: ...
    async def add(self, name: str, address: str, call: Call = _ADD) -> HostAnswer:
        """Registers the hostd at address with its first enrollment token (a
        call without a request id is never a repeat: its answer is a
        HostView). A hostd that answers already (plaintext development, or
        enrolled before) is UP with its capacity; any other is CONNECTING
        until it enrolls and its monitor reaches it."""

        def check(session: Session) -> requests.Prior | None:
            prior = requests.lookup(session, call)
            if prior is None and repo.host_by_name(session, name) is not None:
                raise HostExists(name)
            return prior

        prior = await self._db.run(check)
        if prior is not None:
            return prior.answer()
        host_id = str(uuid.uuid4())
        client = self._clients.get(host_id, name, address)
        try:
            try:
                caps: GetHostCapabilitiesResponse | None = await client.capabilities()
            except HostUnreachable:
                caps = None
            answer = await self._insert(host_id, name, address, caps, call)
        except BaseException:  # refused, exists, cancelled: the probe's channel goes
            await self._clients.drop(host_id)
            raise
        if isinstance(answer, StoredAnswer):  # a concurrent call with the same key added it
            await self._clients.drop(host_id)
            return answer
        self._watch(host_id, name, address)
        return answer

    async def _insert(
        self,
        host_id: str,
        name: str,
        address: str,
        caps: GetHostCapabilitiesResponse | None,
        call: Call,
    ) -> HostAnswer:
        """Stores the new host (once per request id)."""

        def insert(session: Session) -> requests.Done[HostAnswer]:
            if repo.host_by_name(session, name) is not None:
                raise HostExists(name)
            host = _new_host(host_id, name, address, caps)
            session.add(host)
            audit.host_added(session, host, call.request_id)
            session.flush()
            view = HostView(host, (0, 0, 0))
            reply = convert.host_reply(host_service_pb2.AddHostResponse, view)
            audit.mutation(session, call, f"{name} at {address}", host_id=host_id)
            if self._identity is not None:  # the token goes to this caller only
                view = HostView(
                    host, (0, 0, 0), enrollment=self._identity.first_token(session, host_id)
                )
            return requests.Done(view, host_id, reply)

        return await requests.run_once(self._db, call, insert, _replay)

    async def get(self, host_ref: str) -> HostView:
        def work(session: Session) -> HostView:
            host = repo.find_host(session, host_ref)
            if host is None:
                raise HostNotFound(host_ref)
            return HostView(
                host,
                repo.host_usage(session).get(host.id, (0, 0, 0)),
                repo.host_pending(session).get(host.id, (0, 0)),
            )

        return await self._db.run(work)

    async def list(self) -> list[HostView]:
        def work(session: Session) -> list[HostView]:
            usage, pending = repo.host_usage(session), repo.host_pending(session)
            return [
                HostView(h, usage.get(h.id, (0, 0, 0)), pending.get(h.id, (0, 0)))
                for h in repo.list_hosts(session)
            ]

        return await self._db.run(work)

    async def remove(self, host_ref: str, call: Call = _REMOVE) -> None:
        """Forgets a host no VM is placed on, stops watching it and revokes
        its certificate."""

        def work(session: Session) -> requests.Done[tuple[str, list[int]] | None]:
            host = _locked(session, host_ref)
            placed = [vm.name for vm in repo.list_vms(session, host_id=host.id)]
            if placed:
                raise HostHasVms(host.name, "remove", placed, "are placed on it")
            audit.mutation(session, call, host.name, host_id=host.id)
            audit.host_removed(session, host, call.request_id)
            serials = self._identity.revoke(session, host) if self._identity else []
            session.delete(host)
            return requests.Done((host.id, serials), host.id)

        removed = await requests.run_once(self._db, call, work, lambda _s, _p: None)
        if removed is None:
            return
        await self._unwatch(removed[0])
        await self._clients.drop(removed[0])
        if self._identity is not None:
            await self._identity.revoked_now(removed[1])

    async def set_maintenance(self, host_ref: str, call: Call = _MAINTAIN) -> HostAnswer:
        """Takes a host out of service: MAINTENANCE, no VM is placed on it
        and it is no longer watched. An UP host running VMs is
        PREPARING_FOR_MAINTENANCE first, while they are migrated away
        (controller.maintenance)."""

        def work(session: Session) -> requests.Done[HostAnswer]:
            host = _locked(session, host_ref)
            if not maintenance.prepare(session, host, call.request_id):
                host = enter_maintenance(session, host_ref, call)
            session.flush()
            view = _view(session, host)
            reply = convert.host_reply(host_service_pb2.SetHostMaintenanceResponse, view)
            audit.mutation(session, call, view.row.name, host_id=view.row.id)
            return requests.Done(view, view.row.id, reply)

        answer = await requests.run_once(self._db, call, work, _replay)
        if isinstance(answer, HostView) and answer.row.state is HostState.MAINTENANCE:
            await self._unwatch(answer.row.id)
        elif isinstance(answer, HostView):
            self.evacuate_now()
        return answer

    async def activate(self, host_ref: str, call: Call = _ACTIVATE) -> HostAnswer:
        """Brings a host back into service: CONNECTING, UP once hostd answers."""

        def work(session: Session) -> requests.Done[HostAnswer]:
            host = _locked(session, host_ref)
            if host.state not in _ACTIVATABLE:
                allowed = " or ".join(sorted(s.value for s in _ACTIVATABLE))
                raise IllegalHostState(host.name, host.state.value, "activate", allowed)
            if host.state is HostState.PREPARING_FOR_MAINTENANCE:
                maintenance.cancel(session, host, call.request_id)  # still watched
            else:
                set_host_state(
                    session,
                    host,
                    HostState.CONNECTING,
                    "activated; waiting for hostd to answer",
                    call.request_id,
                )
            session.flush()
            view = _view(session, host)
            reply = convert.host_reply(host_service_pb2.ActivateHostResponse, view)
            audit.mutation(session, call, host.name, host_id=host.id)
            return requests.Done(view, host.id, reply)

        answer = await requests.run_once(self._db, call, work, _replay)
        if isinstance(answer, StoredAnswer) or answer.row.state is HostState.UP:
            return answer  # a repeat, or an evacuation cancelled
        # A fresh monitor: it reconciles on connecting, which makes the host UP.
        host = answer.row
        await self._unwatch(host.id)
        self._watch(host.id, host.name, host.address)
        return answer

    async def confirm_down(
        self, host_ref: str, call: Call = _CONFIRM_DOWN
    ) -> FencedHost | StoredAnswer:
        """Manual fencing: the operator says the NON_RESPONSIVE host was
        rebooted or powered off, so the VMs it held run nowhere. They become
        DOWN (HOST_FENCED) and the host DOWN, until hostd answers again."""

        def work(session: Session) -> requests.Done[_Fenced]:
            host = _locked(session, host_ref)
            if host.state is not HostState.NON_RESPONSIVE:
                raise IllegalHostState(
                    host.name, host.state.value, "confirm down", HostState.NON_RESPONSIVE.value
                )
            fenced = [
                vm for vm in repo.list_vms(session, host_id=host.id) if vm.state is not VmState.DOWN
            ]
            found = seen(fenced)
            for vm in fenced:
                set_state(
                    vm,
                    VmState.DOWN,
                    exit_reason=ExitReason.HOST_FENCED,
                    message=f"host {host.name!r} was confirmed down by the operator",
                )
            set_host_state(
                session, host, HostState.DOWN, "confirmed down by the operator", call.request_id
            )
            changed = self._store.stamp(session, fenced, found, call)
            answer = FencedHost(_view(session, host), tuple(vm.id for vm in changed))
            audit.mutation(session, call, host.name, host_id=host.id)
            return requests.Done(_Fenced(changed, answer), host.id, convert.fenced_host(answer))

        def replay(_session: Session, prior: requests.Prior) -> _Fenced:
            return _Fenced([], prior.answer())

        fenced: _Fenced = await requests.run_once(self._db, call, work, replay)
        self._store.publish(fenced.changed)
        return fenced.answer

    async def watch_all(self) -> None:
        """Starts a monitor for every registered host not in maintenance (on
        controller start)."""
        hosts = await self._db.run(
            lambda s: [
                (h.id, h.name, h.address)
                for h in repo.list_hosts(s)
                if h.state is not HostState.MAINTENANCE
            ]
        )
        for host_id, name, address in hosts:
            self._watch(host_id, name, address)

    def monitor(self, host_id: str) -> HostMonitor:
        return self._monitors[host_id]

    def monitors(self) -> tuple[HostMonitor, ...]:
        """The monitors running now (read by controller.metrics, off the loop)."""
        return tuple(self._monitors.values())

    def _watch(self, host_id: str, name: str, address: str) -> None:
        client = self._clients.get(host_id, name, address)
        keep = self._identity.keep if self._identity else None
        monitor = HostMonitor(
            host_id,
            client,
            self._store,
            self._starter,
            self._settings,
            keep=keep,
            lost=self._stranded.destination_lost,
            writes=self.event_writes,
        )
        self._monitors[host_id] = monitor
        monitor.start()

    async def _unwatch(self, host_id: str) -> None:
        monitor = self._monitors.pop(host_id, None)
        if monitor is not None:
            await monitor.stop()

    async def unwatch(self, host_id: str) -> None:
        """Stops watching a host (it went MAINTENANCE: controller.maintenance)."""
        await self._unwatch(host_id)

    def watched(self, host_id: str) -> bool:
        return host_id in self._monitors

    async def close(self) -> None:
        for monitor in self._monitors.values():
            await monitor.stop()
        self._monitors.clear()
        await self.event_writes.close()


def _nothing() -> None:
    pass
