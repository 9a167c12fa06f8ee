import { ApiError } from "./api.js";
import { navFor, whoami } from "./session.js";

const $ = (id) => document.getElementById(id);
navFor(await whoami().catch(() => null));

$("signin").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const out = $("status");
  out.className = "status info";
  out.textContent = "Signing in…";
  try {
    const resp = await fetch("/api/v1/portal/login", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ id: $("s-id").value.trim(), password: $("s-password").value }),
    });
    const v = await resp.json();
    if (!resp.ok) throw new ApiError(resp.status, v);
    location.href = "/account";
  } catch (e) {
    out.className = "status bad";
    out.textContent = e.message;
    $("s-password").select();
  }
});
