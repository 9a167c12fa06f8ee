"""Clients of the CA and of a city node over HTTPS, with mTLS where the API needs it.

Everything a node says that can be checked is checked before it is returned: transactions come
with their inclusion proof verified against their block header, blocks are decoded from their
encoding and chained by hash, statements are verified with a pinned membership key.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import ssl
import time
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import httpx

from . import errors
from .encoding import Block, BlockHeader, Op, sha256
from .keys import Credentials, csr_pem, generate_key, verify_tx, write_credentials
from .merkle import leaf_hash, verify_inclusion
from .signed import MembershipKey, MembershipKeys

PathLike = Union[str, os.PathLike]


def _tls(bundle: PathLike, creds: Optional[Credentials]) -> ssl.SSLContext:
    try:
        ctx = ssl.create_default_context(cafile=str(bundle))
    except (OSError, ssl.SSLError) as e:
        raise errors.LocalError(f"cannot load the trust bundle {bundle}: {e}") from None
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if creds is not None:
        try:
            ctx.load_cert_chain(str(creds.cert_file), str(creds.key_file))
        except (OSError, ssl.SSLError) as e:
            raise errors.LocalError(f"cannot load {creds.cert_file}: {e}") from None
    return ctx


def _chain_text(e: BaseException) -> str:
    seen, out = set(), []
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        out.append(f"{type(e).__name__}: {e}")
        e = e.__cause__ or e.__context__
    return " | ".join(out)


def _classify_tls(text: str) -> Optional[errors.BsnError]:
    t = text.upper()
    if "CERTIFICATE_VERIFY_FAILED" in t:
        return errors.TrustError(f"the server's certificate does not chain to the trust bundle: {text}")
    if "CERTIFICATE_REVOKED" in t:
        return errors.CertificateRevoked("the server refused this client certificate: it is revoked")
    if "CERTIFICATE_EXPIRED" in t:
        return errors.CertificateExpired("the server refused this client certificate: it has expired")
    # decrypt_error in a handshake: the server could not verify the signatures of the client's
    # chain (a CA of the same name but another key); this SDK checks its own key matches.
    if "UNKNOWN_CA" in t or "BAD_CERTIFICATE" in t or "CERTIFICATE_UNKNOWN" in t or "DECRYPT_ERROR" in t:
        return errors.CertificateUnknown("the server refused this client certificate: it is not from this CA")
    if "CERTIFICATE_REQUIRED" in t:
        return errors.CertificateRefused("the server requires a client certificate")
    return None


class _Http:
    """One server: an httpx client with the right TLS settings, and error mapping."""

    def __init__(self, base: str, bundle: PathLike, creds: Optional[Credentials], timeout: float) -> None:
        u = urllib.parse.urlsplit(base)
        if u.scheme != "https" or not u.hostname:
            raise errors.LocalError(f"{base!r} must be an https:// URL")
        self.base = base.rstrip("/")
        self.host, self.port = u.hostname, u.port or 443
        self.ctx = _tls(bundle, creds)
        self.client = httpx.Client(verify=self.ctx, timeout=timeout, http2=False)

    def close(self) -> None:
        self.client.close()

    def _refusal(self, e: BaseException) -> errors.BsnError:
        found = _classify_tls(_chain_text(e))
        if found is not None:
            return found
        # Under TLS 1.3 the server checks the client certificate after the client has finished
        # its handshake; the alert can be lost with the first request. Ask once more on a fresh
        # connection of our own and read the answer, where the alert shows.
        probe = self._probe()
        return probe or errors.UnreachableError(f"{self.base}: {_chain_text(e)}")

    def _probe(self) -> Optional[errors.BsnError]:
        try:
            with socket.create_connection((self.host, self.port), timeout=5) as raw:
                with self.ctx.wrap_socket(raw, server_hostname=self.host) as s:
                    s.sendall(f"GET /healthz HTTP/1.1\r\nHost: {self.host}\r\nConnection: close\r\n\r\n".encode())
                    s.recv(1)
        except (ssl.SSLError, OSError) as e:
            return _classify_tls(_chain_text(e))
        return None

    def request(self, method: str, path: str, body: Any = None, params: Any = None) -> Any:
        try:
            r = self.client.request(method, self.base + path, json=body, params=params)
        except httpx.TransportError as e:
            raise self._refusal(e) from None
        return self.answer(r)

    @staticmethod
    def answer(r: httpx.Response) -> Any:
        if r.status_code >= 400:
            try:
                doc = r.json()
            except ValueError:
                doc = {"title": r.reason_phrase, "detail": r.text[:200]}
            raise errors.problem(r.status_code, doc if isinstance(doc, dict) else {})
        ctype = r.headers.get("content-type", "")
        return r.json() if "json" in ctype else r.content


@dataclass
class Issued:
    """A certificate the CA issued, and where it was written."""

    serial: str
    spiffe_id: str
    not_after: str
    credentials: Credentials
    receipt: Optional[Dict[str, Any]]


class Ca:
    """The CA: enrollment, renewal, the subchain registry and public keys."""

    def __init__(self, url: str, bundle: PathLike, credentials: Optional[Credentials] = None, timeout: float = 30):
        self.bundle = bundle
        self.credentials = credentials
        self.http = _Http(url, bundle, credentials, timeout)

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> "Ca":
        return self

    def __exit__(self, *_: Any) -> None:
        self.close()

    def enroll(self, identity: str, secret: str, out: PathLike, key_type: str = "p256") -> Issued:
        """Makes a key here, enrolls with the one-time secret, writes ``key.pem`` (0600),
        ``cert.pem`` and ``chain.pem`` into ``out``."""
        key = generate_key(key_type)
        v = self.http.request("POST", "/api/v1/enroll", {"id": identity, "secret": secret, "csr": csr_pem(key)})
        creds = write_credentials(out, key, v["certificate"], v["chain"])
        return Issued(v["serial"], v["spiffe_id"], v["not_after"], creds, v.get("receipt"))

    def renew(self, out: Optional[PathLike] = None, rekey: bool = False, key_type: str = "p256") -> Issued:
        """Renews over mTLS with this client's credentials (a new key with ``rekey``); writes the
        files into ``out`` (default: beside the current certificate)."""
        creds = self.credentials
        if creds is None:
            raise errors.LocalError("renewal needs a Ca made with credentials")
        key = generate_key(key_type) if rekey else creds.key
        v = self.http.request("POST", "/api/v1/renew", {"csr": csr_pem(key)})
        written = write_credentials(out or creds.cert_file.parent, key, v["certificate"], v["chain"])
        return Issued(v["serial"], v["spiffe_id"], v["not_after"], written, v.get("receipt"))

    def membership_key(self) -> MembershipKey:
        """The key the CA publishes (proves integrity in transit only: pin the key you were
        given out of band where it matters)."""
        return MembershipKey.from_base64(self.http.request("GET", "/api/v1/membership-key")["key"])

    def membership_keys(self, pinned: Optional[MembershipKey] = None) -> MembershipKeys:
        """The CA's membership keys followed from ``pinned`` (default: the key the CA publishes)
        through the handovers it lists, each verified with both of its keys: documents signed
        before and after a handover verify."""
        pinned = pinned or self.membership_key()
        items = self.http.request("GET", "/api/v1/keys/membership")["items"]
        return MembershipKeys(pinned, [k["handover"] for k in items if k.get("handover")])

    def join(self, subchain: str, role: str = "reader", note: str = "") -> Dict[str, Any]:
        """Asks to join a subchain (open subchains admit readers and writers at once)."""
        return self.http.request("POST", f"/api/v1/subchains/{_seg(subchain)}/join", {"role": role, "note": note})

    def subchain(self, subchain: str) -> Dict[str, Any]:
        """A subchain's settings, hosting nodes and their URLs (``endpoints``)."""
        return self.http.request("GET", f"/api/v1/subchains/{_seg(subchain)}")

    def get(self, path: str, **params: Any) -> Any:
        """Any other GET of the CA's API (see its OpenAPI document)."""
        return self.http.request("GET", path, params=params or None)

    def post(self, path: str, body: Any) -> Any:
        """Any other POST of the CA's API."""
        return self.http.request("POST", path, body)


def connect_ca(url: str, bundle: PathLike, credentials: Optional[Credentials] = None, timeout: float = 30) -> Ca:
    """A CA client, as the identity in ``credentials`` when given."""
    return Ca(url, bundle, credentials, timeout)


def _seg(s: str) -> str:
    return urllib.parse.quote(s, safe="")


@dataclass
class Committed:
    """A committed transaction: its id, block height and index in the block."""

    id: str
    height: int
    index: int


@dataclass
class Transaction:
    """A transaction with its inclusion in its block verified."""

    id: str
    creator: str
    ops: List[Dict[str, Any]]
    height: int
    index: int
    block_hash: str
    header: BlockHeader


class Node:
    """A city node's gateway for one participant (mTLS with its certificate)."""

    def __init__(self, url: str, bundle: PathLike, credentials: Credentials, timeout: float = 30) -> None:
        self.credentials = credentials
        self.http = _Http(url, bundle, credentials, timeout)

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> "Node":
        return self

    def __exit__(self, *_: Any) -> None:
        self.close()

    def _path(self, subchain: str, rest: str = "") -> str:
        return f"/api/v1/subchains/{_seg(subchain)}{rest}"

    def info(self, subchain: str) -> Dict[str, Any]:
        """The chain's height, tip, membership revision and the caller's role."""
        return self.http.request("GET", self._path(subchain))

    def submit(self, subchain: str, ops: Sequence[Op]) -> Committed:
        """Signs one transaction with this participant's key, submits it and waits for the
        commit."""
        return self.submit_batch(subchain, [ops])[0]

    def submit_batch(self, subchain: str, batch: Sequence[Sequence[Op]]) -> List[Committed]:
        """Signs and submits up to 1,000 transactions at once; all commit or none do."""
        if not 1 <= len(batch) <= 1000:
            raise errors.TooLargeError("a submission holds 1 to 1,000 transactions")
        signed = [self.credentials.sign_tx(subchain, ops) for ops in batch]
        return self.submit_signed(subchain, signed)

    def submit_signed(self, subchain: str, signed: Sequence[bytes]) -> List[Committed]:
        """Submits transactions signed elsewhere."""
        body = {"transactions": [base64.b64encode(s).decode() for s in signed]}
        v = self.http.request("POST", self._path(subchain, "/transactions"), body)
        return [Committed(r["id"], r["height"], r["index"]) for r in v["results"]]

    def get(self, subchain: str, key: str) -> Optional[bytes]:
        """A key's value, or None if it is not set."""
        path = self._path(subchain, "/state/" + "/".join(_seg(p) for p in key.split("/")))
        try:
            v = self.http.request("GET", path)
        except errors.NotFound as e:
            if e.slug == "not-found":
                return None
            raise
        return base64.b64decode(v["value"])

    def range(self, subchain: str, start: str = "", end: str = "", limit: int = 100) -> Tuple[List[Tuple[str, bytes]], bool]:
        """Keys from ``start`` (inclusive) to ``end`` (exclusive) in order, and whether more follow."""
        v = self.http.request("GET", self._path(subchain, "/state"), params={"start": start, "end": end, "limit": limit})
        return [(i["key"], base64.b64decode(i["value"])) for i in v["items"]], bool(v["more"])

    def transaction(self, subchain: str, txid: str) -> Transaction:
        """A committed transaction with its inclusion proof checked against its block header
        (raises VerificationError if anything does not verify)."""
        v = self.http.request("GET", self._path(subchain, f"/transactions/{_seg(txid)}"))
        signed = base64.b64decode(v["transaction"]["signed"])
        tx = verify_tx(signed)
        if tx.id.hex() != txid:
            raise errors.VerificationError("the node sent another transaction than the one asked for")
        header = BlockHeader.decode(base64.b64decode(v["header"]))
        if header.hash().hex() != v["block_hash"]:
            raise errors.VerificationError("the block header does not hash to the block hash")
        proof = [bytes.fromhex(h) for h in v["proof"]]
        if not verify_inclusion(v["index"], header.entry_count, leaf_hash(sha256(signed)), proof, header.entries_root):
            raise errors.VerificationError("the inclusion proof does not verify")
        t = v["transaction"]
        return Transaction(txid, t["creator"], t["ops"], v["height"], v["index"], v["block_hash"], header)

    def block(self, subchain: str, height: int) -> Block:
        """One block, decoded and checked against its own header."""
        return _block(self.http.request("GET", self._path(subchain, f"/blocks/{int(height)}")))

    def blocks(self, subchain: str, start: int = 0, limit: int = 100) -> List[Block]:
        """Blocks from ``start``, each checked to extend the one before it."""
        page = self.http.request("GET", self._path(subchain, "/blocks"), params={"from": start, "limit": limit})
        out = [_block(b) for b in page["blocks"]]
        for a, b in zip(out, out[1:]):
            if b.header.previous != a.hash():
                raise errors.VerificationError(f"block {b.header.height} does not extend the block before it")
        return out

    def follow(self, subchain: str, start: int = 0, previous: Optional[bytes] = None,
               give_up_after: float = 60.0) -> Iterator[Block]:
        """Blocks from ``start`` as they commit, forever: each checked to extend the one before,
        resuming after a lost connection or a node restart from the last block received (for
        up to ``give_up_after`` seconds without an answer)."""
        next_height = start
        down_since: Optional[float] = None
        while True:
            headers = {"accept": "text/event-stream"}
            if next_height > start or previous is not None and next_height > 0:
                headers["last-event-id"] = str(next_height - 1)
            params = {"from": next_height}
            try:
                with self.http.client.stream("GET", self.http.base + self._path(subchain, "/blocks/stream"),
                                             headers=headers, params=params, timeout=httpx.Timeout(30, read=None)) as r:
                    if r.status_code >= 400:
                        r.read()
                        _Http.answer(r)
                    down_since = None
                    for event, data in _events(r.iter_lines()):
                        if event != "block":
                            continue
                        b = _block(json.loads(data))
                        if b.header.height != next_height:
                            raise errors.VerificationError(f"expected block {next_height}, got {b.header.height}")
                        if previous is not None and b.header.previous != previous:
                            raise errors.VerificationError(f"block {b.header.height} does not extend the block before it")
                        previous = b.hash()
                        next_height += 1
                        yield b
            except httpx.TransportError as e:
                failure = self.http._refusal(e)
                if not isinstance(failure, errors.UnreachableError):
                    raise failure from None
            except errors.RetryLater:
                pass
            now = time.monotonic()
            down_since = down_since or now
            if now - down_since > give_up_after:
                raise errors.UnreachableError(f"{self.http.base} has not answered for {give_up_after:.0f} s")
            time.sleep(0.5)

    def membership(self, subchain: str, key: MembershipKey) -> Dict[str, Any]:
        """The statement in force on this node (admins), verified with the pinned ``key``."""
        v = self.http.request("GET", self._path(subchain, "/membership"))
        return key.verify_statement(v["statement"] if "statement" in v else v)


def _block(v: Dict[str, Any]) -> Block:
    b = Block.decode(base64.b64decode(v["encoded"]))
    if b.hash().hex() != v["hash"] or b.header.height != v["height"]:
        raise errors.VerificationError("the block does not match its stated hash or height")
    return b


def _events(lines: Iterator[str]) -> Iterator[Tuple[str, str]]:
    event, data = "message", []
    for line in lines:
        if line == "":
            if data:
                yield event, "\n".join(data)
            event, data = "message", []
        elif line.startswith(":"):
            continue
        else:
            name, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if name == "event":
                event = value
            elif name == "data":
                data.append(value)
