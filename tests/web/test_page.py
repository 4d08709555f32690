"""The web page in a real headless Chromium against a real controller and a
real hostd (libvirt's test driver: domains are made and destroyed, nothing
boots): signing in, the VMs table live from WatchVms, Run and Stop with the
operation's timeline, a field error from INVALID_ARGUMENT, the hosts table,
and a viewer who sees no Run and whom the server refuses all the same.
Screenshots of each screen land in build/web-screenshots/."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest
from playwright.async_api import Page, expect
from virtplane.v1 import vm_service_pb2 as vm_api

from tests.web.page import (
    WebStack,
    define,
    shot,
    sign_in,
    stand_in_kernel,
    unique,
    vm_row,
    wait_live,
)
from virtplane_client.principals import Role


async def test_a_wrong_token_is_refused_in_words(web_stack: WebStack, page: Page) -> None:
    await page.goto(web_stack.url)
    await shot(page, "01-sign-in")
    await page.fill("#token", "vp_not-a-token")
    await page.click("[data-testid=signin] button[type=submit]")
    error = page.get_by_test_id("signin-error")
    await expect(error).to_contain_text("UNAUTHENTICATED: not authenticated")
    await expect(page.get_by_test_id("who")).to_have_count(0)


async def test_the_admin_signs_in_and_sees_the_vms_and_hosts(
    web_stack: WebStack, page: Page, tmp_path: Path
) -> None:
    name = unique("listed")
    define(web_stack, name, stand_in_kernel(tmp_path))
    await sign_in(page, web_stack, web_stack.admin_token)
    await expect(page.get_by_test_id("who")).to_have_text("admin (admin)")
    await wait_live(page)
    row = vm_row(page, name)
    await expect(row.get_by_test_id("state")).to_have_text("DOWN")
    await expect(row.locator("button[data-verb=Run]")).to_be_visible()
    await shot(page, "02-vms")
    await page.fill("[aria-label=filter]", "no-such-vm")
    await expect(row).to_have_count(0)
    await page.fill("[aria-label=filter]", name)
    await expect(page.locator("tr[data-vm]")).to_have_count(1)
    await page.click("a[data-view=hosts]")
    host = page.locator("tr[data-host=local]")
    await expect(host.get_by_test_id("host-state")).to_have_text("UP")
    await expect(host.get_by_test_id("memory")).to_contain_text("free of 8192 MiB")  # node_xml's
    await shot(page, "03-hosts")


async def test_run_and_stop_show_the_state_live_and_the_operation(
    web_stack: WebStack, page: Page, tmp_path: Path
) -> None:
    """On the test driver nothing boots: the VM stays POWERING_UP (no guest
    says it is up) until stopped; tests/web/test_guest.py sees it UP."""
    name = unique("run")
    define(web_stack, name, stand_in_kernel(tmp_path))
    await sign_in(page, web_stack, web_stack.admin_token)
    await wait_live(page)
    row = vm_row(page, name)
    await row.locator("button[data-verb=Run]").click()
    await expect(row.get_by_test_id("state")).to_have_text("POWERING_UP")
    await expect(row.get_by_test_id("host")).to_have_text("local")
    operation = page.get_by_test_id("operation")
    await expect(operation).to_contain_text(f"START_VM {name}")
    await expect(operation.get_by_test_id("operation-state")).to_have_text("RUNNING")
    for phase in ("created", "scheduled", "accepted", "powering up"):
        await expect(operation.locator(f"li[data-phase='{phase}']")).to_have_count(1)
    await shot(page, "04-run-operation")
    await row.locator("button[data-verb=Stop]").click()
    await expect(row.get_by_test_id("state")).to_have_text("DOWN")
    await expect(operation).to_contain_text(f"STOP_VM {name}")
    await expect(operation.get_by_test_id("operation-state")).to_have_text("SUCCEEDED")
    await expect(operation.locator("li[data-phase='done']")).to_have_count(1)


async def test_a_bad_memory_value_shows_its_field_error(web_stack: WebStack, page: Page) -> None:
    await sign_in(page, web_stack, web_stack.admin_token)
    await page.click("a[data-view=new]")
    await page.fill("[data-field=name]", unique("bad-memory"))
    await page.fill("[data-field='spec.memory_mib']", "1")
    await page.fill("[data-field='spec.boot.kernel_path']", "/nowhere/vmlinuz")
    await page.click("[data-testid=new-vm] button[type=submit]")
    error = page.locator("[data-error-for='spec.memory_mib']")
    await expect(error).to_contain_text("INVALID_ARGUMENT: must be between")
    await expect(page.locator("[data-field='spec.memory_mib']")).to_have_class("invalid")
    await expect(page.get_by_test_id("form-error")).to_have_text("")
    await shot(page, "05-new-vm-field-error")


async def test_a_viewer_sees_no_run_and_the_server_refuses_it(
    web_stack: WebStack, page: Page, tmp_path: Path
) -> None:
    name = unique("viewed")
    vm = define(web_stack, name, stand_in_kernel(tmp_path))
    token = web_stack.token_of("web-viewer", Role.VIEWER)
    await sign_in(page, web_stack, token)
    await expect(page.get_by_test_id("who")).to_have_text("web-viewer (viewer)")
    await wait_live(page)
    await expect(vm_row(page, name).get_by_test_id("state")).to_have_text("DOWN")
    await expect(page.locator("button[data-verb]")).to_have_count(0)
    await expect(page.locator("a[data-view=new]")).to_be_hidden()
    await shot(page, "06-viewer")
    # What the page hides, the server refuses on the page's own port.
    with web_stack.web_channel() as channel:
        start = channel.unary_unary(  # sonora's channel: no generated stub
            "/virtplane.v1.VmService/StartVm",
            request_serializer=vm_api.StartVmRequest.SerializeToString,
            response_deserializer=vm_api.StartVmResponse.FromString,
        )
        with pytest.raises(grpc.RpcError) as refused:
            start(vm_api.StartVmRequest(vm=vm.id), metadata=[("authorization", f"Bearer {token}")])
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "web-viewer" in str(refused.value.details())


def test_a_watch_past_its_deadline_ends_with_deadline_exceeded(web_stack: WebStack) -> None:
    """Its snapshot first; then, the deadline passed, the status in its trailers."""
    auth = [("authorization", f"Bearer {web_stack.admin_token}")]
    kinds = []
    with web_stack.web_channel() as channel:
        watch = channel.unary_stream(
            "/virtplane.v1.VmService/WatchVms",
            request_serializer=vm_api.WatchVmsRequest.SerializeToString,
            response_deserializer=vm_api.WatchVmsResponse.FromString,
        )
        with pytest.raises(grpc.RpcError) as ended:
            for message in watch(vm_api.WatchVmsRequest(), timeout=2, metadata=auth):
                kinds.append(message.kind)
    assert ended.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert vm_api.WatchVmsResponse.KIND_SNAPSHOT_COMPLETE in kinds


async def test_an_admin_puts_the_host_in_maintenance_and_activates_it(
    web_stack: WebStack, page: Page
) -> None:
    operator = web_stack.token_of("web-operator", Role.OPERATOR)
    await sign_in(page, web_stack, operator)
    await page.click("a[data-view=hosts]")
    host = page.locator("tr[data-host=local]")
    await expect(host.get_by_test_id("host-state")).to_have_text("UP")
    await expect(host.locator("button[data-verb]")).to_have_count(0)
    await page.click("text=Sign out")
    await sign_in(page, web_stack, web_stack.admin_token)
    await page.click("a[data-view=hosts]")
    await host.locator("button[data-verb=Maintenance]").click()
    await expect(host.get_by_test_id("host-state")).to_have_text("MAINTENANCE")
    await shot(page, "08-host-maintenance")
    await host.locator("button[data-verb=Activate]").click()
    await expect(host.get_by_test_id("host-state")).to_have_text("UP")


async def test_a_vms_details_and_why_it_would_land_where_it_would(
    web_stack: WebStack, page: Page, tmp_path: Path
) -> None:
    name = unique("details")
    define(web_stack, name, stand_in_kernel(tmp_path))
    await sign_in(page, web_stack, web_stack.admin_token)
    await wait_live(page)
    await vm_row(page, name).locator("a[data-action=details]").click()
    details = page.get_by_test_id("details")
    await expect(details.get_by_test_id("spec")).to_contain_text("64 MiB")
    await expect(details.get_by_test_id("status")).to_contain_text("DOWN")
    await expect(details.get_by_test_id("guest")).to_contain_text("no report yet")
    await expect(details.get_by_test_id("events").locator("tr")).not_to_have_count(0)
    await details.locator("button[data-action=explain]").click()
    local = details.locator("tr[data-placement-host=local]")
    await expect(local).to_contain_text("(chosen)")
    await expect(local).to_contain_text("eligible")
    await expect(details.get_by_test_id("placement")).to_contain_text("StartVm would choose local")
    await shot(page, "09-vm-details")


async def test_editing_a_running_vm_marks_what_waits_for_its_restart(
    web_stack: WebStack, page: Page, tmp_path: Path
) -> None:
    name = unique("edited")
    define(web_stack, name, stand_in_kernel(tmp_path))
    await sign_in(page, web_stack, web_stack.admin_token)
    await wait_live(page)
    row = vm_row(page, name)
    await row.locator("button[data-verb=Run]").click()
    await expect(row.get_by_test_id("state")).to_have_text("POWERING_UP")
    await row.locator("a[data-action=details]").click()
    await page.get_by_test_id("details").locator("a[data-action=edit]").click()
    form = page.get_by_test_id("edit-vm")
    memory = form.locator("[data-field='spec.memory_mib']")
    await expect(memory).to_have_value("64")
    await memory.fill("8")
    await form.locator("button[type=submit]").click()
    await expect(form.locator("[data-error-for='spec.memory_mib']")).to_contain_text(
        "INVALID_ARGUMENT: must be between"
    )
    await memory.fill("128")
    await form.locator("button[type=submit]").click()
    await expect(row.get_by_test_id("pending")).to_have_text("restart pending")
    await row.locator("a[data-action=details]").click()
    status = page.get_by_test_id("details").get_by_test_id("status")
    await expect(status).to_contain_text("spec.memory_mib")
    await page.get_by_test_id("details").locator("a[data-action=edit]").click()
    await expect(memory).to_have_value("128")  # the spec of its next start
    await expect(form.locator("[data-pending='spec.memory_mib']")).to_have_text("pending restart")
    await shot(page, "10-edit-pending-restart")
    await page.click("a[data-view=vms]")
    await row.locator("button[data-verb=Stop]").click()
    await expect(row.get_by_test_id("state")).to_have_text("DOWN")
