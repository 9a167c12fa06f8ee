// The audit page: verify the latest checkpoint against a pinned key, look up entries, and prove
// each one's inclusion in the verified checkpoint, all in the browser.

import { getJSON, getText } from "./api.js";
import { navFor, whoami } from "./session.js";
import { b64decode, b64encode, leafHash, verifyCheckpoint, verifyInclusion } from "./tlog.js";
import { status } from "./ui.js";

const $ = (id) => document.getElementById(id);
const KEY = "bsn.audit.vkey";
let verified = null; // { origin, size, root } of the checkpoint whose signature checked out

async function checkCheckpoint() {
  const out = $("cp-status");
  const vkey = $("vkey").value.trim();
  if (!vkey) {
    status(out, "bad", "Paste the log's verifier key first.");
    $("vkey").focus();
    return;
  }
  status(out, "info", "Verifying…");
  try {
    const note = await getText("/log/checkpoint");
    verified = await verifyCheckpoint(note, vkey);
    localStorage.setItem(KEY, vkey);
    $("cp-origin").textContent = verified.origin;
    $("cp-size").textContent = `${verified.size} entries`;
    $("cp-root").textContent = b64encode(verified.root);
    $("cp-facts").hidden = false;
    status(out, "ok", `Signature valid: the log's key signed this checkpoint of ${verified.size} entries.`);
  } catch (e) {
    verified = null;
    $("cp-facts").hidden = true;
    status(out, "bad", `Checkpoint NOT verified: ${e.message}`);
  }
}

async function proveEntry(item, cell) {
  cell.textContent = "checking…";
  try {
    if (!verified) await checkCheckpoint();
    if (!verified) throw new Error("verify the checkpoint first");
    if (item.index >= verified.size) throw new Error("newer than the verified checkpoint; verify it again");
    const p = await getJSON("/api/v1/log/proof/inclusion", { index: item.index, size: verified.size });
    const proof = p.inclusion_proof.map(b64decode);
    const ok = await verifyInclusion(item.index, verified.size, await leafHash(b64decode(item.leaf)), proof, verified.root);
    cell.innerHTML = "";
    const v = document.createElement("span");
    v.className = ok ? "verdict ok" : "verdict bad";
    v.textContent = ok ? `✓ included (${proof.length} hash${proof.length === 1 ? "" : "es"})` : "✗ proof does NOT verify";
    cell.append(v);
  } catch (e) {
    cell.innerHTML = "";
    const v = document.createElement("span");
    v.className = "verdict bad";
    v.textContent = `✗ ${e.message}`;
    cell.append(v);
  }
}

function render(items, caption) {
  const table = $("results");
  const body = table.querySelector("tbody");
  body.innerHTML = "";
  for (const item of items) {
    const tr = document.createElement("tr");
    const cells = [
      String(item.index),
      null,
      item.identity,
      item.serial || "—",
      item.at,
    ];
    cells.forEach((text, i) => {
      const td = document.createElement("td");
      if (i === 1) {
        const b = document.createElement("span");
        b.className = `badge ${item.kind}`;
        b.textContent = item.kind;
        td.append(b);
      } else {
        td.textContent = text;
      }
      if (i === 3) td.className = "mono opt";
      if (i === 4) td.className = "opt";
      tr.append(td);
    });
    const td = document.createElement("td");
    const btn = document.createElement("button");
    btn.type = "button";
    btn.className = "secondary";
    btn.textContent = "Verify";
    btn.setAttribute("aria-label", `Verify entry ${item.index} is in the log`);
    btn.addEventListener("click", () => proveEntry(item, td));
    td.append(btn);
    tr.append(td);
    body.append(tr);
  }
  $("results-caption").textContent = caption;
  table.hidden = items.length === 0;
}

async function search(params, caption) {
  const out = $("search-status");
  status(out, "info", "Searching…");
  try {
    const v = await getJSON("/api/v1/log/entries", { ...params, limit: 100 });
    render(v.items, caption);
    if (v.items.length === 0) status(out, "info", "No entries match.");
    else status(out, "ok", `${v.items.length} entr${v.items.length === 1 ? "y" : "ies"}${v.next_after !== null ? " (first 100)" : ""}.`);
  } catch (e) {
    render([], "");
    status(out, "bad", e.message);
  }
}

$("verify-cp").addEventListener("click", checkCheckpoint);
$("use-server-key").addEventListener("click", async () => {
  try {
    $("vkey").value = (await getText("/log/vkey")).trim();
    status($("cp-status"), "info", "Using the key this server publishes. Compare it with the one your CA operator gave you.");
  } catch (e) {
    status($("cp-status"), "bad", e.message);
  }
});
$("search").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const identity = $("q-identity").value.trim();
  const serial = $("q-serial").value.trim();
  if (!identity && !serial) {
    status($("search-status"), "bad", "Give an identity id or a serial.");
    return;
  }
  search({ identity, serial }, `Entries for ${[identity, serial].filter(Boolean).join(" / ")}`);
});
$("latest").addEventListener("click", async () => {
  const size = verified ? verified.size : 0;
  search({ after: Math.max(size - 51, -1) >= 0 ? size - 51 : undefined }, "Latest entries");
});

navFor(await whoami().catch(() => null));
$("vkey").value = localStorage.getItem(KEY) || "";
if ($("vkey").value) checkCheckpoint();
