"""Client: the blocking client. It runs an AsyncClient on a private event loop
thread; each method below is the async core's method, run to its end (see
virtplane_client._loop), so both clients share every line of logic."""

from __future__ import annotations

from types import TracebackType

from virtplane_client._loop import Blocking, BlockingIter, LoopThread, Synced
from virtplane_client.aio import AsyncClient
from virtplane_client.credentials import TLS_DEFAULT, Credentials
from virtplane_client.fleet import AsyncAffinityGroups, AsyncHosts
from virtplane_client.operations import AsyncOperations
from virtplane_client.principals import AsyncPrincipals
from virtplane_client.vms import AsyncVms
from virtplane_client.watching import DEFAULT_BACKOFF, Backoff


class Vms(Synced[AsyncVms]):
    """VMs: AsyncVms' methods, blocking; watch() is an iterator."""

    create = Blocking(AsyncVms.create)
    get = Blocking(AsyncVms.get)
    list = Blocking(AsyncVms.list)
    update = Blocking(AsyncVms.update)
    delete = Blocking(AsyncVms.delete)
    start = Blocking(AsyncVms.start)
    stop = Blocking(AsyncVms.stop)
    shutdown = Blocking(AsyncVms.shutdown)
    reboot = Blocking(AsyncVms.reboot)
    reset = Blocking(AsyncVms.reset)
    pause = Blocking(AsyncVms.pause)
    resume = Blocking(AsyncVms.resume)
    hibernate = Blocking(AsyncVms.hibernate)
    migrate = Blocking(AsyncVms.migrate)
    cancel_migration = Blocking(AsyncVms.cancel_migration)
    guest_report = Blocking(AsyncVms.guest_report)
    refresh_guest_report = Blocking(AsyncVms.refresh_guest_report)
    explain_placement = Blocking(AsyncVms.explain_placement)
    wait_for = Blocking(AsyncVms.wait_for)
    watch = BlockingIter(AsyncVms.watch)


class Hosts(Synced[AsyncHosts]):
    """Hosts: AsyncHosts' methods, blocking."""

    add = Blocking(AsyncHosts.add)
    register = Blocking(AsyncHosts.register)
    enrollment_token = Blocking(AsyncHosts.enrollment_token)
    get = Blocking(AsyncHosts.get)
    list = Blocking(AsyncHosts.list)
    names = Blocking(AsyncHosts.names)
    remove = Blocking(AsyncHosts.remove)
    set_maintenance = Blocking(AsyncHosts.set_maintenance)
    activate = Blocking(AsyncHosts.activate)
    confirm_down = Blocking(AsyncHosts.confirm_down)
    explain_balancing = Blocking(AsyncHosts.explain_balancing)


class AffinityGroups(Synced[AsyncAffinityGroups]):
    """Affinity groups: AsyncAffinityGroups' methods, blocking."""

    create = Blocking(AsyncAffinityGroups.create)
    get = Blocking(AsyncAffinityGroups.get)
    list = Blocking(AsyncAffinityGroups.list)
    delete = Blocking(AsyncAffinityGroups.delete)


class Operations(Synced[AsyncOperations]):
    """Operations and the audit log: AsyncOperations' methods, blocking."""

    get = Blocking(AsyncOperations.get)
    list = Blocking(AsyncOperations.list)
    wait = Blocking(AsyncOperations.wait)
    result = Blocking(AsyncOperations.result)
    events = Blocking(AsyncOperations.events)


class Principals(Synced[AsyncPrincipals]):
    """Principals, tokens, client certificates: AsyncPrincipals' methods, blocking."""

    create = Blocking(AsyncPrincipals.create)
    list = Blocking(AsyncPrincipals.list)
    delete = Blocking(AsyncPrincipals.delete)
    create_token = Blocking(AsyncPrincipals.create_token)
    tokens = Blocking(AsyncPrincipals.tokens)
    revoke_token = Blocking(AsyncPrincipals.revoke_token)
    issue_certificate = Blocking(AsyncPrincipals.issue_certificate)


async def _open(target: str, credentials: Credentials, backoff: Backoff) -> AsyncClient:
    # made on the loop it will run on
    return AsyncClient(target, credentials=credentials, backoff=backoff)


class Client:
    """A blocking connection to the controller at target (host:port)::

    with Client("ctl:7000", credentials=Credentials(ca="ca.pem", token=secret)) as vp:
        vm = vp.vms.wait_for("web", VmState.UP, timeout=60)
    """

    def __init__(
        self,
        target: str = "127.0.0.1:7000",
        *,
        credentials: Credentials = TLS_DEFAULT,
        backoff: Backoff = DEFAULT_BACKOFF,
    ) -> None:
        self._loop = LoopThread()
        self._core = self._loop.run(_open(target, credentials, backoff))
        self.vms = Vms(self._core.vms, self._loop)
        self.hosts = Hosts(self._core.hosts, self._loop)
        self.affinity = AffinityGroups(self._core.affinity, self._loop)
        self.operations = Operations(self._core.operations, self._loop)
        self.principals = Principals(self._core.principals, self._loop)

    def close(self) -> None:
        self._loop.run(self._core.close())
        self._loop.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()
