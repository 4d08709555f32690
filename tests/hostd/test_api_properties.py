"""Issue 12's property for hostd: generated requests to every RPC of
HostAgentService, over its real mutual-TLS port as the controller, on
libvirt's test driver, never end INTERNAL or UNKNOWN, and a success answers
a well-formed response.

The requests are drawn from the message descriptors
(tests.support.proto_strategies), with the id of a running VM, its boot
files and an address mixed in, so that some calls succeed. Run with -s to
see the count of cases.
"""

from __future__ import annotations

from virtplane.v1 import host_agent_service_pb2 as pb

from tests.support.api_calls import Tally, call, calls, drive_async, methods
from tests.support.hostd_rig import vm_config
from tests.support.proto_strategies import Pool
from tests.support.served import Served

EXAMPLES = 4000

UNREACHABLE = "127.0.0.1:43997"  # in this module's range; nothing listens there

RPCS = methods(pb, "HostAgentService")


async def test_generated_requests_keep_hostd_sound(
    served: Served, boot_files: tuple[str, str]
) -> None:
    kernel, initrd = boot_files
    config = vm_config(kernel, initrd=initrd, name="web")
    await served.stub.CreateVm(pb.HostAgentServiceCreateVmRequest(config=config))
    pool = Pool(
        strings=(config.vm_id, "web", kernel, initrd, served.host_id, UNREACHABLE, "nic0"),
        numbers=(1, 2, 64, 128),
        messages=(vm_config(kernel, initrd=initrd), config.spec),
    )
    tally = Tally()

    async def case(drawn: tuple[object, object]) -> None:
        rpc, request = drawn
        code, _ = await call(served.channel, rpc, request)  # type: ignore[arg-type]
        tally.codes[(rpc.name, code.name)] += 1  # type: ignore[attr-defined]

    await drive_async(calls(RPCS, pool), case, EXAMPLES)
    print(f"\nhostd API: {tally.summary()}")
    assert {rpc for rpc, _ in tally.codes} == {rpc.name for rpc in RPCS}
    assert any(code == "OK" for _, code in tally.codes)
