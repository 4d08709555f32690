// Signing in with an API token, as any client does: the page asks the
// controller whose token it is (GetCurrentPrincipal) and keeps it for this
// tab only. What the role may do decides which controls the page shows; the
// controller refuses the rest all the same.
import { connect, describe, type Api } from "./api";
import { el } from "./dom";
import { Role } from "./gen/virtplane/v1/principal_service_pb";

const KEY = "virtplane.token";

export interface Session {
  api: Api;
  name: string;
  role: Role;
  /** Run, Stop, Shutdown: operators and admins. */
  canOperate: boolean;
  /** New VM: operators and admins. */
  canChange: boolean;
  /** Host maintenance and activation. */
  isAdmin: boolean;
}

export async function open(token: string): Promise<Session> {
  const api = connect(token);
  const got = await api.principals.getCurrentPrincipal({});
  const role = got.principal?.role ?? Role.UNSPECIFIED;
  const operates = role === Role.OPERATOR || role === Role.ADMIN;
  const name = got.authenticationRequired ? (got.principal?.name ?? "") : "anyone (no authentication)";
  return { api, name, role, canOperate: operates, canChange: operates, isAdmin: role === Role.ADMIN };
}

export function saved(): string | null {
  return sessionStorage.getItem(KEY);
}

export function forget(): void {
  sessionStorage.removeItem(KEY);
}

/** The sign-in form; signedIn gets the session once the controller knows the token. */
export function signInView(signedIn: (s: Session) => void): HTMLElement {
  const token = el("textarea", { id: "token", rows: 2, autocomplete: "off", spellcheck: false, placeholder: "vp_…" });
  const problem = el("p", { class: "field-error", "data-testid": "signin-error" });
  const submit = async (event: Event) => {
    event.preventDefault();
    problem.textContent = "";
    const secret = token.value.trim();
    try {
      const session = await open(secret);
      sessionStorage.setItem(KEY, secret);
      signedIn(session);
    } catch (error) {
      problem.textContent = describe(error);
    }
  };
  return el(
    "form",
    { class: "card", "data-testid": "signin", onsubmit: (e: Event) => void submit(e) },
    el("h2", {}, "Sign in"),
    el("label", { for: "token" }, "API token"),
    token,
    el(
      "p",
      { class: "muted" },
      "The bootstrap admin's token is admin.token in the controller's state folder; ",
      "an admin makes more with `virtplane token create`.",
    ),
    problem,
    el("button", { type: "submit" }, "Sign in"),
  );
}
