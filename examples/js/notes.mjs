#!/usr/bin/env node
// Shared notes on a subchain: add a note, list them, follow new ones as they commit.
//
// With `bsn devnet` running, paste the `export ...` line it prints, then:
//
//     node examples/js/notes.mjs add "the shipment left the port"
//     node examples/js/notes.mjs list
//     node examples/js/notes.mjs follow        # Ctrl-C to stop
//
// Each note is one signed transaction (key `notes/<time>-<random>`, value JSON with the author
// and the text); `list` reads the range back; `follow` prints notes from each new block, with the
// hash chain verified by the SDK. (An app of its own would `npm install ./sdk/js` and import
// "@bsn/sdk".)

import { randomBytes } from "node:crypto";
import * as bsn from "../../sdk/js/src/index.js";

const USAGE = "usage: notes.mjs add TEXT | list | follow";

function node() {
  for (const v of ["BSN_NODE", "BSN_CA_BUNDLE", "BSN_CERT", "BSN_KEY"]) {
    if (!process.env[v]) throw new bsn.LocalError(`${v} is not set: paste the export line \`bsn devnet\` prints`);
  }
  const creds = bsn.Credentials.load(process.env.BSN_CERT, process.env.BSN_KEY);
  return new bsn.Node(process.env.BSN_NODE, process.env.BSN_CA_BUNDLE, creds);
}

async function main([command, text, ...rest]) {
  const subchain = process.env.BSN_SUBCHAIN || "demo";
  if (!["add", "list", "follow"].includes(command) || (command === "add" && (!text || rest.length))) {
    console.error(USAGE);
    process.exit(2);
  }
  const n = node();
  try {
    if (command === "add") {
      const key = `notes/${String(Date.now()).padStart(20, "0")}-${randomBytes(4).toString("hex")}`;
      const note = { author: n.credentials.spiffeId.split("/").at(-1), text };
      const done = await n.submit(subchain, [bsn.put(key, JSON.stringify(note))]);
      console.log(`added ${key} in block ${done.height} (transaction ${done.id})`);
    } else if (command === "list") {
      let start = "notes/";
      for (;;) {
        const { items, more } = await n.range(subchain, { start, end: "notes0", limit: 100 });
        for (const [key, value] of items) {
          const note = JSON.parse(value.toString());
          console.log(`${key}\t${note.author}\t${note.text}`);
        }
        if (!more) break;
        start = `${items.at(-1)[0]}\u0000`;
      }
    } else {
      const info = await n.info(subchain);
      for await (const block of n.follow(subchain, info.height ?? 0)) {
        if (block.header.kind !== "transactions") continue;
        for (const entry of block.entries) {
          for (const op of bsn.parseSignedTx(entry).body.ops) {
            if ("put" in op && op.put.startsWith("notes/")) {
              const note = JSON.parse(op.value.toString());
              console.log(`block ${block.header.height}\t${note.author}\t${note.text}`);
            }
          }
        }
      }
    }
  } finally {
    n.close();
  }
}

main(process.argv.slice(2)).catch((e) => {
  console.error(`error: ${e.message}`);
  process.exit(e instanceof bsn.LocalError ? 2 : 1);
});
