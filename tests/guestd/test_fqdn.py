from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

from guestd import fqdn
from guestd.fqdn import ResolverLookup
from tests.guestd.fakeroot import FakeRoot


def test_from_hosts_takes_the_canonical_name_of_the_first_matching_line():
    hosts = (
        "127.0.0.1 localhost\n"
        "# 10.0.0.1 web.commented.example web\n"
        "10.0.0.5 web.example.com web # trailing comment\n"
        "10.0.0.6 web.other.example web\n"
    )
    assert fqdn.from_hosts(hosts, "web") == "web.example.com"
    assert fqdn.from_hosts(hosts, "WEB") == "web.example.com"
    assert fqdn.from_hosts(hosts, "db") is None


def test_from_hosts_takes_a_dotted_alias_when_the_canonical_name_is_short():
    assert fqdn.from_hosts("10.0.0.5 web web.example.com. w\n", "w") == "web.example.com"
    assert fqdn.from_hosts("127.0.1.1 vp-guest\n", "vp-guest") is None


def test_resolv_conf_domain_is_the_last_domain_or_search_line():
    assert fqdn.resolv_conf_domain("nameserver 10.0.2.3\nsearch a.example b.example\n") == (
        "a.example"
    )
    assert fqdn.resolv_conf_domain("search a.example\ndomain corp.example.\n") == "corp.example"
    assert fqdn.resolv_conf_domain("search .\n") is None
    assert fqdn.resolv_conf_domain("nameserver 1.1.1.1\n") is None


def test_order_of_sources(tmp_path: Path):
    root = FakeRoot(tmp_path)
    root.write("etc/resolv.conf", "search lan.example\n")
    assert fqdn.fqdn(tmp_path, "box") == "box.lan.example"
    resolver = _answering("box.dns.example")
    assert fqdn.fqdn(tmp_path, "box", resolver) == "box.dns.example"
    root.write("etc/hosts", "127.0.1.1 box.hosts.example box\n")
    assert fqdn.fqdn(tmp_path, "box", resolver) == "box.hosts.example"
    assert fqdn.fqdn(tmp_path, "already.qualified.example", resolver) == (
        "already.qualified.example"
    )


def test_without_any_source_the_hostname(tmp_path: Path):
    assert fqdn.fqdn(tmp_path, "box", _answering("box")) == "box"
    assert fqdn.fqdn(tmp_path, "") == ""


def _answering(answer: str) -> ResolverLookup:
    return ResolverLookup(resolve=lambda _: answer, spawn=lambda run: run())


def test_a_resolver_that_hangs_does_not_hold_the_caller():
    release = threading.Event()
    threads: list[threading.Thread] = []

    def slow(name: str) -> str:
        release.wait(10)
        return f"{name}.slow.example"

    def spawn(run: Callable[[], None]) -> None:
        threads.append(threading.Thread(target=run, daemon=True))
        threads[-1].start()

    lookup = ResolverLookup(resolve=slow, spawn=spawn)
    assert lookup.get("box") is None
    assert lookup.get("box") is None
    assert len(threads) == 1  # one lookup at a time
    release.set()
    threads[0].join(10)
    assert lookup.get("box") == "box.slow.example"


def test_answers_are_asked_again_after_the_ttl_or_for_a_new_hostname():
    now = [0.0]
    asked: list[str] = []

    def resolve(name: str) -> str:
        asked.append(name)
        return f"{name}.v{len(asked)}.example"

    lookup = ResolverLookup(resolve=resolve, ttl=60, clock=lambda: now[0], spawn=lambda r: r())
    assert lookup.get("box") == "box.v1.example"
    now[0] = 59
    assert lookup.get("box") == "box.v1.example"
    now[0] = 61
    assert lookup.get("box") == "box.v2.example"
    assert lookup.get("renamed") == "renamed.v3.example"
    assert asked == ["box", "box", "renamed"]


def test_a_failing_resolver_counts_as_no_answer(tmp_path: Path):
    def broken(name: str) -> str:
        raise OSError("resolver on fire")

    lookup = ResolverLookup(resolve=broken, spawn=lambda run: run())
    assert lookup.get("box") == ""
    assert fqdn.fqdn(tmp_path, "box", lookup) == "box"


def test_no_thread_to_be_had():
    def refuse(run: Callable[[], None]) -> None:
        raise RuntimeError("can't start new thread")

    lookup = ResolverLookup(resolve=lambda n: n + ".example", spawn=refuse)
    assert lookup.get("box") is None
    assert lookup.get("box") is None  # tried again, not stuck as running


def test_the_real_resolver_in_the_background():
    done = threading.Event()

    def spawn(run: Callable[[], None]) -> None:
        def run_then_tell() -> None:
            run()
            done.set()

        threading.Thread(target=run_then_tell, daemon=True).start()

    lookup = ResolverLookup(spawn=spawn)
    lookup.get("localhost")
    assert done.wait(30)
    assert lookup.get("localhost") is not None
