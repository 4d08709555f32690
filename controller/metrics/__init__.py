"""The controller's Prometheus metrics, served on --metrics-listen (GET /metrics).

Modules:

- phases      how long each phase of an operation took from its request
              (StartVm: scheduled, dispatched, accepted, POWERING_UP, UP),
              observed as the phase is recorded, once its transaction commits
- state       VMs and hosts by state and migrations in flight, counted in the
              database at scrape time (true after a restart, and across
              controllers sharing the database); the database pool's use
- monitors    per host: the last applied event's lag and sequence
- wiring      the registry, the RPC interceptor (virtplane_common.rpc_metrics)
              and the HTTP endpoint, put together for controller.app

Names:

    virtplane_grpc_server_handled_total{service,method,code}
    virtplane_grpc_server_handling_seconds{service,method}
    virtplane_operation_phase_seconds{kind,phase}
    virtplane_vms{state}, virtplane_hosts{state}
    virtplane_migrations_in_flight, virtplane_migrations_waiting
    virtplane_db_pool_connections{state}, virtplane_db_pool_size
    virtplane_monitor_connected{host}, virtplane_monitor_applied_sequence{host},
    virtplane_monitor_event_lag_seconds{host}
    process_* (prometheus_client's process collector)
"""
