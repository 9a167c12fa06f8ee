// Test harness: a real ca-server (development mode, own data directory and port), the real
// `bsn` CLI and curl as clients, and Debian's Chromium driven by playwright-core.

import { execFile, spawn } from "node:child_process";
import { mkdtempSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { promisify } from "node:util";
import { chromium } from "playwright-core";
// Ports below the ephemeral range, as the SDK's end-to-end tests choose them.
import { freePort } from "../../sdk/js/test/helpers.mjs";

const run = promisify(execFile);
const here = new URL(".", import.meta.url).pathname;
export const repo = resolve(here, "../..");
const bin = process.env.BSN_BIN_DIR || join(repo, "target/release");


async function eventually(what, f, ms = 30000) {
  const until = Date.now() + ms;
  let last;
  while (Date.now() < until) {
    try {
      const v = await f();
      if (v) return v;
    } catch (e) {
      last = e;
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`${what} did not happen within ${ms} ms: ${last}`);
}

/** Starts a development CA; resolves when it answers. */
export async function startCa() {
  const dir = mkdtempSync(join(tmpdir(), "bsn-portal-"));
  const data = join(dir, "data");
  const port = await freePort();
  const url = `https://127.0.0.1:${port}`;
  const proc = spawn(join(bin, "ca-server"), ["dev", "--data-dir", data, "--listen", `127.0.0.1:${port}`], {
    stdio: ["ignore", "pipe", "pipe"],
  });
  let out = "";
  proc.stdout.on("data", (d) => (out += d));
  proc.stderr.on("data", (d) => (out += d));
  const bundle = join(data, "trust-bundle.pem");
  await eventually("the CA answering", async () => {
    const { stdout } = await run("curl", ["-sS", "--cacert", bundle, `${url}/healthz`]);
    return stdout.includes("ok");
  });
  const secret = /admin enrollment secret: (\S+)/.exec(out)[1];
  const ca = {
    dir,
    data,
    url,
    bundle,
    proc,
    vkey: readFileSync(join(data, "log.vkey"), "utf8").trim(),
    async bsn(...args) {
      const { stdout } = await run(join(bin, "bsn"), [...args, "--ca", url, "--ca-bundle", bundle]);
      return stdout;
    },
    stop() {
      proc.kill("SIGKILL");
    },
  };
  await ca.bsn("enroll", "--id", "admin", "--secret", secret, "--out", join(dir, "admin"));
  return ca;
}

/** Registers and enrolls a participant with `bsn`; returns its credentials directory. */
export async function participant(ca, id) {
  const admin = join(ca.dir, "admin");
  const out = await ca.bsn("register", "--cert", join(admin, "cert.pem"), "--key", join(admin, "key.pem"), "--id", id);
  const secret = /secret:\s*(\S+)/.exec(out)[1];
  const d = join(ca.dir, id);
  await ca.bsn("enroll", "--id", id, "--secret", secret, "--out", d);
  return d;
}

/** Debian's Chromium, headless, with the flags this machine's closed network needs. */
export async function browser() {
  return chromium.launch({
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    args: [
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
    ],
  });
}

export const DESKTOP = { width: 1280, height: 860 };
export const PHONE = { width: 390, height: 844 };

/** curl as the bootstrap administrator (mTLS); returns the parsed JSON answer. */
export async function asAdmin(ca, method, path, body) {
  const admin = join(ca.dir, "admin");
  const args = ["-sS", "--cacert", ca.bundle, "--cert", join(admin, "cert.pem"), "--key", join(admin, "key.pem"),
    "-X", method, "-H", "content-type: application/json", `${ca.url}${path}`];
  if (body !== undefined) args.push("--data", JSON.stringify(body));
  const { stdout } = await run("curl", args);
  return stdout ? JSON.parse(stdout) : null;
}

export { run };
