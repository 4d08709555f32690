"""virtplane_client: the typed Python client of the virtplane controller.

    from virtplane_client import Client, VmSpec, BootSource, VmState

    with Client("127.0.0.1:7000") as vp:
        vm = vp.vms.create("web", VmSpec(vcpus=1, memory_mib=256, boot=BootSource("/k")))
        started = vp.vms.start(vm.id)               # a fresh request_id unless given
        vp.operations.result(started.operation)     # OperationFailed if it failed
        vp.vms.wait_for("web", VmState.UP, timeout=60)
        for change in vp.vms.watch():               # resumes by itself
            ...

Where each behaviour lives:

- client       Client: the blocking client (its sub-APIs run the async ones)
- aio          AsyncClient: the asyncio client and its one gRPC channel
- vms          client.vms: VM CRUD, the power verbs, guest report, placement,
               watch, wait_for
- watching     the watch that resumes from its last revision with a bounded
               backoff; wait_for on it
- operations   client.operations: get, list, wait, result (awaited to the end);
               the audit log
- fleet        client.hosts and client.affinity
- principals   client.principals: principals, roles, tokens, certificates
- credentials  Credentials: the CA, a token or a key pair; TLS always, but
               for an explicit insecure development mode
- models       the frozen dataclasses and enums every call returns
- convert      the one module that reads protos into models and writes requests
- errors       the exception tree; a failed call is translated once (_rpc)
- _rpc         the gRPC boundary: calls, error translation, request ids
- _loop        the private event loop thread the blocking client runs on
- cli          the `virtplane` command, built on AsyncClient
"""

from __future__ import annotations

from virtplane_client.aio import AsyncClient as AsyncClient
from virtplane_client.client import Client as Client
from virtplane_client.credentials import INSECURE_DEVELOPMENT as INSECURE_DEVELOPMENT
from virtplane_client.credentials import Credentials as Credentials
from virtplane_client.errors import ClientError as ClientError
from virtplane_client.errors import OperationFailed as OperationFailed
from virtplane_client.errors import RpcError as RpcError
from virtplane_client.errors import WaitTimeout as WaitTimeout
from virtplane_client.models import *  # noqa: F403 (the models are the client's API)
from virtplane_client.watching import Backoff as Backoff
