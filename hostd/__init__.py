"""hostd: virtplane's per-host agent. It runs VMs as libvirt domains and reports on them.

Modules, one job each:

- config        HostdConfig and ChannelLimits, frozen, built by main()
- errors        hostd's exceptions, derived from the API's error categories
- virt_type     kvm or qemu (TCG): CPU flags and /dev/kvm, or forced
- layout        the state directory: channel sockets and console logs
- validation    VmConfig checks; each failure names its field
- domxml        the domain XML as typed values, and its serialisation
- builder       the decisions: VmConfig -> domxml.Domain
- hypervisor    the narrow Hypervisor protocol and the values it speaks
- libvirt_driver  Hypervisor on libvirt-python; the only module importing libvirt
- journal       the ordered event journal (host_epoch, sequence) WatchEvents streams
- guest_info    sanitising and merging untrusted guest reports
- guest_channel the host end of one VM's guest channel
- vms           the VM registry and runner: create, events, recovery, destroy
- servicer      HostAgentService over gRPC, thin
- server        everything assembled (Hostd.start/stop)
- main          the virtplane-hostd command
"""
