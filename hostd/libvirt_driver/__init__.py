"""The Hypervisor interface on libvirt-python, split as Nova's libvirt driver is.

Modules, one job each (the only part of hostd that imports libvirt):

- driver     LibvirtHypervisor: the Hypervisor protocol (hostd.hypervisor) on
             the two below; starts, restores and lists domains
- host       LibvirtHost: the connection kept up (libvirt's event loop thread,
             the close callback, reconnecting with backoff), the event
             callbacks and their bounded queue, the host's own facts
- guest      LibvirtGuest: a wrapper over one domain: act, save, migrate,
             job statistics, XML, stats, what list_domains shows
- translate  libvirt's codes as hostd's values: lifecycle events, errors,
             states and reasons, statistics (pure functions)
"""

from hostd.libvirt_driver.driver import LibvirtHypervisor

__all__ = ["LibvirtHypervisor"]
