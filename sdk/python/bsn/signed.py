"""What the CA signs, verified offline: membership statements, the node directory and feed
heartbeats (Ed25519 envelopes over a context string and the exact payload bytes), and the
issuance log's leaves and C2SP checkpoints (docs/protocol.md sections 6 and 8)."""

from __future__ import annotations

import base64
import hashlib
import json
import re
import struct
from dataclasses import dataclass
from typing import Any, Dict, List, Tuple

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from .errors import MalformedError, VerificationError

STATEMENT_CONTEXT = b"bsn membership statement v1\n"
HEARTBEAT_CONTEXT = b"bsn feed heartbeat v1\n"
DIRECTORY_CONTEXT = b"bsn node directory v1\n"
HANDOVER_CONTEXT = b"bsn membership key handover v1\n"

_ID = re.compile(r"^[a-zA-Z0-9._-]{1,128}$")
ROLES = ("reader", "writer", "admin")


class InvalidDocument(VerificationError):
    """Signed by the CA, but breaking the protocol's rules."""


def _b64(s: Any, what: str) -> bytes:
    try:
        return base64.b64decode(s, validate=True)
    except Exception:
        raise MalformedError(f"{what} is not base64") from None


def _json_object(payload: bytes, what: str) -> Dict[str, Any]:
    try:
        doc = json.loads(payload)
    except ValueError:
        raise MalformedError(f"{what} is not JSON") from None
    if not isinstance(doc, dict):
        raise MalformedError(f"{what} is not a JSON object")
    return doc


class MembershipKey:
    """The CA's membership key (Ed25519), pinned from a trusted source."""

    def __init__(self, raw: bytes) -> None:
        if len(raw) != 32:
            raise MalformedError("a membership key is 32 bytes")
        self._key = Ed25519PublicKey.from_public_bytes(raw)
        self.raw = bytes(raw)

    @staticmethod
    def from_base64(s: str) -> "MembershipKey":
        return MembershipKey(_b64(s.strip(), "the membership key"))

    def open(self, context: bytes, envelope: Dict[str, Any]) -> Dict[str, Any]:
        """Checks the envelope's signature over ``context`` and the payload, then parses it."""
        if not isinstance(envelope, dict) or set(envelope) != {"payload", "signature"}:
            raise MalformedError("an envelope is {payload, signature}")
        payload = _b64(envelope["payload"], "the payload")
        signature = _b64(envelope["signature"], "the signature")
        try:
            self._key.verify(signature, context + payload)
        except InvalidSignature:
            raise VerificationError("the signature does not verify with the CA's membership key") from None
        return _json_object(payload, "the payload")

    def verify_statement(self, envelope: Dict[str, Any]) -> Dict[str, Any]:
        """A membership statement: signature, shape and rules."""
        s = self.open(STATEMENT_CONTEXT, envelope)
        _fields(s, {"version", "trust_domain", "subchain", "revision", "issued_at", "nodes", "members"},
                {"orderers", "plan"})
        if s["version"] != 1:
            raise InvalidDocument("unknown statement version")
        if not isinstance(s["revision"], int) or s["revision"] < 1:
            raise InvalidDocument("revision must be at least 1")
        members = s["members"]
        if not isinstance(members, list) or not all(isinstance(m, dict) and set(m) == {"id", "role"} for m in members):
            raise MalformedError("members are {id, role}")
        ids = [m["id"] for m in members]
        if any(r not in ROLES for r in (m["role"] for m in members)):
            raise MalformedError("a role is reader, writer or admin")
        for name, seq in (("members", ids), ("nodes", s["nodes"]), ("orderers", s.get("orderers", []))):
            if not isinstance(seq, list) or not all(isinstance(x, str) for x in seq):
                raise MalformedError(f"{name} must be a list of ids")
            if any(a >= b for a, b in zip(seq, seq[1:])):
                raise InvalidDocument(f"{name} must be sorted, each once")
            if not all(_ID.match(x) for x in seq):
                raise InvalidDocument(f"{name} holds an invalid id")
        if "plan" in s:
            plan = s["plan"]
            if not isinstance(plan, dict):
                raise MalformedError("the plan is {name, tenancy, rate, burst, storage, bandwidth}")
            _fields(plan, {"name", "tenancy", "rate", "burst", "storage", "bandwidth"}, set())
            _figures(plan, ("rate", "burst", "storage", "bandwidth"), "the plan")
        return s

    def verify_directory(self, envelope: Dict[str, Any]) -> Dict[str, Any]:
        """The node directory: signature, shape and rules."""
        d = self.open(DIRECTORY_CONTEXT, envelope)
        _fields(d, {"version", "trust_domain", "revision", "issued_at", "nodes"}, set())
        if d["version"] != 1 or not isinstance(d["revision"], int) or d["revision"] < 1:
            raise InvalidDocument("unknown version, or revision below 1")
        nodes = d["nodes"]
        if not all(isinstance(n, dict) and {"id", "role", "city", "url"} <= set(n)
                   <= {"id", "role", "city", "url", "capacity", "draining"} for n in nodes):
            raise MalformedError("nodes are {id, role, city, url}, with a city node's capacity and draining")
        ids = [n["id"] for n in nodes]
        if any(a >= b for a, b in zip(ids, ids[1:])):
            raise InvalidDocument("nodes must be sorted by id, each once")
        for n in nodes:
            if n["role"] not in ("node", "orderer") or not str(n["url"]).startswith("https://"):
                raise InvalidDocument(f"{n['id']}: role must be node or orderer, url https://")
            if "capacity" in n:
                c = n["capacity"]
                if n["role"] != "node" or not isinstance(c, dict):
                    raise InvalidDocument(f"{n['id']}: only city nodes declare a capacity")
                _fields(c, {"tenancy", "rate", "storage"}, set())
                _figures(c, ("rate", "storage"), f"{n['id']}'s capacity")
            if not isinstance(n.get("draining", False), bool):
                raise MalformedError(f"{n['id']}: draining is true or false")
        return d

    def verify_heartbeat(self, envelope: Dict[str, Any]) -> Dict[str, Any]:
        """A feed heartbeat: signature and shape."""
        h = self.open(HEARTBEAT_CONTEXT, envelope)
        _fields(h, {"trust_domain", "node", "cursor", "at_ms"}, set())
        return h


def verify_handover(handover: Dict[str, Any]) -> Tuple[Dict[str, Any], bytes, bytes]:
    """A membership key handover: both signatures (the old key's and the new key's) over the
    handover context and the terms. Returns the terms and the two raw keys (from, to)."""
    if not isinstance(handover, dict) or set(handover) != {"payload", "from_signature", "to_signature"}:
        raise MalformedError("a handover is {payload, from_signature, to_signature}")
    payload = _b64(handover["payload"], "the handover's payload")
    terms = _json_object(payload, "the handover's payload")
    _fields(terms, {"version", "trust_domain", "from", "to", "number", "issued_at"}, set())
    if terms["version"] != 1:
        raise MalformedError("unknown handover version")
    old, new = _b64(terms["from"], "the old key"), _b64(terms["to"], "the new key")
    if len(old) != 32 or len(new) != 32:
        raise MalformedError("a membership key is 32 bytes")
    if old == new:
        raise InvalidDocument("a key cannot hand over to itself")
    for raw, sig in ((old, handover["from_signature"]), (new, handover["to_signature"])):
        try:
            Ed25519PublicKey.from_public_bytes(raw).verify(_b64(sig, "a handover signature"), HANDOVER_CONTEXT + payload)
        except InvalidSignature:
            raise VerificationError("the handover is not signed by both keys") from None
    return terms, old, new


class MembershipKeys:
    """The membership keys a verifier trusts: the one it pinned and those linked to it by
    handovers (each signed by both of its keys), oldest first; the last is the one the CA signs
    with now. A document signed by any of them verifies (statements signed before a handover
    stay valid)."""

    def __init__(self, pinned: MembershipKey, handovers: List[Dict[str, Any]] = ()) -> None:
        self._keys: List[bytes] = [pinned.raw]
        self.learn(list(handovers))

    @property
    def keys(self) -> List[MembershipKey]:
        return [MembershipKey(k) for k in self._keys]

    @property
    def current(self) -> MembershipKey:
        return MembershipKey(self._keys[-1])

    def learn(self, handovers: List[Dict[str, Any]]) -> bool:
        """Follows the handovers that link to these keys, forward and backward. A handover that
        does not verify raises and changes nothing. Returns whether a key was learned."""
        links = [verify_handover(h)[1:] for h in handovers]
        learned = False
        while True:
            before = len(self._keys)
            for old, new in links:
                if old == self._keys[-1] and new not in self._keys:
                    self._keys.append(new)
                elif new == self._keys[0] and old not in self._keys:
                    self._keys.insert(0, old)
            if len(self._keys) == before:
                return learned
            learned = True

    def _first(self, verify: str, envelope: Dict[str, Any]) -> Dict[str, Any]:
        for k in reversed(self._keys):
            try:
                return getattr(MembershipKey(k), verify)(envelope)
            except VerificationError as e:
                if isinstance(e, InvalidDocument):
                    raise
        raise VerificationError("the signature does not verify with any of the CA's membership keys")

    def verify_statement(self, envelope: Dict[str, Any]) -> Dict[str, Any]:
        return self._first("verify_statement", envelope)

    def verify_directory(self, envelope: Dict[str, Any]) -> Dict[str, Any]:
        return self._first("verify_directory", envelope)

    def verify_heartbeat(self, envelope: Dict[str, Any]) -> Dict[str, Any]:
        return self._first("verify_heartbeat", envelope)


def _figures(doc: Dict[str, Any], names: Tuple[str, ...], what: str) -> None:
    """A plan's or a capacity's tenancy and figures: shared or dedicated, positive integers."""
    if doc["tenancy"] not in ("shared", "dedicated"):
        raise InvalidDocument(f"{what}: tenancy is shared or dedicated")
    for name in names:
        v = doc[name]
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise InvalidDocument(f"{what}: {name} must be a positive integer")


def _fields(doc: Dict[str, Any], required: set, optional: set) -> None:
    keys = set(doc)
    if not required <= keys or not keys <= required | optional:
        raise MalformedError(f"expected the fields {sorted(required | optional)}, got {sorted(keys)}")


# ---- the issuance log -------------------------------------------------------------------------

REASONS = {0: "unspecified", 1: "keyCompromise", 2: "cACompromise", 3: "affiliationChanged", 4: "superseded",
           5: "cessationOfOperation", 6: "certificateHold", 8: "removeFromCRL", 9: "privilegeWithdrawn",
           10: "aACompromise"}


def decode_leaf(b: bytes) -> Dict[str, Any]:
    """A v1 issuance-log leaf as a dict (``kind``: issuance, revocation, membership, intermediate, key or root)."""
    from .encoding import _Reader

    r = _Reader(b)

    def text() -> str:
        try:
            return r.take(r.u16()).decode("utf-8")
        except UnicodeDecodeError:
            raise MalformedError("text is not UTF-8") from None

    if r.u8() != 1:
        raise MalformedError("unknown leaf version")
    kind = r.u8()
    time = r.u64()
    if kind == 1:
        leaf = {"kind": "issuance", "time": time, "identity": text(), "serial": text(), "authorized_by": text()}
        leaf["not_before"], leaf["not_after"] = struct.unpack(">qq", r.take(16))
        leaf["key_sha256"] = r.take(32)
        leaf["certificate"] = r.take(r.u16())
    elif kind == 2:
        leaf = {"kind": "revocation", "time": time, "identity": text(), "serial": text(), "authorized_by": text(),
                "reason": r.u8()}
    elif kind == 3:
        leaf = {"kind": "membership", "time": time, "subchain": text(), "revision": r.u64(), "authorized_by": text(),
                "statement_sha256": r.take(32)}
    elif kind == 4:
        steps = {1: "published", 2: "activated", 3: "retired"}
        step = steps.get(r.u8())
        if step is None:
            raise MalformedError("unknown intermediate step")
        leaf = {"kind": "intermediate", "time": time, "step": step, "number": r.u64(), "authorized_by": text(),
                "certificate": r.take(r.u16())}
    elif kind == 5:
        purpose = {1: "log", 2: "membership"}.get(r.u8())
        if purpose is None:
            raise MalformedError("unknown key purpose")
        step = {1: "begun", 2: "finished"}.get(r.u8())
        if step is None:
            raise MalformedError("unknown handover step")
        leaf = {"kind": "key", "time": time, "purpose": purpose, "step": step, "number": r.u64(),
                "authorized_by": text(), "old_key": r.take(32), "new_key": r.take(32)}
    elif kind == 6:
        step = {1: "published", 2: "activated", 3: "withdrawn"}.get(r.u8())
        if step is None:
            raise MalformedError("unknown root step")
        leaf = {"kind": "root", "time": time, "step": step, "number": r.u64(), "authorized_by": text(),
                "certificate": r.take(r.u16()), "cross": r.take(r.u16())}
    else:
        raise MalformedError("unknown leaf kind")
    if r.rest():
        raise MalformedError("trailing bytes after the leaf")
    return leaf


@dataclass(frozen=True)
class Checkpoint:
    """A verified checkpoint: the log's origin, size and root hash."""

    origin: str
    size: int
    root: bytes


class LogKey:
    """The issuance log's verifier key (``log.vkey``): ``name+keyid+base64(0x01 || key)``."""

    def __init__(self, vkey: str) -> None:
        parts = vkey.strip().split("+")
        if len(parts) != 3 or len(parts[1]) != 8:
            raise MalformedError("a verifier key is name+1234abcd+base64")
        self.name = parts[0]
        raw = _b64(parts[2], "the verifier key")
        if len(raw) != 33 or raw[0] != 1:
            raise MalformedError("not an Ed25519 verifier key")
        self.key_id = bytes.fromhex(parts[1])
        if hashlib.sha256(self.name.encode() + b"\n" + raw).digest()[:4] != self.key_id:
            raise MalformedError("the key id does not match the key")
        self._key = Ed25519PublicKey.from_public_bytes(raw[1:])

    def verify_checkpoint(self, note: str) -> Checkpoint:
        """Verifies a C2SP checkpoint note signed by this key and returns what it says."""
        text, sep, sigs = note.partition("\n\n")
        if not sep or not text:
            raise MalformedError("a note is text, a blank line, then signatures")
        message = (text + "\n").encode()
        ok = False
        for line in sigs.splitlines():
            if not line.startswith("\u2014 "):
                raise MalformedError("a signature line starts with an em dash")
            name, _, sig = line[2:].partition(" ")
            blob = _b64(sig, "a note signature")
            if name != self.name or blob[:4] != self.key_id:
                continue
            try:
                self._key.verify(blob[4:], message)
                ok = True
            except InvalidSignature:
                raise VerificationError("the checkpoint signature does not verify") from None
        if not ok:
            raise VerificationError(f"the checkpoint is not signed by {self.name}")
        lines = text.split("\n")
        if len(lines) < 3 or not lines[1].isdigit():
            raise MalformedError("a checkpoint is origin, size and root")
        if lines[0] != self.name:
            raise VerificationError(f"checkpoint origin {lines[0]} is not {self.name}")
        return Checkpoint(lines[0], int(lines[1]), _b64(lines[2], "the root"))
