"""Which consoles a VM may ask for here: those hostd can build that the hypervisor offers."""

from __future__ import annotations

from hostd.errors import ConsoleNotSupported
from hostd.model import ConsoleKind, VmConfig

BUILDABLE: tuple[ConsoleKind, ...] = (
    ConsoleKind.NONE,
    ConsoleKind.SERIAL_FILE,
    ConsoleKind.VNC,
)
"""What hostd.builder knows how to make."""
_DISPLAY: dict[ConsoleKind, str] = {ConsoleKind.VNC: "vnc", ConsoleKind.SPICE: "spice"}
"""The hypervisor's graphics type each display console needs."""


def supported_consoles(graphics: frozenset[str]) -> tuple[ConsoleKind, ...]:
    """The consoles offered, given the hypervisor's graphics types."""
    return tuple(k for k in BUILDABLE if k not in _DISPLAY or _DISPLAY[k] in graphics)


def check_console(config: VmConfig, supported: tuple[ConsoleKind, ...]) -> None:
    """Raises ConsoleNotSupported, listing what is, when config asks for another console."""
    kind = config.console
    if kind in supported:
        return
    offered = ", ".join(k.api_name for k in supported)
    raise ConsoleNotSupported(
        f"config.console.kind: {kind.api_name} is not supported on this host; supported: {offered}"
    )
