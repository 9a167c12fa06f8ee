// Shared by the end-to-end tests: where the release binaries are, free ports, polling with a
// deadline, and server processes that are ready once they say so.

import { spawn } from "node:child_process";
import { createServer } from "node:net";
import { join, resolve } from "node:path";

const here = new URL(".", import.meta.url).pathname;
export const REPO = resolve(here, "../../..");
export const BIN = process.env.BSN_BIN_DIR || join(REPO, "target/release");

// Ports come from 20000..32000, below the kernel's ephemeral range (32768..61000): a port the
// kernel hands out for port 0 can be taken by an outgoing connection before the server binds it
// ("port ... is already in use"). The start is spread by the process id, and a counter keeps two
// calls in one run apart.
const LOW = 20000;
const SPAN = 12000;
let next = (process.pid * 7919) % SPAN;

function binds(port) {
  return new Promise((ok) => {
    const s = createServer();
    s.once("error", () => ok(false));
    s.listen(port, "127.0.0.1", () => s.close(() => ok(true)));
  });
}

// The first of n consecutive ports on 127.0.0.1 that bind now and no other call here handed out.
export async function freePorts(n) {
  for (let tries = 0; tries < SPAN; tries++) {
    const first = next % SPAN;
    next += n;
    if (first + n > SPAN) continue;
    const base = LOW + first;
    let all = true;
    for (let p = base; p < base + n && all; p++) all = await binds(p);
    if (all) return base;
  }
  throw new Error(`no ${n} free consecutive ports in 20000..32000 on 127.0.0.1`);
}

export async function freePort() {
  return freePorts(1);
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

