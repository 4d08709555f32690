"""Roles, permissions, and the one table of what each RPC needs.

Every RPC of the controller's services is listed in METHODS by its full
method name; tests.controller.test_auth_table fails when one is missing.
A method mapped to OPEN needs no principal: EnrollHost is authenticated by
its own one-time enrollment token.
"""

from __future__ import annotations

import enum


class Permission(enum.StrEnum):
    READ = "read"
    """Reads and watches of VMs, hosts, operations, affinity groups."""
    VM_VERBS = "vm.verbs"
    """Start, stop, shutdown, reboot, reset, pause, resume, hibernate,
    migrate, cancel a migration."""
    VM_CHANGE = "vm.change"
    """Create, update, delete VMs and affinity groups; refresh guest info."""
    HOSTS = "hosts"
    """Add, remove, maintenance, activate hosts; enrollment tokens."""
    FENCING = "fencing"
    """ConfirmHostDown: tells HA that a host is down."""
    PRINCIPALS = "principals"
    """Principals, tokens and client certificates."""
    OPEN = "open"
    """No principal needed (the call authenticates itself)."""


class Role(enum.StrEnum):
    ADMIN = "admin"
    OPERATOR = "operator"
    VIEWER = "viewer"


ROLE_PERMISSIONS: dict[Role, frozenset[Permission]] = {
    Role.VIEWER: frozenset({Permission.READ}),
    Role.OPERATOR: frozenset({Permission.READ, Permission.VM_VERBS, Permission.VM_CHANGE}),
    Role.ADMIN: frozenset(Permission),
}

_P = Permission
_VM = "/virtplane.v1.VmService/"
_HOST = "/virtplane.v1.HostService/"
_OP = "/virtplane.v1.OperationService/"
_AG = "/virtplane.v1.AffinityGroupService/"
_PR = "/virtplane.v1.PrincipalService/"
_EN = "/virtplane.v1.EnrollmentService/"

METHODS: dict[str, Permission] = {
    _VM + "CreateVm": _P.VM_CHANGE,
    _VM + "GetVm": _P.READ,
    _VM + "ListVms": _P.READ,
    _VM + "UpdateVm": _P.VM_CHANGE,
    _VM + "DeleteVm": _P.VM_CHANGE,
    _VM + "StartVm": _P.VM_VERBS,
    _VM + "StopVm": _P.VM_VERBS,
    _VM + "ShutdownVm": _P.VM_VERBS,
    _VM + "RebootVm": _P.VM_VERBS,
    _VM + "ResetVm": _P.VM_VERBS,
    _VM + "PauseVm": _P.VM_VERBS,
    _VM + "ResumeVm": _P.VM_VERBS,
    _VM + "HibernateVm": _P.VM_VERBS,
    _VM + "MigrateVm": _P.VM_VERBS,
    _VM + "CancelMigration": _P.VM_VERBS,
    _VM + "WatchVms": _P.READ,
    _VM + "GetVmGuestInfo": _P.READ,
    _VM + "RefreshVmGuestInfo": _P.VM_CHANGE,
    _VM + "ExplainPlacement": _P.READ,
    _HOST + "AddHost": _P.HOSTS,
    _HOST + "GetHost": _P.READ,
    _HOST + "ListHosts": _P.READ,
    _HOST + "RemoveHost": _P.HOSTS,
    _HOST + "SetHostMaintenance": _P.HOSTS,
    _HOST + "ActivateHost": _P.HOSTS,
    _HOST + "ConfirmHostDown": _P.FENCING,
    _HOST + "ExplainBalancing": _P.READ,
    _OP + "GetOperation": _P.READ,
    _OP + "ListOperations": _P.READ,
    _OP + "WaitOperation": _P.READ,
    _OP + "ListEvents": _P.READ,
    _AG + "CreateAffinityGroup": _P.VM_CHANGE,
    _AG + "GetAffinityGroup": _P.READ,
    _AG + "ListAffinityGroups": _P.READ,
    _AG + "DeleteAffinityGroup": _P.VM_CHANGE,
    _PR + "CreatePrincipal": _P.PRINCIPALS,
    _PR + "ListPrincipals": _P.PRINCIPALS,
    _PR + "DeletePrincipal": _P.PRINCIPALS,
    _PR + "CreateToken": _P.PRINCIPALS,
    _PR + "ListTokens": _P.PRINCIPALS,
    _PR + "RevokeToken": _P.PRINCIPALS,
    _PR + "IssueClientCertificate": _P.PRINCIPALS,
    _PR + "GetCurrentPrincipal": _P.READ,
    _EN + "EnrollHost": _P.OPEN,
    _EN + "CreateEnrollmentToken": _P.HOSTS,
}


def allows(role: Role, permission: Permission) -> bool:
    return permission in ROLE_PERMISSIONS[role]
