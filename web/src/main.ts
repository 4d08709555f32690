// The page: sign in, then the views by the location's hash (#/vms,
// #/hosts, #/new); an error from any call is shown in words with its code.
import { describe } from "./api";
import { el } from "./dom";
import { HostsView } from "./hosts";
import { vmFormView } from "./vmform";
import { forget, open, saved, signInView, type Session } from "./session";
import { VmsView } from "./vms";
import { Role } from "./gen/virtplane/v1/principal_service_pb";

const main = document.getElementById("main")!;
const nav = document.getElementById("nav")!;
const who = document.getElementById("who")!;
const banner = document.getElementById("error")!;
let session: Session | undefined;
let shown: { close(): void } | undefined;

function report(error: unknown): void {
  banner.textContent = typeof error === "string" ? error : describe(error);
  banner.hidden = false;
}

function clearError(): void {
  banner.hidden = true;
  banner.textContent = "";
}

function signedIn(s: Session): void {
  session = s;
  nav.hidden = false;
  for (const link of nav.querySelectorAll<HTMLElement>("[data-needs]")) link.hidden = !s.canChange;
  const signOut = el("button", { type: "button", onclick: () => { forget(); location.reload(); } }, "Sign out");
  who.replaceChildren(el("span", { "data-testid": "who" }, `${s.name} (${Role[s.role].toLowerCase()})`), " ", signOut);
  if (!location.hash || location.hash === "#/") location.hash = "#/vms";
  else void route();
}

async function route(): Promise<void> {
  if (!session) return;
  clearError();
  const view = location.hash.replace(/^#\//, "") || "vms";
  for (const link of nav.querySelectorAll<HTMLElement>("a")) link.classList.toggle("active", link.dataset.view === view);
  shown?.close();
  shown = undefined;
  try {
    if (view === "hosts") {
      const hosts = new HostsView(session.api, session, report);
      shown = hosts;
      await hosts.load();
      main.replaceChildren(hosts.element);
    } else if (view === "new" && session.canChange) {
      main.replaceChildren(vmFormView(session.api, undefined, () => (location.hash = "#/vms")));
    } else if (view.startsWith("edit/") && session.canChange) {
      const id = decodeURIComponent(view.slice("edit/".length));
      const got = await session.api.vms.getVm({ vm: id });
      main.replaceChildren(vmFormView(session.api, got.vm, () => (location.hash = "#/vms")));
    } else {
      const vms = new VmsView(session.api, session, report);
      shown = vms;
      main.replaceChildren(vms.element);
    }
  } catch (error) {
    report(error);
  }
}

async function start(): Promise<void> {
  window.addEventListener("hashchange", () => void route());
  const token = saved();
  if (token !== null) {
    try {
      signedIn(await open(token));
      return;
    } catch (error) {
      forget();
      report(error);
    }
  }
  main.replaceChildren(signInView(signedIn));
}

void start();
