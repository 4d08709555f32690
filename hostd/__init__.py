"""hostd: virtplane's per-host agent. It runs VMs as libvirt domains and reports on them.

Modules, one job each:

- config        HostdConfig and ChannelLimits, frozen, built by main()
- errors        hostd's exceptions, derived from the API's error categories
- model         the domain types: VM config, spec, boot, NICs, disks, console,
                persistence, state, migration progress, recovery report (frozen)
- convert       model <-> the API's messages, only at the edges: servicer, peers,
                journal, stored configuration (domain metadata, saved .config)
- virt_type     kvm or qemu (TCG): CPU flags and /dev/kvm, or forced
- layout        the state directory: channel sockets, console logs, saved states
- validation    VmConfig checks; each failure names its field
- defaults      the defaults of optional parameters, filled in one place
- consoles      which consoles this host offers
- domxml        the domain XML as typed values, and its serialisation
- builder       the decisions: VmConfig -> domxml.Domain
- hypervisor    the narrow Hypervisor protocol and the values it speaks
- libvirt_driver  Hypervisor on libvirt-python
- libvirt_translate  libvirt's codes as hostd's values (with libvirt_driver, the only
                modules importing libvirt)
- journal       the ordered event journal (host_epoch, sequence) WatchEvents streams
- guest_info    sanitising and merging untrusted guest reports
- guest_channel the host end of one VM's guest channel
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
- migration_xml the migratable domain XML retargeted to the destination's paths
- peers         other hosts' hostd, as a migration's source calls its destination
- events        the event pump: hypervisor events applied in order; resync, also
                after libvirtd was lost and found again
- vms           VmService: the create path, and the verbs for the servicer
- servicer      HostAgentService over gRPC, thin
- server        everything assembled (Hostd.start/stop)
- main          the virtplane-hostd command
"""
