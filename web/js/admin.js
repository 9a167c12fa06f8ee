// Administration: pending registrations, invitation codes, identities, revoking any certificate.
// Every call is the CA's API, as the signed-in administrator.

import { getJSON } from "./api.js";
import { navFor, post, whoami } from "./session.js";
import { cell, status } from "./ui.js";

const $ = (id) => document.getElementById(id);

const me = await whoami().catch(() => null);
if (!me) location.replace("/signin");
navFor(me);
if (me && !(me.roles || []).includes("admin")) {
  document.querySelector("main").innerHTML = '<h1>Administration</h1><div class="status bad">This page is for administrators.</div>';
}

async function loadPending() {
  const v = await getJSON("/api/v1/accounts", { state: "pending" });
  const body = $("pending").querySelector("tbody");
  body.innerHTML = "";
  for (const a of v.items) {
    const tr = document.createElement("tr");
    tr.append(cell(a.id), cell(a.name), cell(a.email, "opt"), cell(a.organisation || "—", "opt"));
    const td = document.createElement("td");
    const box = document.createElement("div");
    box.className = "actions";
    for (const [label, path, cls] of [["Approve", "approve", ""], ["Reject", "reject", "danger"]]) {
      const b = document.createElement("button");
      b.type = "button";
      b.className = `small ${cls}`;
      b.textContent = label;
      b.setAttribute("aria-label", `${label} ${a.id}`);
      b.addEventListener("click", async () => {
        try {
          const r = await post(`/api/v1/accounts/${a.id}/${path}`, {});
          status($("pending-status"), "ok", `${a.id} is ${r.state}.`);
        } catch (e) {
          status($("pending-status"), "bad", e.message);
        }
        await Promise.all([loadPending(), loadIdentities()]);
      });
      box.append(b);
    }
    td.append(box);
    tr.append(td);
    body.append(tr);
  }
  if (v.items.length === 0) {
    const tr = document.createElement("tr");
    const td = cell("No registrations are waiting.", "hint");
    td.colSpan = 5;
    tr.append(td);
    body.append(tr);
  }
}

async function loadIdentities() {
  const v = await getJSON("/api/v1/identities", { limit: 1000 });
  const body = $("identities").querySelector("tbody");
  body.innerHTML = "";
  for (const i of v.items) {
    const tr = document.createElement("tr");
    tr.append(cell(i.id), cell(i.type), cell(i.status), cell((i.roles || []).join(", ") || "—", "opt"));
    body.append(tr);
  }
}

$("invite").addEventListener("click", async () => {
  try {
    const v = await post("/api/v1/invitations", {});
    status($("invite-status"), "ok", `Invitation code: ${v.code} (valid until ${v.expires_at}, ${v.uses} use).`);
  } catch (e) {
    status($("invite-status"), "bad", e.message);
  }
});

$("new-identity").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const roles = [...document.querySelectorAll('input[name="role"]:checked')].map((c) => c.value);
  const dns = $("n-dns").value.split(",").map((d) => d.trim()).filter(Boolean);
  const body = { id: $("n-id").value.trim(), type: $("n-type").value, roles };
  if (dns.length) body.dns_names = dns;
  try {
    const v = await post("/api/v1/identities", body);
    status($("new-status"), "ok", `Registered ${v.id}. One-time secret (give it to them; it is not shown again): ${v.secret}`);
    ev.target.reset();
    await loadIdentities();
  } catch (e) {
    status($("new-status"), "bad", e.message);
  }
});

$("revoke").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const serial = $("rv-serial").value.trim();
  try {
    const v = await post(`/api/v1/certificates/${encodeURIComponent(serial)}/revoke`, { reason: $("rv-reason").value });
    status($("revoke-status"), "ok", `Revoked ${v.serial} (${v.reason}); CRL number ${v.crl_number}.`);
  } catch (e) {
    status($("revoke-status"), "bad", e.message);
  }
});

if (me && (me.roles || []).includes("admin")) {
  await Promise.all([loadPending(), loadIdentities()]).catch((e) => status($("pending-status"), "bad", e.message));
}
