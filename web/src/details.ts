// A VM's details, below the table when its name is clicked, kept current by
// the watch: its spec, its status (start tries, pending-restart changes),
// the guest's facts with when they were observed, its audit events, and
// Explain placement: each host, each filter's verdict, each weight's score.
import type { Api } from "./api";
import { describe } from "./api";
import { badge, el } from "./dom";
import { date, duration, guestIp, guestOs, stale, vmState } from "./format";
import type { ExplainPlacementResponse } from "./gen/virtplane/v1/vm_service_pb";
import { GuestInfo_AgentState, type Vm } from "./gen/virtplane/v1/vm_pb";

type Row = [string, Node | string];

function facts(title: string, rows: Row[], testId: string): HTMLElement {
  return el(
    "div",
    { class: "facts", "data-testid": testId },
    el("h4", {}, title),
    el("table", {}, el("tbody", {}, ...rows.map(([k, v]) => el("tr", {}, el("th", {}, k), el("td", {}, v))))),
  );
}

function when(ts: Parameters<typeof date>[0]): string {
  return date(ts)?.toLocaleString() ?? "";
}

function specRows(vm: Vm): Row[] {
  const s = vm.spec;
  return [
    ["vCPUs", String(s?.vcpus ?? "")],
    ["Memory", `${s?.memoryMib ?? 0n} MiB`],
    ["Kernel", s?.boot?.kernelPath ?? ""],
    ["Initrd", s?.boot?.initrdPath ?? ""],
    ["Command line", s?.boot?.cmdline ?? ""],
    ["NICs", (s?.nics ?? []).map((n) => n.name).join(", ")],
    ["Disks", (s?.disks ?? []).map((d) => `${d.name} (${d.path})`).join(", ")],
    ["Highly available", s?.highlyAvailable ? "yes" : "no"],
  ];
}

function statusRows(vm: Vm, hostName: string): Row[] {
  const st = vm.status;
  return [
    ["State", badge(vmState(st?.state ?? 0))],
    ["Host", hostName],
    ["Since", when(st?.stateChangedTime)],
    ["Message", st?.message ?? ""],
    ["Pending restart", (st?.pendingRestart ?? []).join(", ") || "none"],
    ["Start tries", (st?.startTries ?? []).map((t) => `${t.hostName || t.hostId}: ${t.error}`).join("; ") || "none"],
  ];
}

function guestRows(vm: Vm): Row[] {
  const g = vm.status?.guest;
  if (!g) return [["Agent", "no report yet"]];
  const agent = GuestInfo_AgentState[g.agentState] ?? "";
  return [
    ["Agent", stale(vm) ? `${agent} (facts are stale)` : agent],
    ["Reported", `${when(g.lastReportTime)} by the guest agent ${g.agentVersion}`],
    ["Observed", `${when(g.observedTime)} by the host`],
    ["Hostname", g.hostname],
    ["OS", guestOs(vm)],
    ["Kernel", g.kernelRelease],
    ["IP", guestIp(vm)],
    ["Uptime (reported)", duration(g.uptimeSeconds)],
    ["Applications", String(g.applicationCount)],
  ];
}

function placementTable(answer: ExplainPlacementResponse): HTMLElement {
  const rows = answer.hosts.map((h) =>
    el(
      "tr",
      { "data-placement-host": h.hostName },
      el("td", {}, h.hostName, h.hostId === answer.chosenHostId ? el("strong", {}, " (chosen)") : null),
      el("td", {}, h.eligible ? "eligible" : "refused"),
      el("td", {}, ...h.filters.map((f) => el("div", { class: f.passed ? "" : "field-error" }, `${f.filter}: ${f.passed ? "passed" : f.reason}`))),
      el("td", {}, ...h.weights.map((w) => el("div", {}, `${w.weight}: ${w.score.toFixed(2)}`))),
      el("td", {}, h.eligible ? h.score.toFixed(2) : ""),
    ),
  );
  const head = ["Host", "Verdict", "Filters", "Weights", "Score"].map((h) => el("th", {}, h));
  return el(
    "div",
    { "data-testid": "placement" },
    el("p", {}, answer.chosenHostName ? `StartVm would choose ${answer.chosenHostName}.` : "No host fits."),
    el("table", {}, el("thead", {}, el("tr", {}, ...head)), el("tbody", {}, ...rows)),
  );
}

export class VmDetails {
  readonly element = el("section", { class: "card details", "data-testid": "details" });
  private readonly placement = el("div");
  private readonly events = el("div", { "data-testid": "events" });

  constructor(private readonly api: Api, readonly vmId: string, private readonly canChange: boolean) {}

  /** Shows vm (again, as the watch changes it); the events are read anew. */
  show(vm: Vm, hostName: string): void {
    const explain = el("button", { type: "button", "data-action": "explain", onclick: () => void this.explain() }, "Explain placement");
    this.element.replaceChildren(
      el(
        "h3",
        {},
        vm.name,
        " ",
        el("span", { class: "muted" }, vm.id),
        " ",
        this.canChange ? el("a", { href: `#/edit/${encodeURIComponent(vm.id)}`, "data-action": "edit" }, "Edit") : null,
      ),
      el("div", { class: "facts-row" }, facts("Spec", specRows(vm), "spec"), facts("Status", statusRows(vm, hostName), "status"), facts("Guest", guestRows(vm), "guest")),
      el("h4", {}, "Placement ", explain),
      this.placement,
      el("h4", {}, "Events"),
      this.events,
    );
    void this.loadEvents();
  }

  private async explain(): Promise<void> {
    try {
      this.placement.replaceChildren(placementTable(await this.api.vms.explainPlacement({ vm: this.vmId })));
    } catch (error) {
      this.placement.replaceChildren(el("p", { class: "field-error" }, describe(error)));
    }
  }

  private async loadEvents(): Promise<void> {
    try {
      const listed = await this.api.operations.listEvents({ vmId: this.vmId, pageSize: 50 });
      const rows = listed.events.map((e) =>
        el("tr", {}, el("td", {}, when(e.time)), el("td", {}, e.kind), el("td", {}, e.message), el("td", {}, e.principal)),
      );
      this.events.replaceChildren(rows.length ? el("table", {}, el("tbody", {}, ...rows)) : el("p", { class: "muted" }, "none"));
    } catch (error) {
      this.events.replaceChildren(el("p", { class: "field-error" }, describe(error)));
    }
  }
}
