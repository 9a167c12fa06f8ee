"""BSN SDK for Python: participants' keys and certificates, signed transactions on a city
node's ledger with every proof verified, and the CA's signed documents checked offline.

Features: enroll and renew with the CA (keys made here), load PEM credentials (the portal's
one-file bundle as is), sign and submit put/delete transactions and wait for the commit, read
state and ranges, fetch transactions with their inclusion proofs verified, fetch and follow blocks
with the hash chain verified (resuming across restarts), verify membership statements, the node
directory, heartbeats and issuance-log checkpoints with pinned keys (following the CA's membership
key handovers from the pinned key); typed errors for every problem
type and for refused client certificates (revoked, expired, unknown).

Non-features: no server code; no key storage beyond PEM files; HTTP/1.1 only.
"""

from .client import Ca, Committed, Issued, Node, Transaction, connect_ca
from .encoding import Block, BlockHeader, Delete, Put, SignedTx, TxBody
from .errors import (BsnError, CertificateExpired, CertificateRefused, CertificateRevoked, CertificateUnknown,
                     LocalError, MalformedError, ProblemError, TooLargeError, TrustError, UnreachableError,
                     VerificationError)
from .keys import Credentials, csr_pem, generate_key, verify_tx
from .signed import Checkpoint, LogKey, MembershipKey, MembershipKeys, verify_handover

__all__ = [
    "Block", "BlockHeader", "BsnError", "Ca", "CertificateExpired", "CertificateRefused", "CertificateRevoked",
    "CertificateUnknown", "Checkpoint", "Committed", "Credentials", "Delete", "Issued", "LocalError", "LogKey",
    "MalformedError", "MembershipKey", "MembershipKeys", "Node", "ProblemError", "Put", "SignedTx", "TooLargeError", "Transaction",
    "TrustError", "TxBody", "UnreachableError", "VerificationError", "connect_ca", "csr_pem", "generate_key",
    "verify_handover", "verify_tx",
]
