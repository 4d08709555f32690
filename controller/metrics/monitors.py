"""The host monitors (controller.monitor), read at scrape time, per host:

virtplane_monitor_connected{host}          1 while its event stream is open
virtplane_monitor_applied_sequence{host}   the last event applied; hostd's
    virtplane_hostd_event_sequence minus this is the events behind
virtplane_monitor_event_lag_seconds{host}  from the host's time of the last
    event applied to the end of its application
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from controller.monitor import HostMonitor


class MonitorState(Collector):
    def __init__(self, monitors: Callable[[], Iterable[HostMonitor]]) -> None:
        self._monitors = monitors

    def collect(self) -> Iterator[GaugeMetricFamily]:
        connected = GaugeMetricFamily(
            "virtplane_monitor_connected",
            "Whether the host's event stream is open",
            labels=["host"],
        )
        sequence = GaugeMetricFamily(
            "virtplane_monitor_applied_sequence",
            "The sequence of the host's last event applied (it restarts with hostd)",
            labels=["host"],
        )
        lag = GaugeMetricFamily(
            "virtplane_monitor_event_lag_seconds",
            "Seconds from the host's time of its last event applied to its application",
            labels=["host"],
        )
        for monitor in list(self._monitors()):
            host = [monitor.host_name]
            connected.add_metric(host, 1 if monitor.connected.is_set() else 0)
            sequence.add_metric(host, monitor.applied_sequence)
            lag.add_metric(host, monitor.event_lag_seconds)
        yield connected
        yield sequence
        yield lag
