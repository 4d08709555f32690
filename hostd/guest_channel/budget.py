"""What one guest may cost hostd: a byte budget and a message budget per channel.

Past the byte budget hostd stops reading for as long as the excess is worth
(the guest's writes block and hostd holds nothing more); past the message
budget the excess is dropped unread. A flooding guest thus costs bounded CPU
and memory and cannot delay another VM's channel. Bytes are charged before
they are decoded (decoding is linear in them, see virtplane_common.framing),
and payload bytes checksummed in vain count against the byte budget too. A
channel over either budget is THROTTLED (the sink is told, with why) until it
has kept within both for calm_seconds.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from virtplane.v1 import vm_pb2

from hostd.config import ChannelLimits
from hostd.guest_channel.facts import GuestFacts
from hostd.ratelimit import TokenBucket
from virtplane_common.framing import FrameDecoder

log = logging.getLogger(__name__)

ChannelState = vm_pb2.GuestInfo.ChannelState


@dataclass
class ChannelCounters:
    """What the channel has carried and cost so far."""

    bytes_received: int = 0
    messages_received: int = 0
    ignored_messages: int = 0
    """Frames that did not parse, and messages that came out of turn or are unknown."""
    dropped_messages: int = 0
    """Messages over the message budget, dropped unread."""
    throttled_seconds: float = 0.0
    """Time spent not reading because the guest sent over its byte budget."""


def throttle_reason(limits: ChannelLimits, counters: ChannelCounters, decoder: FrameDecoder) -> str:
    """Why a channel is THROTTLED, in words: what it cost against its limits."""
    return (
        f"over its budget: {counters.dropped_messages} messages dropped"
        f" (limit {limits.max_messages_per_second:g}/s),"
        f" reading paused {counters.throttled_seconds:.1f} s"
        f" (limit {limits.max_bytes_per_second / 1024:g} KiB/s),"
        f" {counters.ignored_messages} messages unusable,"
        f" {decoder.discarded_bytes} bytes of garbage"
    )


class ChannelBudget:
    """The budgets of one channel, and its THROTTLED state in the guest's facts."""

    def __init__(
        self,
        limits: ChannelLimits,
        decoder: FrameDecoder,
        counters: ChannelCounters,
        facts: GuestFacts,
        monotonic: Callable[[], float],
    ) -> None:
        self._limits = limits
        self._decoder = decoder
        self._counters = counters
        self._facts = facts
        self._monotonic = monotonic
        self._bytes = TokenBucket(limits.max_bytes_per_second, limits.max_bytes_burst, monotonic)
        self._messages = TokenBucket(
            limits.max_messages_per_second, limits.max_messages_burst, monotonic
        )
        self._over_budget_until = float("-inf")
        """When the guest last went over a budget, pause included (monotonic)."""

    def feed(self, data: bytes, receive: Callable[[bytes], None]) -> float:
        """Decodes bytes read from the channel and hands each payload within the
        message budget to receive; returns how long to stop reading to stay
        within the byte budget."""
        counters = self._counters
        counters.bytes_received += len(data)
        # Charged before the work: decoding costs time linear in the bytes fed.
        pause = self._bytes.take(len(data))
        rejected = self._decoder.rejected_bytes
        payloads = self._decoder.feed(data)
        if self._decoder.rejected_bytes > rejected:
            pause = max(pause, self._bytes.take(self._decoder.rejected_bytes - rejected))
        dropped = counters.dropped_messages
        for payload in payloads:
            counters.messages_received += 1
            if self._messages.try_take():
                receive(payload)
            else:
                counters.dropped_messages += 1
        if pause > 0 or counters.dropped_messages > dropped:
            self._over_budget(pause)
        return pause

    def _over_budget(self, pause: float) -> None:
        self._over_budget_until = max(self._over_budget_until, self._monotonic() + pause)
        facts = self._facts
        if facts.current.channel_state != ChannelState.CHANNEL_STATE_THROTTLED:
            log.warning("guest channel of VM %s: %s", facts.vm_id, self.reason())
            facts.current.channel_state = ChannelState.CHANNEL_STATE_THROTTLED
            facts.publish()

    def check_calm(self) -> None:
        """Lifts THROTTLED once the guest has kept within its budgets for calm_seconds."""
        facts = self._facts
        if facts.current.channel_state != ChannelState.CHANNEL_STATE_THROTTLED:
            return
        if self._monotonic() - self._over_budget_until >= self._limits.calm_seconds:
            log.info("guest channel of VM %s within its budgets again", facts.vm_id)
            facts.current.channel_state = ChannelState.CHANNEL_STATE_OK
            facts.current.channel_message = ""
            facts.publish()

    def reason(self) -> str:
        """Why the channel is THROTTLED, as of now."""
        return throttle_reason(self._limits, self._counters, self._decoder)
