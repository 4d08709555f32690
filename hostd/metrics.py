"""hostd's Prometheus metrics, served on --metrics-listen (GET /metrics):

    virtplane_grpc_server_handled_total{service,method,code}
    virtplane_grpc_server_handling_seconds{service,method}   (virtplane_common.rpc_metrics)
    virtplane_hostd_vms{state}                     the VMs this host has, by state
    virtplane_hostd_migrations_in_flight{direction}  outgoing, incoming
    virtplane_hostd_guest_channels{state}          open guest channels: ok, throttled
    virtplane_hostd_guest_messages_dropped         over budget, summed over open channels
    virtplane_hostd_event_sequence                 the journal's last event; the
        controller's virtplane_monitor_applied_sequence{host} trails it
    virtplane_hostd_libvirt_call_seconds{operation,outcome}  each blocking libvirt call
    process_*                                      prometheus_client's process collector

States are read at scrape time from the registry (hostd.registry), on the
scrape's thread: plain reads of what the event loop last wrote.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

from prometheus_client import CollectorRegistry, Histogram, ProcessCollector
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from virtplane.v1 import vm_pb2

from hostd.journal import Journal
from hostd.model import VmState
from hostd.registry import Vm
from virtplane_common.metrics_http import MetricsEndpoint
from virtplane_common.rpc_metrics import RpcMetrics

ChannelState = vm_pb2.GuestInfo.ChannelState
_CHANNEL_STATES = {
    ChannelState.CHANNEL_STATE_OK: "ok",
    ChannelState.CHANNEL_STATE_THROTTLED: "throttled",
}
_DIRECTIONS = {VmState.MIGRATING_FROM: "outgoing", VmState.MIGRATING_TO: "incoming"}
# Seconds: most libvirt calls take milliseconds; a save or a migration, minutes.
LIBVIRT_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)


class HostState(Collector):
    """The registry's VMs, their guest channels and the journal, per scrape."""

    def __init__(self, vms: Callable[[], Iterable[Vm]], journal: Journal) -> None:
        self._vms = vms
        self._journal = journal

    def collect(self) -> Iterator[GaugeMetricFamily]:
        vms = list(self._vms())
        states: dict[VmState, int] = {
            state: 0 for state in VmState if state is not VmState.UNSPECIFIED
        }
        channels = dict.fromkeys(_CHANNEL_STATES.values(), 0)
        dropped = 0
        for vm in vms:
            if vm.state in states:
                states[vm.state] += 1
            channel = vm.channel
            if channel is not None:
                label = _CHANNEL_STATES.get(channel.channel_state)
                if label is not None:
                    channels[label] += 1
                dropped += channel.dropped_messages
        by_state = GaugeMetricFamily("virtplane_hostd_vms", "VMs by state", labels=["state"])
        for state, count in states.items():
            by_state.add_metric([state.name], count)
        yield by_state
        migrating = GaugeMetricFamily(
            "virtplane_hostd_migrations_in_flight",
            "Live migrations under way, by direction",
            labels=["direction"],
        )
        for state, direction in _DIRECTIONS.items():
            migrating.add_metric([direction], states[state])
        yield migrating
        open_channels = GaugeMetricFamily(
            "virtplane_hostd_guest_channels", "Open guest channels, by state", labels=["state"]
        )
        for label, count in channels.items():
            open_channels.add_metric([label], count)
        yield open_channels
        yield GaugeMetricFamily(
            "virtplane_hostd_guest_messages_dropped",
            "Guest messages over budget, dropped unread, summed over the open channels",
            value=dropped,
        )
        yield GaugeMetricFamily(
            "virtplane_hostd_event_sequence",
            "The sequence of the last event in hostd's journal (restarts with hostd)",
            value=self._journal.last_sequence,
        )


class HostdMetrics:
    """Metrics of one hostd: the registry, the RPC interceptor, the libvirt
    call histogram and the endpoint."""

    def __init__(self, listen: str) -> None:
        self.registry = CollectorRegistry()
        self.endpoint = MetricsEndpoint(listen, self.registry)  # a bad address fails here
        ProcessCollector(registry=self.registry)
        self.rpc = RpcMetrics(self.registry)
        self.libvirt_calls = Histogram(
            "virtplane_hostd_libvirt_call_seconds",
            "Blocking libvirt calls, by operation and outcome (ok, error, timeout)",
            ["operation", "outcome"],
            registry=self.registry,
            buckets=LIBVIRT_BUCKETS,
        )

    def libvirt_call(self, operation: str, outcome: str, seconds: float) -> None:
        self.libvirt_calls.labels(operation, outcome).observe(seconds)

    def watch(self, vms: Callable[[], Iterable[Vm]], journal: Journal) -> None:
        self.registry.register(HostState(vms, journal))

    def start(self) -> int:
        return self.endpoint.start()

    def stop(self) -> None:
        self.endpoint.stop()
