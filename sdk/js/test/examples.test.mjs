// examples/js/notes.mjs runs against a real `bsn devnet`, as its header says to run it.

import { test } from "node:test";
import assert from "node:assert/strict";
import { execFile, spawn } from "node:child_process";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { BIN, REPO, freePorts } from "./helpers.mjs";

const run = promisify(execFile);
const EXAMPLE = join(REPO, "examples/js/notes.mjs");

test("the notes example against a devnet", async () => {
  const dir = mkdtempSync(join(tmpdir(), "bsn-js-devnet-"));
  const base = await freePorts(3); // the CA, the orderer, the city node
  const devnet = spawn(join(BIN, "bsn"), ["devnet", "--dir", join(dir, "net"), "--base-port", String(base), "--nodes", "1", "--orderers", "1"],
    { stdio: ["ignore", "pipe", "inherit"] });
  const lines = [];
  const exited = new Promise((r) => devnet.once("exit", r));
  try {
    await new Promise((ok, fail) => {
      const timer = setTimeout(() => fail(new Error(`devnet not ready:\n${lines.join("\n")}`)), 120000);
      devnet.stdout.on("data", (d) => {
        lines.push(...d.toString().split("\n"));
        if (lines.some((l) => l.includes("Ctrl-C here stops everything"))) {
          clearTimeout(timer);
          ok();
        }
      });
      devnet.once("exit", (code) => fail(new Error(`devnet exited ${code}:\n${lines.join("\n")}`)));
    });
    const exportLine = lines.map((l) => l.trim()).find((l) => l.startsWith("export BSN_NODE="));
    assert.ok(exportLine, lines.join("\n"));
    const env = { ...process.env, ...Object.fromEntries(exportLine.slice("export ".length).split(/\s+/).map((kv) => kv.split(/=(.*)/s).slice(0, 2))) };
    const notes = (...args) => run(process.execPath, [EXAMPLE, ...args], { env, timeout: 60000 });

    const added = await notes("add", "the shipment left the port");
    assert.match(added.stdout, /^added notes\/\d+-[0-9a-f]{8} in block \d+/);
    const follower = spawn(process.execPath, [EXAMPLE, "follow"], { env, stdio: ["ignore", "pipe", "inherit"] });
    let followed = "";
    follower.stdout.on("data", (d) => (followed += d));
    const waitFor = async (text) => {
      const until = Date.now() + 30000;
      while (!followed.includes(text)) {
        assert.ok(Date.now() < until, `follow printed ${JSON.stringify(followed)}, not ${text}`);
        await new Promise((r) => setTimeout(r, 50));
      }
    };
    // It starts at the tip, the first note's block: once it printed that, it is attached.
    await waitFor("the shipment left the port");
    await notes("add", "it arrived");
    await waitFor("it arrived");
    follower.kill("SIGINT");
    const listed = (await notes("list")).stdout.trim().split("\n").map((l) => l.split("\t"));
    assert.deepEqual(listed.map((l) => l[2]), ["the shipment left the port", "it arrived"]);
    assert.ok(listed.every((l) => l[1] === "demo-user"));
    await assert.rejects(notes("add"), (e) => e.code === 2 && /usage/.test(e.stderr));
  } finally {
    devnet.kill("SIGINT");
    await exited;
  }
});
