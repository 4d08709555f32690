"""Issue 12's property: generated requests to every RPC of the controller's
public services (VmService, HostService, OperationService,
AffinityGroupService), over its real TLS port as the admin, never end
INTERNAL or UNKNOWN, a success answers a well-formed response, and after
each case the database keeps its invariants (tests.support.consistency);
on each engine.

The requests are drawn from the message descriptors
(tests.support.proto_strategies), with the names and ids of a host, VMs, an
affinity group and an operation made before the run mixed in, so that some
calls succeed and later ones meet what they changed. Run with -s to see the
count of cases.
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy.orm import Session
from virtplane.v1 import affinity_group_service_pb2 as group_api
from virtplane.v1 import affinity_group_service_pb2_grpc as group_grpc
from virtplane.v1 import host_service_pb2, operation_service_pb2, vm_pb2, vm_service_pb2
from virtplane.v1 import vm_service_pb2 as vm_api

from db.session import make_engine
from tests.support.api_calls import Tally, call, calls, drive_async, methods
from tests.support.consistency import problems
from tests.support.controller_rig import Rig, spec
from tests.support.proto_strategies import Pool
from tests.support.rig_hosts import add_test_host
from tests.support.served import Served

EXAMPLES = 4000
"""Cases per engine (the hostd property test adds its own)."""

UNREACHABLE = "127.0.0.1:43998"  # in this module's range; nothing listens there

RPCS = [
    *methods(vm_service_pb2, "VmService"),
    *methods(host_service_pb2, "HostService"),
    *methods(operation_service_pb2, "OperationService"),
    *methods(group_api, "AffinityGroupService"),
]


async def _seed(rig: Rig, hostd: Served, boot: vm_pb2.BootSource) -> Pool:
    """A host, two VMs (one started) and a group; their names and ids."""
    host = await add_test_host(rig, "h1", hostd)
    web = (await rig.vms.CreateVm(vm_api.CreateVmRequest(name="web", spec=spec(boot)))).vm
    db = (await rig.vms.CreateVm(vm_api.CreateVmRequest(name="db", spec=spec(boot)))).vm
    started = await rig.vms.StartVm(vm_api.StartVmRequest(vm="web"))
    groups = group_api.CreateAffinityGroupRequest(
        name="g1", polarity=group_api.AffinityGroup.POLARITY_NEGATIVE, vms=["web"]
    )
    await group_grpc.AffinityGroupServiceStub(rig.channel).CreateAffinityGroup(groups)
    strings = (
        *("web", "db", "h1", "g1", "nic0", "default", "52:54:00:12:34:56"),
        *(web.id, db.id, host.id, started.operation.id, hostd.address, UNREACHABLE),
        boot.kernel_path,
        str(Path(boot.kernel_path).parent),
    )
    nic = vm_pb2.Nic(name="nic0", kind=vm_pb2.Nic.KIND_USER)
    valid = (spec(boot), boot, nic, vm_pb2.Vm(name="web2", spec=spec(boot)))
    return Pool(strings=strings, numbers=(1, 2, 64, 128, web.spec_version), messages=valid)


async def test_generated_requests_keep_the_api_and_the_database_sound(
    rig: Rig, test_hostd: Served, boot: vm_pb2.BootSource, database_url: str
) -> None:
    pool = await _seed(rig, test_hostd, boot)
    engine = make_engine(database_url)
    tally = Tally()

    async def case(drawn: tuple[object, object]) -> None:
        rpc, request = drawn
        code, _ = await call(rig.channel, rpc, request)  # type: ignore[arg-type]
        tally.codes[(rpc.name, code.name)] += 1  # type: ignore[attr-defined]
        with Session(engine) as session:
            broken = problems(session)
        assert not broken, f"after {rpc.name}({request!r:.2000}): {broken}"  # type: ignore[attr-defined]

    try:
        await drive_async(calls(RPCS, pool), case, EXAMPLES)
    finally:
        engine.dispose()
    print(f"\ncontroller API on {engine.dialect.name}: {tally.summary()}")
    assert {rpc for rpc, _ in tally.codes} == {rpc.name for rpc in RPCS}
    assert any(code == "OK" for _, code in tally.codes)
