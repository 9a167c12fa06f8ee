// The protocol's shared test vectors (docs/vectors/), checked with this SDK alone.

import { test } from "node:test";
import assert from "node:assert/strict";
import { X509Certificate, createPrivateKey } from "node:crypto";
import { readFileSync } from "node:fs";
import { join, resolve } from "node:path";
import * as bsn from "../src/index.js";

const here = new URL(".", import.meta.url).pathname;
const VECTORS = process.env.BSN_VECTORS || resolve(here, "../../../docs/vectors");
const load = (name) => JSON.parse(readFileSync(join(VECTORS, name), "utf8"));
const b64 = (s) => Buffer.from(s, "base64");
const hex = (s) => Buffer.from(s, "hex");

function privateKey(c) {
  const k = c.private_key;
  if (c.type === "rsa2048") return createPrivateKey({ key: b64(k.pkcs8), format: "der", type: "pkcs8" });
  if (c.type === "ed25519") {
    return createPrivateKey({ key: Buffer.concat([hex("302e020100300506032b657004220420"), hex(k.seed)]), format: "der", type: "pkcs8" });
  }
  // ECDSA: the public point from the certificate, the scalar from the vector (as a JWK).
  const jwk = new X509Certificate(b64(c.certificate)).publicKey.export({ format: "jwk" });
  return createPrivateKey({ key: { ...jwk, d: hex(k.scalar).toString("base64url") }, format: "jwk" });
}

test("valid transactions reproduce and verify", () => {
  const creators = Object.fromEntries(load("keys.json").creators.map((c) => [c.name, c]));
  const valid = load("transactions.json").valid;
  assert.equal(valid.length, 4);
  for (const t of valid) {
    const c = creators[t.creator];
    const ops = t.ops.map((o) => ("put" in o ? bsn.put(o.put, b64(o.value)) : bsn.del(o.delete)));
    const body = bsn.encodeBody({ subchain: t.subchain, nonce: hex(t.nonce), creatorCert: b64(c.certificate), ops });
    assert.equal(body.toString("hex"), t.body, t.name);
    assert.equal(bsn.sha256(body).toString("hex"), t.id);
    assert.equal(bsn.signingMessage(body).toString("hex"), t.signing_message);
    const key = privateKey(c);
    if (t.signature_reproducible) assert.equal(bsn.sign(key, bsn.signingMessage(body)).toString("hex"), t.signature, t.name);
    const ours = bsn.assemble(body, bsn.sign(key, bsn.signingMessage(body)));
    assert.equal(bsn.verifyTx(ours).id.toString("hex"), t.id);
    const tx = bsn.verifyTx(b64(t.signed));
    assert.equal(tx.id.toString("hex"), t.id);
    assert.equal(tx.entryHash.toString("hex"), t.entry_hash);
  }
});

test("refused transactions are refused for the stated reason", () => {
  const classes = { malformed: bsn.MalformedError, "too-large": bsn.TooLargeError, "bad-signature": bsn.VerificationError };
  const refused = load("transactions.json").refused;
  assert.ok(refused.length >= 15);
  for (const t of refused) {
    assert.throws(() => bsn.verifyTx(b64(t.signed)), classes[t.refuse], t.name);
  }
});

test("signing refuses what a node would refuse", () => {
  const cert = b64(load("keys.json").creators[0].certificate);
  const body = (ops, subchain = "vectors") => () => bsn.encodeBody({ subchain, nonce: Buffer.alloc(16, 1), creatorCert: cert, ops });
  assert.throws(body([]), bsn.TooLargeError);
  assert.throws(body([bsn.put("", "v")]), bsn.TooLargeError);
  assert.throws(body([bsn.put("k", Buffer.alloc(65537))]), bsn.TooLargeError);
  assert.throws(body([bsn.del("a\nb")]), bsn.MalformedError);
  assert.throws(body(Array(257).fill(bsn.put("k", "v"))), bsn.TooLargeError);
  assert.throws(body([bsn.del("k")], "Vectors"), bsn.MalformedError);
});

test("signed documents", () => {
  const key = bsn.MembershipKey.fromBase64(load("keys.json").membership_key);
  const v = load("signed-documents.json");
  const open = { statement: (e) => key.verifyStatement(e), directory: (e) => key.verifyDirectory(e), heartbeat: (e) => key.verifyHeartbeat(e) };
  for (const d of v.valid) open[d.kind](d.envelope);
  for (const d of v.refused) {
    let got;
    try {
      open[d.kind](d.envelope);
    } catch (e) {
      got = e instanceof bsn.InvalidDocument ? "invalid" : e instanceof bsn.MalformedError ? "malformed" : e instanceof bsn.VerificationError ? "bad-signature" : e.name;
    }
    assert.equal(got, d.refuse, d.name);
  }
});

test("membership key handovers", () => {
  const v = load("signed-documents.json").handovers;
  const pinned = bsn.MembershipKey.fromBase64(load("keys.json").membership_key);
  const next = bsn.MembershipKey.fromBase64(v.next_key);
  assert.throws(() => pinned.verifyStatement(v.statement_by_next_key), bsn.VerificationError);
  const keys = new bsn.MembershipKeys(pinned);
  for (const r of v.refused) {
    assert.throws(() => keys.learn([r.handover]), (e) => e instanceof bsn.MalformedError || e instanceof bsn.VerificationError, r.name);
    assert.equal(keys.keys.length, 1, r.name);
  }
  assert.equal(keys.learn([v.valid]), true);
  assert.ok(keys.current.raw.equals(next.raw));
  assert.equal(keys.verifyStatement(v.statement_by_next_key).revision, 3);
  // Pinned on the new key, it follows the handover back: the old documents verify.
  const back = new bsn.MembershipKeys(next, [v.valid]);
  assert.deepEqual(back.keys.map((k) => k.raw.toString("hex")), [pinned.raw.toString("hex"), next.raw.toString("hex")]);
  for (const d of load("signed-documents.json").valid) if (d.kind === "statement") back.verifyStatement(d.envelope);
});

test("blocks, the chain and entry proofs", () => {
  const v = load("blocks.json");
  let previous = Buffer.alloc(32);
  const hashes = [];
  v.chain.forEach((b, i) => {
    const block = bsn.decodeBlock(b64(b.encoded));
    assert.equal(block.header.height, i);
    assert.ok(block.header.previous.equals(previous));
    assert.equal(bsn.encodeHeader(block.header).toString("hex"), b.header);
    assert.deepEqual(bsn.decodeHeader(hex(b.header)), block.header);
    assert.equal(block.hash.toString("hex"), b.hash);
    previous = block.hash;
    hashes.push(previous);
  });
  const block1 = bsn.decodeBlock(b64(v.chain[1].encoded));
  const h = block1.header;
  for (const p of v.proofs) {
    const proof = p.proof.map(hex);
    const leaf = bsn.merkle.leafHash(hex(p.entry_hash));
    assert.equal(bsn.sha256(block1.entries[p.index]).toString("hex"), p.entry_hash);
    assert.ok(bsn.merkle.verifyInclusion(p.index, h.entryCount, leaf, proof, h.entriesRoot));
    assert.ok(!bsn.merkle.verifyInclusion((p.index + 1) % h.entryCount, h.entryCount, leaf, proof, h.entriesRoot));
  }
  for (const m of v.merkle) assert.equal(bsn.merkle.rootOfEntries(m.entry_hashes.map(hex)).toString("hex"), m.root);
  for (const r of v.refused) assert.throws(() => bsn.decodeBlock(b64(r.encoded)), bsn.MalformedError, r.name);
  for (const r of v.chain_breaks) {
    const b = bsn.decodeBlock(b64(r.block.encoded));
    assert.ok(!b.header.previous.equals(hashes[r.after]));
    assert.throws(() => bsn.checkChain([bsn.decodeBlock(b64(v.chain[0].encoded)), b]), bsn.MalformedError);
  }
});

test("log leaves, proofs and checkpoints", () => {
  const v = load("log.json");
  assert.deepEqual(v.leaves.map((l) => bsn.decodeLeaf(hex(l.encoded)).kind), v.leaves.map((l) => l.kind));
  const leaves = v.tree_leaves.map(b64);
  const root = b64(v.root);
  assert.ok(bsn.merkle.root(leaves.map(bsn.merkle.leafHash)).equals(root));
  for (const p of v.inclusion) {
    const leaf = bsn.merkle.leafHash(leaves[p.index]);
    assert.equal(leaf.toString("base64"), p.leaf_hash);
    assert.ok(bsn.merkle.verifyInclusion(p.index, v.tree_size, leaf, p.proof.map(b64), root));
  }
  const c = v.consistency;
  assert.ok(bsn.merkle.verifyConsistency(c.first, c.second, b64(c.first_root), root, c.proof.map(b64)));
  assert.ok(!bsn.merkle.verifyConsistency(c.first, c.second, b64(c.first_root), Buffer.alloc(32), c.proof.map(b64)));
  const key = new bsn.LogKey(v.vkey);
  const cp = key.verifyCheckpoint(v.checkpoint);
  assert.deepEqual([cp.size, cp.origin], [v.tree_size, v.origin]);
  assert.ok(cp.root.equals(root));
  for (const k of [key, new bsn.LogKey(v.cosigned_checkpoint.other_vkey)]) {
    assert.ok(k.verifyCheckpoint(v.cosigned_checkpoint.checkpoint).root.equals(root), "a cosigned checkpoint verifies with either key");
  }
  for (const r of v.refused_checkpoints) assert.throws(() => key.verifyCheckpoint(r.checkpoint), bsn.VerificationError, r.name);
});
