// The VMs as WatchVms streams them: a snapshot, then every change; when the
// stream breaks it resumes from the last revision it read, so the table stays
// right across a controller restart.
import type { Api } from "./api";
import { describe } from "./api";
import type { Vm } from "./gen/virtplane/v1/vm_pb";
import { WatchVmsResponse_Kind as Kind } from "./gen/virtplane/v1/vm_service_pb";

export interface WatchEvents {
  /** The VMs changed (ids); all of them after a snapshot. */
  changed(ids: string[] | "all"): void;
  /** The stream's condition in words ("live", "reconnecting: …"). */
  status(text: string, live: boolean): void;
}

const RETRY_MS = 1000;

export class VmWatch {
  readonly vms = new Map<string, Vm>();
  private revision = 0n;
  private stopped = false;
  private abort = new AbortController();

  constructor(private readonly api: Api, private readonly events: WatchEvents) {}

  start(): void {
    void this.run();
  }

  stop(): void {
    this.stopped = true;
    this.abort.abort();
  }

  private async run(): Promise<void> {
    while (!this.stopped) {
      try {
        await this.follow();
      } catch (error) {
        if (this.stopped) return;
        this.events.status(`reconnecting: ${describe(error)}`, false);
      }
      if (this.stopped) return;
      await new Promise((resolve) => setTimeout(resolve, RETRY_MS));
    }
  }

  private async follow(): Promise<void> {
    this.abort = new AbortController();
    let snapshot: Map<string, Vm> | undefined;
    const stream = this.api.vms.watchVms(
      { afterRevision: this.revision },
      { signal: this.abort.signal },
    );
    for await (const message of stream) {
      if (message.revision > this.revision) this.revision = message.revision;
      const vm = message.vm;
      switch (message.kind) {
        case Kind.SNAPSHOT:
          if (vm) (snapshot ??= new Map()).set(vm.id, vm);
          break;
        case Kind.SNAPSHOT_COMPLETE:
          if (snapshot !== undefined || this.revision === 0n || message.revision === 0n) {
            this.vms.clear();
            for (const [id, v] of snapshot ?? []) this.vms.set(id, v);
          }
          snapshot = undefined;
          this.events.status("live", true);
          this.events.changed("all");
          break;
        case Kind.CHANGED:
          if (vm) {
            this.vms.set(vm.id, vm);
            this.events.changed([vm.id]);
          }
          break;
        case Kind.DELETED:
          if (vm) {
            this.vms.delete(vm.id);
            this.events.changed([vm.id]);
          }
          break;
      }
    }
    throw new Error("the stream ended");
  }
}
