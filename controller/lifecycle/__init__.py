"""The VM lifecycle: what the controller does when a VM is created, started,
stopped, paused, hibernated, restored, updated or deleted.

Modules, one job each:

- states       the VM state sets, defined once, and set_state(), the one
               place a VM's state is written (HA restart plans included)
- verbs        the table of verbs: allowed states, wording, operation kind,
               what ends the operation, the exit reason a verb leaves
- target       HostTarget: the host a verb calls about a VM, and what it sends
- runner       the one path every verb takes: request id, state check,
               operation, host call, then fail or record
- power        VmVerbs (every verb's entry point); stop and the verbs on a
               VM running on a host, as runner steps
- start        StartVm's steps: place a DOWN VM, or restore / resume one on
               its own host
- placement    booking a DOWN VM on the host the scheduler picks, CreateVm,
               retries on other hosts, starts resent after a restart
- restore      a SUSPENDED VM back on the host holding its saved state
- migrate      MigrateVm's steps (the destination chosen, booked, checked)
               and CancelMigration
- stranded     the migrations to a host that cannot be reached, cancelled
               on their sources
- migration_limits  how many migrations run at once, per host and in the
               cluster, and why one must wait
- migration_policy  how a migration converges: the cluster's flags, a call's
                    overrides, sent to the source host
- migration_queue   the waiting migrations started in order as slots free
- transitions  how what a host reports moves a VM's state: pure rules
- crud         VmService: create, get, list, guest facts, placement
               explained, update, delete
- updates      UpdateVm's rules: update_mask paths, next-run spec
"""
