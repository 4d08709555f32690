"""A live migration's convergence policy, as the controller resolves it.

The cluster's policy is the controller's flags (--migration-max-downtime-ms,
--migration-auto-converge, --migration-allow-post-copy,
--migration-stall-seconds, --migration-completion-timeout-seconds); a
MigrateVm call may override any of them (MigrateVmRequest.policy: each field
it sets wins). The result travels to the source host with the migration
(HostAgentService.MigrateVm's policy), whose hostd applies it
(hostd.convergence): the downtime limit and auto-converge go to the
hypervisor; a transfer whose data remaining has not shrunk below its lowest
for stall_seconds is aborted — the VM UP on its source, the operation FAILED
saying so — or switched to post-copy when allowed.

A migration that waits its turn under the migration limits
(controller.lifecycle.migration_queue) keeps the policy it was asked with in
its operation (Operation.migration_policy) and starts with it.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass

from virtplane.v1 import host_agent_service_pb2 as agent_pb2
from virtplane.v1 import vm_service_pb2 as vm_api

from virtplane_common.errors import InvalidArgument

_NUMBERS = ("max_downtime_ms", "stall_seconds", "completion_timeout_seconds")
_FLAGS = ("auto_converge", "allow_post_copy")


@dataclass(frozen=True)
class MigrationPolicy:
    """Every 0 or False: off (the hypervisor's default, never aborted)."""

    # The longest the guest may be stopped at the switch-over, ms; 0: QEMU's 300.
    max_downtime_ms: int = 0
    # Throttle the guest's vCPUs while it dirties memory faster than it is sent.
    auto_converge: bool = False
    # A stalled migration switches to post-copy rather than being aborted.
    allow_post_copy: bool = False
    # Stalled: the data remaining has not gone below its lowest for this long.
    stall_seconds: int = 0
    # The backstop: still transferring after this long, it is given up on.
    completion_timeout_seconds: int = 0

    def check(self, prefix: str = "") -> MigrationPolicy:
        """This policy, or InvalidArgument naming the first negative field."""
        for name in _NUMBERS:
            value = getattr(self, name)
            if value < 0:
                raise InvalidArgument(f"{prefix}{name}", f"{value} is negative; 0 means off")
        return self

    def overridden(self, call: vm_api.MigrationPolicy | None) -> MigrationPolicy:
        """This (the cluster's) policy with what one call sets instead;
        InvalidArgument naming a field of the call's out of range."""
        if call is None:
            return self
        given = call.ListFields()  # the fields set, optional ones included
        changes = {f.name: value for f, value in given if f.name in _NUMBERS + _FLAGS}
        return dataclasses.replace(self, **changes).check("policy.")

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str, default: MigrationPolicy) -> MigrationPolicy:
        """The policy to_json wrote; default for "" (an operation queued
        before policies were kept)."""
        if not text:
            return default
        fields = json.loads(text)
        return cls(**{f.name: fields[f.name] for f in dataclasses.fields(cls) if f.name in fields})

    def to_host(self) -> agent_pb2.HostMigrationPolicy:
        return agent_pb2.HostMigrationPolicy(
            max_downtime_ms=self.max_downtime_ms,
            auto_converge=self.auto_converge,
            allow_post_copy=self.allow_post_copy,
            stall_seconds=self.stall_seconds,
            completion_timeout_seconds=self.completion_timeout_seconds,
        )
