// The VMs view: a table fed by WatchVms (state badges change live; host, IP,
// OS, uptime counting up, agent state, a stale mark), a filter, and the verbs
// the signed-in role may use, each showing its operation.
import type { Api } from "./api";
import { describe } from "./api";
import { badge, el } from "./dom";
import { duration, guestIp, guestOs, stale, upSince, vmState } from "./format";
import type { Operation } from "./gen/virtplane/v1/operation_pb";
import { GuestInfo_AgentState, Vm_State, type Vm } from "./gen/virtplane/v1/vm_pb";
import { VmDetails } from "./details";
import { OperationPanel } from "./operation";
import type { Session } from "./session";
import { VmWatch } from "./watch";

type Verb = "Run" | "Stop" | "Shutdown" | "Reboot" | "Reset" | "Pause" | "Resume" | "Hibernate";
type Call = (api: Api, request: { vm: string; requestId: string }) => Promise<{ operation?: Operation }>;

/** Each verb's call: the VM's verbs in the API, each answering with its Operation. */
const CALLS: Record<Verb, Call> = {
  Run: (api, r) => api.vms.startVm(r),
  Stop: (api, r) => api.vms.stopVm(r),
  Shutdown: (api, r) => api.vms.shutdownVm(r),
  Reboot: (api, r) => api.vms.rebootVm(r),
  Reset: (api, r) => api.vms.resetVm(r),
  Pause: (api, r) => api.vms.pauseVm(r),
  Resume: (api, r) => api.vms.resumeVm(r),
  Hibernate: (api, r) => api.vms.hibernateVm(r),
};

/** The verbs offered in a state; the controller refuses any other (FAILED_PRECONDITION). */
function verbsFor(state: Vm_State): Verb[] {
  switch (state) {
    case Vm_State.DOWN:
    case Vm_State.UNSPECIFIED:
      return ["Run"];
    case Vm_State.SUSPENDED:
      return ["Run", "Stop"]; // Run restores it; Stop deletes its saved state
    case Vm_State.UP:
      return ["Stop", "Shutdown", "Reboot", "Reset", "Pause", "Hibernate"];
    case Vm_State.PAUSED:
      return ["Resume", "Stop"];
    default:
      return ["Stop", "Shutdown"];
  }
}

export class VmsView {
  readonly element: HTMLElement;
  private readonly tbody = el("tbody");
  private readonly rows = new Map<string, HTMLTableRowElement>();
  private readonly live = el("span", { class: "muted", "data-testid": "watch-status" }, "connecting…");
  private readonly filter = el("input", { type: "text", placeholder: "filter by name", "aria-label": "filter" });
  private readonly opArea = el("div");
  private readonly hostNames = new Map<string, string>();
  private panel: OperationPanel | undefined;
  private details: VmDetails | undefined;
  private readonly detailsArea = el("div");
  private readonly watch: VmWatch;
  private frame = 0;
  private readonly ticker: number;

  constructor(private readonly api: Api, private readonly session: Session, private readonly report: (e: unknown) => void) {
    this.watch = new VmWatch(api, {
      changed: (ids) => this.changed(ids),
      status: (text, ok) => {
        this.live.textContent = text;
        this.live.className = ok ? "muted" : "field-error";
      },
    });
    this.filter.addEventListener("input", () => this.schedule());
    const head = el("tr", {}, ...["Name", "State", "Host", "IP", "OS", "Uptime", "Agent", ""].map((h) => el("th", {}, h)));
    this.element = el(
      "section",
      { "data-testid": "vms-view" },
      el("div", { class: "toolbar" }, el("h2", {}, "VMs"), this.filter, this.live),
      el("table", { "data-testid": "vms" }, el("thead", {}, head), this.tbody),
      this.opArea,
      this.detailsArea,
    );
    this.ticker = window.setInterval(() => this.tick(), 1000);
    void this.loadHosts();
    this.watch.start();
  }

  close(): void {
    this.panel?.close();
    this.watch.stop();
    window.clearInterval(this.ticker);
  }

  private async loadHosts(): Promise<void> {
    try {
      const listed = await this.api.hosts.listHosts({});
      for (const h of listed.hosts) this.hostNames.set(h.id, h.name);
      this.rows.clear();
      this.schedule();
    } catch (error) {
      this.report(error);
    }
  }

  private changed(ids: string[] | "all"): void {
    if (ids === "all") this.rows.clear();
    else for (const id of ids) this.rows.delete(id);
    if (this.panel && (ids === "all" || ids.includes(this.panel.vmId))) void this.panel.refresh();
    if (this.details && (ids === "all" || ids.includes(this.details.vmId))) this.showDetails(this.details.vmId);
    this.schedule();
  }

  /** Renders at the next frame: a burst of changes costs one render. */
  private schedule(): void {
    if (!this.frame) this.frame = requestAnimationFrame(() => this.render());
  }

  private render(): void {
    this.frame = 0;
    const needle = this.filter.value.trim().toLowerCase();
    const shown = [...this.watch.vms.values()]
      .filter((vm) => !needle || vm.name.toLowerCase().includes(needle))
      .sort((a, b) => a.name.localeCompare(b.name));
    this.tbody.replaceChildren(...shown.map((vm) => this.row(vm)));
    this.element.dataset.rendered = String(shown.length);
  }

  private row(vm: Vm): HTMLTableRowElement {
    const cached = this.rows.get(vm.id);
    if (cached) return cached;
    const state = vm.status?.state ?? Vm_State.UNSPECIFIED;
    const since = upSince(vm);
    const agent = vm.status?.guest?.agentState ?? GuestInfo_AgentState.UNSPECIFIED;
    const row = el(
      "tr",
      { "data-vm": vm.name },
      el("td", {}, el("a", { href: "#/vms", "data-action": "details", onclick: (e: Event) => { e.preventDefault(); this.showDetails(vm.id); } }, vm.name)),
      el(
        "td",
        {},
        badge(vmState(state), "state"),
        vm.status?.pendingRestart.length ? el("span", { class: "stale", "data-testid": "pending", title: vm.status.pendingRestart.join(", ") }, "restart pending") : null,
        vm.status?.message ? el("span", { class: "muted" }, ` ${vm.status.message}`) : null,
      ),
      el("td", { "data-testid": "host" }, this.hostName(vm)),
      el("td", { "data-testid": "ip" }, guestIp(vm)),
      el("td", {}, guestOs(vm)),
      el("td", { "data-testid": "uptime", "data-since": since ? String(since.getTime()) : undefined }, since ? duration((Date.now() - since.getTime()) / 1000) : ""),
      el(
        "td",
        {},
        agent === GuestInfo_AgentState.UNSPECIFIED ? "" : badge(GuestInfo_AgentState[agent]),
        stale(vm) ? el("span", { class: "stale", "data-testid": "stale", title: "the guest agent stopped answering: its facts are as last observed" }, "stale") : null,
      ),
      el("td", {}, ...(this.session.canOperate ? verbsFor(state).map((verb) => this.button(verb, vm)) : [])),
    );
    this.rows.set(vm.id, row);
    return row;
  }

  private hostName(vm: Vm): string {
    const id = vm.status?.hostId ?? "";
    return this.hostNames.get(id) ?? id;
  }

  private showDetails(id: string): void {
    const vm = this.watch.vms.get(id);
    if (!vm) {
      this.details = undefined;
      this.detailsArea.replaceChildren();
      return;
    }
    if (this.details?.vmId !== id) {
      this.details = new VmDetails(this.api, id, this.session.canChange);
      this.detailsArea.replaceChildren(this.details.element);
    }
    this.details.show(vm, this.hostName(vm));
  }

  private button(verb: Verb, vm: Vm): HTMLButtonElement {
    return el("button", { type: "button", "data-verb": verb, onclick: () => void this.act(verb, vm) }, verb);
  }

  private async act(verb: Verb, vm: Vm): Promise<void> {
    try {
      const { operation: op } = await CALLS[verb](this.api, { vm: vm.id, requestId: crypto.randomUUID() });
      if (op) {
        this.panel?.close();
        this.panel = new OperationPanel(this.api, op, vm.name);
        this.opArea.replaceChildren(this.panel.element);
      }
    } catch (error) {
      this.report(`${verb} ${vm.name}: ${describe(error)}`);
    }
  }

  private tick(): void {
    const now = Date.now();
    for (const cell of this.tbody.querySelectorAll<HTMLElement>("td[data-since]")) {
      cell.textContent = duration((now - Number(cell.dataset.since)) / 1000);
    }
  }
}
