// Typed errors. A node's or the CA's RFC 9457 problem becomes a ProblemError subclass chosen by
// its stable `type` slug; a refused client certificate gets its own class, never a network error.

export class BsnError extends Error {
  constructor(message) {
    super(message);
    this.name = new.target.name;
  }
}
/** Refused here, before anything was sent. */
export class LocalError extends BsnError {}
/** Bytes that do not follow the protocol's encoding. */
export class MalformedError extends LocalError {}
/** Over one of the protocol's limits (the message names it). */
export class TooLargeError extends LocalError {}
/** A signature, proof or hash chain from a server does not verify: do not trust the data. */
export class VerificationError extends BsnError {}
/** Signed by the CA, but breaking the protocol's rules. */
export class InvalidDocument extends VerificationError {}
/** The server could not be reached, or the connection failed for a network reason. */
export class UnreachableError extends BsnError {}
/** The server's certificate does not chain to the trust bundle given. */
export class TrustError extends BsnError {}
/** The server refused this client certificate during the TLS handshake. */
export class CertificateRefused extends BsnError {}
/** The client certificate is revoked: enroll again. */
export class CertificateRevoked extends CertificateRefused {}
/** The client certificate has expired: renew it. */
export class CertificateExpired extends CertificateRefused {}
/** The client certificate is not from this network's CA. */
export class CertificateUnknown extends CertificateRefused {}

/** An RFC 9457 problem document from the CA or a node. */
export class ProblemError extends BsnError {
  constructor(status, slug, title, detail, body) {
    super(`${detail || title} (${slug}, HTTP ${status})`);
    this.status = status;
    this.slug = slug;
    this.title = title;
    this.detail = detail;
    this.body = body || {};
  }
}
export class InvalidRequest extends ProblemError {}
export class Unauthorized extends ProblemError {}
export class Forbidden extends ProblemError {}
export class NotAMember extends Forbidden {}
export class RoleRequired extends Forbidden {}
export class NotFound extends ProblemError {}
export class NotHosted extends NotFound {}
export class Conflict extends ProblemError {}
export class DuplicateTransaction extends Conflict {}
export class NotAllCommitted extends Conflict {}
/** The server cannot do it now: retry after a pause. */
export class RetryLater extends ProblemError {}
/** The subchain is at its plan's storage allowance on that node: writes are refused until it has a larger plan; reads still work. */
export class StorageFull extends ProblemError {}
export class ServerError extends ProblemError {}

const BY_SLUG = {
  "not-a-member": NotAMember,
  "role-required": RoleRequired,
  "not-a-writer": RoleRequired,
  "not-hosted": NotHosted,
  "duplicate-transaction": DuplicateTransaction,
  "not-all-committed": NotAllCommitted,
  "membership-stale": RetryLater,
  "ordering-unavailable": RetryLater,
  busy: RetryLater,
  "too-many-requests": RetryLater,
  "rate-quota": RetryLater,
  "storage-quota": StorageFull,
  "too-many-attempts": RetryLater,
};
const BY_STATUS = { 400: InvalidRequest, 401: Unauthorized, 403: Forbidden, 404: NotFound, 409: Conflict,
  413: InvalidRequest, 415: InvalidRequest, 429: RetryLater, 503: RetryLater };

/** The typed error for a problem document. */
export function problem(status, body) {
  const t = String(body?.type || "");
  const slug = t.startsWith("urn:bsn:problem:") ? t.slice("urn:bsn:problem:".length) : "";
  const Cls = BY_SLUG[slug] || BY_STATUS[status] || (status >= 500 ? ServerError : InvalidRequest);
  return new Cls(status, slug, String(body?.title || ""), String(body?.detail || ""), body);
}
