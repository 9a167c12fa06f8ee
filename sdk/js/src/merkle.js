// RFC 6962 / RFC 9162 Merkle trees: roots, inclusion and consistency proofs (SHA-256).

import { createHash } from "node:crypto";

const h = (...parts) => createHash("sha256").update(Buffer.concat(parts)).digest();
/** SHA-256(0x00 || data). */
export const leafHash = (data) => h(Buffer.from([0]), Buffer.from(data));
/** SHA-256(0x01 || left || right). */
export const nodeHash = (l, r) => h(Buffer.from([1]), l, r);

/** The tree hash over leaf hashes (RFC 6962 MTH). */
export function root(leaves) {
  const n = leaves.length;
  if (n === 0) return h(Buffer.alloc(0));
  if (n === 1) return leaves[0];
  let k = 1;
  while (k * 2 < n) k *= 2;
  return nodeHash(root(leaves.slice(0, k)), root(leaves.slice(k)));
}

/** A block's entries root: the tree over leaves whose data are the entries' hashes. */
export const rootOfEntries = (entryHashes) => root(entryHashes.map(leafHash));

/** RFC 9162 2.1.3.2: whether `leaf` (a leaf hash) is at `index` of a tree of `size` leaves. */
export function verifyInclusion(index, size, leaf, proof, expectedRoot) {
  if (index < 0 || index >= size) return false;
  let fn = BigInt(index), sn = BigInt(size - 1), r = leaf;
  for (const p of proof) {
    if (sn === 0n) return false;
    if ((fn & 1n) === 1n || fn === sn) {
      r = nodeHash(p, r);
      if ((fn & 1n) === 0n) while ((fn & 1n) === 0n && fn !== 0n) { fn >>= 1n; sn >>= 1n; }
    } else {
      r = nodeHash(r, p);
    }
    fn >>= 1n;
    sn >>= 1n;
  }
  return sn === 0n && r.equals(expectedRoot);
}

/** RFC 9162 2.1.4.2: whether the tree of `second` leaves extends the tree of `first` leaves. */
export function verifyConsistency(first, second, firstRoot, secondRoot, proof) {
  if (first < 1 || first > second) return false;
  if (first === second) return proof.length === 0 && firstRoot.equals(secondRoot);
  const path = [...proof];
  if ((first & (first - 1)) === 0) path.unshift(firstRoot);
  if (path.length === 0) return false;
  let fn = BigInt(first - 1), sn = BigInt(second - 1);
  while ((fn & 1n) === 1n) { fn >>= 1n; sn >>= 1n; }
  let fr = path[0], sr = path[0];
  for (const c of path.slice(1)) {
    if (sn === 0n) return false;
    if ((fn & 1n) === 1n || fn === sn) {
      fr = nodeHash(c, fr);
      sr = nodeHash(c, sr);
      if ((fn & 1n) === 0n) while ((fn & 1n) === 0n && fn !== 0n) { fn >>= 1n; sn >>= 1n; }
    } else {
      sr = nodeHash(sr, c);
    }
    fn >>= 1n;
    sn >>= 1n;
  }
  return sn === 0n && fr.equals(firstRoot) && sr.equals(secondRoot);
}
