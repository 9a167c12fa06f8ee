// Administration: pending registrations, invitation codes, identities (their certificates, a new
// secret, disable and enable), revoking any certificate.
// Every call is the CA's API, as the signed-in administrator.

import { getJSON } from "./api.js";
import { navFor, post, whoami } from "./session.js";
import { button, cell, status } from "./ui.js";
import { bytes } from "./usage.js";

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

const REASONS = ["unspecified", "keyCompromise", "affiliationChanged", "superseded", "cessationOfOperation", "privilegeWithdrawn"];

function badge(text, cls) {
  const b = document.createElement("span");
  b.className = `badge ${cls}`;
  b.textContent = text;
  return b;
}

/** Runs an identity action, says what happened, and redraws what it changed. */
async function act(what, f) {
  try {
    status($("ids-status"), "ok", await f());
  } catch (e) {
    status($("ids-status"), "bad", `${what}: ${e.message}`);
  }
}

async function loadIdentities() {
  const v = await getJSON("/api/v1/identities", { limit: 1000 });
  const body = $("identities").querySelector("tbody");
  body.innerHTML = "";
  for (const i of v.items) {
    const tr = document.createElement("tr");
    const st = document.createElement("td");
    st.append(badge(i.status, i.status));
    tr.append(cell(i.id), cell(i.type, "opt"), st, cell((i.roles || []).join(", ") || "—", "opt"));
    const td = document.createElement("td");
    const box = document.createElement("div");
    box.className = "actions";
    box.append(
      button("Certificates", `Certificates of ${i.id}`, "secondary", () => showCertificates(i.id)),
      button("New secret", `New enrollment secret for ${i.id}`, "secondary", () =>
        act(`New secret for ${i.id}`, async () => {
          const s = await post(`/api/v1/identities/${encodeURIComponent(i.id)}/secret`, {});
          return `New one-time secret for ${i.id} (the old one no longer works; it is not shown again): ${s.secret} — valid until ${s.secret_expires_at}.`;
        })),
    );
    const [label, path, cls] = i.status === "disabled" ? ["Enable", "enable", ""] : ["Disable", "disable", "danger"];
    box.append(
      button(label, `${label} ${i.id}`, cls, () =>
        act(`${label} ${i.id}`, async () => {
          const r = await post(`/api/v1/identities/${encodeURIComponent(i.id)}/${path}`, {});
          await loadIdentities();
          return r.status === "disabled"
            ? `${r.id} is disabled: it can no longer enroll, renew or call the CA. Its certificates stay valid on the nodes until they expire or you revoke them (Certificates).`
            : `${r.id} is active again.`;
        })),
    );
    td.append(box);
    tr.append(td);
    body.append(tr);
  }
}

/** The certificates of one identity, each valid one with a Revoke that asks to be confirmed. */
async function showCertificates(id, done = "") {
  $("certs-card").hidden = false;
  $("certs-title").textContent = `Certificates of ${id}`;
  status($("certs-status"), "info", "Loading…");
  try {
    const v = await getJSON("/api/v1/certificates", { identity: id, limit: 1000 });
    const body = $("certs").querySelector("tbody");
    body.innerHTML = "";
    for (const c of v.items) {
      const tr = document.createElement("tr");
      const st = document.createElement("td");
      st.append(badge(c.status + (c.revocation_reason ? ` (${c.revocation_reason})` : ""), c.status));
      tr.append(cell(c.serial, "mono"), st, cell(c.issued_at, "opt"), cell(c.not_after, "opt"));
      const td = document.createElement("td");
      if (c.status === "valid") {
        const box = document.createElement("div");
        box.className = "actions";
        const sel = document.createElement("select");
        sel.setAttribute("aria-label", `Reason to revoke ${c.serial}`);
        for (const r of REASONS) sel.append(new Option(r, r));
        const rv = button("Revoke", `Revoke certificate ${c.serial}`, "danger", async () => {
          // Revocation cannot be undone: the first press asks, the second revokes.
          if (rv.dataset.armed !== "yes") {
            rv.dataset.armed = "yes";
            rv.textContent = "Confirm revoke";
            return;
          }
          let r;
          try {
            r = await post(`/api/v1/certificates/${c.serial}/revoke`, { reason: sel.value });
          } catch (e) {
            status($("certs-status"), "bad", e.message);
            return;
          }
          await showCertificates(id, `Revoked ${r.serial} (${r.reason}); CRL number ${r.crl_number}. Nodes refuse it within seconds.`);
        });
        box.append(sel, rv);
        td.append(box);
      } else {
        td.textContent = "—";
      }
      tr.append(td);
      body.append(tr);
    }
    if (v.items.length === 0) {
      const tr = document.createElement("tr");
      const td = cell(`${id} has no certificates yet.`, "hint");
      td.colSpan = 5;
      tr.append(td);
      body.append(tr);
    }
    status($("certs-status"), done ? "ok" : "", done);
    $("certs-card").scrollIntoView({ block: "nearest" });
  } catch (e) {
    status($("certs-status"), "bad", e.message);
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

// Each city node's placement and load: the subchains on it and the plan rates they declare,
// against what it offers.
async function loadNodes() {
  const [dir, subs] = [await getJSON("/api/v1/nodes"), await getJSON("/api/v1/subchains", { limit: 1000 })];
  const body = $("city-nodes").querySelector("tbody");
  body.innerHTML = "";
  for (const n of dir.nodes.filter((n) => n.role === "node")) {
    const on = subs.items.filter((s) => s.nodes.includes(n.id));
    const rate = on.reduce((a, s) => a + (s.plan ? s.plan.rate : 0), 0);
    const c = n.capacity;
    const offers = c ? `${c.tenancy}, ${c.rate} tx/s, ${bytes(c.storage)}${n.draining ? " (draining)" : ""}` : "pinned by hand only";
    const load = c ? `${rate} of ${c.rate} tx/s (${Math.round((100 * rate) / c.rate)}%)` : `${rate} tx/s`;
    const tr = document.createElement("tr");
    tr.append(cell(n.id), cell(n.city), cell(offers, "opt"), cell(String(on.length)), cell(load));
    body.append(tr);
  }
  if (!body.children.length) status($("nodes-status"), "info", "No city node has published its entry yet.");
}

if (me && (me.roles || []).includes("admin")) {
  await Promise.all([loadPending(), loadIdentities()]).catch((e) => status($("pending-status"), "bad", e.message));
  await loadNodes().catch((e) => status($("nodes-status"), "bad", e.message));
}
