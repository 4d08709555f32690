// The New VM and Edit VM forms. New: CreateVm. Edit: UpdateVm with the
// fields that changed in its update_mask and the spec version it read (a
// concurrent change is refused, not lost); a field whose change waits for
// the VM's next start is marked. An INVALID_ARGUMENT error ("spec.memory_mib:
// …", "vm_update.spec.memory_mib: …") appears on the field it names.
import { Code, ConnectError } from "@connectrpc/connect";
import type { Api } from "./api";
import { describe } from "./api";
import { el } from "./dom";
import { Nic_Kind, type Vm, type VmSpec } from "./gen/virtplane/v1/vm_pb";

interface Field {
  path: string;
  input: HTMLInputElement;
  error: HTMLElement;
  initial: string;
}

const FIELDS: [string, string, string][] = [
  ["name", "Name", "text"],
  ["spec.vcpus", "vCPUs", "number"],
  ["spec.memory_mib", "Memory (MiB)", "number"],
  ["spec.boot.kernel_path", "Kernel path", "text"],
  ["spec.boot.initrd_path", "Initrd path", "text"],
  ["spec.boot.cmdline", "Kernel command line", "text"],
];

function valuesOf(name: string, spec: VmSpec | undefined): Record<string, string> {
  return {
    name,
    "spec.vcpus": String(spec?.vcpus ?? 1),
    "spec.memory_mib": String(spec?.memoryMib ?? 256n),
    "spec.boot.kernel_path": spec?.boot?.kernelPath ?? "",
    "spec.boot.initrd_path": spec?.boot?.initrdPath ?? "",
    "spec.boot.cmdline": spec?.boot?.cmdline ?? "",
  };
}

/** The field an INVALID_ARGUMENT message names, as this form calls it. */
function fieldOf(message: string): [string, string] | undefined {
  const match = /^([a-z_][\w.[\]]*): (.*)$/s.exec(message);
  return match ? [match[1].replace(/^vm_update\./, ""), match[2]] : undefined;
}

function memory(text: string): bigint {
  const n = Number(text || "0");
  return BigInt(Number.isSafeInteger(n) && n >= 0 ? n : 0);
}

/** The form; vm: the VM to edit (undefined: a new one); done: after a success. */
export function vmFormView(api: Api, vm: Vm | undefined, done: () => void): HTMLElement {
  const current = vm ? valuesOf(vm.name, vm.nextRunSpec ?? vm.spec) : valuesOf("", undefined);
  const pending = new Set(vm?.status?.pendingRestart ?? []);
  const fields: Field[] = FIELDS.map(([path, , type]) => ({
    path,
    input: el("input", { id: `f-${path.replace(/\W/g, "-")}`, type, name: path, "data-field": path, value: current[path] }),
    error: el("div", { class: "field-error", "data-error-for": path }),
    initial: current[path],
  }));
  const byPath = new Map(fields.map((f) => [f.path, f]));
  const nic = el("input", { type: "checkbox", id: "f-nic", checked: true });
  const general = el("p", { class: "field-error", "data-testid": "form-error" });
  const value = (path: string) => byPath.get(path)!.input.value.trim();
  const spec = () => ({
    vcpus: Number(value("spec.vcpus") || "0"),
    memoryMib: memory(value("spec.memory_mib")),
    boot: {
      kernelPath: value("spec.boot.kernel_path"),
      initrdPath: value("spec.boot.initrd_path"),
      cmdline: value("spec.boot.cmdline"),
    },
  });

  const save = async () => {
    const requestId = crypto.randomUUID();
    if (!vm) {
      const nics = nic.checked ? [{ name: "nic0", kind: Nic_Kind.USER }] : [];
      await api.vms.createVm({ name: value("name"), requestId, spec: { ...spec(), nics } });
      return;
    }
    const paths = fields.filter((f) => f.input.value.trim() !== f.initial).map((f) => f.path);
    if (!paths.length) return;
    await api.vms.updateVm({
      vm: vm.id,
      vmUpdate: { name: value("name"), spec: spec() },
      updateMask: { paths },
      expectedSpecVersion: vm.specVersion,
      requestId,
    });
  };

  const submit = async (event: Event) => {
    event.preventDefault();
    for (const f of fields) {
      f.error.textContent = "";
      f.input.classList.remove("invalid");
    }
    general.textContent = "";
    try {
      await save();
      done();
    } catch (error) {
      const e = ConnectError.from(error);
      const named = e.code === Code.InvalidArgument ? fieldOf(e.rawMessage) : undefined;
      const target = named && byPath.get(named[0]);
      if (named && target) {
        target.error.textContent = `INVALID_ARGUMENT: ${named[1]}`;
        target.input.classList.add("invalid");
        target.input.focus();
      } else {
        general.textContent = describe(error);
      }
    }
  };

  const label = (path: string, text: string) =>
    el(
      "label",
      { for: byPath.get(path)!.input.id },
      text,
      pending.has(path) || pending.has(path.replace(/\.[a-z_]+$/, "")) ? el("span", { class: "stale", "data-pending": path }, "pending restart") : null,
    );
  return el(
    "form",
    { class: "card", "data-testid": vm ? "edit-vm" : "new-vm", novalidate: true, onsubmit: (e: Event) => void submit(e) },
    el("h2", {}, vm ? `Edit ${vm.name}` : "New VM"),
    vm && pending.size ? el("p", { class: "muted" }, "Marked changes apply at the VM's next start.") : null,
    ...FIELDS.flatMap(([path, text]) => [label(path, text), byPath.get(path)!.input, byPath.get(path)!.error]),
    vm ? null : el("label", { for: "f-nic" }, nic, " a user-mode NIC (nic0)"),
    general,
    el("button", { type: "submit" }, vm ? "Save" : "Create"),
  );
}
