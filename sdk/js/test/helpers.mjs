// Shared by the end-to-end tests: where the release binaries are, free ports, polling with a
// deadline, and server processes that are ready once they say so.

import { spawn } from "node:child_process";
import { createServer } from "node:net";
import { join, resolve } from "node:path";

const here = new URL(".", import.meta.url).pathname;
export const REPO = resolve(here, "../../..");
export const BIN = process.env.BSN_BIN_DIR || join(REPO, "target/release");

export async function freePort() {
  return new Promise((ok, fail) => {
    const s = createServer();
    s.listen(0, "127.0.0.1", () => {
      const { port } = s.address();
      s.close(() => ok(port));
    });
    s.on("error", fail);
  });
}

export async function eventually(what, f, ms = 30000) {
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

/** A server process; resolves once it printed `ready`. */
export async function proc(args, ready, env = process.env) {
  const p = spawn(args[0], args.slice(1), { stdio: ["ignore", "pipe", "pipe"], env });
  const lines = [];
  const seen = new Promise((ok, fail) => {
    const onData = (d) => {
      lines.push(...d.toString().split("\n"));
      if (lines.some((l) => l.includes(ready))) ok();
    };
    p.stdout.on("data", onData);
    p.stderr.on("data", onData);
    p.on("exit", (code) => fail(new Error(`${args[0]} exited ${code}:\n${lines.join("\n")}`)));
  });
  await Promise.race([seen, new Promise((_, fail) => setTimeout(() => fail(new Error(`${args[0]} not ready:\n${lines.join("\n")}`)), 60000))]);
  return {
    lines,
    async stop() {
      if (p.exitCode !== null) return;
      const gone = new Promise((r) => p.once("exit", r));
      p.kill("SIGTERM");
      await gone;
    },
  };
}

