"""What every VM path works with, passed as one value: the hypervisor, the VM records,
background work and hook running (the start paths, power verbs, hibernation,
recovery, migration and the event pump each take it)."""

from __future__ import annotations

from dataclasses import dataclass

from hostd.hook_runner import HookRunner
from hostd.hypervisor import Hypervisor
from hostd.registry import VmRegistry
from hostd.tasks import TaskSupervisor


@dataclass(frozen=True)
class VmParts:
    hypervisor: Hypervisor
    registry: VmRegistry
    tasks: TaskSupervisor
    hooks: HookRunner
