// The ledger's canonical encodings (docs/protocol.md sections 3-5): signed transactions, block
// headers and blocks. Every field has exactly one encoding: decoding re-encodes and refuses any
// difference.

import { createHash } from "node:crypto";
import { MalformedError, TooLargeError } from "./errors.js";
import { rootOfEntries } from "./merkle.js";

export const TX_CONTEXT = Buffer.from("bsn transaction v1\n");
export const BLOCK_CONTEXT = Buffer.from("bsn block v1\n");
export const MAX_TX_BYTES = 128 * 1024;
export const MAX_OPS = 256;
export const MAX_KEY_BYTES = 512;
export const MAX_VALUE_BYTES = 64 * 1024;
export const HEADER_BYTES = 94;
const SUBCHAIN = /^[a-z0-9][a-z0-9-]{0,62}$/;

export const sha256 = (b) => createHash("sha256").update(b).digest();

/** A put operation. */
export const put = (key, value) => ({ put: key, value: Buffer.from(value) });
/** A delete operation. */
export const del = (key) => ({ delete: key });

function u16(n) { const b = Buffer.alloc(2); b.writeUInt16BE(n); return b; }
function u32(n) { const b = Buffer.alloc(4); b.writeUInt32BE(n); return b; }

function checkKey(key) {
  const raw = Buffer.from(key, "utf8");
  if (raw.length === 0 || raw.length > MAX_KEY_BYTES) throw new TooLargeError(`a key is 1 to ${MAX_KEY_BYTES} bytes`);
  // Rust's char::is_control: C0, DEL and C1.
  if ([...key].some((c) => { const x = c.codePointAt(0); return x < 0x20 || (x >= 0x7f && x <= 0x9f); })) {
    throw new MalformedError("a key may not contain control characters");
  }
  return raw;
}

/** The canonical body; throws before signing what a node would refuse. */
export function encodeBody({ subchain, nonce, creatorCert, ops }) {
  if (!SUBCHAIN.test(subchain)) throw new MalformedError(`subchain id ${JSON.stringify(subchain)} must be 1-63 characters of a-z, 0-9 and '-'`);
  if (nonce.length < 8 || nonce.length > 64) throw new MalformedError("the nonce is 8 to 64 bytes");
  if (creatorCert.length === 0 || creatorCert.length > 0xffff) throw new MalformedError("the creator certificate is missing or too long");
  if (ops.length < 1 || ops.length > MAX_OPS) throw new TooLargeError(`a transaction has 1 to ${MAX_OPS} operations`);
  const parts = [Buffer.from([1, subchain.length]), Buffer.from(subchain), Buffer.from([nonce.length]), Buffer.from(nonce),
    u16(creatorCert.length), Buffer.from(creatorCert), u16(ops.length)];
  for (const op of ops) {
    if ("put" in op) {
      const key = checkKey(op.put);
      const value = Buffer.from(op.value);
      if (value.length > MAX_VALUE_BYTES) throw new TooLargeError(`a value is at most ${MAX_VALUE_BYTES} bytes`);
      parts.push(Buffer.from([1]), u16(key.length), key, u32(value.length), value);
    } else if ("delete" in op) {
      const key = checkKey(op.delete);
      parts.push(Buffer.from([2]), u16(key.length), key);
    } else {
      throw new MalformedError(`unknown operation ${JSON.stringify(op)}`);
    }
  }
  const body = Buffer.concat(parts);
  if (body.length + 8 > MAX_TX_BYTES) throw new TooLargeError(`a signed transaction is at most ${MAX_TX_BYTES} bytes`);
  return body;
}

class Reader {
  constructor(b) { this.b = b; this.i = 0; }
  take(n) {
    if (this.i + n > this.b.length) throw new MalformedError("truncated");
    const out = this.b.subarray(this.i, this.i + n);
    this.i += n;
    return out;
  }
  u8() { return this.take(1)[0]; }
  u16() { return this.take(2).readUInt16BE(); }
  u32() { return this.take(4).readUInt32BE(); }
  u64() { return Number(this.take(8).readBigUInt64BE()); }
  rest() { return this.b.length - this.i; }
}
export { Reader };

function utf8(b, what) {
  try {
    return new TextDecoder("utf-8", { fatal: true }).decode(b);
  } catch {
    throw new MalformedError(`${what} is not UTF-8`);
  }
}

/** Decodes a body, refusing anything that does not re-encode to the same bytes. */
export function decodeBody(b) {
  const r = new Reader(b);
  if (r.u8() !== 1) throw new MalformedError("unknown transaction version");
  const subchain = r.take(r.u8()).toString("latin1");
  if (!SUBCHAIN.test(subchain)) throw new MalformedError("the subchain id is not valid");
  const nonce = r.take(r.u8());
  const creatorCert = r.take(r.u16());
  const ops = [];
  for (let n = r.u16(); n > 0; n--) {
    const tag = r.u8();
    const key = utf8(r.take(r.u16()), "a key");
    if (tag === 1) ops.push({ put: key, value: Buffer.from(r.take(r.u32())) });
    else if (tag === 2) ops.push({ delete: key });
    else throw new MalformedError("unknown operation");
  }
  if (r.rest()) throw new MalformedError("trailing bytes after the operations");
  const body = { subchain, nonce: Buffer.from(nonce), creatorCert: Buffer.from(creatorCert), ops };
  if (!encodeBody(body).equals(b)) throw new MalformedError("not in canonical form");
  return body;
}

/** What the creator signs. */
export const signingMessage = (body) => Buffer.concat([TX_CONTEXT, body]);

/** A signed transaction from a body and its signature. */
export const assemble = (body, signature) => Buffer.concat([u32(body.length), body, u16(signature.length), signature]);

/** Parses a signed transaction (its signature not yet checked: see keys.verifyTx). */
export function parseSignedTx(raw) {
  raw = Buffer.from(raw);
  if (raw.length > MAX_TX_BYTES) throw new TooLargeError(`a signed transaction is at most ${MAX_TX_BYTES} bytes`);
  const r = new Reader(raw);
  const bodyBytes = r.take(r.u32());
  const signature = r.take(r.u16());
  if (r.rest()) throw new MalformedError("trailing bytes after the signature");
  const body = decodeBody(bodyBytes);
  if (signature.length === 0) throw new MalformedError("the signature is empty");
  return { raw, body, bodyBytes, signature, id: sha256(bodyBytes), entryHash: sha256(raw) };
}

/** Encodes a block header (94 bytes). */
export function encodeHeader(h) {
  const b = Buffer.alloc(HEADER_BYTES);
  b[0] = 1;
  b[1] = h.kind === "config" ? 0 : 1;
  b.writeBigUInt64BE(BigInt(h.height), 2);
  Buffer.from(h.previous).copy(b, 10);
  Buffer.from(h.entriesRoot).copy(b, 42);
  b.writeBigUInt64BE(BigInt(h.membershipRevision), 74);
  b.writeBigInt64BE(BigInt(h.timestampMs), 82);
  b.writeUInt32BE(h.entryCount, 90);
  return b;
}

/** Decodes a block header. */
export function decodeHeader(b) {
  const r = new Reader(Buffer.from(b));
  if (r.u8() !== 1) throw new MalformedError("unknown block version");
  const kind = { 0: "config", 1: "transactions" }[r.u8()];
  if (!kind) throw new MalformedError("unknown block kind");
  const h = { kind, height: r.u64(), previous: Buffer.from(r.take(32)), entriesRoot: Buffer.from(r.take(32)),
    membershipRevision: r.u64(), timestampMs: Number(r.take(8).readBigInt64BE()), entryCount: r.u32() };
  if (r.rest()) throw new MalformedError("trailing bytes after the header");
  return h;
}

/** The block hash: SHA-256 of the context and the header. */
export const headerHash = (h) => sha256(Buffer.concat([BLOCK_CONTEXT, encodeHeader(h)]));

/** Decodes a block and checks its entries against the header's count and root. */
export function decodeBlock(b) {
  b = Buffer.from(b);
  if (b.length < HEADER_BYTES) throw new MalformedError("shorter than a block header");
  const header = decodeHeader(b.subarray(0, HEADER_BYTES));
  const r = new Reader(b.subarray(HEADER_BYTES));
  const entries = [];
  while (r.rest()) entries.push(Buffer.from(r.take(r.u32())));
  if (entries.length !== header.entryCount) throw new MalformedError("entry count does not match the header");
  if (!rootOfEntries(entries.map(sha256)).equals(header.entriesRoot)) throw new MalformedError("entries do not match the header's root");
  return { header, entries, hash: headerHash(header) };
}

/** Throws unless each block extends the one before it (and the first `previous`, if given). */
export function checkChain(blocks, previous) {
  for (const b of blocks) {
    if (previous && !b.header.previous.equals(previous)) throw new MalformedError(`block ${b.header.height} does not extend the block before it`);
    previous = b.hash;
  }
}
