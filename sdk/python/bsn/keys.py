"""Keys and certificates: make a key and a CSR, load a participant's PEM files (the portal's
one-file bundle works as is), sign transactions, and verify a transaction's signature with its
creator certificate's key."""

from __future__ import annotations

import functools
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import List, Sequence, Union

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa

from .encoding import Op, SignedTx, TxBody, assemble, signing_message
from .errors import LocalError, MalformedError, VerificationError

PrivateKey = Union[ec.EllipticCurvePrivateKey, ed25519.Ed25519PrivateKey, rsa.RSAPrivateKey]


def generate_key(kind: str = "p256") -> PrivateKey:
    """A new private key: ``p256`` (the default), ``p384`` or ``ed25519``."""
    if kind == "p256":
        return ec.generate_private_key(ec.SECP256R1())
    if kind == "p384":
        return ec.generate_private_key(ec.SECP384R1())
    if kind == "ed25519":
        return ed25519.Ed25519PrivateKey.generate()
    raise LocalError(f"key type {kind!r}: use p256, p384 or ed25519")


def _hash_for(key: Union[PrivateKey, object]) -> hashes.HashAlgorithm | None:
    if isinstance(key, (ec.EllipticCurvePrivateKey, ec.EllipticCurvePublicKey)):
        return hashes.SHA384() if key.curve.name == "secp384r1" else hashes.SHA256()
    if isinstance(key, (rsa.RSAPrivateKey, rsa.RSAPublicKey)):
        return hashes.SHA256()
    return None


def csr_pem(key: PrivateKey) -> str:
    """A PKCS#10 request for ``key`` (the CA takes only its public key; names come from the CA)."""
    builder = x509.CertificateSigningRequestBuilder().subject_name(x509.Name([]))
    return builder.sign(key, _hash_for(key)).public_bytes(serialization.Encoding.PEM).decode()


def sign(key: PrivateKey, message: bytes) -> bytes:
    """Signs as the ledger verifies: ECDSA (DER) with SHA-256 (P-256) or SHA-384 (P-384),
    Ed25519, RSA PKCS#1 v1.5 with SHA-256."""
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return key.sign(message, ec.ECDSA(_hash_for(key)))
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return key.sign(message)
    if isinstance(key, rsa.RSAPrivateKey):
        return key.sign(message, padding.PKCS1v15(), hashes.SHA256())
    raise LocalError(f"unsupported key {type(key).__name__}")


def verify_signature(cert_der: bytes, message: bytes, signature: bytes) -> None:
    """Raises VerificationError unless ``signature`` over ``message`` verifies with the
    certificate's public key (the ledger's algorithms only)."""
    try:
        public = x509.load_der_x509_certificate(cert_der).public_key()
    except ValueError:
        raise MalformedError("the creator certificate is not DER") from None
    try:
        if isinstance(public, ec.EllipticCurvePublicKey):
            if public.curve.name not in ("secp256r1", "secp384r1"):
                raise MalformedError(f"unsupported creator key: curve {public.curve.name}")
            public.verify(signature, message, ec.ECDSA(_hash_for(public)))
        elif isinstance(public, ed25519.Ed25519PublicKey):
            public.verify(signature, message)
        elif isinstance(public, rsa.RSAPublicKey):
            public.verify(signature, message, padding.PKCS1v15(), hashes.SHA256())
        else:
            raise MalformedError(f"unsupported creator key {type(public).__name__}")
    except InvalidSignature:
        raise VerificationError("the signature does not verify with the creator certificate's key") from None


def verify_tx(raw: bytes) -> SignedTx:
    """Parses a signed transaction and checks its signature with its creator certificate."""
    tx = SignedTx.parse(raw)
    verify_signature(tx.body.creator_cert, signing_message(tx.body_bytes), tx.signature)
    return tx


@dataclass
class Credentials:
    """A participant's private key and certificate chain (leaf first), and the files they came
    from (TLS libraries load from files)."""

    key: PrivateKey
    chain: List[x509.Certificate]
    cert_file: Path
    key_file: Path

    @functools.cached_property
    def certificate_der(self) -> bytes:
        """The leaf, DER: the creator certificate of every transaction signed with it."""
        return self.chain[0].public_bytes(serialization.Encoding.DER)

    @property
    def spiffe_id(self) -> str:
        """The identity in the certificate (its URI SAN)."""
        san = self.chain[0].extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        uris = san.get_values_for_type(x509.UniformResourceIdentifier)
        if not uris:
            raise LocalError("the certificate names no identity")
        return uris[0]

    @staticmethod
    def load(cert_file: Union[str, os.PathLike], key_file: Union[str, os.PathLike, None] = None) -> "Credentials":
        """From ``cert.pem`` and ``key.pem`` as ``bsn enroll`` writes them, or from one file
        holding both (the portal's download): pass it once."""
        cert_path = Path(cert_file)
        key_path = Path(key_file) if key_file is not None else cert_path
        try:
            cert_pem = cert_path.read_bytes()
            key_pem = key_path.read_bytes()
        except OSError as e:
            raise LocalError(f"cannot read credentials: {e}") from None
        chain = x509.load_pem_x509_certificates(cert_pem) if b"CERTIFICATE" in cert_pem else []
        if not chain:
            raise LocalError(f"{cert_path} holds no certificate")
        key = _first_private_key(key_pem, key_path)
        if key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo) != \
                chain[0].public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo):
            raise LocalError(f"the key in {key_path} is not the key of the certificate in {cert_path}")
        return Credentials(key, chain, cert_path, key_path)

    def sign_tx(self, subchain: str, ops: Sequence[Op], nonce: bytes | None = None) -> bytes:
        """A signed transaction (refused here, with the limit named, if a node would refuse it)."""
        body = TxBody(subchain, nonce if nonce is not None else secrets.token_bytes(16), self.certificate_der,
                      list(ops)).encode()
        return assemble(body, sign(self.key, signing_message(body)))


def _first_private_key(pem: bytes, path: Path) -> PrivateKey:
    start = pem.find(b"-----BEGIN PRIVATE KEY-----")
    if start < 0:
        start = pem.find(b"-----BEGIN EC PRIVATE KEY-----")
    if start < 0:
        raise LocalError(f"{path} holds no private key")
    end = pem.find(b"-----END", start)
    end = pem.find(b"\n", end)
    try:
        key = serialization.load_pem_private_key(pem[start : end + 1 if end >= 0 else len(pem)], password=None)
    except (ValueError, TypeError) as e:
        raise LocalError(f"{path}: {e}") from None
    if not isinstance(key, (ec.EllipticCurvePrivateKey, ed25519.Ed25519PrivateKey, rsa.RSAPrivateKey)):
        raise LocalError(f"{path}: unsupported key type")
    return key


def write_credentials(directory: Union[str, os.PathLike], key: PrivateKey, certificate_pem: str, chain_pem: str) -> Credentials:
    """Writes ``key.pem`` (mode 0600), ``cert.pem`` (leaf then chain) and ``chain.pem`` as
    ``bsn enroll`` does, each durably, and loads them back."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    _write(d / "key.pem", key_pem, 0o600)
    _write(d / "cert.pem", (certificate_pem + chain_pem).encode(), 0o644)
    _write(d / "chain.pem", chain_pem.encode(), 0o644)
    return Credentials.load(d / "cert.pem", d / "key.pem")


def _write(path: Path, data: bytes, mode: int) -> None:
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    dfd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)
