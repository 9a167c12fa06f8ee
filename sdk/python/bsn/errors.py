"""Typed errors. A node's or the CA's RFC 9457 problem becomes a ProblemError subclass chosen by
its stable ``type`` slug; TLS refusals of the client certificate get their own classes, so a
revoked certificate is never reported as a network failure."""

from __future__ import annotations

from typing import Any, Dict, Optional


class BsnError(Exception):
    """Every error this SDK raises."""


class LocalError(BsnError):
    """Refused here, before anything was sent (a bad file, a value the node would refuse)."""


class MalformedError(LocalError):
    """Bytes that do not follow the protocol's encoding."""


class TooLargeError(LocalError):
    """Over one of the protocol's limits (the message names it)."""


class VerificationError(BsnError):
    """A signature, proof or hash chain from a server does not verify: do not trust the data."""


class UnreachableError(BsnError):
    """The server could not be reached, or the connection failed for a network reason."""


class TrustError(BsnError):
    """The server's certificate does not chain to the trust bundle given (the wrong bundle, or
    not the server you meant)."""


class CertificateRefused(BsnError):
    """The server refused this client certificate during the TLS handshake."""


class CertificateRevoked(CertificateRefused):
    """The client certificate is revoked: enroll again."""


class CertificateExpired(CertificateRefused):
    """The client certificate has expired: renew it."""


class CertificateUnknown(CertificateRefused):
    """The client certificate is not from this network's CA."""


class ProblemError(BsnError):
    """An RFC 9457 problem document from the CA or a node."""

    slug = ""

    def __init__(self, status: int, slug: str, title: str, detail: str, body: Optional[Dict[str, Any]] = None):
        super().__init__(f"{detail or title} ({slug}, HTTP {status})")
        self.status = status
        self.slug = slug
        self.title = title
        self.detail = detail
        self.body = body or {}


class InvalidRequest(ProblemError):
    """The request is wrong: fix it, do not retry."""


class Unauthorized(ProblemError):
    """Authentication failed (wrong secret, no or unknown certificate)."""


class Forbidden(ProblemError):
    """A role, membership or permission is missing."""


class NotAMember(Forbidden):
    """Not a member of the subchain: ask to join it."""


class RoleRequired(Forbidden):
    """The member's role does not allow this."""


class NotFound(ProblemError):
    """No such resource."""


class NotHosted(NotFound):
    """This node does not host the subchain."""


class Conflict(ProblemError):
    """Already done, or conflicting with the current state."""


class DuplicateTransaction(Conflict):
    """The transaction was submitted before."""


class NotAllCommitted(Conflict):
    """Part of a batch did not commit: ``body["results"]`` says which and why."""


class RetryLater(ProblemError):
    """The server cannot do it now (busy, rate limited, ordering unavailable, membership stale):
    retry after a pause."""


class StorageFull(ProblemError):
    """The subchain is at its plan's storage allowance on that node: writes are refused until it
    has a larger plan; reads still work."""


class ServerError(ProblemError):
    """A fault on the server."""


_BY_SLUG = {
    "not-a-member": NotAMember,
    "role-required": RoleRequired,
    "not-a-writer": RoleRequired,
    "not-hosted": NotHosted,
    "duplicate-transaction": DuplicateTransaction,
    "not-all-committed": NotAllCommitted,
    "membership-stale": RetryLater,
    "ordering-unavailable": RetryLater,
    "busy": RetryLater,
    "too-many-requests": RetryLater,
    "rate-quota": RetryLater,
    "storage-quota": StorageFull,
    "too-many-attempts": RetryLater,
}


def problem(status: int, body: Dict[str, Any]) -> ProblemError:
    """The typed error for a problem document."""
    t = str(body.get("type", ""))
    slug = t.rsplit(":", 1)[-1] if t.startswith("urn:bsn:problem:") else ""
    cls = _BY_SLUG.get(slug)
    if cls is None:
        cls = {400: InvalidRequest, 401: Unauthorized, 403: Forbidden, 404: NotFound, 409: Conflict,
               413: InvalidRequest, 415: InvalidRequest, 429: RetryLater, 503: RetryLater}.get(status)
    if cls is None:
        cls = ServerError if status >= 500 else InvalidRequest
    return cls(status, slug, str(body.get("title", "")), str(body.get("detail", "")), body)
