// The Hosts view: each host's state (what NON_RESPONSIVE and the others
// mean), its memory booked, used and free, its vCPUs and running VMs.
import type { Api } from "./api";
import { badge, el } from "./dom";
import { HOST_STATE_MEANING, date, hostState } from "./format";
import type { Host } from "./gen/virtplane/v1/host_pb";

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

export async function hostsView(api: Api): Promise<HTMLElement> {
  const listed = await api.hosts.listHosts({});
  const rows = listed.hosts.map((h) => {
    const state = h.status?.state ?? 0;
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
    );
  });
  const head = ["Name", "State", "Address", "Hypervisor", "vCPUs used", "Memory", "VMs", "Last seen"];
  return el(
    "section",
    { "data-testid": "hosts-view" },
    el("h2", {}, "Hosts"),
    el("table", { "data-testid": "hosts" }, el("thead", {}, el("tr", {}, ...head.map((h) => el("th", {}, h)))), el("tbody", {}, ...rows)),
    rows.length ? null : el("p", { class: "muted" }, "No hosts yet."),
  );
}
