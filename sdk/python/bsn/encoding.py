"""The ledger's canonical encodings (docs/protocol.md sections 3-5): signed transactions, block
headers and blocks, and the entries' Merkle root. Pure functions, no I/O.

Every field has exactly one encoding: decoding re-encodes and refuses any difference, so the
bytes a client signs are the bytes every node stores and every verifier re-checks.
"""

from __future__ import annotations

import hashlib
import re
import struct
from dataclasses import dataclass, field
from typing import List, Optional, Sequence, Union

from .errors import MalformedError, TooLargeError

TX_CONTEXT = b"bsn transaction v1\n"
BLOCK_CONTEXT = b"bsn block v1\n"
MAX_TX_BYTES = 128 * 1024
MAX_OPS = 256
MAX_KEY_BYTES = 512
MAX_VALUE_BYTES = 64 * 1024
NONCE_BYTES = (8, 64)
HEADER_BYTES = 94

_SUBCHAIN = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")


def sha256(data: bytes) -> bytes:
    """SHA-256 of ``data``."""
    return hashlib.sha256(data).digest()


@dataclass(frozen=True)
class Put:
    """Set ``key`` to ``value``."""

    key: str
    value: bytes


@dataclass(frozen=True)
class Delete:
    """Remove ``key``."""

    key: str


Op = Union[Put, Delete]


def check_subchain(subchain: str) -> None:
    """Raises MalformedError unless ``subchain`` is a valid subchain id."""
    if not _SUBCHAIN.match(subchain):
        raise MalformedError(f"subchain id {subchain!r} must be 1-63 characters of a-z, 0-9 and '-'")


def _check_key(key: str) -> bytes:
    raw = key.encode("utf-8")
    if not raw or len(raw) > MAX_KEY_BYTES:
        raise TooLargeError(f"a key is 1 to {MAX_KEY_BYTES} bytes")
    if _CONTROL.search(key):
        raise MalformedError("a key may not contain control characters")
    return raw


@dataclass
class TxBody:
    """A transaction's content before it is signed."""

    subchain: str
    nonce: bytes
    creator_cert: bytes
    ops: List[Op] = field(default_factory=list)

    def encode(self) -> bytes:
        """The canonical encoding, after checking every limit (raises before signing what a
        node would refuse)."""
        check_subchain(self.subchain)
        if not NONCE_BYTES[0] <= len(self.nonce) <= NONCE_BYTES[1]:
            raise MalformedError("the nonce is 8 to 64 bytes")
        if not self.creator_cert or len(self.creator_cert) > 0xFFFF:
            raise MalformedError("the creator certificate is missing or too long")
        if not 1 <= len(self.ops) <= MAX_OPS:
            raise TooLargeError(f"a transaction has 1 to {MAX_OPS} operations")
        sub = self.subchain.encode()
        out = bytearray([1, len(sub)]) + sub + bytes([len(self.nonce)]) + self.nonce
        out += struct.pack(">H", len(self.creator_cert)) + self.creator_cert
        out += struct.pack(">H", len(self.ops))
        for op in self.ops:
            key = _check_key(op.key)
            if isinstance(op, Put):
                value = bytes(op.value)
                if len(value) > MAX_VALUE_BYTES:
                    raise TooLargeError(f"a value is at most {MAX_VALUE_BYTES} bytes")
                out += b"\x01" + struct.pack(">H", len(key)) + key + struct.pack(">I", len(value)) + value
            elif isinstance(op, Delete):
                out += b"\x02" + struct.pack(">H", len(key)) + key
            else:
                raise MalformedError(f"unknown operation {op!r}")
        if len(out) + 8 > MAX_TX_BYTES:
            raise TooLargeError(f"a signed transaction is at most {MAX_TX_BYTES} bytes")
        return bytes(out)

    @staticmethod
    def decode(b: bytes) -> "TxBody":
        """Decodes a body, refusing anything that does not re-encode to the same bytes."""
        r = _Reader(b)
        if r.u8() != 1:
            raise MalformedError("unknown transaction version")
        try:
            subchain = r.take(r.u8()).decode("ascii")
        except UnicodeDecodeError:
            raise MalformedError("the subchain id is not valid") from None
        if not _SUBCHAIN.match(subchain):
            raise MalformedError("the subchain id is not valid")
        nonce = r.take(r.u8())
        cert = r.take(r.u16())
        ops: List[Op] = []
        for _ in range(r.u16()):
            tag = r.u8()
            try:
                key = r.take(r.u16()).decode("utf-8")
            except UnicodeDecodeError:
                raise MalformedError("a key is not UTF-8") from None
            if tag == 1:
                ops.append(Put(key, r.take(r.u32())))
            elif tag == 2:
                ops.append(Delete(key))
            else:
                raise MalformedError("unknown operation")
        if r.rest():
            raise MalformedError("trailing bytes after the operations")
        body = TxBody(subchain, nonce, cert, ops)
        if body.encode() != b:
            raise MalformedError("not in canonical form")
        return body


class _Reader:
    def __init__(self, b: bytes) -> None:
        self.b = memoryview(b)
        self.i = 0

    def take(self, n: int) -> bytes:
        if self.i + n > len(self.b):
            raise MalformedError("truncated")
        out = bytes(self.b[self.i : self.i + n])
        self.i += n
        return out

    def u8(self) -> int:
        return self.take(1)[0]

    def u16(self) -> int:
        return struct.unpack(">H", self.take(2))[0]

    def u32(self) -> int:
        return struct.unpack(">I", self.take(4))[0]

    def u64(self) -> int:
        return struct.unpack(">Q", self.take(8))[0]

    def rest(self) -> int:
        return len(self.b) - self.i


def signing_message(body: bytes) -> bytes:
    """What the creator signs: the context string followed by the body."""
    return TX_CONTEXT + body


def assemble(body: bytes, signature: bytes) -> bytes:
    """A signed transaction from an encoded body and its signature."""
    return struct.pack(">I", len(body)) + body + struct.pack(">H", len(signature)) + signature


@dataclass
class SignedTx:
    """A parsed signed transaction (its signature not yet checked: see keys.verify_tx)."""

    raw: bytes
    body: TxBody
    body_bytes: bytes
    signature: bytes

    @property
    def id(self) -> bytes:
        """SHA-256 of the body."""
        return sha256(self.body_bytes)

    @property
    def entry_hash(self) -> bytes:
        """SHA-256 of the whole signed transaction (its leaf in a block's entries tree)."""
        return sha256(self.raw)

    @staticmethod
    def parse(raw: bytes) -> "SignedTx":
        """Parses a signed transaction, checking its encoding and limits."""
        if len(raw) > MAX_TX_BYTES:
            raise TooLargeError(f"a signed transaction is at most {MAX_TX_BYTES} bytes")
        r = _Reader(raw)
        body_bytes = r.take(r.u32())
        signature = r.take(r.u16())
        if r.rest():
            raise MalformedError("trailing bytes after the signature")
        body = TxBody.decode(body_bytes)
        if not signature:
            raise MalformedError("the signature is empty")
        return SignedTx(raw, body, body_bytes, signature)


@dataclass(frozen=True)
class BlockHeader:
    """A block header (94 bytes encoded)."""

    kind: str  # "config" or "transactions"
    height: int
    previous: bytes
    entries_root: bytes
    membership_revision: int
    timestamp_ms: int
    entry_count: int

    def encode(self) -> bytes:
        kind = {"config": 0, "transactions": 1}[self.kind]
        return (
            bytes([1, kind])
            + struct.pack(">Q", self.height)
            + self.previous
            + self.entries_root
            + struct.pack(">Qq", self.membership_revision, self.timestamp_ms)
            + struct.pack(">I", self.entry_count)
        )

    @staticmethod
    def decode(b: bytes) -> "BlockHeader":
        r = _Reader(b)
        if r.u8() != 1:
            raise MalformedError("unknown block version")
        kind = {0: "config", 1: "transactions"}.get(r.u8())
        if kind is None:
            raise MalformedError("unknown block kind")
        height = r.u64()
        previous = r.take(32)
        root = r.take(32)
        revision = r.u64()
        ts = struct.unpack(">q", r.take(8))[0]
        count = r.u32()
        if r.rest():
            raise MalformedError("trailing bytes after the header")
        return BlockHeader(kind, height, previous, root, revision, ts, count)

    def hash(self) -> bytes:
        """The block hash: SHA-256 of the context and the header."""
        return sha256(BLOCK_CONTEXT + self.encode())


@dataclass
class Block:
    """A block: header and entries (signed transactions, or one statement envelope)."""

    header: BlockHeader
    entries: List[bytes]

    @staticmethod
    def decode(b: bytes) -> "Block":
        """Decodes a block and checks its entries against the header's count and root."""
        if len(b) < HEADER_BYTES:
            raise MalformedError("shorter than a block header")
        header = BlockHeader.decode(b[:HEADER_BYTES])
        r = _Reader(b[HEADER_BYTES:])
        entries = []
        while r.rest():
            entries.append(r.take(r.u32()))
        if len(entries) != header.entry_count:
            raise MalformedError("entry count does not match the header")
        from .merkle import root_of_entries

        if root_of_entries([sha256(e) for e in entries]) != header.entries_root:
            raise MalformedError("entries do not match the header's root")
        return Block(header, entries)

    def hash(self) -> bytes:
        return self.header.hash()


def check_chain(blocks: Sequence[Block], previous: Optional[bytes] = None) -> None:
    """Raises MalformedError unless each block extends the one before it (and the first
    extends ``previous`` when given)."""
    for b in blocks:
        if previous is not None and b.header.previous != previous:
            raise MalformedError(f"block {b.header.height} does not extend the block before it")
        previous = b.hash()
