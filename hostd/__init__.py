"""hostd: virtplane's per-host agent. It runs VMs as libvirt domains and reports on them.

Modules, one job each:

- config        HostdConfig and ChannelLimits, frozen, built by main()
- identity      this host's identity in state_dir/tls: its pair (served, renewed
                without a restart), the CRL it checks peers against
- enrollment    getting the identity once from the controller with a one-time token
- peer_auth     the server interceptor: who may call hostd (controller: all;
                another host: the incoming side of a migration; revoked: nobody)
- errors        hostd's exceptions, derived from the API's error categories
- model         the domain types: VM config, spec, boot, NICs, disks, console,
                persistence, state, migration progress, recovery report (frozen)
- convert       model <-> the API's messages, only at the edges: servicer, peers,
                journal, stored configuration (domain metadata, saved .config)
- virt_type     kvm or qemu (TCG): CPU flags and /dev/kvm, or forced
- layout        the state directory: channel sockets, console logs, saved states
- validation    VmConfig checks; each failure names its field; what the host admits
                (Admission: image roots, custom property allowlist)
- defaults      the defaults of optional parameters, filled in one place
- consoles      which consoles this host offers
- domxml        the domain XML as typed values, and its serialisation
- builder       the decisions: VmConfig -> domxml.Domain
- hypervisor    the narrow Hypervisor protocol and the values it speaks
- libvirt_driver  Hypervisor on libvirt-python, the only package importing libvirt,
                split as Nova's: .driver (LibvirtHypervisor), .host (the connection,
                reconnecting, event callbacks and their bounded queue), .guest (one
                domain's operations), .translate (libvirt's codes as hostd's values)
- journal       the ordered event journal (host_epoch, sequence) WatchEvents streams
- guest_info    sanitising and merging untrusted guest reports
- ratelimit     a token bucket: what an untrusted peer may send per second
- guest_channel the host end of one VM's guest channel: .channel (GuestChannel, the
                parts assembled), .socket_loop, .protocol (versions, the handler
                table), .budget (bytes, messages, THROTTLED), .liveness (heartbeats,
                NOT_RESPONDING), .facts (the GuestInfo kept), .commands (refresh,
                ping, shutdown, reboot)
- hooks         the operator's hook scripts: points, order, environment, timeout
- guest_agent   refresh and the last raw report, for the servicer
- registry      the VM records and their state changes (with the guest channel
                opened or closed to match)
- tasks         background work supervised: spawned, logged, cancelled on stop
- hook_runner   a VM's hook scripts run around its operations; failures journaled
- parts         VmParts: hypervisor, registry, tasks and hooks, as every VM path takes them
- state_machine how events and verbs move a VM's state: pure rules; what a
                domain's own state means (OBSERVED)
- runner        the start paths: fresh start, restore from file
- power         destroy, shutdown, reboot, reset, pause, resume
- hibernation   saving a VM to a file, and the saved-state files
- recovery      adopting what a previous hostd left, with a report
- migration     live migration: MigrateVm and cancel (source), the incoming start path
                (destination), their progress and the cap on outgoing migrations
- convergence   a migration's policy (downtime, auto-converge, post-copy) and the
                stall detector judging its progress samples: pure
- migration_xml the migratable domain XML retargeted to the destination's paths
- peers         other hosts' hostd, as a migration's source calls its destination
- events        the event pump: hypervisor events applied in order; resync, also
                after libvirtd was lost and found again
- vms           VmService: the create path, and the verbs for the servicer
- listing       the VM list handed out (ListVms, snapshots): guest facts past a size
                budget left out
- metrics       /metrics on --metrics-listen: VMs by state, migrations, guest
                channels, the journal's sequence, libvirt call latency (RPCs:
                virtplane_common.rpc_metrics)
- servicer      HostAgentService over gRPC, thin
- servicer_identity  HostIdentityService over gRPC (renewal, revocation list), thin
- server        everything assembled (Hostd.start/stop): mutual TLS, or plaintext
                with --insecure-plaintext-dev
- main          the virtplane-hostd command
"""
