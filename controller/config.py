"""The controller's settings."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from controller.ha import HaPolicy
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
    # How long request ids are remembered, and the audit log and ended
    # operations kept (controller.retention).
    request_id_retention_hours: float = 24.0
    history_retention_days: float = 7.0
    # How the scheduler ranks the hosts that fit: even_spread or power_saving.
    scheduling_policy: Policy = Policy.EVEN_SPREAD
    # Seconds between reconciliations of a connected host against its full list.
    reconcile_seconds: float = 60.0
    # When highly available VMs are restarted.
    ha: HaPolicy = field(default_factory=HaPolicy)
    # The custom properties VMs may have: key -> regex the value must fully
    # match (virtplane_common.properties). Empty: none.
    vm_properties: Mapping[str, str] = field(default_factory=dict)
    # Clients' authentication and roles (controller.auth). Off only until
    # every client is given credentials.
    require_auth: bool = False
    # Where the bootstrap admin's token (admin.token) is written at first start.
    state_dir: Path = Path(".")
    token_ttl_days: float = 90.0
    client_cert_days: float = 398.0
    # Host identity (controller.enrollment): the operator's own CA (both or
    # neither; default: <state_dir>/pki), the hosts' certificate lifetime
    # (renewed after two thirds of it) and how long an enrollment token lasts.
    ca_cert: Path | None = None
    ca_key: Path | None = None
    host_cert_days: float = 398.0
    enrollment_token_minutes: float = 60.0
