#!/usr/bin/env node
// Transactions signed and submitted per second from this SDK against one node: --txs
// transactions, --batch per request, --concurrency requests in flight, each answered after its
// commit. Signing is inside the timed part. Prints `sdk tx/s: N`.
//
// Run by `cargo run --release -p bsn-tests --bin bench-sdk`, which starts the node and compares
// with the Rust client in the same run.

import { parseArgs } from "node:util";
import * as bsn from "./src/index.js";

const { values: a } = parseArgs({
  options: {
    node: { type: "string" }, bundle: { type: "string" }, cert: { type: "string" }, key: { type: "string" },
    subchain: { type: "string" }, txs: { type: "string", default: "20000" }, batch: { type: "string", default: "500" },
    concurrency: { type: "string", default: "4" },
  },
});
const [txs, batch, concurrency] = [Number(a.txs), Number(a.batch), Number(a.concurrency)];
const creds = bsn.Credentials.load(a.cert, a.key);
const node = new bsn.Node(a.node, a.bundle, creds);
let next = 0;
const t = performance.now();
const counts = await Promise.all([...Array(concurrency)].map(async () => {
  let done = 0;
  while (next < txs) {
    const from = next;
    next = Math.min(next + batch, txs);
    const signed = [];
    for (let i = from; i < next; i++) signed.push(creds.signTx(a.subchain, [bsn.put(`js-${String(i).padStart(9, "0")}`, `value ${i}`)]));
    done += (await node.submitSigned(a.subchain, signed)).length;
  }
  return done;
}));
const secs = (performance.now() - t) / 1000;
const committed = counts.reduce((x, y) => x + y, 0);
node.close();
console.log(`sdk committed: ${committed} in ${secs.toFixed(2)} s`);
console.log(`sdk tx/s: ${(committed / secs).toFixed(0)}`);
