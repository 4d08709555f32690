// An operation (Run, Stop, Shutdown) as it goes: its state, what it waits
// for, and its phases as a timeline, each phase at its time since the
// operation began. It is read again whenever its VM changes (the watch says
// so; no polling), and WaitOperation brings its end.
import type { Api } from "./api";
import { describe } from "./api";
import { badge, el } from "./dom";
import { date, opKind, opState } from "./format";
import type { Operation, OperationPhases } from "./gen/virtplane/v1/operation_pb";

const PHASES: [keyof OperationPhases, string][] = [
  ["createTime", "created"],
  ["scheduledTime", "scheduled"],
  ["dispatchedTime", "dispatched"],
  ["acceptedTime", "accepted"],
  ["poweringUpTime", "powering up"],
  ["transferringTime", "transferring"],
  ["switchedOverTime", "switched over"],
  ["upTime", "up"],
  ["doneTime", "done"],
];

export function timeline(op: Operation): HTMLOListElement {
  const phases = op.phases;
  const start = date(phases?.createTime);
  const list = el("ol", { class: "timeline", "data-testid": "timeline" });
  for (const [field, label] of PHASES) {
    const at = phases ? date(phases[field] as never) : undefined;
    if (!at || !start) continue;
    const offset = ((at.getTime() - start.getTime()) / 1000).toFixed(3);
    list.append(el("li", { "data-phase": label }, el("span", { class: "at" }, `+${offset} s`), label));
  }
  return list;
}

export class OperationPanel {
  readonly element = el("section", { id: "operation", class: "card", "data-testid": "operation" });
  private op: Operation;
  private vmName: string;
  private readonly abort = new AbortController();

  constructor(private readonly api: Api, op: Operation, vmName: string) {
    this.op = op;
    this.vmName = vmName;
    this.render();
    void this.refresh(); // the VM's changes since the verb answered came before this panel
    void this.waitForEnd();
  }

  /** Stops following the operation (its WaitOperation call ends). */
  close(): void {
    this.abort.abort();
  }

  get vmId(): string {
    return this.op.vmId;
  }

  /** The VM changed: the operation may have reached a new phase. */
  async refresh(): Promise<void> {
    if (this.op.done || this.abort.signal.aborted) return;
    try {
      const got = await this.api.operations.getOperation({ id: this.op.id }, { signal: this.abort.signal });
      if (got.operation) this.show(got.operation);
    } catch (error) {
      this.fail(error);
    }
  }

  private async waitForEnd(): Promise<void> {
    while (!this.op.done && !this.abort.signal.aborted) {
      try {
        const request = { id: this.op.id, timeoutSeconds: 300 };
        const got = await this.api.operations.waitOperation(request, { signal: this.abort.signal });
        if (got.operation) this.show(got.operation);
      } catch (error) {
        if (!this.abort.signal.aborted) this.fail(error);
        return;
      }
    }
  }

  private show(op: Operation): void {
    if (this.op.done) return;
    this.op = op;
    this.render();
  }

  private fail(error: unknown): void {
    this.element.append(el("p", { class: "field-error" }, describe(error)));
  }

  private render(): void {
    const op = this.op;
    const parts: (HTMLElement | null)[] = [
      el("h3", {}, `${opKind(op.kind)} ${this.vmName} `, badge(opState(op.state), "operation-state")),
      op.message ? el("p", { class: "muted" }, op.message) : null,
      op.error ? el("p", { class: "field-error" }, `${op.error.code}: ${op.error.message}`) : null,
      timeline(op),
      el("p", { class: "muted" }, `operation ${op.id}`),
    ];
    this.element.replaceChildren(...parts.filter((part) => part !== null));
  }
}
