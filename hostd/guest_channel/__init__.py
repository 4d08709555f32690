"""The host end of one VM's guest channel: a unix socket libvirt binds to a virtio-serial port.

The conversation: hostd connects and sends HostHello; the agent answers
GuestHello with the versions it speaks; hostd answers VersionChoice (the
highest version both speak) and from then on takes the agent's reports and
heartbeats. Reports are merged into the VM's GuestInfo and handed to a sink
(one journal event each); heartbeats only refresh what is kept in memory.

The guest is untrusted: frames are bounded (FrameDecoder), unparsable frames
and unknown messages are ignored, strings are sanitised (hostd.guest_info),
each channel keeps within its budgets, and nothing that happens on one
channel escapes its task.

Modules, one job each:

- channel      GuestChannel: the parts below assembled, what the registry and
               the servicer call
- socket_loop  connecting, reconnecting, reading (paused when told) and writing
               (the outbox and its sequence numbers)
- protocol     version negotiation, and the table of handlers each message is
               dispatched through
- budget       the byte and message budgets: reading paused, messages dropped,
               THROTTLED and back; what the channel has carried (ChannelCounters)
- liveness     heartbeats and the awaited agent: RESPONDING, NOT_RESPONDING
- facts        the GuestInfo kept (reports merged, heartbeats), the last report
               as it arrived, and the sink told of each change
- size_cap     one VM's GuestInfo kept under a byte limit (list items dropped)
- commands     refresh, ping, shutdown and reboot, and the agent's answers
"""

from hostd.guest_channel.channel import GuestChannel
from hostd.guest_channel.facts import REPORT_JSON_CAP, ReportSink
from hostd.guest_channel.protocol import HOST_MAX_VERSION, HOST_MIN_VERSION, MESSAGE_SINCE

__all__ = [
    "HOST_MAX_VERSION",
    "HOST_MIN_VERSION",
    "MESSAGE_SINCE",
    "REPORT_JSON_CAP",
    "GuestChannel",
    "ReportSink",
]
