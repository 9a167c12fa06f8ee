"""examples/python runs against a real `bsn devnet`, as its docstring says to run it."""

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from test_e2e import BIN, REPO, free_ports

EXAMPLE = REPO / "examples" / "python" / "notes.py"


def test_the_notes_example_against_a_devnet(tmp_path):
    base = free_ports(3)  # the CA, the orderer, the city node
    devnet = subprocess.Popen([BIN / "bsn", "devnet", "--dir", tmp_path / "net", "--base-port", str(base),
                               "--nodes", "1", "--orderers", "1"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True)
    lines = []
    try:
        deadline = time.monotonic() + 120
        for line in devnet.stdout:
            lines.append(line.rstrip())
            if "Ctrl-C here stops everything" in line:
                break
            assert time.monotonic() < deadline, "\n".join(lines)
        export = next((l.strip() for l in lines if l.strip().startswith("export BSN_NODE=")), None)
        assert export, "\n".join(lines)
        env = dict(os.environ)
        env.update(dict(kv.split("=", 1) for kv in export[len("export "):].split()))

        def notes(*args, **kw):
            return subprocess.run([sys.executable, EXAMPLE, *args], env=env, capture_output=True, text=True,
                                  timeout=60, **kw)

        out = notes("add", "the shipment left the port")
        assert out.returncode == 0 and re.match(r"added notes/\d+-[0-9a-f]{8} in block \d+", out.stdout), out
        follower = subprocess.Popen([sys.executable, EXAMPLE, "follow"], env=env, stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT, text=True)
        seen = []
        reader = threading.Thread(target=lambda: seen.extend(follower.stdout), daemon=True)
        reader.start()
        # It starts at the tip, the first note's block: once it printed that, it is attached.
        _wait_for(seen, "the shipment left the port")
        assert notes("add", "it arrived").returncode == 0
        _wait_for(seen, "it arrived")
        follower.send_signal(signal.SIGINT)
        follower.wait(10)
        listed = notes("list")
        assert listed.returncode == 0
        texts = [l.split("\t")[2] for l in listed.stdout.splitlines()]
        assert texts == ["the shipment left the port", "it arrived"], listed.stdout
        assert all(l.split("\t")[1] == "demo-user" for l in listed.stdout.splitlines())
        bad = notes("add")
        assert bad.returncode != 0 and "notes.py add" in bad.stderr
    finally:
        devnet.send_signal(signal.SIGINT)
        devnet.wait(30)


def _wait_for(seen, text, within=30):
    deadline = time.monotonic() + within
    while not any(text in l for l in seen):
        assert time.monotonic() < deadline, f"follow printed {seen}, not {text!r}"
        time.sleep(0.05)
