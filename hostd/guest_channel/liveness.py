"""Whether the guest agent is alive: heartbeats, and the agent a VM awaits.

The agent is RESPONDING from its first report on. One that misses its
heartbeats (missed_heartbeats intervals of silence) is NOT_RESPONDING: its
facts are kept as last observed and the sink is told; the next message it
sends makes it RESPONDING again, except a hello: that is a new agent
(restarted, or its guest rebooted), whose full report follows; until then
the facts are the old agent's, still stale. So a hello from another agent
instance than the one heard last, in a session that never went silent (an
agent restarted within its heartbeats, as `systemctl restart` does), makes
the agent NOT_RESPONDING too, until that full report. A VM that names the
agent version last seen in it awaits an agent: one that has not spoken
agent_start_seconds after the channel opened is NOT_RESPONDING, with that
version.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from virtplane.v1 import vm_pb2

from hostd import guest_info
from hostd.config import ChannelLimits
from hostd.guest_channel.facts import GuestFacts

log = logging.getLogger(__name__)

AgentState = vm_pb2.GuestInfo.AgentState


class Liveness:
    """The agent's state in the guest's facts, kept from what it sends and when."""

    def __init__(
        self,
        limits: ChannelLimits,
        facts: GuestFacts,
        monotonic: Callable[[], float],
        expected_agent: str,
    ) -> None:
        self._limits = limits
        self._facts = facts
        self._monotonic = monotonic
        self._expected_agent = expected_agent
        self._opened = monotonic()
        self._last_heard = monotonic()
        self._instance = ""
        """The agent_instance of the last message that named one."""
        self.heartbeat_seconds = limits.default_heartbeat_seconds
        """The interval the agent's heartbeats come at (as it said, within bounds)."""

    def agreed(self, heartbeat_interval_ms: int) -> None:
        """The agent said hello, with its heartbeat interval (0: the default)."""
        if heartbeat_interval_ms:
            self.heartbeat_seconds = min(
                max(heartbeat_interval_ms / 1000, self._limits.min_heartbeat_seconds),
                self._limits.max_heartbeat_seconds,
            )

    def heard(self, received: int, body: str, agreed: bool, instance: str = "") -> bool:
        """The agent instance sent a message of kind body at received (Unix
        ns), with or without a version agreed; returns whether the agent's
        state changed (a silent agent revived, or a new one said hello in a
        responding session), which the caller publishes (a report publishes
        itself)."""
        self._last_heard = self._monotonic()
        current = self._facts.current
        current.last_heard_time.CopyFrom(guest_info.timestamp(received))
        known, self._instance = self._instance, instance or self._instance
        if body == "hello":
            restarted = bool(known and instance and instance != known)
            if agreed and restarted and current.agent_state == AgentState.AGENT_STATE_RESPONDING:
                log.info(
                    "guest agent of VM %s restarted: stale until its report", self._facts.vm_id
                )
                current.agent_state = AgentState.AGENT_STATE_NOT_RESPONDING
                return True
            return False
        silent = current.agent_state == AgentState.AGENT_STATE_NOT_RESPONDING
        revived = agreed and silent
        if revived or (body == "report" and agreed):
            current.agent_state = AgentState.AGENT_STATE_RESPONDING
        return revived

    def check(self, agreed: bool) -> None:
        """Declares the agent not responding when it has missed its heartbeats,
        or, awaited (expected_agent), when it has not spoken in time."""
        if not agreed:
            self._check_awaited()
            return
        facts = self._facts
        if facts.current.agent_state != AgentState.AGENT_STATE_RESPONDING:
            return
        silent = self._monotonic() - self._last_heard
        if silent > self._limits.missed_heartbeats * self.heartbeat_seconds:
            log.warning(
                "guest agent of VM %s silent for %.1f s: not responding", facts.vm_id, silent
            )
            facts.current.agent_state = AgentState.AGENT_STATE_NOT_RESPONDING
            facts.publish()

    def _check_awaited(self) -> None:
        facts = self._facts
        heard_of = facts.current.agent_state != AgentState.AGENT_STATE_UNSPECIFIED
        if not self._expected_agent or heard_of:
            return
        waited = self._monotonic() - self._opened
        if waited > self._limits.agent_start_seconds:
            log.warning(
                "guest agent %s of VM %s has not spoken in %.0f s: not responding",
                self._expected_agent,
                facts.vm_id,
                waited,
            )
            facts.current.agent_state = AgentState.AGENT_STATE_NOT_RESPONDING
            facts.current.agent_version = self._expected_agent
            facts.publish()
