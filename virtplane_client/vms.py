"""`client.vms`: VMs — create, read, update, delete, the power verbs, the
guest agent's report, placement explained, watch and wait_for (the async core;
virtplane_client.client runs it for the sync Client)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Collection, Iterable
from typing import TypeVar

import grpc
from google.protobuf.field_mask_pb2 import FieldMask
from virtplane.v1 import vm_service_pb2 as vm_api
from virtplane.v1 import vm_service_pb2_grpc as vm_grpc

from virtplane_client import convert, errors, watching
from virtplane_client._rpc import call, idempotency_key
from virtplane_client.models import (
    GuestReport,
    Placement,
    VerbResult,
    Vm,
    VmChange,
    VmSpec,
    VmState,
    VmUpdate,
)

Req = TypeVar("Req")
# Every verb takes the VM and an idempotency key; these two also a timeout.
_Verb = TypeVar("_Verb", bound=convert.VerbResponse)


class AsyncVms:
    """The VmService. A VM is named by its id or its name; each mutation
    carries a request_id, fresh unless the caller gives one (repeated with
    the same key and request, a call acts once and returns what the first
    did)."""

    def __init__(self, channel: grpc.aio.Channel, backoff: watching.Backoff) -> None:
        self._stub = vm_grpc.VmServiceStub(channel)
        self._backoff = backoff

    async def create(self, name: str, spec: VmSpec, *, request_id: str | None = None) -> Vm:
        """Defines a VM; it starts DOWN."""
        request = vm_api.CreateVmRequest(
            name=name, spec=convert.spec_message(spec), request_id=idempotency_key(request_id)
        )
        return convert.vm((await call(self._stub.CreateVm, request)).vm)

    async def get(self, vm: str) -> Vm:
        return convert.vm((await call(self._stub.GetVm, vm_api.GetVmRequest(vm=vm))).vm)

    async def list(
        self, *, states: Iterable[VmState] = (), host: str = "", name_contains: str = ""
    ) -> tuple[Vm, ...]:
        """Every VM that matches all the filters given (every page), by name."""
        request = vm_api.ListVmsRequest(
            states=[convert.vm_state_message(s) for s in states],
            host=host,
            name_contains=name_contains,
        )
        found: tuple[Vm, ...] = ()
        while True:
            reply = await call(self._stub.ListVms, request)
            found += tuple(convert.vm(v) for v in reply.vms)
            if not reply.next_page_token:
                return found
            request.page_token = reply.next_page_token

    async def update(
        self,
        vm: str,
        changes: VmUpdate,
        *,
        expected_spec_version: int = 0,
        request_id: str | None = None,
    ) -> Vm:
        """Changes the fields changes sets; with expected_spec_version, only
        if the VM's spec_version is still that one (else Aborted)."""
        values, paths = convert.update_message(changes)
        request = vm_api.UpdateVmRequest(
            vm=vm,
            vm_update=values,
            update_mask=FieldMask(paths=paths),
            expected_spec_version=expected_spec_version,
            request_id=idempotency_key(request_id),
        )
        return convert.vm((await call(self._stub.UpdateVm, request)).vm)

    async def delete(self, vm: str, *, request_id: str | None = None) -> None:
        """Removes a DOWN VM."""
        await call(
            self._stub.DeleteVm,
            vm_api.DeleteVmRequest(vm=vm, request_id=idempotency_key(request_id)),
        )

    async def start(self, vm: str, *, request_id: str | None = None) -> VerbResult:
        """Places a DOWN VM and starts it (restores a SUSPENDED one, resumes a
        PAUSED one); returns once its host accepted it."""
        request = vm_api.StartVmRequest(vm=vm, request_id=idempotency_key(request_id))
        return await _verb(self._stub.StartVm, request)

    async def stop(self, vm: str, *, request_id: str | None = None) -> VerbResult:
        """Powers the VM off at once; it is DOWN when this returns."""
        request = vm_api.StopVmRequest(vm=vm, request_id=idempotency_key(request_id))
        return await _verb(self._stub.StopVm, request)

    async def shutdown(
        self, vm: str, *, timeout_seconds: int = 0, request_id: str | None = None
    ) -> VerbResult:
        """Asks the guest to power off; its host destroys it after
        timeout_seconds (0: the host's default)."""
        request = vm_api.ShutdownVmRequest(
            vm=vm, timeout_seconds=timeout_seconds, request_id=idempotency_key(request_id)
        )
        return await _verb(self._stub.ShutdownVm, request)

    async def reboot(
        self, vm: str, *, timeout_seconds: int = 0, request_id: str | None = None
    ) -> VerbResult:
        """Asks the guest to reboot; reset after timeout_seconds (0: default)."""
        request = vm_api.RebootVmRequest(
            vm=vm, timeout_seconds=timeout_seconds, request_id=idempotency_key(request_id)
        )
        return await _verb(self._stub.RebootVm, request)

    async def reset(self, vm: str, *, request_id: str | None = None) -> VerbResult:
        """Resets the virtual hardware at once."""
        request = vm_api.ResetVmRequest(vm=vm, request_id=idempotency_key(request_id))
        return await _verb(self._stub.ResetVm, request)

    async def pause(self, vm: str, *, request_id: str | None = None) -> VerbResult:
        request = vm_api.PauseVmRequest(vm=vm, request_id=idempotency_key(request_id))
        return await _verb(self._stub.PauseVm, request)

    async def resume(self, vm: str, *, request_id: str | None = None) -> VerbResult:
        request = vm_api.ResumeVmRequest(vm=vm, request_id=idempotency_key(request_id))
        return await _verb(self._stub.ResumeVm, request)

    async def hibernate(self, vm: str, *, request_id: str | None = None) -> VerbResult:
        """Saves the VM's memory to a file on its host and stops it (SUSPENDED)."""
        request = vm_api.HibernateVmRequest(vm=vm, request_id=idempotency_key(request_id))
        return await _verb(self._stub.HibernateVm, request)

    async def migrate(
        self,
        vm: str,
        *,
        to: str = "",
        request_id: str | None = None,
        max_downtime_ms: int | None = None,
        auto_converge: bool | None = None,
        post_copy: bool | None = None,
        stall_seconds: int | None = None,
    ) -> VerbResult:
        """Moves an UP VM live to host to (an id or a name), or to the host the
        scheduler picks; returns once its host has begun (MIGRATING_FROM).
        The operation ends when the VM is UP on the destination, or FAILED
        with the VM UP on its host. The convergence settings given override
        the cluster's for this migration (None: the cluster's): the longest
        switch-over pause, auto-converge, post-copy when it stalls, and how
        long the data remaining may stop shrinking before it is aborted."""
        policy = vm_api.MigrationPolicy(
            max_downtime_ms=max_downtime_ms,
            auto_converge=auto_converge,
            allow_post_copy=post_copy,
            stall_seconds=stall_seconds,
        )
        request = vm_api.MigrateVmRequest(
            vm=vm,
            destination_host=to,
            request_id=idempotency_key(request_id),
            policy=policy if policy.ListFields() else None,
        )
        return await _verb(self._stub.MigrateVm, request)

    async def cancel_migration(self, vm: str, *, request_id: str | None = None) -> VerbResult:
        """Cancels the VM's migration: it runs on at its host; returns the
        migration's operation, FAILED (CANCELLED)."""
        request = vm_api.CancelMigrationRequest(vm=vm, request_id=idempotency_key(request_id))
        return await _verb(self._stub.CancelMigration, request)

    async def guest_report(self, vm: str, *, raw: bool = False) -> GuestReport:
        """What the guest agent reported; with raw, also its last report as sent."""
        request = vm_api.GetVmGuestInfoRequest(vm=vm, include_raw_report=raw)
        return convert.guest_report(await call(self._stub.GetVmGuestInfo, request))

    async def refresh_guest_report(self, vm: str) -> None:
        """Asks the guest agent of a running VM for a full report now."""
        await call(self._stub.RefreshVmGuestInfo, vm_api.RefreshVmGuestInfoRequest(vm=vm))

    async def explain_placement(self, vm: str, *, for_migration: bool = False) -> Placement:
        """Where StartVm would place the VM now (for_migration: where
        MigrateVm would move it), and every host's verdicts."""
        request = vm_api.ExplainPlacementRequest(vm=vm, for_migration=for_migration)
        return convert.placement(await call(self._stub.ExplainPlacement, request))

    def watch(
        self, *, vm_ids: Iterable[str] = (), host: str = "", after_revision: int = 0
    ) -> AsyncGenerator[VmChange, None]:
        """Every VM (or those filtered: ids, host), then every change; from
        after_revision, only what changed since. Never ends by itself: when the
        stream breaks it resumes from the last revision it passed on."""
        ids = list(vm_ids)

        def open_from(revision: int) -> watching.Stream:
            request = vm_api.WatchVmsRequest(vm_ids=ids, host=host, after_revision=revision)
            return self._stub.WatchVms(request)

        return watching.resuming(open_from, after_revision, self._backoff)

    async def wait_for(
        self,
        vm: str,
        state: VmState | Collection[VmState],
        timeout: float | None = None,  # noqa: ASYNC109 (the sync Client has the same signature)
    ) -> Vm:
        """The VM once it is in state (or one of states), as WatchVms shows
        it; WaitTimeout after timeout seconds, NotFound if it is deleted."""
        states = {state} if isinstance(state, VmState) else set(state)
        try:
            async with asyncio.timeout(timeout):
                vm_id = (await self.get(vm)).id
                return await watching.wait_for(self.watch(vm_ids=[vm_id]), vm, states)
        except TimeoutError:
            wanted = " or ".join(sorted(s.name for s in states))
            raise errors.WaitTimeout(f"VM {vm!r} not {wanted} after {timeout} s") from None


async def _verb(method: grpc.aio.UnaryUnaryMultiCallable[Req, _Verb], request: Req) -> VerbResult:
    reply = await call(method, request)
    return convert.verb(reply)
