// My identity: who I am, getting a certificate for a key made here, my certificates (download
// again, revoke with a reason).

import { getJSON } from "./api.js";
import { download, ed25519Supported, newKey, privatePem, prove, spki } from "./keys.js";
import { navFor, post, whoami } from "./session.js";
import { status } from "./ui.js";

const $ = (id) => document.getElementById(id);
const REASONS = ["unspecified", "keyCompromise", "affiliationChanged", "superseded", "cessationOfOperation"];

const me = await whoami().catch(() => null);
if (!me) location.replace("/signin");
navFor(me);
let chain = "";

async function loadCertificates() {
  const v = await getJSON("/api/v1/portal/certificates");
  chain = v.chain;
  const body = $("certs").querySelector("tbody");
  body.innerHTML = "";
  for (const c of v.items) {
    const tr = document.createElement("tr");
    const serial = document.createElement("td");
    serial.className = "mono";
    serial.textContent = c.serial;
    const st = document.createElement("td");
    const badge = document.createElement("span");
    badge.className = `badge ${c.status}`;
    badge.textContent = c.status + (c.revocation_reason ? ` (${c.revocation_reason})` : "");
    st.append(badge);
    const until = document.createElement("td");
    until.className = "opt";
    until.textContent = c.not_after;
    const actions = document.createElement("td");
    const box = document.createElement("div");
    box.className = "actions";
    const dl = document.createElement("button");
    dl.type = "button";
    dl.className = "secondary small";
    dl.textContent = "Download";
    dl.setAttribute("aria-label", `Download certificate ${c.serial} and chain`);
    dl.addEventListener("click", () => download(`${me.id}-${c.serial.slice(0, 8)}-cert.pem`, c.certificate + chain));
    box.append(dl);
    if (c.status === "valid") {
      const sel = document.createElement("select");
      sel.setAttribute("aria-label", `Reason to revoke ${c.serial}`);
      for (const r of REASONS) sel.append(new Option(r, r));
      const rv = document.createElement("button");
      rv.type = "button";
      rv.className = "danger small";
      rv.textContent = "Revoke";
      rv.setAttribute("aria-label", `Revoke certificate ${c.serial}`);
      rv.addEventListener("click", async () => {
        if (!confirm(`Revoke ${c.serial}? Every node refuses it within seconds; this cannot be undone.`)) return;
        try {
          await post(`/api/v1/portal/certificates/${c.serial}/revoke`, { reason: sel.value });
          status($("certs-status"), "ok", `Revoked ${c.serial} (${sel.value}).`);
        } catch (e) {
          status($("certs-status"), "bad", e.message);
        }
        loadCertificates();
      });
      box.append(sel, rv);
    }
    actions.append(box);
    tr.append(serial, st, until, actions);
    body.append(tr);
  }
  $("certs-card").hidden = v.items.length === 0;
  // Just issued: the card shows that certificate. Otherwise, with a valid certificate, this is
  // renewal: a new key, a new certificate, the same identity.
  const renewal = v.items.some((c) => c.status === "valid");
  $("enroll-title").textContent = !$("issued").hidden
    ? "Your new certificate"
    : renewal ? "Renew: a new key and a new certificate" : "Get a certificate";
  $("enroll").textContent = renewal ? "Make another key and certificate" : "Make a key and get a certificate";
}

if (me) {
  $("who-id").textContent = me.id;
  $("who-spiffe").textContent = me.spiffe_id;
  $("who-name").textContent = me.name;
  $("who-email").textContent = me.email;
  $("who-org").textContent = me.organisation || "—";
  $("who-state").textContent = me.state;
  $("pending").hidden = me.state !== "pending";
  $("enroll-card").hidden = me.state !== "approved";
  if (!(await ed25519Supported())) $("key-type").querySelector('option[value="ed25519"]').disabled = true;
  if (me.state === "approved") await loadCertificates();
}

let bundle = "";
$("enroll").addEventListener("click", async () => {
  const out = $("enroll-status");
  const button = $("enroll");
  button.disabled = true;
  $("issued").hidden = true;
  status(out, "info", "Making a key and asking for a certificate…");
  const started = performance.now();
  try {
    const key = await newKey($("key-type").value);
    const { challenge } = await post("/api/v1/portal/challenge");
    const issued = await post("/api/v1/portal/enroll", {
      challenge,
      spki: await spki(key),
      signature: await prove(key, challenge),
    });
    bundle = (await privatePem(key)) + issued.certificate + issued.chain;
    const ms = Math.round(performance.now() - started);
    $("issued-serial").textContent = issued.serial;
    $("issued-until").textContent = issued.not_after;
    $("issued-receipt").textContent = issued.receipt
      ? `#${issued.receipt.leaf_index} in a tree of ${issued.receipt.tree_size} (signed checkpoint and inclusion proof received)`
      : "—";
    $("issued").hidden = false;
    status(out, "ok", `Certificate issued in ${ms} ms. Download it now: the key exists only in this page.`);
    out.dataset.ms = String(ms);
    $("download").focus();
    await loadCertificates();
  } catch (e) {
    status(out, "bad", e.message);
  } finally {
    button.disabled = false;
  }
});

$("download").addEventListener("click", () => download(`${me.id}-bundle.pem`, bundle));
