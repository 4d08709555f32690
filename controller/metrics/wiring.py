"""The controller's metrics put together: one registry, the RPC interceptor,
the collectors and the /metrics endpoint on --metrics-listen."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from prometheus_client import CollectorRegistry, ProcessCollector

from controller.metrics.monitors import MonitorState
from controller.metrics.phases import PhaseMetrics
from controller.metrics.state import DatabaseState
from controller.monitor import HostMonitor
from db.session import Database
from virtplane_common.metrics_http import MetricsEndpoint
from virtplane_common.rpc_metrics import RpcMetrics


class ControllerMetrics:
    """Metrics of one controller; start() serves them, stop() ends that."""

    def __init__(self, listen: str, db: Database) -> None:
        self.registry = CollectorRegistry()
        self.endpoint = MetricsEndpoint(listen, self.registry)  # a bad address fails here
        ProcessCollector(registry=self.registry)
        self.rpc = RpcMetrics(self.registry)
        self.phases = PhaseMetrics(self.registry)
        self.phases.install(db.sessions)
        self.registry.register(DatabaseState(db))

    def watch_monitors(self, monitors: Callable[[], Iterable[HostMonitor]]) -> None:
        self.registry.register(MonitorState(monitors))

    def start(self) -> int:
        """Serves /metrics; returns its port."""
        return self.endpoint.start()

    def stop(self) -> None:
        self.endpoint.stop()
