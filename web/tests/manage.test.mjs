// The administration and subchain pages in a real browser: the bootstrap administrator claims a
// portal account with a one-time secret and approves a registration, issues an invitation and
// revokes a certificate, and acts on an identity from its row; a publisher publishes a subchain; a participant asks to join; the
// publisher admits it and changes its role.

import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { sign } from "node:crypto";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { DESKTOP, PHONE, asAdmin, browser, participant, repo, run, startCa } from "./harness.mjs";

let ca;
let chrome;
const PASSWORD = "correct horse battery staple";

before(async () => {
  ca = await startCa();
  chrome = await browser();
});

after(async () => {
  await chrome?.close();
  ca?.stop();
});

async function tab(viewport = DESKTOP) {
  const ctx = await chrome.newContext({ ignoreHTTPSErrors: true, viewport });
  const p = await ctx.newPage();
  p.on("dialog", (d) => d.accept());
  const errors = [];
  p.on("pageerror", (e) => errors.push(e.message));
  p.errors = errors;
  return p;
}

/** Registers through the page; with a secret, claims an identity a registrar made. */
async function register(p, id, { secret, email } = {}) {
  await p.goto(`${ca.url}/register`);
  await p.getByLabel("Identity id").fill(id);
  await p.getByLabel("Name").fill(`${id} Example`);
  await p.getByLabel("Email").fill(email || `${id}@example.org`);
  await p.getByLabel("Password", { exact: true }).fill(PASSWORD);
  if (secret) await p.getByLabel("Enrollment secret (optional)").fill(secret);
  await p.getByRole("button", { name: "Register" }).click();
  await p.locator("#status.ok, #status.bad").waitFor();
  return p.locator("#status").innerText();
}

async function signIn(p, id) {
  await p.goto(`${ca.url}/signin`);
  await p.getByLabel("Identity id").fill(id);
  await p.getByLabel("Password").fill(PASSWORD);
  await p.getByRole("button", { name: "Sign in" }).click();
  await p.waitForURL("**/account");
}

test("an administrator claims an account, approves a registration, invites, revokes", async () => {
  const { secret } = await asAdmin(ca, "POST", "/api/v1/identities/admin/secret", {});
  const admin = await tab();
  assert.match(await register(admin, "admin", { secret, email: "admin@example.org" }), /identity claimed/);
  // The secret is spent: a second claim fails.
  const other = await tab();
  assert.match(await register(other, "admin", { secret, email: "x@example.org" }), /used up|wrong|already/);

  const visitor = await tab();
  assert.match(await register(visitor, "ann"), /administrator will review/);

  await signIn(admin, "admin");
  await admin.getByRole("link", { name: "Administration" }).click();
  await admin.waitForURL("**/admin");
  const row = admin.locator("#pending tbody tr").filter({ hasText: "ann" });
  await row.waitFor();
  await admin.screenshot({ path: join(repo, "docs/screenshots/admin-desktop.png"), fullPage: true });
  await row.getByRole("button", { name: "Approve ann" }).click();
  await admin.locator("#pending-status.ok, #pending-status.bad").waitFor();
  await admin.locator("#pending tbody", { hasText: "No registrations are waiting." }).waitFor();
  assert.match(await admin.locator("#pending-status").innerText(), /ann is approved/);
  await admin.locator("#identities tbody tr", { hasText: "ann" }).waitFor();

  // Appointing a registrar: a new identity with the role, and its one-time secret.
  await admin.getByLabel("Identity id", { exact: true }).fill("reg-1");
  await admin.getByLabel("Registrar").check();
  await admin.locator("#new-identity").getByRole("button", { name: "Register" }).click();
  await admin.locator("#new-status.ok, #new-status.bad").waitFor();
  assert.match(await admin.locator("#new-status").innerText(), /Registered reg-1\. One-time secret .*: [A-Za-z0-9]{43}/);
  await admin.locator("#identities tbody tr", { hasText: "registrar" }).waitFor();

  await admin.getByRole("button", { name: "Create an invitation code" }).click();
  await admin.locator("#invite-status.ok").waitFor();
  assert.match(await admin.locator("#invite-status").innerText(), /Invitation code: [A-Za-z0-9]{43}/);

  await participant(ca, "zed");
  const listing = await asAdmin(ca, "GET", "/api/v1/certificates?identity=zed");
  const serial = listing.items[0].serial;
  await admin.getByLabel("Serial", { exact: true }).fill(serial);
  await admin.getByLabel("Reason", { exact: true }).selectOption("affiliationChanged");
  await admin.getByRole("button", { name: "Revoke" }).click();
  await admin.locator("#revoke-status.ok, #revoke-status.bad").waitFor();
  assert.match(await admin.locator("#revoke-status").innerText(), new RegExp(`Revoked ${serial} \\(affiliationChanged\\)`));
  assert.equal((await asAdmin(ca, "GET", `/api/v1/certificates/${serial}`)).status, "revoked");
  assert.deepEqual(admin.errors, []);

  // A participant does not see the administration link, and the API refuses it anyway.
  const ann = await tab();
  await signIn(ann, "ann");
  assert.equal(await ann.getByRole("link", { name: "Administration" }).isHidden(), true);
  const refused = await ann.evaluate(async () => (await fetch("/api/v1/accounts")).status);
  assert.equal(refused, 403);
});

test("an administrator acts on an identity from its row: certificates, revoke, new secret, disable, enable", async () => {
  const yan = await participant(ca, "yan");
  const yanCreds = ["--cert", join(yan, "cert.pem"), "--key", join(yan, "key.pem")];
  const [cert] = (await asAdmin(ca, "GET", "/api/v1/certificates?identity=yan")).items;
  const admin = await tab();
  await signIn(admin, "admin");
  await admin.goto(`${ca.url}/admin`);
  const row = admin.locator("#identities tbody tr").filter({ has: admin.locator("td:first-child", { hasText: /^yan$/ }) });
  await row.waitFor();

  // Its certificates, and revoking one takes a second, confirming press.
  await row.getByRole("button", { name: "Certificates of yan" }).click();
  const certRow = admin.locator("#certs tbody tr", { hasText: cert.serial });
  await certRow.waitFor();
  assert.equal(await admin.locator("#certs-title").innerText(), "Certificates of yan");
  assert.equal(await certRow.locator(".badge").innerText(), "valid");
  await certRow.getByLabel(`Reason to revoke ${cert.serial}`).selectOption("keyCompromise");
  await certRow.getByRole("button", { name: `Revoke certificate ${cert.serial}` }).click();
  assert.equal(await certRow.getByRole("button", { name: `Revoke certificate ${cert.serial}` }).innerText(), "Confirm revoke");
  assert.equal((await asAdmin(ca, "GET", `/api/v1/certificates/${cert.serial}`)).status, "valid", "one press revokes nothing");
  await admin.screenshot({ path: join(repo, "docs/screenshots/admin-identity-desktop.png"), fullPage: true });
  await certRow.getByRole("button", { name: `Revoke certificate ${cert.serial}` }).click();
  await admin.locator("#certs-status.ok").waitFor();
  assert.match(await admin.locator("#certs-status").innerText(), new RegExp(`Revoked ${cert.serial} \\(keyCompromise\\)`));
  await admin.locator("#certs tbody .badge", { hasText: "revoked (keyCompromise)" }).waitFor();
  assert.equal((await asAdmin(ca, "GET", `/api/v1/certificates/${cert.serial}`)).status, "revoked");

  // A new one-time secret, shown once, that enrolls.
  await row.getByRole("button", { name: "New enrollment secret for yan" }).click();
  await admin.locator("#ids-status.ok, #ids-status.bad").waitFor();
  const secret = /secret for yan .*: ([A-Za-z0-9]{43})/.exec(await admin.locator("#ids-status").innerText())?.[1];
  assert.ok(secret, await admin.locator("#ids-status").innerText());
  await ca.bsn("enroll", "--id", "yan", "--secret", secret, "--out", yan, "--force");

  // Disable: the CA refuses it; enable: it renews again.
  await row.getByRole("button", { name: "Disable yan" }).click();
  await admin.locator("#ids-status.ok", { hasText: "yan is disabled" }).waitFor();
  await row.locator(".badge", { hasText: "disabled" }).waitFor();
  assert.equal((await asAdmin(ca, "GET", "/api/v1/identities/yan")).status, "disabled");
  await assert.rejects(ca.bsn("renew", ...yanCreds), (e) => e.code === 3);
  await row.getByRole("button", { name: "Enable yan" }).click();
  await admin.locator("#ids-status.ok", { hasText: "yan is active again" }).waitFor();
  await ca.bsn("renew", ...yanCreds);

  // Bad input gets the CA's own words and changes nothing: no administrator disables itself.
  const self = admin.locator("#identities tbody tr").filter({ has: admin.locator("td:first-child", { hasText: /^admin$/ }) });
  await self.getByRole("button", { name: "Disable admin" }).click();
  await admin.locator("#ids-status.bad").waitFor();
  assert.match(await admin.locator("#ids-status").innerText(), /Disable admin: /);
  assert.equal((await asAdmin(ca, "GET", "/api/v1/identities/admin")).status, "active");
  assert.deepEqual(admin.errors, []);
});

test("a publisher publishes a subchain, a participant asks to join, the publisher admits it", async () => {
  // A city node enrolls and publishes where it is served (as `ledger-node init` does).
  const city = await asAdmin(ca, "POST", "/api/v1/identities", { id: "city-1", type: "node", dns_names: ["city-1.test"] });
  const cityDir = join(ca.dir, "city-1");
  await ca.bsn("enroll", "--id", "city-1", "--secret", city.secret, "--out", cityDir);
  await run("curl", ["-sS", "--fail", "--cacert", ca.bundle, "--cert", join(cityDir, "cert.pem"), "--key", join(cityDir, "key.pem"),
    "-X", "PUT", "-H", "content-type: application/json", `${ca.url}/api/v1/nodes/self`,
    "--data", JSON.stringify({ city: "beijing", url: "https://city-1.test:9443",
      capacity: { tenancy: "shared", rate: 1000, storage: 1099511627776 } })]);
  const reg = await asAdmin(ca, "POST", "/api/v1/identities", { id: "pub", roles: ["publisher"] });
  const pub = await tab();
  assert.match(await register(pub, "pub", { secret: reg.secret }), /identity claimed/);
  await signIn(pub, "pub");
  await pub.getByRole("link", { name: "Subchains" }).click();
  await pub.waitForURL("**/subchains");
  await pub.getByLabel("Id", { exact: true }).fill("trade");
  await pub.getByLabel("Name", { exact: true }).fill("Trade finance");
  await pub.getByLabel("Description").fill("Letters of credit between banks and shippers");
  // Placed by plan and city: the publisher names no node.
  await pub.getByLabel("Plan", { exact: true }).selectOption("standard");
  assert.equal(await pub.locator("#c-plan option[value=dedicated]").count(), 0, "dedicated is for administrators");
  await pub.getByLabel("Cities").fill("beijing");
  await pub.getByRole("button", { name: "Publish" }).click();
  await pub.locator("#create-status.ok, #create-status.bad").waitFor();
  assert.match(await pub.locator("#create-status").innerText(),
    /Published trade \(revision 1\) on https:\/\/city-1\.test:9443 \(beijing\), plan standard/);

  // The city node reports its usage, signed with its key (as ledger-node does every minute).
  const hour = Math.floor(Date.now() / 3_600_000) * 3600;
  const report = Buffer.from(JSON.stringify({
    version: 1, trust_domain: new URL(city.spiffe_id).host, node: "city-1", seq: 1, at: Math.floor(Date.now() / 1000),
    rows: [{ subchain: "trade", hour, transactions: 7200, bytes_written: 720000, bytes_stored: 5 << 20,
      bytes_served: 36_000_000, refused: 3 }],
  }));
  const signature = sign("sha256", Buffer.concat([Buffer.from("bsn usage report v1\n"), report]),
    readFileSync(join(cityDir, "key.pem")));
  const taken = await run("curl", ["-sS", "--fail-with-body", "--cacert", ca.bundle, "--cert", join(cityDir, "cert.pem"),
    "--key", join(cityDir, "key.pem"), "-H", "content-type: application/json", `${ca.url}/api/v1/usage`,
    "--data", JSON.stringify({ payload: report.toString("base64"), signature: signature.toString("base64") })]);
  assert.deepEqual(JSON.parse(taken.stdout), { rows: 1 });

  const ann = await tab();
  await signIn(ann, "ann");
  await ann.goto(`${ca.url}/subchains`);
  assert.equal(await ann.locator("#create-card").isHidden(), true, "participants do not publish");
  const row = ann.locator("#directory tbody tr", { hasText: "trade" });
  await row.getByLabel("Role to ask for on trade").selectOption("writer");
  await row.getByRole("button", { name: "Join trade" }).click();
  await ann.locator("#dir-status.ok").waitFor();
  assert.match(await ann.locator("#dir-status").innerText(), /waiting for approval/);

  await pub.reload();
  const req = pub.locator("#requests tbody tr", { hasText: "ann" });
  await req.waitFor();
  // An administrator sees each city node's placement and load.
  const adm = await tab();
  await signIn(adm, "admin");
  await adm.goto(`${ca.url}/admin`);
  const nodeRow = adm.locator("#city-nodes tbody tr", { hasText: "city-1" });
  await nodeRow.waitFor();
  assert.match(await nodeRow.innerText(), /shared, 1000 tx\/s, 1\.0 TiB\s+1\s+100 of 1000 tx\/s \(10%\)/);

  // The publisher sees its usage against the plan, as charts.
  await pub.locator("#usage-charts figure").first().waitFor();
  assert.match(await pub.locator("#usage-plan").innerText(), /Plan standard: shared, 100 tx\/s .*7200 transactions, 3 refused by quota/);
  assert.equal(await pub.locator("#usage-charts figure").count(), 3);
  assert.match(await pub.locator("#usage-charts").innerText(), /Transactions per second: peak 2\.00 tx\/s, plan 100\.00 tx\/s \(far above\)/);
  assert.match(await pub.locator("#usage-charts").innerText(), /Storage: peak 5\.0 MiB, plan 10\.0 GiB \(far above\)/);
  await pub.screenshot({ path: join(repo, "docs/screenshots/subchains-desktop.png"), fullPage: true });
  await req.getByRole("button", { name: "Approve ann" }).click();
  await pub.locator("#manage-status.ok").waitFor();
  assert.match(await pub.locator("#manage-status").innerText(), /ann admitted: trade is at revision 2/);
  const member = pub.locator("#members tbody tr", { hasText: "ann" });
  await member.getByLabel("New role for ann").selectOption("reader");
  await member.getByRole("button", { name: "Set the role of ann" }).click();
  await pub.locator("#manage-status.ok", { hasText: "ann is now reader" }).waitFor();

  // The signed statement says so.
  const statement = await asAdmin(ca, "GET", "/api/v1/subchains/trade/statement");
  const payload = JSON.parse(Buffer.from(statement.payload, "base64").toString());
  assert.equal(payload.revision, 3);
  assert.deepEqual(payload.members.find((m) => m.id === "ann"), { id: "ann", role: "reader" });

  const phone = await tab(PHONE);
  await signIn(phone, "ann");
  await phone.goto(`${ca.url}/subchains`);
  // A member is told where to connect.
  await phone.locator("#mine li", { hasText: "trade — reader · connect to https://city-1.test:9443 (beijing)" }).waitFor();
  const width = await phone.evaluate(() => document.documentElement.scrollWidth);
  assert.ok(width <= PHONE.width, `page is ${width}px wide`);
  await phone.screenshot({ path: join(repo, "docs/screenshots/subchains-phone.png"), fullPage: true });
  const adminPhone = await tab(PHONE);
  await signIn(adminPhone, "admin");
  await adminPhone.goto(`${ca.url}/admin`);
  await adminPhone.locator("#identities tbody tr").first().waitFor();
  // Every identity action is on the screen, not scrolled off to the side.
  const right = await adminPhone.evaluate(() =>
    Math.max(...[...document.querySelectorAll("#identities button")].map((b) => b.getBoundingClientRect().right)));
  assert.ok(right <= PHONE.width, `identity actions reach ${right}px on a ${PHONE.width}px screen`);
  await adminPhone.screenshot({ path: join(repo, "docs/screenshots/admin-phone.png"), fullPage: true });
});
