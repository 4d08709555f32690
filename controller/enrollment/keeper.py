"""While a host's monitor is connected to it: the host gets the current
CRL at once and every CRL_REFRESH after, and its certificate is renewed
when due (records.renew_at).

HostMonitor runs keep() beside its event watch and cancels it when the
watch ends; a host that never enrolled (plaintext development) is left
alone. publish() sends the CRL to every host kept now (after RemoveHost).
Failures are logged and retried: they never break a host's monitor.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging

from sqlalchemy.orm import Session

from controller.enrollment import records
from controller.enrollment.renewal import Renewal
from controller.enrollment.revocation import RevocationList
from controller.host_client import HostClient
from db.models import Host, utcnow
from db.session import Database
from virtplane_common.errors import VirtplaneError

log = logging.getLogger(__name__)

CRL_REFRESH = dt.timedelta(days=1)
"""How often a connected host gets the CRL again (well within its nextUpdate)."""


def _renew_at(session: Session, host_id: str) -> dt.datetime | None:
    host = session.get(Host, host_id)
    return None if host is None else records.renew_at(host)


class IdentityKeeper:
    def __init__(
        self, db: Database, revocations: RevocationList, renewal: Renewal, retry: float
    ) -> None:
        self._db = db
        self._revocations = revocations
        self._renewal = renewal
        self._retry = retry
        self._connected: dict[str, HostClient] = {}

    async def keep(self, host_id: str, client: HostClient) -> None:
        """Until cancelled: the CRL now, then each renewal when due."""
        try:
            if await self._db.run(lambda s: _renew_at(s, host_id)) is None:
                return  # never enrolled: nothing to keep
            self._connected[host_id] = client
            await self._push(client, await self._revocations.current())
            await self._renew_when_due(host_id, client)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("host %s: keeping its certificate failed", client.name)
        finally:
            if self._connected.get(host_id) is client:
                del self._connected[host_id]

    async def _renew_when_due(self, host_id: str, client: HostClient) -> None:
        while (renew_at := await self._db.run(lambda s: _renew_at(s, host_id))) is not None:
            wait = (renew_at - utcnow()).total_seconds()
            if wait > CRL_REFRESH.total_seconds():
                await asyncio.sleep(CRL_REFRESH.total_seconds())
                await self._push(client, await self._revocations.current())
                continue
            if wait > 0:
                await asyncio.sleep(wait)
            try:
                await self._renewal.renew(host_id, client)
            except VirtplaneError as exc:
                log.warning(
                    "host %s: certificate renewal failed (%s); trying again in %.1f s",
                    client.name, exc, self._retry,
                )  # fmt: skip
                await self.publish()
                await asyncio.sleep(self._retry)

    async def publish(self) -> None:
        """Sends the current CRL to every host kept now."""
        if not self._connected:
            return
        crl = await self._revocations.current()
        clients = list(self._connected.values())
        await asyncio.gather(*(self._push(client, crl) for client in clients))

    async def _push(self, client: HostClient, crl: bytes) -> None:
        try:
            await client.set_revocation_list(crl)
        except VirtplaneError as exc:
            log.warning("host %s: revocation list not delivered: %s", client.name, exc)
