// Clients of the CA and of a city node over HTTPS (node:https), with mTLS where the API needs
// it. Everything a node says that can be checked is checked before it is returned.

import https from "node:https";
import net from "node:net";
import tls from "node:tls";
import { readFileSync } from "node:fs";
import { decodeBlock, decodeHeader, headerHash, sha256 } from "./encoding.js";
import * as errors from "./errors.js";
import { Credentials, csrPem, generateKey, verifyTx, writeCredentials } from "./keys.js";
import { leafHash, verifyInclusion } from "./merkle.js";
import { MembershipKey, MembershipKeys } from "./signed.js";

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const seg = (s) => encodeURIComponent(s);

function classifyTls(err) {
  const text = `${err?.code || ""} ${err?.message || ""} ${err?.reason || ""}`.toUpperCase();
  if (/CERTIFICATE_VERIFY_FAILED|UNABLE_TO_GET_ISSUER_CERT|SELF_SIGNED_CERT|UNABLE_TO_VERIFY_LEAF_SIGNATURE|CERT_UNTRUSTED|ERR_TLS_CERT_ALTNAME_INVALID/.test(text)) {
    return new errors.TrustError(`the server's certificate does not chain to the trust bundle: ${err.message}`);
  }
  if (/CERTIFICATE[_ ]REVOKED/.test(text)) return new errors.CertificateRevoked("the server refused this client certificate: it is revoked");
  if (/CERTIFICATE[_ ]EXPIRED/.test(text)) return new errors.CertificateExpired("the server refused this client certificate: it has expired");
  // decrypt_error in a handshake: the server could not verify the signatures of the client's
  // chain (a CA of the same name but another key); Credentials checks its own key matches.
  if (/UNKNOWN[_ ]CA|BAD[_ ]CERTIFICATE|CERTIFICATE[_ ]UNKNOWN|DECRYPT[_ ]ERROR/.test(text)) return new errors.CertificateUnknown("the server refused this client certificate: it is not from this CA");
  if (/CERTIFICATE[_ ]REQUIRED/.test(text)) return new errors.CertificateRefused("the server requires a client certificate");
  return null;
}

class Http {
  constructor(base, bundle, credentials, timeoutMs) {
    let u;
    try {
      u = new URL(base);
    } catch {
      throw new errors.LocalError(`${JSON.stringify(base)} is not a URL`);
    }
    if (u.protocol !== "https:") throw new errors.LocalError(`${JSON.stringify(base)} must be an https:// URL`);
    let ca;
    try {
      ca = readFileSync(bundle, "utf8");
    } catch (e) {
      throw new errors.LocalError(`cannot read the trust bundle ${bundle}: ${e.message}`);
    }
    this.base = base.replace(/\/+$/, "");
    this.host = u.hostname.replace(/^\[|\]$/g, "");
    this.port = Number(u.port || 443);
    this.timeoutMs = timeoutMs;
    this.tls = { ca, cert: credentials?.certPem, key: credentials?.keyPem, minVersion: "TLSv1.2" };
    this.agent = new https.Agent({ keepAlive: true, maxSockets: 16, ...this.tls });
  }

  close() {
    this.agent.destroy();
  }

  url(path, params) {
    const q = params ? `?${new URLSearchParams(Object.entries(params).filter(([, v]) => v !== undefined).map(([k, v]) => [k, String(v)]))}` : "";
    return `${this.base}${path}${q}`;
  }

  /** Under TLS 1.3 the server checks the client certificate after the client finished its
   * handshake, and the alert can be lost with the first request: ask once more on a fresh
   * connection and read the answer, where the alert shows. */
  async refusal(err) {
    const found = classifyTls(err);
    if (found) return found;
    const probe = await new Promise((resolve) => {
      const s = tls.connect({ host: this.host, port: this.port, servername: net.isIP(this.host) ? undefined : this.host, ...this.tls });
      const done = (v) => { s.destroy(); resolve(v); };
      s.setTimeout(5000, () => done(null));
      s.on("secureConnect", () => s.write(`GET /healthz HTTP/1.1\r\nHost: ${this.host}\r\nConnection: close\r\n\r\n`));
      s.on("data", () => done(null));
      s.on("error", (e) => done(classifyTls(e)));
      s.on("end", () => done(null));
    });
    return probe || new errors.UnreachableError(`${this.base}: ${err.code || ""} ${err.message}`.trim());
  }

  /** One request; resolves with the JSON answer (or bytes), rejects with a typed error. */
  request(method, path, body, params) {
    const payload = body === undefined ? undefined : Buffer.from(JSON.stringify(body));
    return new Promise((resolve, reject) => {
      const req = https.request(this.url(path, params), {
        method,
        agent: this.agent,
        timeout: this.timeoutMs,
        headers: { accept: "application/json", ...(payload ? { "content-type": "application/json", "content-length": payload.length } : {}) },
      }, (res) => {
        const chunks = [];
        res.on("data", (c) => chunks.push(c));
        res.on("error", async (e) => reject(await this.refusal(e)));
        res.on("end", () => {
          try {
            resolve(answer(res.statusCode, res.headers["content-type"] || "", Buffer.concat(chunks)));
          } catch (e) {
            reject(e);
          }
        });
      });
      req.on("timeout", () => req.destroy(Object.assign(new Error("timed out"), { code: "ETIMEDOUT" })));
      req.on("error", async (e) => reject(await this.refusal(e)));
      req.end(payload);
    });
  }

  /** A streaming GET (server-sent events); resolves with the response once its headers came. */
  stream(path, params, headers) {
    return new Promise((resolve, reject) => {
      const req = https.request(this.url(path, params), { method: "GET", agent: false, ...this.tls, headers: { accept: "text/event-stream", ...headers } }, (res) => {
        if (res.statusCode >= 400) {
          const chunks = [];
          res.on("data", (c) => chunks.push(c));
          res.on("end", () => {
            try {
              answer(res.statusCode, res.headers["content-type"] || "", Buffer.concat(chunks));
            } catch (e) {
              reject(e);
            }
          });
          return;
        }
        resolve(res);
      });
      req.on("error", async (e) => reject(await this.refusal(e)));
      req.end();
    });
  }
}

function answer(status, contentType, body) {
  if (status >= 400) {
    let doc = {};
    try {
      doc = JSON.parse(body.toString("utf8"));
    } catch {
      doc = { detail: body.toString("utf8").slice(0, 200) };
    }
    throw errors.problem(status, doc && typeof doc === "object" ? doc : {});
  }
  return contentType.includes("json") ? JSON.parse(body.toString("utf8")) : body;
}

async function* sseEvents(res) {
  let buffer = "";
  let event = "message";
  let data = [];
  for await (const chunk of res) {
    buffer += chunk.toString("utf8");
    let at;
    while ((at = buffer.indexOf("\n")) >= 0) {
      const line = buffer.slice(0, at).replace(/\r$/, "");
      buffer = buffer.slice(at + 1);
      if (line === "") {
        if (data.length) yield { event, data: data.join("\n") };
        event = "message";
        data = [];
      } else if (!line.startsWith(":")) {
        const colon = line.indexOf(":");
        const name = colon < 0 ? line : line.slice(0, colon);
        let value = colon < 0 ? "" : line.slice(colon + 1);
        if (value.startsWith(" ")) value = value.slice(1);
        if (name === "event") event = value;
        else if (name === "data") data.push(value);
      }
    }
  }
}

function blockFrom(v) {
  const b = decodeBlock(Buffer.from(v.encoded, "base64"));
  if (b.hash.toString("hex") !== v.hash || b.header.height !== v.height) {
    throw new errors.VerificationError("the block does not match its stated hash or height");
  }
  return b;
}

/** The CA: enrollment, renewal, the subchain registry and public keys. */
export class Ca {
  /** `credentials` (a Credentials) for the calls that need a client certificate. */
  constructor(url, bundle, credentials = null, { timeoutMs = 30000 } = {}) {
    this.credentials = credentials;
    this.http = new Http(url, bundle, credentials, timeoutMs);
  }

  close() {
    this.http.close();
  }

  /** Makes a key here, enrolls with the one-time secret, writes key.pem (0600), cert.pem and
   * chain.pem into `out`. */
  async enroll(id, secret, out, keyType = "p256") {
    const key = generateKey(keyType);
    const v = await this.http.request("POST", "/api/v1/enroll", { id, secret, csr: csrPem(key) });
    return { ...v, credentials: writeCredentials(out, key, v.certificate, v.chain) };
  }

  /** Renews over mTLS with this client's credentials (a new key with `rekey`), writing into `out`. */
  async renew(out, { rekey = false, keyType = "p256" } = {}) {
    if (!this.credentials) throw new errors.LocalError("renewal needs a Ca made with credentials");
    const key = rekey ? generateKey(keyType) : this.credentials.key;
    const v = await this.http.request("POST", "/api/v1/renew", { csr: csrPem(key) });
    return { ...v, credentials: writeCredentials(out, key, v.certificate, v.chain) };
  }

  /** The key the CA publishes (pin the key you were given out of band where it matters). */
  async membershipKey() {
    return MembershipKey.fromBase64((await this.http.request("GET", "/api/v1/membership-key")).key);
  }

  /**
   * The CA's membership keys followed from `pinned` (default: the key the CA publishes) through
   * the handovers it lists, each verified with both of its keys.
   */
  async membershipKeys(pinned) {
    const key = pinned || (await this.membershipKey());
    const list = await this.http.request("GET", "/api/v1/keys/membership");
    return new MembershipKeys(key, list.items.filter((k) => k.handover).map((k) => k.handover));
  }

  /** Asks to join a subchain (open subchains admit readers and writers at once). */
  join(subchain, role = "reader", note = "") {
    return this.http.request("POST", `/api/v1/subchains/${seg(subchain)}/join`, { role, note });
  }

  /** A subchain's settings, hosting nodes and their URLs (`endpoints`). */
  subchain(subchain) {
    return this.http.request("GET", `/api/v1/subchains/${seg(subchain)}`);
  }

  /** Any other GET of the CA's API. */
  get(path, params) {
    return this.http.request("GET", path, undefined, params);
  }

  /** Any other POST of the CA's API. */
  post(path, body) {
    return this.http.request("POST", path, body);
  }
}

/** A city node's gateway for one participant (mTLS with its certificate). */
export class Node {
  constructor(url, bundle, credentials, { timeoutMs = 30000 } = {}) {
    if (!(credentials instanceof Credentials)) throw new errors.LocalError("a Node needs the participant's Credentials");
    this.credentials = credentials;
    this.http = new Http(url, bundle, credentials, timeoutMs);
  }

  close() {
    this.http.close();
  }

  path(subchain, rest = "") {
    return `/api/v1/subchains/${seg(subchain)}${rest}`;
  }

  /** The chain's height, tip, membership revision and the caller's role. */
  info(subchain) {
    return this.http.request("GET", this.path(subchain));
  }

  /** Signs one transaction, submits it, and resolves after the commit: {id, height, index}. */
  async submit(subchain, ops) {
    return (await this.submitBatch(subchain, [ops]))[0];
  }

  /** Signs and submits up to 1,000 transactions at once; all commit or none do. */
  submitBatch(subchain, batch) {
    if (batch.length < 1 || batch.length > 1000) throw new errors.TooLargeError("a submission holds 1 to 1,000 transactions");
    return this.submitSigned(subchain, batch.map((ops) => this.credentials.signTx(subchain, ops)));
  }

  /** Submits transactions signed elsewhere. */
  async submitSigned(subchain, signed) {
    const v = await this.http.request("POST", this.path(subchain, "/transactions"), { transactions: signed.map((s) => Buffer.from(s).toString("base64")) });
    return v.results;
  }

  /** A key's value (a Buffer), or null if it is not set. */
  async get(subchain, key) {
    try {
      const v = await this.http.request("GET", this.path(subchain, `/state/${key.split("/").map(seg).join("/")}`));
      return Buffer.from(v.value, "base64");
    } catch (e) {
      if (e instanceof errors.NotFound && e.slug === "not-found") return null;
      throw e;
    }
  }

  /** Keys from `start` (inclusive) to `end` (exclusive): {items: [[key, Buffer]], more}. */
  async range(subchain, { start = "", end = "", limit = 100 } = {}) {
    const v = await this.http.request("GET", this.path(subchain, "/state"), undefined, { start, end, limit });
    return { items: v.items.map((i) => [i.key, Buffer.from(i.value, "base64")]), more: v.more };
  }

  /** A committed transaction with its inclusion proof checked against its block header. */
  async transaction(subchain, txid) {
    const v = await this.http.request("GET", this.path(subchain, `/transactions/${seg(txid)}`));
    const signed = Buffer.from(v.transaction.signed, "base64");
    const tx = verifyTx(signed);
    if (tx.id.toString("hex") !== txid) throw new errors.VerificationError("the node sent another transaction than the one asked for");
    const header = decodeHeader(Buffer.from(v.header, "base64"));
    if (headerHash(header).toString("hex") !== v.block_hash) throw new errors.VerificationError("the block header does not hash to the block hash");
    const proof = v.proof.map((h) => Buffer.from(h, "hex"));
    if (!verifyInclusion(v.index, header.entryCount, leafHash(sha256(signed)), proof, header.entriesRoot)) {
      throw new errors.VerificationError("the inclusion proof does not verify");
    }
    return { id: txid, creator: v.transaction.creator, ops: v.transaction.ops, height: v.height, index: v.index, blockHash: v.block_hash, header };
  }

  /** One block, decoded and checked against its header. */
  async block(subchain, height) {
    return blockFrom(await this.http.request("GET", this.path(subchain, `/blocks/${Number(height)}`)));
  }

  /** Blocks from `start`, each checked to extend the one before it. */
  async blocks(subchain, start = 0, limit = 100) {
    const page = await this.http.request("GET", this.path(subchain, "/blocks"), undefined, { from: start, limit });
    const out = page.blocks.map(blockFrom);
    out.forEach((b, i) => {
      if (i > 0 && !b.header.previous.equals(out[i - 1].hash)) throw new errors.VerificationError(`block ${b.header.height} does not extend the block before it`);
    });
    return out;
  }

  /** Blocks from `start` as they commit, forever, each checked to extend the one before;
   * resumes after a lost connection or a node restart (giving up after `giveUpAfterMs` with no
   * answer). */
  async *follow(subchain, start = 0, { previous = null, giveUpAfterMs = 60000 } = {}) {
    let next = start;
    let downSince = null;
    for (;;) {
      try {
        const headers = next > 0 ? { "last-event-id": String(next - 1) } : {};
        const res = await this.http.stream(this.path(subchain, "/blocks/stream"), { from: next }, headers);
        downSince = null;
        try {
          for await (const { event, data } of sseEvents(res)) {
            if (event !== "block") continue;
            const b = blockFrom(JSON.parse(data));
            if (b.header.height !== next) throw new errors.VerificationError(`expected block ${next}, got ${b.header.height}`);
            if (previous && !b.header.previous.equals(previous)) throw new errors.VerificationError(`block ${b.header.height} does not extend the block before it`);
            previous = b.hash;
            next += 1;
            yield b;
          }
        } finally {
          res.destroy();
        }
      } catch (e) {
        const failure = e instanceof errors.BsnError ? e : await this.http.refusal(e);
        if (!(failure instanceof errors.UnreachableError || failure instanceof errors.RetryLater)) throw failure;
      }
      downSince ??= Date.now();
      if (Date.now() - downSince > giveUpAfterMs) throw new errors.UnreachableError(`${this.http.base} has not answered for ${giveUpAfterMs / 1000} s`);
      await sleep(500);
    }
  }
}
