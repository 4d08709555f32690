// The New VM form: CreateVm with what it names; an INVALID_ARGUMENT error
// ("spec.memory_mib: is required …") appears on the field it names.
import { Code, ConnectError } from "@connectrpc/connect";
import type { Api } from "./api";
import { describe } from "./api";
import { el } from "./dom";
import { Nic_Kind } from "./gen/virtplane/v1/vm_pb";

interface Field {
  path: string;
  label: string;
  input: HTMLInputElement;
  error: HTMLElement;
}

function field(path: string, label: string, attrs: Record<string, string>): Field {
  const id = `f-${path.replace(/\W/g, "-")}`;
  const input = el("input", { id, name: path, "data-field": path, ...attrs });
  return { path, label, input, error: el("div", { class: "field-error", "data-error-for": path }) };
}

/** The field an INVALID_ARGUMENT message names ("spec.vcpus: …" or "spec.nics[0].kind: …"). */
function fieldOf(message: string): [string, string] | undefined {
  const match = /^([a-z_][\w.[\]]*): (.*)$/s.exec(message);
  return match ? [match[1], match[2]] : undefined;
}

export function newVmView(api: Api, created: (name: string) => void): HTMLElement {
  const fields = [
    field("name", "Name", { type: "text", required: "" }),
    field("spec.vcpus", "vCPUs", { type: "number", value: "1" }),
    field("spec.memory_mib", "Memory (MiB)", { type: "number", value: "256" }),
    field("spec.boot.kernel_path", "Kernel path", { type: "text" }),
    field("spec.boot.initrd_path", "Initrd path", { type: "text" }),
    field("spec.boot.cmdline", "Kernel command line", { type: "text" }),
  ];
  const byPath = new Map(fields.map((f) => [f.path, f]));
  const nic = el("input", { type: "checkbox", id: "f-nic", checked: true });
  const general = el("p", { class: "field-error", "data-testid": "form-error" });
  const value = (path: string) => byPath.get(path)!.input.value.trim();
  const number = (path: string) => Number(value(path) || "0");

  const submit = async (event: Event) => {
    event.preventDefault();
    for (const f of fields) {
      f.error.textContent = "";
      f.input.classList.remove("invalid");
    }
    general.textContent = "";
    try {
      const memory = number("spec.memory_mib");
      await api.vms.createVm({
        name: value("name"),
        requestId: crypto.randomUUID(),
        spec: {
          vcpus: number("spec.vcpus"),
          memoryMib: BigInt(Number.isSafeInteger(memory) && memory >= 0 ? memory : 0),
          boot: {
            kernelPath: value("spec.boot.kernel_path"),
            initrdPath: value("spec.boot.initrd_path"),
            cmdline: value("spec.boot.cmdline"),
          },
          nics: nic.checked ? [{ name: "nic0", kind: Nic_Kind.USER }] : [],
        },
      });
      created(value("name"));
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

  return el(
    "form",
    { class: "card", "data-testid": "new-vm", novalidate: true, onsubmit: (e: Event) => void submit(e) },
    el("h2", {}, "New VM"),
    ...fields.flatMap((f) => [el("label", { for: f.input.id }, f.label), f.input, f.error]),
    el("label", { for: "f-nic" }, nic, " a user-mode NIC (nic0)"),
    general,
    el("button", { type: "submit" }, "Create"),
  );
}
