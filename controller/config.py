"""The controller's settings."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from controller.balancing import BalanceSettings
from controller.ha import HaPolicy
from controller.lifecycle.migration_limits import MigrationLimits
from controller.lifecycle.migration_policy import MigrationPolicy
from controller.scheduler import Policy


@dataclass(frozen=True)
class ControllerConfig:
    """Everything the controller is configured with; passed in, never global."""

    listen: str = "127.0.0.1:7000"
    database_url: str = "sqlite:///virtplane.db"
    # Seconds between attempts to reach a host whose event stream broke.
    host_retry_seconds: float = 2.0
    # Seconds a call to hostd may take before the host counts as unreachable.
    host_call_timeout: float = 30.0
    # Changes queued for one WatchVms client before it is cut off.
    watch_queue_size: int = 1000
    # WatchVms and WaitOperation calls one client (its principal; its peer's
    # address without authentication) may have open at once.
    max_streams_per_client: int = 32
    # How long request ids are remembered, and the audit log and ended
    # operations kept (controller.retention).
    request_id_retention_hours: float = 24.0
    history_retention_days: float = 7.0
    # How the scheduler ranks the hosts that fit: even_spread or power_saving.
    scheduling_policy: Policy = Policy.EVEN_SPREAD
    # Caps each live migration's memory transfer, in MiB/s; 0: as fast as
    # the network goes.
    migration_max_bandwidth_mib: int = 0
    # How live migrations converge, unless a call says otherwise
    # (controller.lifecycle.migration_policy).
    migration_policy: MigrationPolicy = field(default_factory=MigrationPolicy)
    # How many live migrations run at once, per host and in the cluster;
    # more wait their turn (controller.lifecycle.migration_limits).
    migration_limits: MigrationLimits = field(default_factory=MigrationLimits)
    # Seconds between the looks of a host's evacuation (controller.maintenance).
    evacuation_poll_seconds: float = 2.0
    # The cluster's balancing policy (controller.balancing): off by default.
    balancing: BalanceSettings = field(default_factory=BalanceSettings)
    # Seconds between reconciliations of a connected host against its full list.
    reconcile_seconds: float = 60.0
    # When highly available VMs are restarted.
    ha: HaPolicy = field(default_factory=HaPolicy)
    # The custom properties VMs may have: key -> regex the value must fully
    # match (virtplane_common.properties). Empty: none.
    vm_properties: Mapping[str, str] = field(default_factory=dict)
    # Clients' authentication and roles (controller.auth). None: on, unless
    # insecure_plaintext_dev; False turns it off on a TLS controller, for
    # development only.
    require_auth: bool | None = None
    # Where the bootstrap admin's token (admin.token) and the CA and the
    # controller's own key pair (pki/) are kept.
    state_dir: Path = Path(".")
    # Mutual TLS for clients presenting a certificate: "" for none.
    listen_mtls: str = ""
    # The operator's own CA (certificate and key files); None: the
    # controller's own, made at first start in <state_dir>/pki.
    ca_cert: Path | None = None
    ca_key: Path | None = None
    # DNS names and IP addresses in the controller's certificate; empty:
    # localhost, 127.0.0.1, ::1 and the host of listen.
    server_names: tuple[str, ...] = ()
    controller_cert_days: float = 398.0
    host_cert_days: float = 398.0
    enrollment_token_minutes: float = 60.0
    # Plaintext to clients and to hosts, no authentication: development only.
    insecure_plaintext_dev: bool = False
    # Plaintext to hosts while clients get TLS: for hosts without an
    # identity yet (development and tests only).
    plaintext_hosts: bool = False
    token_ttl_days: float = 90.0
    client_cert_days: float = 398.0
    # The web page's HTTP address, host:port (TLS as listen); "": no page.
    web_listen: str = ""
    # The built page (`make web`).
    web_root: Path = Path(__file__).resolve().parent.parent / "web" / "dist"
    # Prometheus metrics over plain HTTP (GET /metrics) on host:port; "": none
    # (controller.metrics).
    metrics_listen: str = ""

    @property
    def auth_required(self) -> bool:
        """Whether clients must authenticate: by default whenever TLS is on."""
        if self.require_auth is None:
            return not self.insecure_plaintext_dev
        return self.require_auth
