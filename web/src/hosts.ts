// The Hosts view: each host's state (what NON_RESPONSIVE and the others
// mean), its memory booked, used and free, its vCPUs and running VMs; an
// admin puts a host in maintenance and activates it.
import type { Api } from "./api";
import { describe } from "./api";
import { badge, el } from "./dom";
import { HOST_STATE_MEANING, date, hostState } from "./format";
import { Host_State, type Host } from "./gen/virtplane/v1/host_pb";
import type { Session } from "./session";

function segment(kind: string, mib: number, total: number): HTMLElement {
  const part = el("span", { class: kind });
  part.style.width = `${total ? Math.min(100, (mib / total) * 100) : 0}%`; // CSSOM: the CSP forbids style=""
  return part;
}

function memoryBar(h: Host): HTMLElement {
  const s = h.status;
  const total = Number(s?.memoryTotalMib ?? 0n);
  const free = Number(s?.memoryFreeMib ?? 0n);
  const booked = Number(s?.memoryPendingMib ?? 0n);
  const used = total - free;
  return el(
    "span",
    { title: `${used} MiB used, ${booked} MiB booked, ${free} MiB free of ${total} MiB`, "data-testid": "memory" },
    el("span", { class: "bar" }, segment("used", used, total), segment("booked", booked, total)),
    ` ${used} used, ${booked} booked, ${free} free of ${total} MiB`,
  );
}

const REFRESH_MS = 5000;
const HEAD = ["Name", "State", "Address", "Hypervisor", "vCPUs used", "Memory", "VMs", "Last seen", ""];

/** The hosts table, read again every few seconds while shown (hosts have no
 * watch in the API) and after each verb; admins get Maintenance and Activate. */
export class HostsView {
  readonly element: HTMLElement;
  private readonly tbody = el("tbody");
  private readonly empty = el("p", { class: "muted" });
  private readonly timer: number;

  constructor(private readonly api: Api, private readonly session: Session, private readonly report: (e: unknown) => void) {
    this.element = el(
      "section",
      { "data-testid": "hosts-view" },
      el("div", { class: "toolbar" }, el("h2", {}, "Hosts"), el("button", { type: "button", onclick: () => void this.load() }, "Refresh")),
      el("table", { "data-testid": "hosts" }, el("thead", {}, el("tr", {}, ...HEAD.map((h) => el("th", {}, h)))), this.tbody),
      this.empty,
    );
    this.timer = window.setInterval(() => void this.load(), REFRESH_MS);
  }

  close(): void {
    window.clearInterval(this.timer);
  }

  async load(): Promise<void> {
    const listed = await this.api.hosts.listHosts({});
    this.tbody.replaceChildren(...listed.hosts.map((h) => this.row(h)));
    this.empty.textContent = listed.hosts.length ? "" : "No hosts yet.";
  }

  private row(h: Host): HTMLTableRowElement {
    const state = h.status?.state ?? Host_State.UNSPECIFIED;
    const seen = date(h.status?.lastSeenTime);
    return el(
      "tr",
      { "data-host": h.name },
      el("td", {}, h.name),
      el("td", { title: HOST_STATE_MEANING[state] ?? "" }, badge(hostState(state), "host-state"), h.status?.message ? el("span", { class: "muted" }, ` ${h.status.message}`) : null),
      el("td", {}, h.address),
      el("td", {}, h.status?.hypervisorType ?? ""),
      el("td", {}, `${h.status?.vcpusUsed ?? 0} / ${h.status?.cpus ?? 0}`),
      el("td", {}, memoryBar(h)),
      el("td", { "data-testid": "vms-running" }, h.status?.vmsRunning ?? 0),
      el("td", {}, seen ? seen.toLocaleTimeString() : ""),
      el("td", {}, ...(this.session.isAdmin ? this.verbs(h, state) : [])),
    );
  }

  private verbs(h: Host, state: Host_State): HTMLButtonElement[] {
    const button = (verb: string, call: () => Promise<unknown>) =>
      el("button", { type: "button", "data-verb": verb, onclick: () => void this.act(`${verb} ${h.name}`, call) }, verb);
    const requestId = () => crypto.randomUUID();
    if (state === Host_State.MAINTENANCE || state === Host_State.PREPARING_FOR_MAINTENANCE) {
      return [button("Activate", () => this.api.hosts.activateHost({ host: h.id, requestId: requestId() }))];
    }
    return [button("Maintenance", () => this.api.hosts.setHostMaintenance({ host: h.id, requestId: requestId() }))];
  }

  private async act(what: string, call: () => Promise<unknown>): Promise<void> {
    try {
      await call();
      await this.load();
    } catch (error) {
      this.report(`${what}: ${describe(error)}`);
    }
  }
}
