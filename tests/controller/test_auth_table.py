"""The one table of permissions covers every RPC of the controller's services."""

from __future__ import annotations

from controller.auth.permissions import METHODS, ROLE_PERMISSIONS, Permission, Role, allows
from tests.support.auth_rig import controller_methods


def test_every_method_names_its_permission() -> None:
    missing = [method for method, _ in controller_methods() if method not in METHODS]
    assert missing == []


def test_roles_nest_and_only_admin_fences() -> None:
    assert ROLE_PERMISSIONS[Role.VIEWER] < ROLE_PERMISSIONS[Role.OPERATOR]
    assert ROLE_PERMISSIONS[Role.OPERATOR] < ROLE_PERMISSIONS[Role.ADMIN]
    for permission in (Permission.HOSTS, Permission.FENCING, Permission.PRINCIPALS):
        assert not allows(Role.OPERATOR, permission)
        assert allows(Role.ADMIN, permission)
    assert METHODS["/virtplane.v1.HostService/ConfirmHostDown"] is Permission.FENCING
    assert METHODS["/virtplane.v1.VmService/WatchVms"] is Permission.READ
