// The signed-in session: who am I, and state-changing calls with the session's CSRF token.

import { ApiError, getJSON } from "./api.js";

export { ApiError };

let csrf = "";

/** The signed-in account, or null when nobody is signed in. */
export async function whoami() {
  const me = await getJSON("/api/v1/portal/me");
  if (!me.signed_in) return null;
  csrf = me.csrf_token;
  return me;
}

export function setCsrf(token) {
  csrf = token;
}

/** POSTs JSON with the CSRF token; returns the JSON answer (or null for 204). */
export function post(path, body = {}) {
  return send("POST", path, body);
}

/** Any state-changing call with the CSRF token; returns the JSON answer (or null for 204). */
export async function send(method, path, body) {
  const resp = await fetch(path, {
    method,
    credentials: "same-origin",
    headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (!resp.ok) {
    let problem = {};
    try { problem = await resp.json(); } catch { /* not JSON */ }
    throw new ApiError(resp.status, problem);
  }
  return resp.status === 204 ? null : resp.json();
}

/** Marks the navigation for a signed-in user (My identity, Sign out) or a visitor. */
export async function navFor(me) {
  const admin = Boolean(me && (me.roles || []).includes("admin"));
  for (const el of document.querySelectorAll("[data-when]")) {
    const when = el.dataset.when;
    el.hidden = when === "admin" ? !admin : (when === "signed-in") !== Boolean(me);
  }
  const out = document.getElementById("sign-out");
  if (out) {
    out.addEventListener("click", async () => {
      try { await post("/api/v1/portal/logout"); } finally { location.href = "/signin"; }
    });
  }
}
