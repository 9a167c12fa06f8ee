// Keys and certificates: make a key and a CSR, load a participant's PEM files (the portal's
// one-file bundle works as is), sign transactions, verify a transaction with its creator
// certificate. Node's own crypto only.

import { X509Certificate, createPrivateKey, createPublicKey, generateKeyPairSync, randomBytes, sign as cryptoSign, verify as cryptoVerify } from "node:crypto";
import { closeSync, fsyncSync, mkdirSync, openSync, readFileSync, renameSync, writeSync } from "node:fs";
import { dirname, join } from "node:path";
import { assemble, encodeBody, parseSignedTx, signingMessage } from "./encoding.js";
import { LocalError, MalformedError, VerificationError } from "./errors.js";

/** A new private key (a KeyObject): "p256" (the default), "p384" or "ed25519". */
export function generateKey(kind = "p256") {
  if (kind === "p256") return generateKeyPairSync("ec", { namedCurve: "P-256" }).privateKey;
  if (kind === "p384") return generateKeyPairSync("ec", { namedCurve: "P-384" }).privateKey;
  if (kind === "ed25519") return generateKeyPairSync("ed25519").privateKey;
  throw new LocalError(`key type ${JSON.stringify(kind)}: use p256, p384 or ed25519`);
}

function hashFor(key) {
  if (key.asymmetricKeyType === "ec") return key.asymmetricKeyDetails.namedCurve === "secp384r1" ? "sha384" : "sha256";
  if (key.asymmetricKeyType === "rsa") return "sha256";
  if (key.asymmetricKeyType === "ed25519") return null;
  throw new LocalError(`unsupported key type ${key.asymmetricKeyType}`);
}

/** Signs as the ledger verifies: ECDSA (DER) with SHA-256 or SHA-384, Ed25519, RSA PKCS#1 v1.5 SHA-256. */
export function sign(key, message) {
  return cryptoSign(hashFor(key), message, key);
}

// ---- a PKCS#10 request, DER by hand (a fixed, tiny structure) -------------------------------

function der(tag, content) {
  const n = content.length;
  const len = n < 0x80 ? Buffer.from([n]) : (() => {
    const b = [];
    for (let x = n; x > 0; x >>= 8) b.unshift(x & 0xff);
    return Buffer.from([0x80 | b.length, ...b]);
  })();
  return Buffer.concat([Buffer.from([tag]), len, content]);
}

const ALGORITHMS = {
  sha256: Buffer.from("300a06082a8648ce3d040302", "hex"), // ecdsa-with-SHA256
  sha384: Buffer.from("300a06082a8648ce3d040303", "hex"), // ecdsa-with-SHA384
  ed25519: Buffer.from("300506032b6570", "hex"),
  rsa: Buffer.from("300d06092a864886f70d01010b0500", "hex"), // sha256WithRSAEncryption
};

/** A PKCS#10 request for `key`, PEM (the CA takes only its public key; names come from the CA). */
export function csrPem(key) {
  const spki = createPublicKey(key).export({ type: "spki", format: "der" });
  const info = der(0x30, Buffer.concat([Buffer.from([0x02, 0x01, 0x00]), Buffer.from([0x30, 0x00]), spki, Buffer.from([0xa0, 0x00])]));
  const alg = key.asymmetricKeyType === "ed25519" ? ALGORITHMS.ed25519
    : key.asymmetricKeyType === "rsa" ? ALGORITHMS.rsa : ALGORITHMS[hashFor(key)];
  const signature = sign(key, info);
  const csr = der(0x30, Buffer.concat([info, alg, der(0x03, Buffer.concat([Buffer.from([0]), signature]))]));
  const b64 = csr.toString("base64").match(/.{1,64}/g).join("\n");
  return `-----BEGIN CERTIFICATE REQUEST-----\n${b64}\n-----END CERTIFICATE REQUEST-----\n`;
}

/** Throws VerificationError unless `signature` over `message` verifies with the certificate's key. */
export function verifySignature(certDer, message, signature) {
  let cert;
  try {
    cert = new X509Certificate(certDer);
  } catch {
    throw new MalformedError("the creator certificate is not DER");
  }
  const key = cert.publicKey;
  if (key.asymmetricKeyType === "ec" && !["prime256v1", "secp384r1"].includes(key.asymmetricKeyDetails.namedCurve)) {
    throw new MalformedError(`unsupported creator key: curve ${key.asymmetricKeyDetails.namedCurve}`);
  }
  if (!["ec", "ed25519", "rsa"].includes(key.asymmetricKeyType)) throw new MalformedError(`unsupported creator key ${key.asymmetricKeyType}`);
  if (!cryptoVerify(hashFor(key), message, key, signature)) {
    throw new VerificationError("the signature does not verify with the creator certificate's key");
  }
}

/** Parses a signed transaction and checks its signature with its creator certificate. */
export function verifyTx(raw) {
  const tx = parseSignedTx(raw);
  verifySignature(tx.body.creatorCert, signingMessage(tx.bodyBytes), tx.signature);
  return tx;
}

const PEM = /-----BEGIN ([A-Z ]+)-----\r?\n([\s\S]*?)-----END \1-----/g;

/** A participant's private key and certificate chain (leaf first), and their PEM text. */
export class Credentials {
  constructor(key, chain, certPem, keyPem) {
    this.key = key;
    this.chain = chain;
    this.certPem = certPem;
    this.keyPem = keyPem;
  }

  /** From cert.pem and key.pem as `bsn enroll` writes them, or one file holding both (the
   * portal's download): pass it once. */
  static load(certFile, keyFile = certFile) {
    let certText, keyText;
    try {
      certText = readFileSync(certFile, "utf8");
      keyText = readFileSync(keyFile, "utf8");
    } catch (e) {
      throw new LocalError(`cannot read credentials: ${e.message}`);
    }
    return Credentials.fromPem(certText, keyText, certFile, keyFile);
  }

  static fromPem(certText, keyText, certName = "the certificate", keyName = "the key") {
    const certs = [...certText.matchAll(PEM)].filter((m) => m[1] === "CERTIFICATE").map((m) => m[0]);
    if (certs.length === 0) throw new LocalError(`${certName} holds no certificate`);
    const keyBlock = [...keyText.matchAll(PEM)].find((m) => /PRIVATE KEY$/.test(m[1]));
    if (!keyBlock) throw new LocalError(`${keyName} holds no private key`);
    let key;
    try {
      key = createPrivateKey(keyBlock[0]);
    } catch (e) {
      throw new LocalError(`${keyName}: ${e.message}`);
    }
    const chain = certs.map((c) => new X509Certificate(c));
    if (!chain[0].checkPrivateKey(key)) throw new LocalError(`the key in ${keyName} is not the key of the certificate in ${certName}`);
    return new Credentials(key, chain, certs.join("\n") + "\n", keyBlock[0] + "\n");
  }

  /** The leaf, DER: the creator certificate of every transaction signed with it. */
  get certificateDer() {
    return this.chain[0].raw;
  }

  /** The identity in the certificate (its URI SAN). */
  get spiffeId() {
    const m = /URI:(spiffe:\/\/[^,\s]+)/.exec(this.chain[0].subjectAltName || "");
    if (!m) throw new LocalError("the certificate names no identity");
    return m[1];
  }

  /** A signed transaction (refused here, naming the limit, if a node would refuse it). */
  signTx(subchain, ops, nonce = randomBytes(16)) {
    const body = encodeBody({ subchain, nonce, creatorCert: this.certificateDer, ops });
    return assemble(body, sign(this.key, signingMessage(body)));
  }
}

function writeDurably(path, data, mode) {
  const tmp = `${path}.tmp`;
  const fd = openSync(tmp, "w", mode);
  try {
    writeSync(fd, data);
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  renameSync(tmp, path);
  const dfd = openSync(dirname(path), "r");
  try {
    fsyncSync(dfd);
  } finally {
    closeSync(dfd);
  }
}

/** Writes key.pem (0600), cert.pem (leaf then chain) and chain.pem as `bsn enroll` does. */
export function writeCredentials(dir, key, certificatePem, chainPem) {
  mkdirSync(dir, { recursive: true });
  writeDurably(join(dir, "key.pem"), key.export({ type: "pkcs8", format: "pem" }), 0o600);
  writeDurably(join(dir, "cert.pem"), certificatePem + chainPem, 0o644);
  writeDurably(join(dir, "chain.pem"), chainPem, 0o644);
  return Credentials.load(join(dir, "cert.pem"), join(dir, "key.pem"));
}
