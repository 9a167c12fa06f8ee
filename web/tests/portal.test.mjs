// The portal in a real browser: register -> approve -> sign in -> a key made in the browser ->
// certificate -> download -> that key and certificate used by curl against the CA's mTLS renew
// endpoint; a wrong password; the sign-in rate limit; cross-site requests refused; revoking.

import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { createServer } from "node:http";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { DESKTOP, PHONE, asAdmin, browser, repo, run, startCa } from "./harness.mjs";

let ca;
let chrome;
let ctx;
let page;
const PASSWORD = "correct horse battery staple";

before(async () => {
  ca = await startCa();
  chrome = await browser();
  ctx = await chrome.newContext({ ignoreHTTPSErrors: true, viewport: DESKTOP, acceptDownloads: true });
  page = await ctx.newPage();
  page.on("dialog", (d) => d.accept());
});

after(async () => {
  await chrome?.close();
  ca?.stop();
});

async function signIn(p, id, password) {
  await p.goto(`${ca.url}/signin`);
  await p.getByLabel("Identity id").fill(id);
  await p.getByLabel("Password").fill(password);
  await p.getByRole("button", { name: "Sign in" }).click();
}

test("register, approve, sign in, enroll in the browser, and use the bundle with curl", async () => {
  await page.goto(`${ca.url}/register`);
  await page.getByLabel("Identity id").fill("ann");
  await page.getByLabel("Name").fill("Ann Lee");
  await page.getByLabel("Email").fill("ann@example.org");
  await page.getByLabel("Organisation (optional)").fill("Shipping Co");
  await page.getByLabel("Password", { exact: true }).fill(PASSWORD);
  await page.screenshot({ path: join(repo, "docs/screenshots/register-desktop.png"), fullPage: true });
  await page.getByRole("button", { name: "Register" }).click();
  await page.locator("#status.ok").waitFor();
  assert.match(await page.locator("#status").innerText(), /administrator will review/);

  // Pending: signed in, but no certificate yet.
  await signIn(page, "ann", PASSWORD);
  await page.waitForURL("**/account");
  await page.locator("#pending:not([hidden])").waitFor();
  assert.equal(await page.locator("#enroll-card").isHidden(), true);

  // An administrator approves (mTLS API).
  const pending = await asAdmin(ca, "GET", "/api/v1/accounts?state=pending");
  assert.deepEqual(pending.items.map((a) => a.id), ["ann"]);
  assert.equal((await asAdmin(ca, "POST", "/api/v1/accounts/ann/approve", {})).state, "approved");

  await page.reload();
  await page.locator("#enroll-card:not([hidden])").waitFor();
  assert.equal(await page.locator("#enroll-title").innerText(), "Get a certificate");
  await page.getByRole("button", { name: "Make a key and get a certificate" }).click();
  await page.locator("#enroll-status.ok, #enroll-status.bad").waitFor();
  assert.match(await page.locator("#enroll-status").innerText(), /Certificate issued/);
  // The card now shows the certificate just issued, and says how to use the download.
  assert.equal(await page.locator("#enroll-title").innerText(), "Your new certificate");
  assert.match(await page.locator("#issued").innerText(), /bsn --cert bundle\.pem --key bundle\.pem/);
  const ms = Number(await page.locator("#enroll-status").getAttribute("data-ms"));
  console.log(`key generation + challenge + proof + issuance in the browser: ${ms} ms`);
  assert.ok(ms < 2000, `enrollment took ${ms} ms`);
  assert.match(await page.locator("#issued-receipt").innerText(), /signed checkpoint/);
  await page.screenshot({ path: join(repo, "docs/screenshots/account-desktop.png"), fullPage: true });

  const [dl] = await Promise.all([page.waitForEvent("download"), page.getByRole("button", { name: /Download key/ }).click()]);
  const bundle = join(ca.dir, "ann-bundle.pem");
  await dl.saveAs(bundle);
  const pem = readFileSync(bundle, "utf8");
  assert.equal((pem.match(/BEGIN PRIVATE KEY/g) || []).length, 1);
  assert.equal((pem.match(/BEGIN CERTIFICATE/g) || []).length, 2, "leaf and intermediate");

  // The downloaded key and certificate work with curl against the mTLS renew endpoint.
  const csr = join(ca.dir, "renew.csr");
  await run("openssl", ["req", "-new", "-key", bundle, "-subj", "/CN=ignored", "-out", csr]);
  writeFileSync(join(ca.dir, "renew.json"), JSON.stringify({ csr: readFileSync(csr, "utf8") }));
  const { stdout } = await run("curl", ["-sS", "--fail-with-body", "--cacert", ca.bundle, "--cert", bundle,
    "-H", "content-type: application/json", "--data", `@${join(ca.dir, "renew.json")}`, `${ca.url}/api/v1/renew`]);
  const renewed = JSON.parse(stdout);
  assert.equal(renewed.spiffe_id, "spiffe://bsn.local/participant/ann");
  assert.ok(renewed.receipt.leaf_index > 0);
  // ...and with `bsn`, as the page says: the one file is both --cert and --key.
  const mine = JSON.parse(await ca.bsn("certificates", "--cert", bundle, "--key", bundle, "--json"));
  assert.ok(mine.some((c) => c.serial === renewed.serial), "bsn sees the certificate curl renewed");

  // Back on the page later: with a valid certificate, the card offers renewal.
  await page.reload();
  await page.locator("#certs-card:not([hidden])").waitFor();
  assert.equal(await page.locator("#enroll-title").innerText(), "Renew: a new key and a new certificate");
  await page.getByRole("button", { name: "Make another key and certificate" }).waitFor();
});

test("a wrong password, then the rate limit, each with a clear message", async () => {
  const p = await ctx.newPage();
  await signIn(p, "ann", "not the password at all");
  await p.locator("#status.bad").waitFor();
  assert.match(await p.locator("#status").innerText(), /wrong identity id or password/);
  let message = "";
  for (let i = 0; i < 6; i++) {
    await signIn(p, "mallory-target", `guess number ${i}!`);
    await p.locator("#status.bad").waitFor();
    message = await p.locator("#status").innerText();
  }
  assert.match(message, /too many sign-in attempts; try again in \d+ seconds/);
  await p.close();
});

test("cross-site requests cannot act with the session", async () => {
  const me = await page.evaluate(async () => (await fetch("/api/v1/portal/me")).json());
  const certs = await page.evaluate(async () => (await fetch("/api/v1/portal/certificates")).json());
  const serial = certs.items.find((c) => c.status === "valid").serial;
  const revokeUrl = `${ca.url}/api/v1/portal/certificates/${serial}/revoke`;
  // A page on another origin posts a form and a fetch at the CA, in the same browser.
  const evil = createServer((req, res) => {
    res.setHeader("content-type", "text/html");
    res.end(`<!doctype html><form id=f method=POST action="${revokeUrl}" enctype="text/plain">
      <input name='{"reason":"keyCompromise","x":"' value='"}'></form>
      <script>
        fetch(${JSON.stringify(revokeUrl)}, { method: "POST", credentials: "include", mode: "no-cors",
          headers: { "Content-Type": "text/plain" }, body: '{"reason":"keyCompromise"}' })
          .finally(() => document.getElementById("f").submit());
      </script>`);
  });
  await new Promise((ok) => evil.listen(0, "127.0.0.1", ok));
  const attacker = await ctx.newPage();
  await attacker.goto(`http://127.0.0.1:${evil.address().port}/`);
  await attacker.waitForLoadState("networkidle");
  await attacker.close();
  evil.close();
  // With the session cookie but a foreign Origin, or without the CSRF token: refused.
  const forged = await page.request.post(revokeUrl, {
    headers: { Origin: "https://evil.example", "X-CSRF-Token": me.csrf_token },
    data: { reason: "keyCompromise" },
  });
  assert.equal(forged.status(), 403);
  assert.equal((await forged.json()).type, "urn:bsn:problem:csrf-rejected");
  const tokenless = await page.request.post(revokeUrl, { data: { reason: "keyCompromise" } });
  assert.equal(tokenless.status(), 403);
  // Nothing was revoked.
  const listing = await asAdmin(ca, "GET", `/api/v1/certificates/${serial}`);
  assert.equal(listing.status, "valid");
});

test("revoking a certificate from My identity", async () => {
  await page.goto(`${ca.url}/account`);
  const row = page.locator("#certs tbody tr").filter({ hasText: "valid" }).first();
  const serial = (await row.locator("td").first().innerText()).trim();
  await row.getByLabel(/Reason to revoke/).selectOption("keyCompromise");
  await row.getByRole("button", { name: /Revoke certificate/ }).click();
  await page.locator("#certs-status.ok").waitFor();
  assert.match(await page.locator("#certs-status").innerText(), new RegExp(`Revoked ${serial}`));
  const listing = await asAdmin(ca, "GET", `/api/v1/certificates/${serial}`);
  assert.equal(listing.status, "revoked");
  assert.equal(listing.revocation_reason, "keyCompromise");
});

test("an invitation code approves at once; pages at phone width", async () => {
  const inv = await asAdmin(ca, "POST", "/api/v1/invitations", {});
  const p = await chrome.newContext({ ignoreHTTPSErrors: true, viewport: PHONE }).then((c) => c.newPage());
  await p.goto(`${ca.url}/register`);
  await p.getByLabel("Identity id").fill("ben");
  await p.getByLabel("Name").fill("Ben Ito");
  await p.getByLabel("Email").fill("ben@example.org");
  await p.getByLabel("Password", { exact: true }).fill(PASSWORD);
  await p.getByLabel("Invitation code (optional)").fill(inv.code);
  await p.getByRole("button", { name: "Register" }).click();
  await p.locator("#status.ok").waitFor();
  assert.match(await p.locator("#status").innerText(), /approved \(invitation\)/);
  await p.screenshot({ path: join(repo, "docs/screenshots/register-phone.png"), fullPage: true });
  await p.goto(`${ca.url}/signin`);
  await p.screenshot({ path: join(repo, "docs/screenshots/signin-phone.png"), fullPage: true });
  await signIn(p, "ben", PASSWORD);
  await p.waitForURL("**/account");
  await p.getByLabel("Key type").selectOption("ed25519");
  await p.getByRole("button", { name: "Make a key and get a certificate" }).click();
  await p.locator("#enroll-status.ok").waitFor();
  const width = await p.evaluate(() => document.documentElement.scrollWidth);
  assert.ok(width <= PHONE.width, `page is ${width}px wide`);
  await p.screenshot({ path: join(repo, "docs/screenshots/account-phone.png"), fullPage: true });
  // The same code does not work twice.
  const again = await p.request.post(`${ca.url}/api/v1/portal/register`, {
    data: { id: "cy", name: "Cy", email: "cy@example.org", password: PASSWORD, invitation: inv.code },
  });
  assert.equal(again.status(), 400);
  const signin = await chrome.newContext({ ignoreHTTPSErrors: true, viewport: DESKTOP }).then((c) => c.newPage());
  await signin.goto(`${ca.url}/signin`);
  await signin.screenshot({ path: join(repo, "docs/screenshots/signin-desktop.png"), fullPage: true });
});
