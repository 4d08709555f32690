"""The migration policy's plumbing (controller.lifecycle.migration_policy):
the cluster's flags, a call's overrides, their checks, and the fields the
source host receives. The host's side is a recording HostAgentService served
over gRPC (the transport is the seam); what hostd does with the policy:
tests/hostd/test_convergence.py and test_real_migration_convergence.py."""

from __future__ import annotations

import grpc
import pytest
from virtplane.v1 import host_agent_service_pb2 as agent
from virtplane.v1 import vm_service_pb2 as vm_api

from controller.host_client import HostClient
from controller.lifecycle.migrate import MigrateSteps
from controller.lifecycle.migration_policy import MigrationPolicy
from controller.lifecycle.target import HostTarget
from controller.main import parse
from controller.scheduler import Policy
from tests.support.controller_rig import Rig, error
from tests.support.recording_agent import RecordingAgent, source
from virtplane_common.errors import InvalidArgument

_ = source  # the fixture
CLUSTER = MigrationPolicy(max_downtime_ms=200, auto_converge=True, stall_seconds=120)


def test_a_call_overrides_only_what_it_sets() -> None:
    call = vm_api.MigrationPolicy(stall_seconds=0, allow_post_copy=True)
    assert CLUSTER.overridden(call) == MigrationPolicy(
        max_downtime_ms=200, auto_converge=True, allow_post_copy=True, stall_seconds=0
    )
    assert CLUSTER.overridden(vm_api.MigrationPolicy()) == CLUSTER
    assert CLUSTER.overridden(None) == CLUSTER


@pytest.mark.parametrize(
    "field", ["max_downtime_ms", "stall_seconds", "completion_timeout_seconds"]
)
def test_a_negative_value_of_a_call_is_refused_naming_its_field(field: str) -> None:
    with pytest.raises(InvalidArgument, match=rf"^policy\.{field}: -5 is negative"):
        call = vm_api.MigrationPolicy()
        setattr(call, field, -5)
        CLUSTER.overridden(call)


async def test_the_source_host_receives_the_resolved_policy(
    source: tuple[RecordingAgent, HostClient],
) -> None:
    recording, client = source
    policy = CLUSTER.overridden(vm_api.MigrationPolicy(max_downtime_ms=50, allow_post_copy=True))
    steps = MigrateSteps("", Policy.EVEN_SPREAD, 16, convergence=policy)
    target = HostTarget(
        "vm-1", "v1", "h1-id", "h1", client.address, destination_id="h2-id",
        destination_address="127.0.0.1:7071",
    )  # fmt: skip
    await steps.call_host(client, target, "op-1")
    (sent,) = recording.requests
    assert (sent.vm_id, sent.destination_host_id, sent.max_bandwidth_mib_per_second) == (
        "vm-1",
        "h2-id",
        16,
    )
    assert sent.policy == agent.HostMigrationPolicy(
        max_downtime_ms=50, auto_converge=True, allow_post_copy=True, stall_seconds=120
    )


async def test_the_cluster_policy_is_sent_when_the_call_has_none(
    source: tuple[RecordingAgent, HostClient],
) -> None:
    recording, client = source
    steps = MigrateSteps("", Policy.EVEN_SPREAD)
    target = HostTarget("vm-1", "v1", "h1-id", "h1", client.address, destination_id="h2-id")
    await steps.call_host(client, target, "op-1")
    assert recording.requests[0].policy == agent.HostMigrationPolicy()


def test_the_cluster_policy_comes_from_the_flags() -> None:
    config, _level = parse(
        [
            "--migration-max-downtime-ms=250",
            "--migration-auto-converge",
            "--migration-allow-post-copy",
            "--migration-stall-seconds=90",
            "--migration-completion-timeout-seconds=900",
        ]
    )
    assert config.migration_policy == MigrationPolicy(250, True, True, 90, 900)
    assert parse([])[0].migration_policy == MigrationPolicy()


def test_a_negative_flag_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        parse(["--migration-stall-seconds=-1"])
    assert "--migration-stall-seconds: -1 is negative" in capsys.readouterr().err


async def test_migrate_vm_refuses_a_negative_policy_naming_the_field(rig: Rig) -> None:
    request = vm_api.MigrateVmRequest(vm="any", policy=vm_api.MigrationPolicy(max_downtime_ms=-1))
    code, why = await error(rig.vms.MigrateVm(request))
    assert code is grpc.StatusCode.INVALID_ARGUMENT
    assert why.startswith("policy.max_downtime_ms: -1 is negative"), why
