"""Which consoles a VM may ask for here: those hostd can build that the hypervisor offers."""

from __future__ import annotations

from virtplane.v1 import host_agent_service_pb2 as pb

from hostd.errors import ConsoleNotSupported

Kind = pb.Console.Kind

BUILDABLE: tuple[Kind.ValueType, ...] = (
    pb.Console.KIND_NONE,
    pb.Console.KIND_SERIAL_FILE,
    pb.Console.KIND_VNC,
)
"""What hostd.builder knows how to make."""
_DISPLAY: dict[Kind.ValueType, str] = {pb.Console.KIND_VNC: "vnc", pb.Console.KIND_SPICE: "spice"}
"""The hypervisor's graphics type each display console needs."""


def supported_consoles(graphics: frozenset[str]) -> tuple[Kind.ValueType, ...]:
    """The consoles offered, given the hypervisor's graphics types."""
    return tuple(k for k in BUILDABLE if k not in _DISPLAY or _DISPLAY[k] in graphics)


def check_console(config: pb.VmConfig, supported: tuple[Kind.ValueType, ...]) -> None:
    """Raises ConsoleNotSupported, listing what is, when config asks for another console."""
    kind = config.console.kind
    if kind in supported:
        return
    offered = ", ".join(Kind.Name(k) for k in supported)
    raise ConsoleNotSupported(
        f"config.console.kind: {Kind.Name(kind)} is not supported on this host; "
        f"supported: {offered}"
    )
