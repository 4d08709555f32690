"""What hostd knows of the guest: the GuestInfo kept, and the sink told of each change.

Reports are merged into the GuestInfo (hostd.guest_info sanitises them), the
result cut to limits.max_guest_info_bytes (hostd.guest_channel.size_cap;
counted in truncated_reports and truncated_items) and each one is handed to
the sink; heartbeats only refresh what is kept. The
last report is kept as it arrived (one message, at most max_payload bytes),
for debugging. The other parts of the channel set their own states in the
same GuestInfo (liveness the agent's, budget the channel's) and publish.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from google.protobuf import json_format
from virtplane.v1 import guest_channel_pb2 as gc
from virtplane.v1 import vm_pb2

from hostd import guest_info
from hostd.config import ChannelLimits
from hostd.guest_channel.size_cap import cap_guest_info

log = logging.getLogger(__name__)

REPORT_JSON_CAP = 512 * 1024
"""Longest JSON rendering of the last report handed out, in characters."""

ReportSink = Callable[[str, vm_pb2.GuestInfo], None]
"""Called with (vm_id, merged GuestInfo) after every report."""
ChannelState = vm_pb2.GuestInfo.ChannelState


class GuestFacts:
    """One VM's GuestInfo, kept as the channel learns it."""

    def __init__(
        self,
        vm_id: str,
        limits: ChannelLimits,
        sink: ReportSink,
        throttle_reason: Callable[[], str],
    ) -> None:
        """throttle_reason: why the channel is THROTTLED, in words, as of now."""
        self.vm_id = vm_id
        self.current = vm_pb2.GuestInfo(channel_state=ChannelState.CHANNEL_STATE_OK)
        """The GuestInfo itself: replaced by each report, changed in place otherwise."""
        self._limits = limits
        self._sink = sink
        self._throttle_reason = throttle_reason
        self._last_report: gc.GuestMessage | None = None
        self._last_report_received = 0
        self.truncated_reports = 0
        """Reports whose merged GuestInfo was over limits.max_guest_info_bytes."""
        self.truncated_items = 0
        """List items (applications, users, ...) dropped to keep under it."""

    def snapshot(self) -> vm_pb2.GuestInfo:
        """A copy of what the agent has reported so far, with the channel's state."""
        copy = vm_pb2.GuestInfo()
        copy.CopyFrom(self.current)
        if copy.channel_state == ChannelState.CHANNEL_STATE_THROTTLED:
            copy.channel_message = self._throttle_reason()
        return copy

    def publish(self) -> None:
        """Tells the sink what is known now."""
        self._sink(self.vm_id, self.snapshot())

    def seen(self, received: int) -> None:
        """The agent answered at received (Unix ns): what it says is fresh."""
        self.current.last_report_time.CopyFrom(guest_info.timestamp(received))

    def on_heartbeat(self, message: gc.GuestMessage, received: int) -> None:
        uptime = guest_info.clean_seconds(message.heartbeat.uptime_seconds)
        if uptime is not None:
            self.current.uptime_seconds = uptime
        self.current.memory_free_kib = message.heartbeat.free_memory_kib
        self.seen(received)

    def on_report(self, message: gc.GuestMessage, received: int) -> None:
        merged = guest_info.merge_report(self.current, message.report, self._limits)
        merged.last_report_time.CopyFrom(guest_info.timestamp(received))
        observed = guest_info.observed_nanos(
            message.sent_unix_nanos, received, self._limits.max_clock_skew_seconds
        )
        merged.observed_time.CopyFrom(guest_info.timestamp(observed))
        merged.channel_state = self.current.channel_state
        self._cap(merged)
        self.current = merged
        self._last_report, self._last_report_received = message, received
        self.publish()

    def _cap(self, merged: vm_pb2.GuestInfo) -> None:
        dropped = cap_guest_info(merged, self._limits.max_guest_info_bytes)
        if dropped:
            if not self.truncated_reports:
                log.warning(
                    "guest of VM %s reports more than %d bytes: %d list items dropped",
                    self.vm_id, self._limits.max_guest_info_bytes, dropped,
                )  # fmt: skip
            self.truncated_reports += 1
            self.truncated_items += dropped

    def last_report(self) -> tuple[str, bool, int]:
        """The last report message as JSON (cut at REPORT_JSON_CAP characters),
        whether it was cut, and when it was received (Unix ns); ("", False, 0)
        before the first report."""
        if self._last_report is None:
            return "", False, 0
        text = json_format.MessageToJson(self._last_report, indent=1)
        return text[:REPORT_JSON_CAP], len(text) > REPORT_JSON_CAP, self._last_report_received
