#!/usr/bin/env python3
"""Transactions signed and submitted per second from this SDK against one node: ``--txs``
transactions, ``--batch`` per request, ``--concurrency`` requests in flight (threads), each
answered after its commit. Signing is inside the timed part. Prints ``sdk tx/s: N``.

Run by ``cargo run --release -p bsn-tests --bin bench-sdk``, which starts the node and compares
with the Rust client in the same run."""

import argparse
import time
from concurrent.futures import ThreadPoolExecutor

import bsn
from bsn import Put


def main():
    p = argparse.ArgumentParser()
    for a in ("node", "bundle", "cert", "key", "subchain"):
        p.add_argument(f"--{a}", required=True)
    p.add_argument("--txs", type=int, default=20000)
    p.add_argument("--batch", type=int, default=500)
    p.add_argument("--concurrency", type=int, default=4)
    a = p.parse_args()
    creds = bsn.Credentials.load(a.cert, a.key)
    nodes = [bsn.Node(a.node, a.bundle, creds) for _ in range(a.concurrency)]
    batches = [range(i, min(i + a.batch, a.txs)) for i in range(0, a.txs, a.batch)]

    def work(w):
        n, done = nodes[w], 0
        for b in batches[w :: a.concurrency]:
            signed = [creds.sign_tx(a.subchain, [Put(f"py-{i:09d}", f"value {i}".encode())]) for i in b]
            done += len(n.submit_signed(a.subchain, signed))
        return done

    t = time.monotonic()
    with ThreadPoolExecutor(a.concurrency) as pool:
        committed = sum(pool.map(work, range(a.concurrency)))
    secs = time.monotonic() - t
    print(f"sdk committed: {committed} in {secs:.2f} s")
    print(f"sdk tx/s: {committed / secs:.0f}")


if __name__ == "__main__":
    main()
