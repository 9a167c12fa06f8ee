#!/usr/bin/env python3
"""Shared notes on a subchain: add a note, list them, follow new ones as they commit.

With `bsn devnet` running, paste the `export ...` line it prints, then:

    python3 examples/python/notes.py add "the shipment left the port"
    python3 examples/python/notes.py list
    python3 examples/python/notes.py follow        # Ctrl-C to stop

Each note is one signed transaction (key `notes/<time>-<random>`, value JSON with the author
and the text); `list` reads the range back from the node; `follow` prints notes from each new
block, with the block hash chain verified by the SDK.
"""

import json
import os
import secrets
import signal
import sys
import time

import bsn
from bsn import Put


def node() -> bsn.Node:
    try:
        creds = bsn.Credentials.load(os.environ["BSN_CERT"], os.environ["BSN_KEY"])
        return bsn.Node(os.environ["BSN_NODE"], os.environ["BSN_CA_BUNDLE"], creds)
    except KeyError as e:
        sys.exit(f"{e.args[0]} is not set: paste the export line `bsn devnet` prints")


def main(argv):
    subchain = os.environ.get("BSN_SUBCHAIN", "demo")
    if len(argv) < 2 or argv[1] not in ("add", "list", "follow") or (argv[1] == "add" and len(argv) != 3):
        sys.exit(__doc__)
    with node() as n:
        if argv[1] == "add":
            key = f"notes/{time.time_ns():020d}-{secrets.token_hex(4)}"
            note = {"author": n.credentials.spiffe_id.rsplit("/", 1)[-1], "text": argv[2]}
            done = n.submit(subchain, [Put(key, json.dumps(note).encode())])
            print(f"added {key} in block {done.height} (transaction {done.id})")
        elif argv[1] == "list":
            start = "notes/"
            while True:
                items, more = n.range(subchain, start=start, end="notes0", limit=100)
                for key, value in items:
                    note = json.loads(value)
                    print(f"{key}\t{note['author']}\t{note['text']}")
                if not more:
                    break
                start = items[-1][0] + "\x00"
        else:
            # Following only reads: Ctrl-C ends the process at once, with no clean-up that could
            # wait on the open stream (once in CI a follower outlived its SIGINT by 10 s).
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            for block in n.follow(subchain, start=n.info(subchain).get("height") or 0):
                for entry in block.entries if block.header.kind == "transactions" else []:
                    for op in bsn.SignedTx.parse(entry).body.ops:
                        if isinstance(op, Put) and op.key.startswith("notes/"):
                            note = json.loads(op.value)
                            print(f"block {block.header.height}\t{note['author']}\t{note['text']}", flush=True)


if __name__ == "__main__":
    try:
        main(sys.argv)
    except bsn.BsnError as e:
        sys.exit(f"error: {e}")
    except KeyboardInterrupt:
        pass
