"""What a VM's guest agent reported: the combined facts (GuestInfo), each fact
on its own (GuestFact) and the last raw report, together a GuestReport."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from virtplane_client.models.enums import AgentState, ChannelState


@dataclass(frozen=True)
class GuestInterface:
    """A network interface seen inside the guest."""

    name: str
    mac_address: str = ""
    ipv4_addresses: tuple[str, ...] = ()
    ipv6_addresses: tuple[str, ...] = ()


@dataclass(frozen=True)
class GuestUser:
    """A user logged in to the guest."""

    name: str
    terminal: str = ""
    host: str = ""
    login_time: dt.datetime | None = None


@dataclass(frozen=True)
class GuestFilesystem:
    """A mounted filesystem in the guest and its usage."""

    mount_point: str
    type: str = ""
    device: str = ""
    total_bytes: int = 0
    used_bytes: int = 0


@dataclass(frozen=True)
class GuestInfo:
    """What the guest agent last reported."""

    hostname: str = ""
    os_name: str = ""
    os_version: str = ""
    kernel_release: str = ""
    interfaces: tuple[GuestInterface, ...] = ()
    application_count: int = 0
    applications: tuple[str, ...] = ()
    uptime_seconds: float = 0.0
    agent_version: str = ""
    last_report_time: dt.datetime | None = None
    observed_time: dt.datetime | None = None
    agent_state: AgentState = AgentState.UNSPECIFIED
    last_heard_time: dt.datetime | None = None
    fqdn: str = ""
    architecture: str = ""
    timezone: str = ""
    cpus: int = 0
    memory_total_kib: int = 0
    memory_free_kib: int = 0
    users: tuple[GuestUser, ...] = ()
    filesystems: tuple[GuestFilesystem, ...] = ()
    channel_state: ChannelState = ChannelState.UNSPECIFIED
    channel_message: str = ""

    @property
    def ipv4_addresses(self) -> tuple[str, ...]:
        """Every interface's IPv4 addresses, in order."""
        return tuple(a for i in self.interfaces for a in i.ipv4_addresses)


@dataclass(frozen=True)
class GuestFact:
    """One fact about a guest as the controller stores it; value_json is JSON."""

    name: str
    source: str
    value_json: str
    observed_time: dt.datetime | None = None
    received_time: dt.datetime | None = None
    stale: bool = False


@dataclass(frozen=True)
class GuestRawReport:
    """The agent's last report as its host received it (for debugging)."""

    report_json: str = ""
    truncated: bool = False
    received_time: dt.datetime | None = None
    host_id: str = ""
    unavailable_reason: str = ""  # why report_json is empty


@dataclass(frozen=True)
class GuestReport:
    """GetVmGuestInfo's answer: the combined facts, each fact, the raw report."""

    guest: GuestInfo | None
    facts: tuple[GuestFact, ...]
    raw_report: GuestRawReport | None = None  # only when asked for
