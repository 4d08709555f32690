"""controller: virtplane's control plane. It keeps the VMs and hosts in a
database, places VMs on hosts, and drives each host's hostd.

Modules, one job each:

- config        ControllerConfig, frozen, built by main()
- errors        the controller's exceptions, derived from the API's error categories
- validation    checking what clients send; each failure names its field
- requests      request ids: every mutation idempotent (claim, remember, forget)
- convert       rows and domain values -> API messages, and back
- audit         the audit log: mutations, VMs and hosts created, moved, removed
- vm_store      every change to a VM: one transaction, audit and operation
                progress called by name, a revision, then published to watchers
- operations    what an operation is, its phases and what ends it
- operation_service  GetOperation, ListOperations, WaitOperation, ListEvents
- lifecycle/    the VM lifecycle: the table of verbs, the one runner, placement,
                restore, create/read/update/delete (see lifecycle/__init__.py)
- scheduler     filters and weights: which host a VM goes to (pure)
- affinity      affinity groups: create, get, list, delete
- ha            restarting highly available VMs that went DOWN
- host_client   calls to one hostd, its errors translated at this boundary
- hosts         the registry of hostd clients
- host_state    set_host_state(): a host's state written and logged
- monitor       one event watch per host keeps VM and host state true
- coalescer     a VM's reports coalesced: one database write a second at most
- migration_progress  a migration's transfer, as its source reports it, in its operation
- host_service  host registration and verbs (maintenance, activate, confirm down)
- maintenance   a host's evacuation before maintenance: PREPARING_FOR_MAINTENANCE,
                its VMs migrated away, MAINTENANCE once it runs nothing
- periodic      a background loop: one step every interval, or when woken
- wakeup        waking a loop early: on a nudge, or on a VM change while busy
- balancing     the evenly-distributed balancer's rules: which host sheds which VM
                to which host, and why (pure)
- balancing_loop  the balancer's looks: the loop that asks its migrations, and
                ExplainBalancing's dry run
- enrollment/   host identity: enrollment tokens, EnrollHost, revocation and the
                CRL, certificate renewal (see enrollment/__init__.py)
- guest_agent   a VM's guest agent through its host: refresh, raw report
- watch         fan-out of VM changes to WatchVms subscribers
- watch_stream  WatchVms: snapshot or resume, then every change
- snapshots     WatchVms's snapshots, read once per revision and shared
- batched_writes  group commit of the monitors' VM updates
- retention     pruning request ids, the audit log and ended operations
- servicers     the gRPC servicers, thin: validate, call a service, convert
- web/          the web page's port: gRPC-Web over the same servicers and
                interceptors, the built page's files (see web/__init__.py)
- metrics/      /metrics on --metrics-listen: RPCs, operation phases, VMs and hosts
                by state, migrations, the database pool, the monitors (see
                metrics/__init__.py)
- app           everything assembled (Controller.start/stop)
- main          the virtplane-controller command
"""
