"""The client's tests run against the controller rig of tests/controller: an
in-process controller on a fresh database of each engine and, for what
needs a host, a hostd on libvirt's test driver."""

from __future__ import annotations

from tests.controller.conftest import boot, rig, test_hostd

__all__ = ["boot", "rig", "test_hostd"]
