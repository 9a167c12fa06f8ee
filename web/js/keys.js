// Keys made in the browser with WebCrypto. The private key leaves memory only into the file the
// user downloads.

import { b64encode } from "./tlog.js";

const PROOF_CONTEXT = "bsn enrollment proof v1\n";

function pem(label, bytes) {
  const b64 = b64encode(new Uint8Array(bytes));
  const lines = b64.match(/.{1,64}/g).join("\n");
  return `-----BEGIN ${label}-----\n${lines}\n-----END ${label}-----\n`;
}

/** Whether this browser can make Ed25519 keys. */
export async function ed25519Supported() {
  try {
    await crypto.subtle.generateKey({ name: "Ed25519" }, true, ["sign", "verify"]);
    return true;
  } catch {
    return false;
  }
}

/** A new key pair: "p256" (ECDSA P-256, the default) or "ed25519". */
export async function newKey(type) {
  const alg = type === "ed25519" ? { name: "Ed25519" } : { name: "ECDSA", namedCurve: "P-256" };
  const pair = await crypto.subtle.generateKey(alg, true, ["sign", "verify"]);
  return { type, pair };
}

/** The SubjectPublicKeyInfo, base64. */
export async function spki(key) {
  return b64encode(new Uint8Array(await crypto.subtle.exportKey("spki", key.pair.publicKey)));
}

/** Proof of possession: a signature over the context and the challenge text, base64. */
export async function prove(key, challenge) {
  const msg = new TextEncoder().encode(PROOF_CONTEXT + challenge);
  const alg = key.type === "ed25519" ? { name: "Ed25519" } : { name: "ECDSA", hash: "SHA-256" };
  return b64encode(new Uint8Array(await crypto.subtle.sign(alg, key.pair.privateKey, msg)));
}

/** The private key as PKCS#8 PEM (only for the download). */
export async function privatePem(key) {
  return pem("PRIVATE KEY", await crypto.subtle.exportKey("pkcs8", key.pair.privateKey));
}

/** Offers text as a file download. */
export function download(name, text) {
  const url = URL.createObjectURL(new Blob([text], { type: "application/x-pem-file" }));
  const a = document.createElement("a");
  a.href = url;
  a.download = name;
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10000);
}
