from __future__ import annotations

from pathlib import Path

from guestd import netfacts
from guestd.netfacts import Interface
from tests.guestd.fakeroot import FakeRoot, fib_trie, route_table


def test_interfaces_before_dhcp(fake_root: FakeRoot):
    assert netfacts.interfaces(fake_root.path) == [
        Interface("eth0", "52:54:00:12:34:ab", (), ("fd00::2", "fe80::5054:ff:fe12:34ab")),
        Interface("eth1", "52:54:00:12:34:cd", (), ()),
    ]


def test_interfaces_with_ipv4(fake_root: FakeRoot):
    fake_root.set_ipv4({"eth0": "10.0.2.15", "eth1": "192.168.7.9"})
    found = {i.name: i.ipv4_addresses for i in netfacts.interfaces(fake_root.path)}
    assert found == {"eth0": ("10.0.2.15",), "eth1": ("192.168.7.9",)}


def test_files_and_oversized_names_in_sys_class_net_are_not_interfaces(fake_root: FakeRoot):
    fake_root.write("sys/class/net/bonding_masters", "\n")
    fake_root.add_interface("x" * 16, "00:11:22:33:44:55")
    assert netfacts.interface_names(fake_root.path) == ["eth0", "eth1"]


def test_no_sysfs(tmp_path: Path):
    assert netfacts.interfaces(tmp_path) == []


def test_parse_fib_trie_keeps_local_host_addresses_only():
    text = fib_trie(["10.0.2.15", "10.0.3.7"])
    assert netfacts.parse_fib_trie(text) == {"127.0.0.1", "10.0.2.15", "10.0.3.7"}


def test_address_goes_to_the_most_specific_connected_route(tmp_path: Path):
    root = FakeRoot(tmp_path)
    root.write("proc/net/fib_trie", fib_trie(["10.1.2.3", "172.16.0.5"]))
    root.write(
        "proc/net/route",
        route_table(
            [
                ("eth0", "0.0.0.0", "10.0.0.1", "0.0.0.0"),
                ("eth0", "10.0.0.0", "0.0.0.0", "255.0.0.0"),
                ("eth1", "10.1.2.0", "0.0.0.0", "255.255.255.0"),
                ("eth2", "172.16.0.0", "10.0.0.1", "255.255.0.0"),
            ]
        )
        + "short line\nethX\tZZZZZZZZ\t00000000\t0001\t0\t0\t0\t00FFFFFF\n",
    )
    # 172.16.0.5 is reachable only through a gateway route, so no interface claims it.
    assert netfacts.ipv4_from_proc(tmp_path) == {"eth1": {"10.1.2.3"}}


def test_ipv6_parsing_skips_lo_and_bad_lines(tmp_path: Path):
    FakeRoot(tmp_path).write(
        "proc/net/if_inet6",
        "00000000000000000000000000000001 01 80 10 80 lo\n"
        "zz 02 40 00 80 eth0\n"
        "20010db8000000000000000000000001 02 40 00 80 eth0\n"
        "short\n",
    )
    assert netfacts.ipv6_from_proc(tmp_path) == {"eth0": {"2001:db8::1"}}


def test_addresses_are_capped(fake_root: FakeRoot):
    lines = "".join(f"20010db80000000000000000000000{i:02x} 02 40 00 80 eth1\n" for i in range(40))
    fake_root.write("proc/net/if_inet6", lines)
    eth1 = netfacts.interfaces(fake_root.path)[1]
    assert len(eth1.ipv6_addresses) == netfacts.MAX_ADDRESSES


def test_ioctl_reads_this_machines_loopback():
    assert netfacts.ipv4_by_ioctl("lo") == "127.0.0.1"
    assert netfacts.ipv4_by_ioctl("no-such-if0") is None


def test_real_root_does_not_fail():
    for interface in netfacts.interfaces(Path("/")):
        assert interface.name != "lo"
        assert list(interface.ipv4_addresses) == sorted(interface.ipv4_addresses)
