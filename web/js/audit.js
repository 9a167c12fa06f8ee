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
    for (const [item, cell] of [...waiting.values()]) {
      if (item.index < verified.size) {
        waiting.delete(item.index);
        proveEntry(item, cell);
      }
    }
  } catch (e) {
    verified = null;
    $("cp-facts").hidden = true;
    status(out, "bad", `Checkpoint NOT verified: ${e.message}`);
  }
}

// Rows whose Verify waits for a (newer) verified checkpoint: they are checked again as soon as
// one is verified, instead of staying marked as failed.
const waiting = new Map(); // index -> [item, cell]

function verdict(cell, cls, text) {
  cell.innerHTML = "";
  const v = document.createElement("span");
  v.className = `verdict ${cls}`;
  v.textContent = text;
  cell.append(v);
}

function verifyButton(item, cell) {
  const btn = document.createElement("button");
  btn.type = "button";
  btn.className = "secondary";
  btn.textContent = "Verify";
  btn.setAttribute("aria-label", `Verify entry ${item.index} is in the log`);
  btn.addEventListener("click", () => proveEntry(item, cell));
  return btn;
}

/** Not a verdict on the entry: the page needs a checkpoint first. Keeps the button. */
function wait(item, cell, why) {
  waiting.set(item.index, [item, cell]);
  verdict(cell, "pending", why);
  cell.append(" ", verifyButton(item, cell));
}

async function proveEntry(item, cell) {
  cell.textContent = "checking…";
  try {
    if (!verified || item.index >= verified.size) await checkCheckpoint();
    if (!verified) return wait(item, cell, "waiting for step 1: verify the checkpoint");
    if (item.index >= verified.size) return wait(item, cell, "newer than the verified checkpoint");
    waiting.delete(item.index);
    const p = await getJSON("/api/v1/log/proof/inclusion", { index: item.index, size: verified.size });
    const proof = p.inclusion_proof.map(b64decode);
    const ok = await verifyInclusion(item.index, verified.size, await leafHash(b64decode(item.leaf)), proof, verified.root);
    verdict(cell, ok ? "ok" : "bad", ok ? `✓ included (${proof.length} hash${proof.length === 1 ? "" : "es"})` : "✗ proof does NOT verify");
  } catch (e) {
    verdict(cell, "bad", `✗ ${e.message}`);
  }
}

function render(items, caption) {
  waiting.clear();
  const table = $("results");
  const body = table.querySelector("tbody");
  body.innerHTML = "";
  for (const item of items) {
    const tr = document.createElement("tr");
    // A membership entry is about a subchain and names who changed it; the others name a
    // certificate and its holder.
    const membership = item.kind === "membership";
    const event = document.createElement("td");
    const badge = document.createElement("span");
    badge.className = `badge ${item.kind}`;
    badge.textContent = item.kind;
    event.append(badge);
    if (membership) {
      const what = document.createElement("span");
      what.className = "subject";
      what.textContent = ` of subchain ${item.subchain}, revision ${item.revision}`;
      event.append(what);
    }
    const who = document.createElement("td");
    who.textContent = membership ? `by ${item.identity}` : item.identity;
    const serial = document.createElement("td");
    serial.className = "mono opt";
    serial.textContent = item.serial || "—";
    const at = document.createElement("td");
    at.className = "opt";
    at.textContent = item.at;
    const index = document.createElement("td");
    index.textContent = String(item.index);
    const td = document.createElement("td");
    td.append(verifyButton(item, td));
    tr.append(index, event, who, serial, at, td);
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
