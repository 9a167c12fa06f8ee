// What the CA signs, verified offline: membership statements, the node directory and feed
// heartbeats (Ed25519 envelopes over a context string and the exact payload bytes), and the
// issuance log's leaves and C2SP checkpoints (docs/protocol.md sections 6 and 8).

import { createHash, createPublicKey, verify } from "node:crypto";
import { InvalidDocument, MalformedError, VerificationError } from "./errors.js";
import { Reader } from "./encoding.js";

export const STATEMENT_CONTEXT = Buffer.from("bsn membership statement v1\n");
export const HEARTBEAT_CONTEXT = Buffer.from("bsn feed heartbeat v1\n");
export const DIRECTORY_CONTEXT = Buffer.from("bsn node directory v1\n");
export const HANDOVER_CONTEXT = Buffer.from("bsn membership key handover v1\n");
const ID = /^[a-zA-Z0-9._-]{1,128}$/;
const ROLES = ["reader", "writer", "admin"];

function b64(s, what) {
  if (typeof s !== "string" || !/^[A-Za-z0-9+/]*={0,2}$/.test(s) || s.length % 4 !== 0) throw new MalformedError(`${what} is not base64`);
  return Buffer.from(s, "base64");
}

function ed25519Key(raw) {
  // SubjectPublicKeyInfo for Ed25519: a fixed 12-byte prefix and the 32-byte key.
  return createPublicKey({ key: Buffer.concat([Buffer.from("302a300506032b6570032100", "hex"), raw]), format: "der", type: "spki" });
}

function fields(doc, required, optional = []) {
  const keys = Object.keys(doc);
  const ok = required.every((k) => keys.includes(k)) && keys.every((k) => required.includes(k) || optional.includes(k));
  if (!ok) throw new MalformedError(`expected the fields ${[...required, ...optional].sort()}, got ${keys.sort()}`);
}

// A plan's or a capacity's tenancy and figures: shared or dedicated, positive integers.
function figures(doc, names, what) {
  if (!["shared", "dedicated"].includes(doc.tenancy)) throw new InvalidDocument(`${what}: tenancy is shared or dedicated`);
  for (const name of names) {
    if (!Number.isSafeInteger(doc[name]) || doc[name] < 1) throw new InvalidDocument(`${what}: ${name} must be a positive integer`);
  }
}

function jsonObject(payload, what) {
  let doc;
  try {
    doc = JSON.parse(payload.toString("utf8"));
  } catch {
    throw new MalformedError(`${what} is not JSON`);
  }
  if (!doc || typeof doc !== "object" || Array.isArray(doc)) throw new MalformedError(`${what} is not a JSON object`);
  return doc;
}

const sortedUnique = (xs) => xs.every((x, i) => i === 0 || xs[i - 1] < x);

/** The CA's membership key (Ed25519), pinned from a trusted source. */
export class MembershipKey {
  constructor(raw) {
    if (raw.length !== 32) throw new MalformedError("a membership key is 32 bytes");
    this.raw = Buffer.from(raw);
    this.key = ed25519Key(this.raw);
  }

  static fromBase64(s) {
    return new MembershipKey(b64(s.trim(), "the membership key"));
  }

  /** Checks the signature over `context` and the payload, then parses the payload. */
  open(context, envelope) {
    if (!envelope || typeof envelope !== "object" || Object.keys(envelope).sort().join() !== "payload,signature") {
      throw new MalformedError("an envelope is {payload, signature}");
    }
    const payload = b64(envelope.payload, "the payload");
    const signature = b64(envelope.signature, "the signature");
    if (!verify(null, Buffer.concat([context, payload]), this.key, signature)) {
      throw new VerificationError("the signature does not verify with the CA's membership key");
    }
    return jsonObject(payload, "the payload");
  }

  /** A membership statement: signature, shape and rules. */
  verifyStatement(envelope) {
    const s = this.open(STATEMENT_CONTEXT, envelope);
    fields(s, ["version", "trust_domain", "subchain", "revision", "issued_at", "nodes", "members"], ["orderers", "plan"]);
    if (s.version !== 1) throw new InvalidDocument("unknown statement version");
    if (!Number.isInteger(s.revision) || s.revision < 1) throw new InvalidDocument("revision must be at least 1");
    if (!Array.isArray(s.members) || !s.members.every((m) => m && Object.keys(m).sort().join() === "id,role")) {
      throw new MalformedError("members are {id, role}");
    }
    if (!s.members.every((m) => ROLES.includes(m.role))) throw new MalformedError("a role is reader, writer or admin");
    for (const [name, seq] of [["members", s.members.map((m) => m.id)], ["nodes", s.nodes], ["orderers", s.orderers || []]]) {
      if (!Array.isArray(seq) || !seq.every((x) => typeof x === "string")) throw new MalformedError(`${name} must be a list of ids`);
      if (!sortedUnique(seq)) throw new InvalidDocument(`${name} must be sorted, each once`);
      if (!seq.every((x) => ID.test(x))) throw new InvalidDocument(`${name} holds an invalid id`);
    }
    if ("plan" in s) {
      if (!s.plan || typeof s.plan !== "object" || Array.isArray(s.plan)) {
        throw new MalformedError("the plan is {name, tenancy, rate, burst, storage, bandwidth}");
      }
      fields(s.plan, ["name", "tenancy", "rate", "burst", "storage", "bandwidth"]);
      figures(s.plan, ["rate", "burst", "storage", "bandwidth"], "the plan");
    }
    return s;
  }

  /** The node directory: signature, shape and rules. */
  verifyDirectory(envelope) {
    const d = this.open(DIRECTORY_CONTEXT, envelope);
    fields(d, ["version", "trust_domain", "revision", "issued_at", "nodes"]);
    if (d.version !== 1 || !Number.isInteger(d.revision) || d.revision < 1) throw new InvalidDocument("unknown version, or revision below 1");
    const known = ["id", "role", "city", "url", "capacity", "draining"];
    const shaped = (n) => n && ["id", "role", "city", "url"].every((k) => k in n) && Object.keys(n).every((k) => known.includes(k));
    if (!d.nodes.every(shaped)) throw new MalformedError("nodes are {id, role, city, url}, with a city node's capacity and draining");
    if (!sortedUnique(d.nodes.map((n) => n.id))) throw new InvalidDocument("nodes must be sorted by id, each once");
    for (const n of d.nodes) {
      if (!["node", "orderer"].includes(n.role) || !String(n.url).startsWith("https://")) throw new InvalidDocument(`${n.id}: role must be node or orderer, url https://`);
      if ("capacity" in n) {
        if (n.role !== "node" || !n.capacity || typeof n.capacity !== "object") throw new InvalidDocument(`${n.id}: only city nodes declare a capacity`);
        fields(n.capacity, ["tenancy", "rate", "storage"]);
        figures(n.capacity, ["rate", "storage"], `${n.id}'s capacity`);
      }
      if ("draining" in n && typeof n.draining !== "boolean") throw new MalformedError(`${n.id}: draining is true or false`);
    }
    return d;
  }

  /** A feed heartbeat: signature and shape. */
  verifyHeartbeat(envelope) {
    const h = this.open(HEARTBEAT_CONTEXT, envelope);
    fields(h, ["trust_domain", "node", "cursor", "at_ms"]);
    return h;
  }
}

/**
 * A membership key handover: both signatures (the old key's and the new key's) over the handover
 * context and the terms. Returns { terms, from, to } with the raw keys.
 */
export function verifyHandover(handover) {
  if (!handover || typeof handover !== "object" || Object.keys(handover).sort().join() !== "from_signature,payload,to_signature") {
    throw new MalformedError("a handover is {payload, from_signature, to_signature}");
  }
  const payload = b64(handover.payload, "the handover's payload");
  const terms = jsonObject(payload, "the handover's payload");
  fields(terms, ["version", "trust_domain", "from", "to", "number", "issued_at"]);
  if (terms.version !== 1) throw new MalformedError("unknown handover version");
  const from = b64(terms.from, "the old key");
  const to = b64(terms.to, "the new key");
  if (from.length !== 32 || to.length !== 32) throw new MalformedError("a membership key is 32 bytes");
  if (from.equals(to)) throw new InvalidDocument("a key cannot hand over to itself");
  const message = Buffer.concat([HANDOVER_CONTEXT, payload]);
  for (const [raw, sig] of [[from, handover.from_signature], [to, handover.to_signature]]) {
    if (!verify(null, message, ed25519Key(raw), b64(sig, "a handover signature"))) {
      throw new VerificationError("the handover is not signed by both keys");
    }
  }
  return { terms, from, to };
}

/**
 * The membership keys a verifier trusts: the one it pinned and those linked to it by handovers
 * (each signed by both of its keys), oldest first; the last is the one the CA signs with now. A
 * document signed by any of them verifies (statements signed before a handover stay valid).
 */
export class MembershipKeys {
  constructor(pinned, handovers = []) {
    this.raws = [pinned.raw];
    this.learn(handovers);
  }

  get keys() {
    return this.raws.map((r) => new MembershipKey(r));
  }

  get current() {
    return new MembershipKey(this.raws[this.raws.length - 1]);
  }

  /** Follows the handovers that link to these keys, both ways; one that does not verify throws and changes nothing. */
  learn(handovers) {
    const links = handovers.map((h) => verifyHandover(h));
    const has = (k) => this.raws.some((r) => r.equals(k));
    let learned = false;
    for (;;) {
      const before = this.raws.length;
      for (const { from, to } of links) {
        if (from.equals(this.raws[this.raws.length - 1]) && !has(to)) this.raws.push(to);
        else if (to.equals(this.raws[0]) && !has(from)) this.raws.unshift(from);
      }
      if (this.raws.length === before) return learned;
      learned = true;
    }
  }

  first(verify, envelope) {
    for (const raw of [...this.raws].reverse()) {
      try {
        return new MembershipKey(raw)[verify](envelope);
      } catch (e) {
        if (!(e instanceof VerificationError) || e instanceof InvalidDocument) throw e;
      }
    }
    throw new VerificationError("the signature does not verify with any of the CA's membership keys");
  }

  verifyStatement(envelope) {
    return this.first("verifyStatement", envelope);
  }

  verifyDirectory(envelope) {
    return this.first("verifyDirectory", envelope);
  }

  verifyHeartbeat(envelope) {
    return this.first("verifyHeartbeat", envelope);
  }
}

/** A v1 issuance-log leaf (`kind`: issuance, revocation, membership, intermediate, key or root). */
export function decodeLeaf(b) {
  const r = new Reader(Buffer.from(b));
  const text = () => {
    try {
      return new TextDecoder("utf-8", { fatal: true }).decode(r.take(r.u16()));
    } catch (e) {
      if (e instanceof MalformedError) throw e;
      throw new MalformedError("text is not UTF-8");
    }
  };
  if (r.u8() !== 1) throw new MalformedError("unknown leaf version");
  const kind = r.u8();
  const time = r.u64();
  let leaf;
  if (kind === 1) {
    leaf = { kind: "issuance", time, identity: text(), serial: text(), authorizedBy: text() };
    leaf.notBefore = Number(r.take(8).readBigInt64BE());
    leaf.notAfter = Number(r.take(8).readBigInt64BE());
    leaf.keySha256 = Buffer.from(r.take(32));
    leaf.certificate = Buffer.from(r.take(r.u16()));
  } else if (kind === 2) {
    leaf = { kind: "revocation", time, identity: text(), serial: text(), authorizedBy: text(), reason: r.u8() };
  } else if (kind === 3) {
    leaf = { kind: "membership", time, subchain: text(), revision: r.u64(), authorizedBy: text(), statementSha256: Buffer.from(r.take(32)) };
  } else if (kind === 4) {
    const step = { 1: "published", 2: "activated", 3: "retired" }[r.u8()];
    if (!step) throw new MalformedError("unknown intermediate step");
    leaf = { kind: "intermediate", time, step, number: r.u64(), authorizedBy: text(), certificate: Buffer.from(r.take(r.u16())) };
  } else if (kind === 5) {
    const purpose = { 1: "log", 2: "membership" }[r.u8()];
    if (!purpose) throw new MalformedError("unknown key purpose");
    const step = { 1: "begun", 2: "finished" }[r.u8()];
    if (!step) throw new MalformedError("unknown handover step");
    leaf = { kind: "key", time, purpose, step, number: r.u64(), authorizedBy: text(), oldKey: Buffer.from(r.take(32)), newKey: Buffer.from(r.take(32)) };
  } else if (kind === 6) {
    const step = { 1: "published", 2: "activated", 3: "withdrawn" }[r.u8()];
    if (!step) throw new MalformedError("unknown root step");
    leaf = { kind: "root", time, step, number: r.u64(), authorizedBy: text(), certificate: Buffer.from(r.take(r.u16())), cross: Buffer.from(r.take(r.u16())) };
  } else {
    throw new MalformedError("unknown leaf kind");
  }
  if (r.rest()) throw new MalformedError("trailing bytes after the leaf");
  return leaf;
}

/** The issuance log's verifier key (`log.vkey`): `name+keyid+base64(0x01 || key)`. */
export class LogKey {
  constructor(vkey) {
    const parts = vkey.trim().split("+");
    if (parts.length !== 3 || parts[1].length !== 8) throw new MalformedError("a verifier key is name+1234abcd+base64");
    [this.name] = parts;
    const raw = b64(parts[2], "the verifier key");
    if (raw.length !== 33 || raw[0] !== 1) throw new MalformedError("not an Ed25519 verifier key");
    this.keyId = Buffer.from(parts[1], "hex");
    const id = createHash("sha256").update(Buffer.concat([Buffer.from(`${this.name}\n`), raw])).digest().subarray(0, 4);
    if (!id.equals(this.keyId)) throw new MalformedError("the key id does not match the key");
    this.key = ed25519Key(raw.subarray(1));
  }

  /** Verifies a C2SP checkpoint note signed by this key: {origin, size, root}. */
  verifyCheckpoint(note) {
    const at = note.indexOf("\n\n");
    if (at <= 0) throw new MalformedError("a note is text, a blank line, then signatures");
    const text = note.slice(0, at);
    const message = Buffer.from(`${text}\n`);
    let ok = false;
    for (const line of note.slice(at + 2).split("\n").filter(Boolean)) {
      if (!line.startsWith("\u2014 ")) throw new MalformedError("a signature line starts with an em dash");
      const [name, sig] = line.slice(2).split(" ");
      const blob = b64(sig, "a note signature");
      if (name !== this.name || !blob.subarray(0, 4).equals(this.keyId)) continue;
      if (!verify(null, message, this.key, blob.subarray(4))) throw new VerificationError("the checkpoint signature does not verify");
      ok = true;
    }
    if (!ok) throw new VerificationError(`the checkpoint is not signed by ${this.name}`);
    const lines = text.split("\n");
    if (lines.length < 3 || !/^\d+$/.test(lines[1])) throw new MalformedError("a checkpoint is origin, size and root");
    if (lines[0] !== this.name) throw new VerificationError(`checkpoint origin ${lines[0]} is not ${this.name}`);
    return { origin: lines[0], size: Number(lines[1]), root: b64(lines[2], "the root") };
  }
}
