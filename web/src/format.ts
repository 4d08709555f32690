// Enum values and times as the page shows them.
import { timestampDate, type Timestamp } from "@bufbuild/protobuf/wkt";
import { Vm_State, GuestInfo_AgentState, type Vm } from "./gen/virtplane/v1/vm_pb";
import { Host_State } from "./gen/virtplane/v1/host_pb";
import { Operation_Kind, Operation_State } from "./gen/virtplane/v1/operation_pb";

function strip(name: string | undefined, prefix: string): string {
  return (name ?? "UNSPECIFIED").replace(prefix, "");
}

export const vmState = (s: Vm_State): string => strip(Vm_State[s], "STATE_");
export const hostState = (s: Host_State): string => strip(Host_State[s], "STATE_");
export const opKind = (k: Operation_Kind): string => strip(Operation_Kind[k], "KIND_");
export const opState = (s: Operation_State): string => strip(Operation_State[s], "STATE_");

/** What a host state means, for the title of its badge. */
export const HOST_STATE_MEANING: Partial<Record<Host_State, string>> = {
  [Host_State.NON_RESPONSIVE]:
    "the controller cannot reach the host; its VMs' states are what was last known",
  [Host_State.NON_OPERATIONAL]: "the host answers but cannot run VMs",
  [Host_State.CONNECTING]: "the controller is connecting to the host",
};

export function date(ts: Timestamp | undefined): Date | undefined {
  return ts && (ts.seconds !== 0n || ts.nanos !== 0) ? timestampDate(ts) : undefined;
}

export function duration(seconds: number): string {
  const s = Math.max(0, Math.floor(seconds));
  const d = Math.floor(s / 86400);
  const h = Math.floor((s % 86400) / 3600);
  const m = Math.floor((s % 3600) / 60);
  const pad = (n: number) => String(n).padStart(2, "0");
  return `${d ? `${d}d ` : ""}${pad(h)}:${pad(m)}:${pad(s % 60)}`;
}

/** The guest's first IPv4 address that is not loopback. */
export function guestIp(vm: Vm): string {
  for (const nic of vm.status?.guest?.interfaces ?? []) {
    for (const ip of nic.ipv4Addresses) if (!ip.startsWith("127.")) return ip;
  }
  return "";
}

export function guestOs(vm: Vm): string {
  const g = vm.status?.guest;
  return g ? [g.osName, g.osVersion].filter(Boolean).join(" ") : "";
}

/** Whether the guest's facts are stale: its agent stopped answering. */
export function stale(vm: Vm): boolean {
  return vm.status?.guest?.agentState === GuestInfo_AgentState.NOT_RESPONDING;
}

/** When the guest booted (from its reported uptime), else when the VM went UP. */
export function upSince(vm: Vm): Date | undefined {
  const status = vm.status;
  if (!status || status.state !== Vm_State.UP) return undefined;
  const g = status.guest;
  const seen = date(g?.observedTime) ?? date(g?.lastReportTime);
  if (g && g.uptimeSeconds > 0 && seen) return new Date(seen.getTime() - g.uptimeSeconds * 1000);
  return date(status.stateChangedTime);
}
