"""Affinity groups: creating, reading and deleting them. The scheduler reads
them at placement (db.repositories.affinity_of, controller.scheduler).
The service returns rows; the servicer converts them."""

from __future__ import annotations

import uuid

from sqlalchemy.orm import Session

from controller.errors import AffinityGroupExists, AffinityGroupNotFound, VmNotFound
from db import repositories as repo
from db.models import AffinityGroup, AffinityMember
from db.session import Database


class AffinityGroups:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def create(
        self, name: str, positive: bool, enforcing: bool, vm_refs: list[str]
    ) -> AffinityGroup:
        def work(session: Session) -> AffinityGroup:
            if repo.find_affinity_group(session, name) is not None:
                raise AffinityGroupExists(name)
            group = AffinityGroup(
                id=str(uuid.uuid4()), name=name, positive=positive, enforcing=enforcing
            )
            ids: list[str] = []
            for ref in vm_refs:
                vm = repo.find_vm(session, ref)
                if vm is None:
                    raise VmNotFound(ref)
                if vm.id not in ids:
                    ids.append(vm.id)
            group.members = [AffinityMember(vm_id=i) for i in ids]
            session.add(group)
            session.flush()
            return group

        return await self._db.run(work)

    async def get(self, ref: str) -> AffinityGroup:
        def work(session: Session) -> AffinityGroup:
            group = repo.find_affinity_group(session, ref)
            if group is None:
                raise AffinityGroupNotFound(ref)
            return group

        return await self._db.run(work)

    async def list(self) -> list[AffinityGroup]:
        return await self._db.run(lambda s: list(repo.list_affinity_groups(s)))

    async def delete(self, ref: str) -> None:
        def work(session: Session) -> None:
            group = repo.find_affinity_group(session, ref)
            if group is None:
                raise AffinityGroupNotFound(ref)
            session.delete(group)

        await self._db.run(work)
