// The SDK against real processes: a development CA and a city node from this repository's
// release build (BSN_BIN_DIR, default target/release). A participant enrolls with the SDK, joins
// through the CA's API, writes, reads back with a verified proof, follows blocks across a node
// restart, and is refused with the typed error once revoked.

import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { mkdtempSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import * as bsn from "../src/index.js";
import { BIN, eventually, freePort, proc } from "./helpers.mjs";

const run = promisify(execFile);

let net;

before(async () => {
  const d = mkdtempSync(join(tmpdir(), "bsn-js-"));
  const [caPort, nodePort] = [await freePort(), await freePort()];
  const caUrl = `https://127.0.0.1:${caPort}`;
  const ca = await proc([join(BIN, "ca-server"), "dev", "--data-dir", join(d, "ca"), "--listen", `127.0.0.1:${caPort}`], "listening on");
  const bundle = join(d, "ca", "trust-bundle.pem");
  const secret = ca.lines.find((l) => l.startsWith("admin enrollment secret: ")).split(": ")[1].trim();
  const common = ["--ca", caUrl, "--ca-bundle", bundle];
  await run(join(BIN, "bsn"), ["enroll", "--id", "admin", "--secret", secret, "--out", join(d, "admin"), ...common]);
  const admin = ["--cert", join(d, "admin", "cert.pem"), "--key", join(d, "admin", "key.pem"), ...common];
  const register = async (...args) => /enrollment secret: (\S+)/.exec((await run(join(BIN, "bsn"), ["register", ...args, ...admin])).stdout)[1];
  const n1 = await register("--id", "n1", "--type", "node", "--dns", "localhost", "--ip", "127.0.0.1");
  await run(join(BIN, "ledger-node"), ["init", "--data-dir", join(d, "n1"), "--ca", caUrl, "--ca-bundle", bundle, "--name", "n1",
    "--secret", n1, "--listen", `127.0.0.1:${nodePort}`]);
  const node = await proc([join(BIN, "ledger-node"), "serve", "--data-dir", join(d, "n1")], "listening on");
  await run(join(BIN, "bsn"), ["subchain", "create", "demo", "--name", "Demo", "--node", "n1", "--policy", "open", "--no-orderers", ...admin]);
  net = { d, caUrl, nodeUrl: `https://127.0.0.1:${nodePort}`, bundle, admin, register, procs: [ca, node] };
  net.restartNode = async () => {
    await net.procs[1].stop();
    net.procs[1] = await proc([join(BIN, "ledger-node"), "serve", "--data-dir", join(d, "n1")], "listening on");
  };
});

after(async () => {
  for (const p of (net?.procs || []).reverse()) await p.stop();
});

const retrying = (f) => async () => {
  try {
    return await f();
  } catch (e) {
    if (e instanceof bsn.RetryLater || e instanceof bsn.Forbidden || e instanceof bsn.NotFound) return null;
    throw e;
  }
};

test("a participant enrolls, joins, writes, reads, follows across a restart, and is refused once revoked", async () => {
  const { d } = net;
  const secret = await net.register("--id", "jsuser");
  const ca = new bsn.Ca(net.caUrl, net.bundle);
  const issued = await ca.enroll("jsuser", secret, join(d, "jsuser"));
  assert.match(issued.spiffe_id, /\/participant\/jsuser$/);
  assert.ok(issued.receipt.tree_size > issued.receipt.leaf_index);
  assert.equal(statSync(join(d, "jsuser", "key.pem")).mode & 0o777, 0o600);
  const key = await ca.membershipKey();
  // No handover yet: the keys followed from the pinned one are that key alone.
  const keys = await ca.membershipKeys(key);
  assert.deepEqual(keys.keys.map((k) => k.raw.toString("hex")), [key.raw.toString("hex")]);
  ca.close();

  const creds = bsn.Credentials.load(join(d, "jsuser", "cert.pem"), join(d, "jsuser", "key.pem"));
  const me = new bsn.Ca(net.caUrl, net.bundle, creds);
  assert.equal((await me.join("demo", "writer")).outcome, "member");
  const statement = key.verifyStatement(await me.get("/api/v1/subchains/demo/statement"));
  assert.deepEqual(statement.members.at(-1), { id: "jsuser", role: "writer" });
  me.close();

  const node = new bsn.Node(net.nodeUrl, net.bundle, creds);
  const c = await eventually("the node admits the new writer", retrying(() => node.submit("demo", [bsn.put("color", "blue"), bsn.del("old")])));
  assert.equal((await node.get("demo", "color")).toString(), "blue");
  assert.equal(await node.get("demo", "never-set"), null);
  const tx = await node.transaction("demo", c.id);
  assert.deepEqual([tx.height, tx.index, tx.creator], [c.height, c.index, "jsuser"]);
  const { items, more } = await node.range("demo", { start: "c", end: "d" });
  assert.deepEqual(items.map(([k, v]) => [k, v.toString()]), [["color", "blue"]]);
  assert.equal(more, false);

  // Follow, restart the node, write again: the stream resumes where it was.
  const follow = node.follow("demo", 0);
  const seen = [];
  while (seen.length <= c.height) seen.push((await follow.next()).value);
  assert.deepEqual(seen.map((b) => b.header.height), [...Array(c.height + 1).keys()]);
  await net.restartNode();
  const later = await eventually("a write after the restart", retrying(() => node.submit("demo", [bsn.put("color", "red")])));
  while (seen.at(-1).header.height < later.height) seen.push((await follow.next()).value);
  assert.equal(seen.at(-1).header.height, later.height);
  await follow.return();
  assert.equal((await node.get("demo", "color")).toString(), "red");

  // Bad input is refused here, before anything is sent.
  await assert.rejects(node.submit("demo", Array(257).fill(bsn.put("k", "v"))), bsn.TooLargeError);
  await assert.rejects(node.submit("demo", [bsn.put("k", Buffer.alloc(65537))]), bsn.TooLargeError);

  // The wrong trust bundle: the node's certificate does not chain to it.
  const other = join(d, "other-bundle.pem");
  await run("openssl", ["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-subj", "/CN=Another CA",
    "-days", "1", "-keyout", join(d, "other-key.pem"), "-out", other]);
  const stranger = new bsn.Node(net.nodeUrl, other, creds);
  await assert.rejects(stranger.info("demo"), bsn.TrustError);
  stranger.close();

  // Revoked: the node refuses the certificate itself, and the SDK says so.
  await run(join(BIN, "bsn"), ["revoke", "--serial", issued.serial, "--reason", "keyCompromise", ...net.admin]);
  const err = await eventually("the node refuses the revoked certificate", async () => {
    try {
      await node.info("demo");
      return null;
    } catch (e) {
      if (e instanceof bsn.CertificateRefused) return e;
      throw e;
    }
  });
  assert.ok(err instanceof bsn.CertificateRevoked, String(err));
  node.close();
});

test("an expired and a foreign certificate each get their own error", async () => {
  // A second network whose CA issues participant certificates for 5 seconds.
  const d = mkdtempSync(join(tmpdir(), "bsn-js-brief-"));
  const [caPort, nodePort] = [await freePort(), await freePort()];
  const caUrl = `https://127.0.0.1:${caPort}`;
  const nodeUrl = `https://127.0.0.1:${nodePort}`;
  const procs = [await proc([join(BIN, "ca-server"), "dev", "--data-dir", join(d, "ca"), "--listen", `127.0.0.1:${caPort}`],
    "listening on", { ...process.env, BSN_CA_PARTICIPANT_VALIDITY: "5s" })];
  try {
    const bundle = join(d, "ca", "trust-bundle.pem");
    const secret = procs[0].lines.find((l) => l.startsWith("admin enrollment secret: ")).split(": ")[1].trim();
    const common = ["--ca", caUrl, "--ca-bundle", bundle];
    await run(join(BIN, "bsn"), ["enroll", "--id", "admin", "--secret", secret, "--out", join(d, "admin"), ...common]);
    const admin = ["--cert", join(d, "admin", "cert.pem"), "--key", join(d, "admin", "key.pem"), ...common];
    const register = async (...args) => /enrollment secret: (\S+)/.exec((await run(join(BIN, "bsn"), ["register", ...args, ...admin])).stdout)[1];
    const nodeSecret = await register("--id", "n2", "--type", "node", "--ip", "127.0.0.1");
    const userSecret = await register("--id", "brief");
    await run(join(BIN, "ledger-node"), ["init", "--data-dir", join(d, "n2"), "--ca", caUrl, "--ca-bundle", bundle, "--name", "n2",
      "--secret", nodeSecret, "--listen", `127.0.0.1:${nodePort}`]);
    procs.push(await proc([join(BIN, "ledger-node"), "serve", "--data-dir", join(d, "n2")], "listening on"));
    const ca = new bsn.Ca(caUrl, bundle);
    const brief = (await ca.enroll("brief", userSecret, join(d, "brief"))).credentials;
    ca.close();
    const node = new bsn.Node(nodeUrl, bundle, brief);
    await assert.rejects(node.info("nothing-here"), bsn.NotHosted, "admitted at the TLS layer while valid");
    const expires = new Date(brief.chain[0].validTo).getTime();
    while (Date.now() < expires + 1000) await new Promise((r) => setTimeout(r, 200));
    const err = await eventually("the node refuses the expired certificate", async () => {
      try {
        await node.info("nothing-here");
        return null;
      } catch (e) {
        if (e instanceof bsn.CertificateRefused) return e;
        throw e;
      }
    });
    assert.ok(err instanceof bsn.CertificateExpired, String(err));
    node.close();
    // A certificate of another network's CA: refused as unknown.
    const foreign = bsn.Credentials.load(join(net.d, "admin", "cert.pem"), join(net.d, "admin", "key.pem"));
    const stranger = new bsn.Node(nodeUrl, bundle, foreign);
    await assert.rejects(stranger.info("nothing-here"), bsn.CertificateUnknown);
    stranger.close();
  } finally {
    for (const p of procs.reverse()) await p.stop();
  }
});
