import { ApiError } from "./api.js";
import { navFor, whoami } from "./session.js";

const $ = (id) => document.getElementById(id);
navFor(await whoami().catch(() => null));

function status(kind, text) {
  $("status").className = `status ${kind}`;
  $("status").textContent = text;
}

$("register").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const form = new FormData(ev.target);
  const body = Object.fromEntries(form.entries());
  if (!body.invitation) delete body.invitation;
  if (!body.secret) delete body.secret;
  if (String(body.password).length < 12) {
    status("bad", "The password must be at least 12 characters.");
    $("r-password").focus();
    return;
  }
  status("info", "Registering…");
  try {
    const resp = await fetch("/api/v1/portal/register", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body),
    });
    const v = await resp.json();
    if (!resp.ok) throw new ApiError(resp.status, v);
    if (v.state === "approved") {
      status("ok", `Registered and approved (${body.secret ? "identity claimed" : "invitation"}). You can sign in as ${v.id} now.`);
    } else {
      status("ok", `Registered as ${v.id}. An administrator will review your registration; sign in once it is approved.`);
    }
    ev.target.reset();
  } catch (e) {
    status("bad", e.message);
  }
});
