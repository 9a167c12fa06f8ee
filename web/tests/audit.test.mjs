// The audit page in a real browser: an auditor pins the log's verifier key, verifies the
// checkpoint's signature and an entry's inclusion proof with WebCrypto, and sees forged data
// (a tampered proof, a tampered checkpoint, the wrong key) refused.

import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { join } from "node:path";
import { DESKTOP, PHONE, browser, participant, repo, startCa } from "./harness.mjs";

let ca;
let chrome;

before(async () => {
  ca = await startCa();
  const alice = await participant(ca, "alice");
  // A second certificate for alice, then a revocation: three entries of her history.
  await ca.bsn("renew", "--cert", join(alice, "cert.pem"), "--key", join(alice, "key.pem"));
  const admin = join(ca.dir, "admin");
  const creds = ["--cert", join(admin, "cert.pem"), "--key", join(admin, "key.pem")];
  const listing = await ca.bsn("certificates", ...creds, "--identity", "alice");
  const serial = /[0-9a-f]{16,}/.exec(listing)[0];
  await ca.bsn("revoke", ...creds, "--serial", serial, "--reason", "keyCompromise");
  // A subchain: a membership entry, made by the administrator.
  await ca.bsn("register", ...creds, "--id", "city-1", "--type", "node", "--dns", "city-1.test");
  await ca.bsn("subchain", "create", ...creds, "trade", "--name", "Trade", "--node", "city-1", "--no-orderers");
  chrome = await browser();
});

after(async () => {
  await chrome?.close();
  ca?.stop();
});

async function open(path, viewport = DESKTOP) {
  const ctx = await chrome.newContext({ ignoreHTTPSErrors: true, viewport });
  const p = await ctx.newPage();
  const errors = [];
  p.on("pageerror", (e) => errors.push(e.message));
  p.on("console", (m) => m.type() === "error" && errors.push(m.text()));
  await p.goto(`${ca.url}${path}`);
  return { p, errors };
}

async function verifyCheckpoint(p, vkey) {
  await p.getByLabel("Log verifier key").fill(vkey);
  // Keyboard only: from the key field, Tab reaches the button and Enter presses it.
  await p.getByLabel("Log verifier key").press("Tab");
  await p.keyboard.press("Enter");
  await p.locator("#cp-status.ok, #cp-status.bad").waitFor();
  return p.locator("#cp-status").innerText();
}

async function searchAlice(p) {
  await p.getByLabel("Identity id").fill("alice");
  await p.getByRole("button", { name: "Search" }).click();
  await p.locator("#results tbody tr").first().waitFor();
  return p.locator("#results tbody tr");
}

test("an auditor verifies the checkpoint and each entry's inclusion in the browser", async () => {
  const { p, errors } = await open("/audit");
  const started = Date.now();
  assert.match(await verifyCheckpoint(p, ca.vkey), /Signature valid/);
  const rows = await searchAlice(p);
  assert.equal(await rows.count(), 3, "enrollment, renewal, revocation");
  assert.deepEqual(
    await p.locator("#results tbody .badge").allInnerTexts(),
    ["issuance", "issuance", "revocation"],
  );
  for (let i = 0; i < 3; i++) {
    await rows.nth(i).getByRole("button", { name: /Verify entry/ }).click();
    await rows.nth(i).locator(".verdict").waitFor();
    assert.match(await rows.nth(i).locator(".verdict").innerText(), /✓ included/);
  }
  console.log(`checkpoint + 3 inclusion proofs verified in the browser in ${Date.now() - started} ms`);
  assert.deepEqual(errors, []);
  await p.screenshot({ path: join(repo, "docs/screenshots/audit-desktop.png"), fullPage: true });
});

test("an entry checked before the checkpoint waits for it, then verifies; membership entries name their subchain", async () => {
  const { p, errors } = await open("/audit");
  const rows = await searchAlice(p);
  await rows.first().getByRole("button", { name: /Verify entry/ }).click();
  await rows.first().locator(".verdict.pending").waitFor();
  assert.match(await rows.first().locator(".verdict").innerText(), /waiting for step 1/);
  // Step 1 done: the waiting entry is checked without another click.
  assert.match(await verifyCheckpoint(p, ca.vkey), /Signature valid/);
  await rows.first().locator(".verdict.ok").waitFor();
  assert.match(await rows.first().locator(".verdict").innerText(), /✓ included/);

  await p.getByRole("button", { name: "Latest entries" }).click();
  const membership = p.locator("#results tbody tr", { has: p.locator(".badge.membership") });
  await membership.first().waitFor();
  assert.match(await membership.first().innerText(), /membership of subchain trade, revision 1\s+by admin/);
  await membership.first().getByRole("button", { name: /Verify entry/ }).click();
  await membership.first().locator(".verdict.ok").waitFor();
  assert.deepEqual(errors, []);
});

test("a tampered inclusion proof is refused", async () => {
  const { p } = await open("/audit");
  await p.route("**/api/v1/log/proof/inclusion**", async (route) => {
    const resp = await route.fetch();
    const body = await resp.json();
    const first = Buffer.from(body.inclusion_proof[0], "base64");
    first[0] ^= 1;
    body.inclusion_proof[0] = first.toString("base64");
    await route.fulfill({ response: resp, json: body });
  });
  assert.match(await verifyCheckpoint(p, ca.vkey), /Signature valid/);
  const rows = await searchAlice(p);
  await rows.first().getByRole("button", { name: /Verify entry/ }).click();
  await rows.first().locator(".verdict").waitFor();
  assert.match(await rows.first().locator(".verdict").innerText(), /✗ proof does NOT verify/);
});

test("a tampered checkpoint, or another key, is refused", async () => {
  const { p } = await open("/audit");
  // Another key of the same name and id form: the signature cannot verify.
  const [name, id] = ca.vkey.split("+");
  const key = ca.vkey.slice(name.length + id.length + 2);
  const raw = Buffer.from(key, "base64");
  raw[5] ^= 0x40;
  assert.match(await verifyCheckpoint(p, `${name}+${id}+${raw.toString("base64")}`), /NOT verified/);
  assert.equal(await p.locator("#cp-facts").isHidden(), true);
  // The real key, but the server claims a bigger tree.
  await p.route("**/log/checkpoint", async (route) => {
    const resp = await route.fetch();
    const text = (await resp.text()).replace(/\n(\d+)\n/, (_, n) => `\n${Number(n) + 1}\n`);
    await route.fulfill({ response: resp, body: text });
  });
  assert.match(await verifyCheckpoint(p, ca.vkey), /NOT verified: the checkpoint signature does not verify/);
  // Garbage in the key field gets a clear message.
  assert.match(await verifyCheckpoint(p, "not a key"), /name\+1234abcd\+base64/);
});

test("the pages at desktop and phone widths", async () => {
  for (const [name, viewport] of [["desktop", DESKTOP], ["phone", PHONE]]) {
    const home = await open("/", viewport);
    await home.p.screenshot({ path: join(repo, `docs/screenshots/home-${name}.png`), fullPage: true });
    assert.deepEqual(home.errors, []);
    const { p } = await open("/audit", viewport);
    assert.match(await verifyCheckpoint(p, ca.vkey), /Signature valid/);
    const rows = await searchAlice(p);
    await rows.first().getByRole("button", { name: /Verify entry/ }).click();
    await rows.first().locator(".verdict").waitFor();
    if (name === "phone") {
      // Nothing wider than the screen.
      const width = await p.evaluate(() => document.documentElement.scrollWidth);
      assert.ok(width <= viewport.width, `page is ${width}px wide on a ${viewport.width}px screen`);
      await p.screenshot({ path: join(repo, "docs/screenshots/audit-phone.png"), fullPage: true });
    }
  }
});
