"""The protocol's shared test vectors (docs/vectors/), checked with this SDK alone."""

import base64
import json
import os
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives import serialization

from bsn import encoding, keys, merkle
from bsn.errors import MalformedError, TooLargeError, VerificationError
from bsn.signed import InvalidDocument, LogKey, MembershipKey, MembershipKeys, decode_leaf

VECTORS = Path(os.environ.get("BSN_VECTORS", Path(__file__).resolve().parents[3] / "docs" / "vectors"))


def load(name):
    return json.loads((VECTORS / name).read_text())


def b64(s):
    return base64.b64decode(s)


def private_key(k):
    spec = k["private_key"]
    if k["type"] == "p256":
        return ec.derive_private_key(int(spec["scalar"], 16), ec.SECP256R1())
    if k["type"] == "p384":
        return ec.derive_private_key(int(spec["scalar"], 16), ec.SECP384R1())
    if k["type"] == "ed25519":
        return ed25519.Ed25519PrivateKey.from_private_bytes(bytes.fromhex(spec["seed"]))
    return serialization.load_der_private_key(b64(spec["pkcs8"]), password=None)


def test_valid_transactions_reproduce_and_verify():
    creators = {c["name"]: c for c in load("keys.json")["creators"]}
    valid = load("transactions.json")["valid"]
    assert len(valid) == 4
    for t in valid:
        c = creators[t["creator"]]
        ops = [encoding.Put(o["put"], b64(o["value"])) if "put" in o else encoding.Delete(o["delete"]) for o in t["ops"]]
        body = encoding.TxBody(t["subchain"], bytes.fromhex(t["nonce"]), b64(c["certificate"]), ops).encode()
        assert body.hex() == t["body"], t["name"]
        assert encoding.sha256(body).hex() == t["id"]
        assert encoding.signing_message(body).hex() == t["signing_message"]
        key = private_key(c)
        if t["signature_reproducible"]:
            assert keys.sign(key, encoding.signing_message(body)).hex() == t["signature"], t["name"]
        # Whatever this SDK signs verifies, and so does the vector's own signature.
        ours = encoding.assemble(body, keys.sign(key, encoding.signing_message(body)))
        assert keys.verify_tx(ours).id.hex() == t["id"]
        tx = keys.verify_tx(b64(t["signed"]))
        assert tx.id.hex() == t["id"] and tx.entry_hash.hex() == t["entry_hash"]


@pytest.mark.parametrize("t", load("transactions.json")["refused"], ids=lambda t: t["name"])
def test_refused_transactions_are_refused_for_the_stated_reason(t):
    expected = {"malformed": MalformedError, "too-large": TooLargeError, "bad-signature": VerificationError}[t["refuse"]]
    with pytest.raises(expected):
        keys.verify_tx(b64(t["signed"]))


def test_signing_refuses_what_a_node_would_refuse():
    cert = b64(load("keys.json")["creators"][0]["certificate"])
    for ops, err in [([], TooLargeError), ([encoding.Put("", b"v")], TooLargeError),
                     ([encoding.Put("k", b"x" * 65537)], TooLargeError), ([encoding.Delete("a\nb")], MalformedError),
                     ([encoding.Put("k", b"v")] * 257, TooLargeError)]:
        with pytest.raises(err):
            encoding.TxBody("vectors", b"n" * 16, cert, ops).encode()
    with pytest.raises(MalformedError):
        encoding.TxBody("Vectors", b"n" * 16, cert, [encoding.Delete("k")]).encode()


def test_signed_documents():
    key = MembershipKey.from_base64(load("keys.json")["membership_key"])
    v = load("signed-documents.json")
    open_ = {"statement": key.verify_statement, "directory": key.verify_directory, "heartbeat": key.verify_heartbeat}
    for d in v["valid"]:
        open_[d["kind"]](d["envelope"])
    for d in v["refused"]:
        with pytest.raises((MalformedError, VerificationError)) as e:
            open_[d["kind"]](d["envelope"])
        got = ("invalid" if isinstance(e.value, InvalidDocument) else
               "malformed" if isinstance(e.value, MalformedError) else "bad-signature")
        assert got == d["refuse"], d["name"]


def test_membership_key_handovers():
    v = load("signed-documents.json")["handovers"]
    pinned = MembershipKey.from_base64(load("keys.json")["membership_key"])
    nxt = MembershipKey.from_base64(v["next_key"])
    with pytest.raises(VerificationError):
        pinned.verify_statement(v["statement_by_next_key"])
    keys = MembershipKeys(pinned)
    for r in v["refused"]:
        with pytest.raises((MalformedError, VerificationError)):
            keys.learn([r["handover"]])
        assert [k.raw for k in keys.keys] == [pinned.raw], r["name"]
    assert keys.learn([v["valid"]])
    assert keys.current.raw == nxt.raw
    assert keys.verify_statement(v["statement_by_next_key"])["revision"] == 3
    # Pinned on the new key, it follows the handover back: the old documents verify.
    back = MembershipKeys(nxt, [v["valid"]])
    assert [k.raw for k in back.keys] == [pinned.raw, nxt.raw]
    for d in load("signed-documents.json")["valid"]:
        if d["kind"] == "statement":
            back.verify_statement(d["envelope"])


def test_blocks_chain_and_entry_proofs():
    v = load("blocks.json")
    previous = bytes(32)
    hashes = []
    for i, b in enumerate(v["chain"]):
        block = encoding.Block.decode(b64(b["encoded"]))
        assert block.header.height == i and block.header.previous == previous
        assert block.header.encode().hex() == b["header"]
        assert encoding.BlockHeader.decode(bytes.fromhex(b["header"])) == block.header
        assert block.hash().hex() == b["hash"]
        previous = block.hash()
        hashes.append(previous)
    block1 = encoding.Block.decode(b64(v["chain"][1]["encoded"]))
    h = block1.header
    for p in v["proofs"]:
        proof = [bytes.fromhex(x) for x in p["proof"]]
        leaf = merkle.leaf_hash(bytes.fromhex(p["entry_hash"]))
        assert encoding.sha256(block1.entries[p["index"]]).hex() == p["entry_hash"]
        assert merkle.verify_inclusion(p["index"], h.entry_count, leaf, proof, h.entries_root)
        assert not merkle.verify_inclusion((p["index"] + 1) % h.entry_count, h.entry_count, leaf, proof, h.entries_root)
    for m in v["merkle"]:
        assert merkle.root_of_entries([bytes.fromhex(x) for x in m["entry_hashes"]]).hex() == m["root"]
    for r in v["refused"]:
        with pytest.raises(MalformedError):
            encoding.Block.decode(b64(r["encoded"]))
    for r in v["chain_breaks"]:
        b = encoding.Block.decode(b64(r["block"]["encoded"]))
        assert b.header.previous != hashes[r["after"]]
        with pytest.raises(MalformedError):
            encoding.check_chain([encoding.Block.decode(b64(v["chain"][0]["encoded"])), b])


def test_log_leaves_proofs_and_checkpoints():
    v = load("log.json")
    kinds = [decode_leaf(bytes.fromhex(l["encoded"]))["kind"] for l in v["leaves"]]
    assert kinds == [l["kind"] for l in v["leaves"]]
    leaves = [b64(x) for x in v["tree_leaves"]]
    root = b64(v["root"])
    assert merkle.root([merkle.leaf_hash(x) for x in leaves]) == root
    for p in v["inclusion"]:
        leaf = merkle.leaf_hash(leaves[p["index"]])
        assert base64.b64encode(leaf).decode() == p["leaf_hash"]
        assert merkle.verify_inclusion(p["index"], v["tree_size"], leaf, [b64(x) for x in p["proof"]], root)
    c = v["consistency"]
    proof = [b64(x) for x in c["proof"]]
    assert merkle.verify_consistency(c["first"], c["second"], b64(c["first_root"]), root, proof)
    assert not merkle.verify_consistency(c["first"], c["second"], b64(c["first_root"]), bytes(32), proof)
    key = LogKey(v["vkey"])
    cp = key.verify_checkpoint(v["checkpoint"])
    assert (cp.size, cp.root, cp.origin) == (v["tree_size"], root, v["origin"])
    cosigned = v["cosigned_checkpoint"]
    for k in (key, LogKey(cosigned["other_vkey"])):
        assert k.verify_checkpoint(cosigned["checkpoint"]).root == root
    for r in v["refused_checkpoints"]:
        with pytest.raises(VerificationError):
            key.verify_checkpoint(r["checkpoint"])


def test_merkle_inclusion_for_every_size_and_index():
    for n in range(1, 34):
        leaves = [merkle.leaf_hash(bytes([i])) for i in range(n)]
        r = merkle.root(leaves)
        for i in range(n):
            proof = _prove(leaves, i)
            assert merkle.verify_inclusion(i, n, leaves[i], proof, r), (n, i)
            assert not merkle.verify_inclusion(i, n, leaves[(i + 1) % n], proof, r) or n == 1


def _prove(leaves, i):
    n = len(leaves)
    if n == 1:
        return []
    k = 1
    while k * 2 < n:
        k *= 2
    if i < k:
        return _prove(leaves[:k], i) + [merkle.root(leaves[k:])]
    return _prove(leaves[k:], i - k) + [merkle.root(leaves[:k])]
