"""The SDK against real processes: a development CA and a city node from this repository's
release build (BSN_BIN_DIR, default target/release). A participant enrolls with the SDK, joins
through the CA's API, writes, reads back with a verified proof, follows blocks across a node
restart, and is refused with the typed error once revoked."""

import os
import re
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest

import bsn
from bsn import Delete, Put

REPO = Path(__file__).resolve().parents[3]
BIN = Path(os.environ.get("BSN_BIN_DIR", REPO / "target" / "release"))


# Ports come from 20000..32000, below the kernel's ephemeral range (32768..61000): a port the
# kernel handed out (bind to 0) can be taken by an outgoing connection before the server binds it,
# which made the devnet example fail with "port ... is already in use". The start is spread by the
# process id, and a counter keeps two calls in one run apart.
_LOW, _SPAN = 20_000, 12_000
_next = [(os.getpid() * 7919) % _SPAN]


def free_ports(n):
    """The first of n consecutive ports on 127.0.0.1 that bind now and no other call here handed out."""
    for _ in range(_SPAN):
        first = _next[0] % _SPAN
        _next[0] += n
        if first + n > _SPAN:
            continue
        base = _LOW + first
        if all(_binds(p) for p in range(base, base + n)):
            return base
    raise AssertionError(f"no {n} free consecutive ports in 20000..32000 on 127.0.0.1")


def free_port():
    return free_ports(1)


def _binds(port):
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def eventually(what, f, within=30.0):
    deadline = time.monotonic() + within
    last = None
    while time.monotonic() < deadline:
        try:
            v = f()
            if v:
                return v
        except bsn.BsnError as e:
            last = e
        time.sleep(0.1)
    raise AssertionError(f"{what} did not happen within {within} s (last: {last!r})")


class Proc:
    """A server process whose output is collected; ready once it prints ``ready``."""

    def __init__(self, args, ready, env=None):
        self.p = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
        self.lines = []
        self.seen = threading.Event()
        threading.Thread(target=self._read, args=(ready,), daemon=True).start()
        if not self.seen.wait(60):
            self.stop()
            raise AssertionError(f"{args[0]} did not print {ready!r}:\n" + "\n".join(self.lines))

    def _read(self, ready):
        for line in self.p.stdout:
            self.lines.append(line.rstrip())
            if ready in line:
                self.seen.set()

    def stop(self):
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGTERM)
            try:
                self.p.wait(20)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait()


def run(*args):
    out = subprocess.run([str(a) for a in args], capture_output=True, text=True)
    assert out.returncode == 0, f"{args}: {out.stdout}{out.stderr}"
    return out.stdout


@pytest.fixture(scope="module")
def net(tmp_path_factory):
    d = tmp_path_factory.mktemp("net")
    ca_port, node_port = free_port(), free_port()
    ca_url, node_url = f"https://127.0.0.1:{ca_port}", f"https://127.0.0.1:{node_port}"
    ca = Proc([BIN / "ca-server", "dev", "--data-dir", d / "ca", "--listen", f"127.0.0.1:{ca_port}"], "listening on")
    bundle = d / "ca" / "trust-bundle.pem"
    secret = next(l.split(": ", 1)[1] for l in ca.lines if l.startswith("admin enrollment secret: "))
    common = ["--ca", ca_url, "--ca-bundle", bundle]
    run(BIN / "bsn", "enroll", "--id", "admin", "--secret", secret, "--out", d / "admin", *common)
    admin = ["--cert", d / "admin" / "cert.pem", "--key", d / "admin" / "key.pem", *common]

    def register(*args):
        return re.search(r"enrollment secret: (\S+)", run(BIN / "bsn", "register", *args, *admin)).group(1)

    n1 = register("--id", "n1", "--type", "node", "--dns", "localhost", "--ip", "127.0.0.1")
    run(BIN / "ledger-node", "init", "--data-dir", d / "n1", "--ca", ca_url, "--ca-bundle", bundle, "--name", "n1",
        "--secret", n1, "--listen", f"127.0.0.1:{node_port}")
    node = Proc([BIN / "ledger-node", "serve", "--data-dir", d / "n1"], "listening on")
    run(BIN / "bsn", "subchain", "create", "demo", "--name", "Demo", "--node", "n1", "--policy", "open",
        "--no-orderers", *admin)
    state = {"dir": d, "ca": ca_url, "node": node_url, "bundle": bundle, "admin": admin, "register": register,
             "procs": [ca, node]}

    def restart_node():
        state["procs"][1].stop()
        state["procs"][1] = Proc([BIN / "ledger-node", "serve", "--data-dir", d / "n1"], "listening on")

    state["restart_node"] = restart_node
    yield state
    for p in reversed(state["procs"]):
        p.stop()


def test_a_participant_enrolls_joins_writes_reads_follows_and_is_revoked(net):
    d = net["dir"]
    secret = net["register"]("--id", "pyuser")
    with bsn.Ca(net["ca"], net["bundle"]) as ca:
        issued = ca.enroll("pyuser", secret, d / "pyuser")
        assert issued.spiffe_id.endswith("/participant/pyuser")
        assert issued.receipt and issued.receipt["tree_size"] > issued.receipt["leaf_index"]
        key = ca.membership_key()
        # No handover yet: the keys followed from the pinned one are that key alone.
        keys = ca.membership_keys(key)
        assert [k.raw for k in keys.keys] == [key.raw]
    assert oct((d / "pyuser" / "key.pem").stat().st_mode & 0o777) == "0o600"
    creds = bsn.Credentials.load(d / "pyuser" / "cert.pem", d / "pyuser" / "key.pem")
    with bsn.connect_ca(net["ca"], net["bundle"], creds) as me:
        joined = me.join("demo", role="writer")
        assert joined["outcome"] == "member"
        statement = me.get("/api/v1/subchains/demo/statement")
        assert key.verify_statement(statement)["members"][-1] == {"id": "pyuser", "role": "writer"}

    node = bsn.Node(net["node"], net["bundle"], creds)
    c = eventually("the node admits the new writer",
                   lambda: _try(lambda: node.submit("demo", [Put("color", b"blue"), Delete("old")])))
    assert node.get("demo", "color") == b"blue"
    assert node.get("demo", "never-set") is None
    tx = node.transaction("demo", c.id)
    assert (tx.height, tx.index) == (c.height, c.index) and tx.creator == "pyuser"
    items, more = node.range("demo", start="c", end="d")
    assert items == [("color", b"blue")] and not more

    # Follow the chain, restart the node, write again: the stream resumes where it was.
    follow = node.follow("demo", 0)
    seen = [next(follow) for _ in range(c.height + 1)]
    assert [b.header.height for b in seen] == list(range(c.height + 1))
    net["restart_node"]()
    later = eventually("a write after the restart", lambda: _try(lambda: node.submit("demo", [Put("color", b"red")])))
    while seen[-1].header.height < later.height:
        seen.append(next(follow))
    assert seen[-1].header.height == later.height and node.get("demo", "color") == b"red"

    # Bad input is refused here, before anything is sent.
    with pytest.raises(bsn.TooLargeError):
        node.submit("demo", [Put("k", b"v")] * 257)
    with pytest.raises(bsn.TooLargeError):
        node.submit("demo", [Put("k", b"x" * 65537)])

    # The wrong trust bundle: the node's certificate does not chain to it.
    other = d / "other-bundle.pem"
    other.write_bytes(_foreign_root())
    with pytest.raises(bsn.TrustError):
        bsn.Node(net["node"], other, creds).info("demo")

    # Revoked: the node refuses the certificate itself, and the SDK says so.
    serial = issued.serial
    run(BIN / "bsn", "revoke", "--serial", serial, "--reason", "keyCompromise", *net["admin"])
    err = eventually("the node refuses the revoked certificate", lambda: _refused(node))
    assert isinstance(err, bsn.CertificateRevoked), repr(err)


def test_expired_and_foreign_certificates_get_their_own_errors(net, tmp_path):
    # A second network whose CA issues participant certificates for 5 seconds.
    ca_port, node_port = free_port(), free_port()
    ca_url, node_url = f"https://127.0.0.1:{ca_port}", f"https://127.0.0.1:{node_port}"
    env = dict(os.environ, BSN_CA_PARTICIPANT_VALIDITY="5s")
    procs = [Proc([BIN / "ca-server", "dev", "--data-dir", tmp_path / "ca", "--listen", f"127.0.0.1:{ca_port}"],
                  "listening on", env=env)]
    try:
        bundle = tmp_path / "ca" / "trust-bundle.pem"
        secret = next(l.split(": ", 1)[1] for l in procs[0].lines if l.startswith("admin enrollment secret: "))
        common = ["--ca", ca_url, "--ca-bundle", bundle]
        run(BIN / "bsn", "enroll", "--id", "admin", "--secret", secret, "--out", tmp_path / "admin", *common)
        admin = ["--cert", tmp_path / "admin" / "cert.pem", "--key", tmp_path / "admin" / "key.pem", *common]

        def register(*args):
            return re.search(r"enrollment secret: (\S+)", run(BIN / "bsn", "register", *args, *admin)).group(1)

        node_secret = register("--id", "n2", "--type", "node", "--ip", "127.0.0.1")
        user_secret = register("--id", "brief")
        run(BIN / "ledger-node", "init", "--data-dir", tmp_path / "n2", "--ca", ca_url, "--ca-bundle", bundle,
            "--name", "n2", "--secret", node_secret, "--listen", f"127.0.0.1:{node_port}")
        procs.append(Proc([BIN / "ledger-node", "serve", "--data-dir", tmp_path / "n2"], "listening on"))
        with bsn.Ca(ca_url, bundle) as c:
            brief = c.enroll("brief", user_secret, tmp_path / "brief").credentials
        expires = brief.chain[0].not_valid_after_utc.timestamp()
        node = bsn.Node(node_url, bundle, brief)
        with pytest.raises(bsn.errors.NotHosted):  # admitted at the TLS layer while valid
            node.info("nothing-here")
        while time.time() < expires + 1:
            time.sleep(0.2)
        err = eventually("the node refuses the expired certificate", lambda: _refused(node, "nothing-here"))
        assert isinstance(err, bsn.CertificateExpired), repr(err)
        # A certificate of another network's CA: refused as unknown. (Both development CAs have
        # the same names, so the node finds the other chain's signatures wrong: a decrypt_error
        # alert, where differently named CAs give unknown_ca; the SDK reports both as unknown.)
        foreign = bsn.Credentials.load(net["dir"] / "admin" / "cert.pem", net["dir"] / "admin" / "key.pem")
        with pytest.raises(bsn.CertificateUnknown):
            bsn.Node(node_url, bundle, foreign).info("nothing-here")
    finally:
        for p in reversed(procs):
            p.stop()


def _try(f):
    try:
        return f()
    except (bsn.errors.RetryLater, bsn.errors.Forbidden, bsn.errors.NotFound):
        return None


def _refused(node, subchain="demo"):
    try:
        node.info(subchain)
    except bsn.CertificateRefused as e:
        return e
    return None


def _foreign_root():
    import datetime
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Another CA")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(1).not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    return cert.public_bytes(serialization.Encoding.PEM)
