// Verifying the issuance log in the browser, trusting nothing the server says: C2SP signed
// notes (Ed25519, checked against a verifier key the user pins) and RFC 9162 inclusion proofs
// (SHA-256), with WebCrypto. Pure functions: no DOM, no network.

const enc = new TextEncoder();

export function b64decode(s) {
  const bin = atob(s.trim());
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
  return out;
}

export function b64encode(bytes) {
  let s = "";
  for (const b of bytes) s += String.fromCharCode(b);
  return btoa(s);
}

function concat(...parts) {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) { out.set(p, at); at += p.length; }
  return out;
}

function equal(a, b) {
  if (a.length !== b.length) return false;
  let d = 0;
  for (let i = 0; i < a.length; i++) d |= a[i] ^ b[i];
  return d === 0;
}

export async function sha256(bytes) {
  return new Uint8Array(await crypto.subtle.digest("SHA-256", bytes));
}

/** RFC 6962 leaf hash: SHA-256(0x00 || leaf). */
export function leafHash(leaf) {
  return sha256(concat(new Uint8Array([0]), leaf));
}

function nodeHash(left, right) {
  return sha256(concat(new Uint8Array([1]), left, right));
}

/**
 * RFC 9162 section 2.1.3.2: does `proof` show the leaf with hash `hash` at `index` in the tree
 * of `size` leaves whose root is `root`? Indexes are below 2^53; no 32-bit bit operations.
 */
export async function verifyInclusion(index, size, hash, proof, root) {
  if (!(index >= 0 && index < size)) return false;
  let fn = index;
  let sn = size - 1;
  let r = hash;
  for (const p of proof) {
    if (sn === 0) return false;
    if (fn % 2 === 1 || fn === sn) {
      r = await nodeHash(p, r);
      while (fn % 2 === 0 && fn !== 0) {
        fn = Math.floor(fn / 2);
        sn = Math.floor(sn / 2);
      }
    } else {
      r = await nodeHash(r, p);
    }
    fn = Math.floor(fn / 2);
    sn = Math.floor(sn / 2);
  }
  return sn === 0 && equal(r, root);
}

/** A signed-note verifier key: `<name>+<8 hex digits key id>+<base64(0x01 || Ed25519 key)>`. */
export function parseVkey(text) {
  // The name has no '+'; the base64 key may.
  const t = text.trim();
  const a = t.indexOf("+");
  const b = a < 0 ? -1 : t.indexOf("+", a + 1);
  const parts = b < 0 ? [] : [t.slice(0, a), t.slice(a + 1, b), t.slice(b + 1)];
  if (parts.length !== 3 || !parts[0] || !/^[0-9a-f]{8}$/.test(parts[1])) {
    throw new Error("a verifier key looks like name+1234abcd+base64");
  }
  let raw;
  try { raw = b64decode(parts[2]); } catch { throw new Error("the verifier key's last part is not base64"); }
  if (raw.length !== 33 || raw[0] !== 1) throw new Error("not an Ed25519 verifier key");
  return { name: parts[0], id: parts[1], key: raw.slice(1) };
}

/**
 * Verifies a C2SP tlog-checkpoint note against a pinned verifier key and returns
 * { origin, size, root }. Throws with a reason when anything does not check out.
 */
export async function verifyCheckpoint(note, vkeyText) {
  const vkey = parseVkey(vkeyText);
  const split = note.indexOf("\n\n");
  if (split < 0) throw new Error("not a signed note (no signature block)");
  const text = note.slice(0, split + 1);
  const sigLines = note.slice(split + 2).split("\n").filter((l) => l.length > 0);
  let signature = null;
  for (const line of sigLines) {
    const m = /^\u2014 (\S+) (\S+)$/.exec(line);
    if (!m || m[1] !== vkey.name) continue;
    const raw = b64decode(m[2]);
    const id = Array.from(raw.slice(0, 4), (b) => b.toString(16).padStart(2, "0")).join("");
    if (id === vkey.id && raw.length === 68) signature = raw.slice(4);
  }
  if (!signature) throw new Error(`no signature by ${vkey.name} (key ${vkey.id}) on this checkpoint`);
  const key = await crypto.subtle.importKey("raw", vkey.key, { name: "Ed25519" }, false, ["verify"]);
  const ok = await crypto.subtle.verify({ name: "Ed25519" }, key, signature, enc.encode(text));
  if (!ok) throw new Error("the checkpoint signature does not verify with the pinned key");
  const lines = text.split("\n");
  if (lines[0] !== vkey.name) throw new Error(`checkpoint origin '${lines[0]}' is not the key's name`);
  if (!/^[0-9]+$/.test(lines[1] || "")) throw new Error("checkpoint size is malformed");
  const root = b64decode(lines[2] || "");
  if (root.length !== 32) throw new Error("checkpoint root is malformed");
  return { origin: lines[0], size: Number(lines[1]), root };
}
