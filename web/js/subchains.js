// Subchains: my memberships, the directory (join), publishing one, and managing the ones I
// manage (join requests, members and roles). Every call is the registry API, as me.

import { getJSON } from "./api.js";
import { navFor, post, send, whoami } from "./session.js";
import { button, cell, status } from "./ui.js";
import { bytes, renderUsage } from "./usage.js";

const $ = (id) => document.getElementById(id);
const ROLES = ["reader", "writer", "admin"];

const me = await whoami().catch(() => null);
if (!me) location.replace("/signin");
navFor(me);
const canPublish = Boolean(me && (me.roles || []).some((r) => r === "publisher" || r === "admin"));
let managed = [];

// Where a subchain is served: its hosting city nodes' URLs and cities, from the CA's signed node
// directory (a node that has not published its entry yet is named without a URL).
function servedAt(s) {
  const published = (s.endpoints || []).map((e) => `${e.url} (${e.city})`);
  const missing = s.nodes.filter((n) => !(s.endpoints || []).some((e) => e.id === n));
  return [...published, ...missing].join(", ");
}

async function loadMine(dir) {
  const v = await getJSON("/api/v1/memberships");
  const ul = $("mine");
  ul.innerHTML = "";
  for (const m of v.items) {
    const li = document.createElement("li");
    const s = dir.items.find((d) => d.id === m.subchain);
    li.textContent = `${m.subchain} — ${m.role}`;
    if (s && s.endpoints && s.endpoints.length) {
      const at = document.createElement("span");
      at.className = "hint";
      at.textContent = ` · connect to ${servedAt(s)}`;
      li.append(at);
    }
    ul.append(li);
  }
  if (v.items.length === 0) status($("mine-status"), "info", "You are not a member of any subchain yet.");
  else $("mine-status").className = "status";
  return v.items;
}

async function loadDirectory() {
  const dir = await getJSON("/api/v1/subchains", { limit: 1000 });
  const mine = await loadMine(dir);
  const body = $("directory").querySelector("tbody");
  body.innerHTML = "";
  managed = [];
  for (const s of dir.items) {
    const role = mine.find((m) => m.subchain === s.id)?.role;
    if (me.roles.includes("admin") || s.publisher === me.id || role === "admin") managed.push(s);
    const tr = document.createElement("tr");
    const name = cell(`${s.name} (${s.id})`);
    if (s.description) name.title = s.description;
    tr.append(name, cell(s.publisher, "opt"), cell(s.policy), cell(String(s.members), "opt"), cell(servedAt(s), "opt"));
    const td = document.createElement("td");
    if (role) {
      td.textContent = `member (${role})`;
    } else {
      const sel = document.createElement("select");
      sel.setAttribute("aria-label", `Role to ask for on ${s.id}`);
      for (const r of ROLES) sel.append(new Option(r, r));
      const join = button("Join", `Join ${s.id}`, "", async () => {
        try {
          const v = await post(`/api/v1/subchains/${s.id}/join`, { role: sel.value });
          status($("dir-status"), "ok", v.outcome === "member"
            ? `You joined ${s.id} as ${sel.value}.`
            : `Your request to join ${s.id} as ${sel.value} is waiting for approval.`);
          await loadDirectory();
        } catch (e) {
          status($("dir-status"), "bad", e.message);
        }
      });
      const box = document.createElement("div");
      box.className = "actions";
      box.append(sel, join);
      td.append(box);
    }
    tr.append(td);
    body.append(tr);
  }
  if (dir.items.length === 0) status($("dir-status"), "info", "No subchains yet.");
  const select = $("m-subchain");
  const current = select.value;
  select.innerHTML = "";
  for (const s of managed) select.append(new Option(`${s.name} (${s.id})`, s.id));
  if (managed.some((s) => s.id === current)) select.value = current;
  $("manage-card").hidden = managed.length === 0;
  if (managed.length) await loadManaged();
}

async function loadManaged() {
  const id = $("m-subchain").value;
  const out = $("manage-status");
  const [reqs, members, usage] = [
    await getJSON(`/api/v1/subchains/${id}/requests`),
    await getJSON(`/api/v1/subchains/${id}/members`, { limit: 1000 }),
    await getJSON(`/api/v1/subchains/${id}/usage`).catch(() => null),
  ];
  if (usage) renderUsage($("usage-charts"), $("usage-plan"), usage);
  else $("usage-plan").textContent = "Usage is shown to the publisher, the subchain's admins and CA administrators.";
  const rb = $("requests").querySelector("tbody");
  rb.innerHTML = "";
  for (const r of reqs.items) {
    const tr = document.createElement("tr");
    tr.append(cell(r.identity), cell(r.role), cell(r.note || "—", "opt"));
    const td = document.createElement("td");
    const box = document.createElement("div");
    box.className = "actions";
    box.append(
      button("Approve", `Approve ${r.identity}`, "", async () => {
        try {
          const v = await post(`/api/v1/subchains/${id}/requests/${r.identity}/approve`, {});
          status(out, "ok", `${r.identity} admitted: ${id} is at revision ${v.revision}.`);
        } catch (e) { status(out, "bad", e.message); }
        await loadDirectory();
      }),
      button("Reject", `Reject ${r.identity}`, "danger", async () => {
        try {
          await post(`/api/v1/subchains/${id}/requests/${r.identity}/reject`, {});
          status(out, "ok", `Request of ${r.identity} rejected.`);
        } catch (e) { status(out, "bad", e.message); }
        await loadDirectory();
      }),
    );
    td.append(box);
    tr.append(td);
    rb.append(tr);
  }
  if (reqs.items.length === 0) rb.append(Object.assign(document.createElement("tr"), { innerHTML: '<td colspan="4" class="hint">No pending requests.</td>' }));
  const mb = $("members").querySelector("tbody");
  mb.innerHTML = "";
  for (const m of members.items) {
    const tr = document.createElement("tr");
    tr.append(cell(m.id), cell(m.role));
    const td = document.createElement("td");
    const box = document.createElement("div");
    box.className = "actions";
    const sel = document.createElement("select");
    sel.setAttribute("aria-label", `New role for ${m.id}`);
    for (const r of ROLES) sel.append(new Option(r, r, false, r === m.role));
    box.append(
      sel,
      button("Set role", `Set the role of ${m.id}`, "secondary", async () => {
        try {
          const v = await send("PUT", `/api/v1/subchains/${id}/members/${m.id}`, { role: sel.value });
          status(out, "ok", `${m.id} is now ${sel.value} (revision ${v.revision}).`);
        } catch (e) { status(out, "bad", e.message); }
        await loadManaged();
      }),
      button("Remove", `Remove ${m.id}`, "danger", async () => {
        try {
          const v = await send("DELETE", `/api/v1/subchains/${id}/members/${m.id}`);
          status(out, "ok", `${m.id} removed (revision ${v.revision}).`);
        } catch (e) { status(out, "bad", e.message); }
        await loadDirectory();
      }),
    );
    td.append(box);
    tr.append(td);
    mb.append(tr);
  }
}

$("m-subchain").addEventListener("change", () => loadManaged().catch((e) => status($("manage-status"), "bad", e.message)));
$("create-card").hidden = !canPublish;
// The plans a publisher may choose (administrators may assign any), from the public list.
async function loadPlans() {
  const { plans } = await getJSON("/api/v1/plans");
  const admin = me.roles.includes("admin");
  const select = $("c-plan");
  select.replaceChildren(new Option("The cheapest open plan", ""));
  for (const { plan: p, open } of plans) {
    if (!open && !admin) continue;
    const label = `${p.name}: ${p.tenancy}, ${p.rate} tx/s, ${bytes(p.storage)}, ${bytes(p.bandwidth)}/s`;
    select.append(new Option(label, p.name));
  }
}

const list = (v) => String(v || "").split(",").map((n) => n.trim()).filter(Boolean);

$("create").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const f = Object.fromEntries(new FormData(ev.target).entries());
  const [nodes, cities] = [list(f.nodes), list(f.cities)];
  if ((nodes.length === 0) === (cities.length === 0)) {
    status($("create-status"), "bad", "Name the cities to place it in, or its hosting nodes by hand (not both).");
    return;
  }
  const body = { id: f.id, name: f.name, description: f.description, policy: f.policy, nodes, cities };
  if (f.plan) body.plan = f.plan;
  try {
    const v = await post("/api/v1/subchains", body);
    const s = await getJSON(`/api/v1/subchains/${v.subchain}`);
    const plan = s.plan ? `plan ${s.plan.name}` : "no plan";
    status($("create-status"), "ok",
      `Published ${v.subchain} (revision ${v.revision}) on ${servedAt(s)}, ${plan}; you are its first admin.`);
    ev.target.reset();
    await loadDirectory();
  } catch (e) {
    status($("create-status"), "bad", e.message);
  }
});
if (canPublish) await loadPlans().catch((e) => status($("create-status"), "bad", e.message));

if (me) await loadDirectory().catch((e) => status($("dir-status"), "bad", e.message));
