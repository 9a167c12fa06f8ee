//! Request and response bodies of the CA's API (`/api/v1/...`).
//!
//! The CA serialises the responses and deserialises the requests; the `bsn` CLI, the ledger
//! node (its change feed), the tests and the benchmarks use the same types; the CA's OpenAPI
//! document takes its body schemas from them ([`crate::contract`]). Times are RFC 3339 strings
//! unless a field says Unix seconds; serials are lowercase hex; hashes and proofs base64.
//!
//! Request fields that name a role, a policy or a reason stay strings here: the CA parses them
//! itself so that a bad value gets a problem naming the field and the values it takes.

use identity::membership::{DirectoryEntry, Envelope, Role};
use identity::plan::{Capacity, Plan};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

// ---- enrollment ----------------------------------------------------------------------------

/// `POST /api/v1/enroll`: a registered identity's first certificate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EnrollRequest {
    /// The identity's id.
    pub id: String,
    /// Its one-time enrollment secret.
    pub secret: String,
    /// A PKCS#10 certificate request, PEM.
    pub csr: String,
}

/// `POST /api/v1/renew` (mTLS with the current certificate).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RenewRequest {
    /// A PKCS#10 certificate request, PEM (a new key is allowed).
    pub csr: String,
}

/// Where an entry stands in the issuance log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Receipt {
    /// The leaf's index.
    pub leaf_index: u64,
    /// Size of the tree the proof and checkpoint are for.
    pub tree_size: u64,
    /// RFC 6962 inclusion proof, base64 hashes, the leaf's sibling first.
    pub inclusion_proof: Vec<String>,
    /// The signed checkpoint (C2SP tlog-checkpoint note).
    pub checkpoint: String,
}

/// A newly issued certificate (enroll, renew, portal enroll).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Issued {
    /// Serial, lowercase hex.
    pub serial: String,
    /// The SPIFFE id in the certificate.
    pub spiffe_id: String,
    /// Validity start.
    pub not_before: String,
    /// Validity end.
    pub not_after: String,
    /// The leaf, PEM.
    pub certificate: String,
    /// The issuing intermediate(s), PEM.
    pub chain: String,
    /// Where the issuance stands in the issuance log, with an inclusion proof and the signed
    /// checkpoint that covers it.
    pub receipt: Option<Receipt>,
}

// ---- identities ----------------------------------------------------------------------------

fn participant() -> String {
    "participant".into()
}
fn one_use() -> i64 {
    1
}
fn one_day() -> i64 {
    86_400
}

/// `POST /api/v1/identities`: registers an identity (administrators, registrars).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterRequest {
    /// The id: 1 to 64 characters of a-z, 0-9, '.', '_' and '-'.
    pub id: String,
    /// `participant` (default) or `node`.
    #[serde(rename = "type", default = "participant")]
    pub kind: String,
    /// CA roles: `admin`, `registrar`, `auditor`, `publisher`.
    #[serde(default)]
    pub roles: Vec<String>,
    /// Free-form attributes.
    #[serde(default)]
    pub attributes: Map<String, Value>,
    /// DNS names for a node's certificate.
    #[serde(default)]
    pub dns_names: Vec<String>,
    /// IP addresses for a node's certificate.
    #[serde(default)]
    pub ip_addresses: Vec<String>,
    /// Enrollments the secret allows (default 1).
    #[serde(default = "one_use")]
    pub max_enrollments: i64,
    /// Lifetime of the secret in seconds (default one day).
    #[serde(default = "one_day")]
    pub secret_ttl_seconds: i64,
}

/// The answer to a registration: the one-time secret, shown once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Registered {
    /// The id.
    pub id: String,
    /// `participant` or `node`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Its SPIFFE id.
    pub spiffe_id: String,
    /// CA roles.
    pub roles: Vec<String>,
    /// Shown once; the CA keeps only its argon2id hash.
    pub secret: String,
    /// When the secret expires.
    pub secret_expires_at: String,
    /// Enrollments the secret allows.
    pub max_enrollments: i64,
}

/// An identity as the API shows it (never its secret hash).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Identity {
    /// The id.
    pub id: String,
    /// `participant` or `node`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Its SPIFFE id.
    pub spiffe_id: String,
    /// CA roles.
    pub roles: Vec<String>,
    /// Free-form attributes.
    pub attributes: Map<String, Value>,
    /// DNS names (nodes).
    pub dns_names: Vec<String>,
    /// IP addresses (nodes).
    pub ip_addresses: Vec<String>,
    /// `active` or `disabled`.
    pub status: String,
    /// Enrollments the current secret still allows.
    pub enrollments_left: i64,
    /// When the current secret expires.
    pub secret_expires_at: Option<String>,
    /// Who registered it.
    pub registered_by: String,
    /// When.
    pub created_at: String,
}

/// `POST /api/v1/identities/{id}/secret`: a fresh one-time secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SecretRequest {
    /// Enrollments the secret allows (default 1).
    #[serde(default = "one_use")]
    pub max_enrollments: i64,
    /// Lifetime of the secret in seconds (default one day).
    #[serde(default = "one_day")]
    pub secret_ttl_seconds: i64,
}

/// The answer to [`SecretRequest`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NewSecret {
    /// The id.
    pub id: String,
    /// Shown once; the CA keeps only its argon2id hash.
    pub secret: String,
    /// When it expires.
    pub secret_expires_at: String,
    /// Enrollments it allows.
    pub max_enrollments: i64,
}

/// A page of a listing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "{T}Page")]
pub struct Page<T> {
    /// The items.
    pub items: Vec<T>,
    /// Pass as `after` to get the next page; null on the last page.
    pub next_after: Option<String>,
}

/// A list that is never paged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "{T}List")]
pub struct Items<T> {
    /// The items.
    pub items: Vec<T>,
}

// ---- certificates --------------------------------------------------------------------------

/// A certificate as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Certificate {
    /// Serial, lowercase hex.
    pub serial: String,
    /// The holder's id.
    pub identity: String,
    /// `valid`, `revoked` or `expired`.
    pub status: String,
    /// Validity start.
    pub not_before: String,
    /// Validity end.
    pub not_after: String,
    /// SHA-256 of the SubjectPublicKeyInfo, hex.
    pub key_sha256: String,
    /// When it was issued.
    pub issued_at: String,
    /// `enroll`, `renew` or `portal`.
    pub issued_via: String,
    /// The credential that authorised it (a secret's identity, or the renewed serial).
    pub authorized_by: String,
    /// When it was revoked.
    pub revoked_at: Option<String>,
    /// The RFC 5280 reason name.
    pub revocation_reason: Option<String>,
    /// Who revoked it.
    pub revoked_by: Option<String>,
    /// The certificate, PEM (single certificates only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate: Option<String>,
}

/// `POST .../certificates/{serial}/revoke`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RevokeRequest {
    /// An RFC 5280 reason name (`unspecified` if absent).
    #[serde(default)]
    pub reason: Option<String>,
}

/// The answer to a revocation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Revoked {
    /// Serial, lowercase hex.
    pub serial: String,
    /// The RFC 5280 reason name.
    pub reason: String,
    /// When.
    pub revoked_at: String,
    /// Number of the CRL that lists it.
    pub crl_number: i64,
    /// The revocation's place in the issuance log.
    pub receipt: Receipt,
}

// ---- the issuance log ----------------------------------------------------------------------

/// `GET /api/v1/log/proof/inclusion`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct InclusionProof {
    /// The leaf's index.
    pub leaf_index: u64,
    /// The tree size the proof is for.
    pub tree_size: u64,
    /// The root hash of that tree, base64.
    pub root: String,
    /// The proof, base64 hashes.
    pub inclusion_proof: Vec<String>,
}

/// `GET /api/v1/log/proof/consistency`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ConsistencyProof {
    /// The smaller tree size.
    pub first: u64,
    /// The larger tree size.
    pub second: u64,
    /// The proof, base64 hashes.
    pub consistency_proof: Vec<String>,
}

/// One entry of `GET /api/v1/log/entries`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LogEntry {
    /// The leaf's index.
    pub index: u64,
    /// `issuance`, `revocation` or `membership`.
    pub kind: String,
    /// The certificate's serial (issuance, revocation); empty for a membership entry.
    pub serial: String,
    /// The holder's identity id, or who changed the membership.
    pub identity: String,
    /// When.
    pub at: String,
    /// The leaf, base64 (verify it against the log).
    pub leaf: String,
    /// A membership entry's subchain (read from its leaf).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subchain: Option<String>,
    /// A membership entry's revision of that subchain (read from its leaf).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<u64>,
}

/// `GET /api/v1/log/entries`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LogEntries {
    /// Entries in log order.
    pub items: Vec<LogEntry>,
    /// Pass as `after` for the next page; null on the last page.
    pub next_after: Option<u64>,
}

// ---- subchains -----------------------------------------------------------------------------

/// A subchain in the directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Subchain {
    /// Its id.
    pub id: String,
    /// Display name.
    pub name: String,
    /// The publisher's identity id.
    pub publisher: String,
    /// What it is for.
    pub description: String,
    /// `open` or `approval`.
    pub policy: String,
    /// The current membership revision.
    pub revision: i64,
    /// Number of members.
    pub members: i64,
    /// The hosting city nodes.
    pub nodes: Vec<String>,
    /// The orderers of the ordering cluster that order it (empty: its city nodes do).
    #[serde(default)]
    pub orderers: Vec<String>,
    /// Where each hosting node serves (its entry in the node directory), for the nodes that
    /// published one: a participant connects to any of these URLs.
    #[serde(default)]
    pub endpoints: Vec<DirectoryEntry>,
    /// Its resource plan, as its statement carries it (absent: none, no quotas).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan: Option<Plan>,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds.
    pub updated_at: i64,
}

/// `POST /api/v1/subchains` (publishers, administrators).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateSubchain {
    /// Its id (a DNS label).
    pub id: String,
    /// Display name.
    pub name: String,
    /// What it is for.
    #[serde(default)]
    pub description: String,
    /// `open` or `approval` (default).
    #[serde(default = "approval")]
    pub policy: String,
    /// The hosting city nodes (node identity ids), named by hand; empty: the CA places it in
    /// `cities`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nodes: Vec<String>,
    /// The cities to place it in (one hosting node in each, picked by the CA for the plan).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cities: Vec<String>,
    /// The resource plan's name (`GET /api/v1/plans`). Absent: the cheapest open plan when
    /// placed in cities; none when the nodes are named and none of them takes subchains by plan.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan: Option<String>,
    /// The orderers (orderer identity ids, its Raft voters). Absent: the CA picks three of the
    /// ordering cluster, the least loaded; empty: the hosting nodes order it themselves.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub orderers: Option<Vec<String>>,
}

fn approval() -> String {
    "approval".into()
}

/// `PATCH /api/v1/subchains/{id}`: the fields to change.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateSubchain {
    /// Display name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Description.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// `open` or `approval`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<String>,
    /// The hosting city nodes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nodes: Option<Vec<String>>,
    /// The orderers (empty: the hosting nodes order it themselves).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub orderers: Option<Vec<String>>,
    /// A new resource plan, by name: a membership revision; the subchain moves off any hosting
    /// node that cannot take it, to another in the same city.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan: Option<String>,
}

/// A new membership revision: its signed statement and its place in the issuance log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Revised {
    /// The subchain.
    pub subchain: String,
    /// The new revision.
    pub revision: i64,
    /// The statement the CA signed.
    pub statement: Envelope,
    /// The statement's place in the issuance log.
    pub receipt: Receipt,
}

/// The answer to a subchain update.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Updated {
    /// The subchain after the change.
    pub subchain: Subchain,
    /// Present when the hosting nodes changed (a new membership revision).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<Revised>,
}

/// One member to add.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NewMember {
    /// The identity.
    pub id: String,
    /// `reader`, `writer` or `admin`.
    pub role: String,
}

/// `POST /api/v1/subchains/{id}/members`: up to 1,000 members in one revision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AddMembers {
    /// The members.
    pub members: Vec<NewMember>,
}

/// `PUT /api/v1/subchains/{id}/members/{identity}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SetRole {
    /// `reader`, `writer` or `admin`.
    pub role: String,
}

fn reader() -> String {
    "reader".into()
}

/// `POST /api/v1/subchains/{id}/join`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct JoinRequestBody {
    /// The role asked for (default `reader`).
    #[serde(default = "reader")]
    pub role: String,
    /// A note for the managers.
    #[serde(default)]
    pub note: String,
}

/// `POST /api/v1/subchains/{id}/requests/{identity}/approve`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Approve {
    /// Grant another role than the one asked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
}

/// A pending request to join.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct JoinRequest {
    /// The subchain.
    pub subchain: String,
    /// Who asks.
    pub identity: String,
    /// The role asked for.
    pub role: Role,
    /// Their note.
    pub note: String,
    /// Unix seconds.
    pub requested_at: i64,
}

/// The answer to a join: a member at once (open policy) or a pending request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "outcome", rename_all = "lowercase")]
pub enum Joined {
    /// Open policy: a member now.
    Member(Revised),
    /// Waiting for approval.
    Pending(JoinRequest),
}

/// One of `GET /api/v1/memberships`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MyMembership {
    /// The subchain.
    pub subchain: String,
    /// The caller's role.
    pub role: Role,
}

/// `GET /api/v1/membership-key`: the key membership statements are signed with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MembershipKey {
    /// `Ed25519`.
    pub algorithm: String,
    /// The public key, base64.
    pub key: String,
}

// ---- the node directory ---------------------------------------------------------------------

/// `GET /api/v1/nodes` (public): every city node and orderer with its role, city and URL, and
/// the same list signed with the membership key (`identity::membership::NodeDirectory`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Nodes {
    /// The directory's revision (0 before any node published its entry).
    pub revision: u64,
    /// The nodes, sorted by id.
    pub nodes: Vec<DirectoryEntry>,
    /// The signed directory of this revision (absent at revision 0).
    pub signed: Option<Envelope>,
}

/// `PUT /api/v1/nodes/self` (a city node or orderer, with its own certificate): where it runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OwnEntry {
    /// The city it runs in.
    pub city: String,
    /// Its public endpoint, `https://HOST[:PORT]`.
    pub url: String,
    /// What a city node offers for placement (absent: it takes no automatically placed
    /// subchain; orderers declare none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capacity: Option<Capacity>,
}

/// `POST /api/v1/nodes/{id}/drain` (administrators): the node is out of service for placement
/// and its subchains moved, one membership revision each, to other nodes of its city.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Drained {
    /// The node.
    pub node: String,
    /// The directory revision that marks it draining.
    pub directory_revision: u64,
    /// The subchains moved, in the order they were.
    pub moved: Vec<MovedSubchain>,
    /// The subchains that fit nowhere else in the city (still on the node), with why.
    pub stuck: Vec<StuckSubchain>,
}

/// A subchain moved off a draining node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MovedSubchain {
    /// The subchain.
    pub subchain: String,
    /// Its hosting nodes now.
    pub nodes: Vec<String>,
    /// The membership revision of the move.
    pub revision: i64,
}

/// A subchain a drain could not move.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StuckSubchain {
    /// The subchain.
    pub subchain: String,
    /// Why it could not move.
    pub why: String,
}

// ---- usage ---------------------------------------------------------------------------------

/// `POST /api/v1/usage` (a city node or orderer, with its own certificate): what the CA took
/// from a signed report (`identity::usage::SignedUsage`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UsageAccepted {
    /// The (subchain, hour) rows the report carried.
    pub rows: usize,
}

/// One node's counts for a subchain in one hour.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NodeUsage {
    /// The node that counted.
    pub node: String,
    /// The hour: Unix seconds at its start.
    pub hour: i64,
    /// Transactions committed through the node.
    pub transactions: u64,
    /// Bytes of those transactions.
    pub bytes_written: u64,
    /// Bytes the subchain took on the node's disk (the most seen in the hour).
    pub bytes_stored: u64,
    /// Bytes of responses the node served for it.
    pub bytes_served: u64,
    /// Submissions the node refused by the plan's quotas.
    pub refused: u64,
}

/// Sums over a period.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UsageTotals {
    /// Transactions committed.
    pub transactions: u64,
    /// Bytes of those transactions.
    pub bytes_written: u64,
    /// Bytes served.
    pub bytes_served: u64,
    /// Submissions refused by quota.
    pub refused: u64,
    /// Bytes stored in the period's last reported hour, summed over the nodes.
    pub bytes_stored: u64,
}

/// `GET /api/v1/subchains/{id}/usage?from=&to=` (its publisher and admins, CA administrators
/// and auditors): totals per node and hour, from the nodes' signed reports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SubchainUsage {
    /// The subchain.
    pub subchain: String,
    /// Start of the period, Unix seconds (a whole hour).
    pub from: i64,
    /// End of the period (exclusive), Unix seconds.
    pub to: i64,
    /// The subchain's plan now, to read the figures against.
    pub plan: Option<Plan>,
    /// Per node and hour, by hour then node.
    pub rows: Vec<NodeUsage>,
    /// Over the period.
    pub totals: UsageTotals,
}

// ---- resource plans --------------------------------------------------------------------------

/// A resource plan on offer (`GET /api/v1/plans`, public; `PUT /api/v1/plans/{name}`,
/// administrators).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PlanOffer {
    /// The plan: tenancy, rate and burst (tx/s), storage (bytes), bandwidth (bytes/s).
    pub plan: Plan,
    /// Publishers choose it themselves; otherwise only an administrator assigns it.
    pub open: bool,
}

/// `GET /api/v1/plans`: every plan on offer, shared ones first, then by rate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Plans {
    /// The plans.
    pub plans: Vec<PlanOffer>,
}

// ---- issuing intermediates -----------------------------------------------------------------

/// One of the CA's issuing intermediates (`GET /api/v1/intermediates`, public; the rotation
/// steps under it, for administrators). Its life: `next` (made, not yet public), `published`
/// (in the bundle, issuing nothing yet), `active` (issuing), `retiring` (replaced; its CRL is
/// still published until its last certificate expires), `retired`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Intermediate {
    /// Its number at this CA (1 is the one made at initialisation).
    pub number: i64,
    /// `next`, `published`, `active`, `retiring` or `retired`.
    pub state: String,
    /// The certificate, PEM (empty while `requested`).
    pub certificate: String,
    /// While `requested` (the root is offline): the CSR for the root's operator to sign with
    /// `ca-server root sign-intermediate`.
    pub csr: Option<String>,
    /// SHA-256 of the certificate's DER, lowercase hex (empty while `requested`).
    pub sha256: String,
    /// Unix seconds.
    pub not_before: i64,
    /// Unix seconds.
    pub not_after: i64,
    /// Where its CRL is published (while it is published, active or retiring).
    pub crl_url: Option<String>,
    /// When its state last changed, Unix seconds.
    pub changed_at: i64,
}

/// A root of the CA (`GET /api/v1/roots`, public, every root it has had): `published` (in the
/// trust bundle beside the active one, with its cross-certificate), `active` (it certifies the
/// next intermediates), `retiring` (replaced; still trusted while intermediates it certified
/// live), `withdrawn` (out of the trust bundle).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Root {
    /// Its number at this CA (1 is the root of initialisation).
    pub number: i64,
    /// `published`, `active`, `retiring` or `withdrawn`.
    pub state: String,
    /// The self-signed certificate, PEM.
    pub certificate: String,
    /// Its subject and key certified by the root before it, PEM (none for number 1): a verifier
    /// that trusts the old root trusts this one through it.
    pub cross: Option<String>,
    /// SHA-256 of the certificate's DER, lowercase hex.
    pub sha256: String,
    /// Unix seconds.
    pub not_before: i64,
    /// Unix seconds.
    pub not_after: i64,
    /// Where its CRL is published (until it is withdrawn).
    pub crl_url: Option<String>,
    /// When its state last changed, Unix seconds.
    pub changed_at: i64,
}

/// `POST /api/v1/roots` (administrators): publish the next root. Empty when the CA holds the
/// current root's key (it makes the new root and its cross-certificate itself); under an
/// offline root, the three files `ca-server root rotate` made.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AddRoot {
    /// The new root's self-signed certificate, PEM.
    #[serde(default)]
    pub certificate: Option<String>,
    /// Its cross-certificate, signed by the current root, PEM.
    #[serde(default)]
    pub cross: Option<String>,
    /// Its first CRL, PEM.
    #[serde(default)]
    pub crl: Option<String>,
}

/// `POST /api/v1/roots/{number}/crl` (administrators): a later root's CRL its offline operator
/// signed (`ca-server root crl --root-dir`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct InstallRootCrl {
    /// The CRL, PEM.
    pub crl: String,
}

/// One of the CA's Ed25519 signing keys (`GET /api/v1/keys/{purpose}`, public): the issuance
/// log's checkpoint key (`log`) or the membership key (`membership`). A handover makes the next
/// key `incoming` (published; a log key co-signs every checkpoint beside the active one), then
/// `active`, and its predecessor `retired`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SigningKey {
    /// `log` or `membership`.
    pub purpose: String,
    /// Its number at this CA (1 is the one made at initialisation).
    pub number: i64,
    /// `incoming`, `active` or `retired`.
    pub state: String,
    /// The raw Ed25519 public key, base64.
    pub public_key: String,
    /// A log key's signed-note verifier key (`<origin>+<key id>+<key>`), what auditors pin.
    pub vkey: Option<String>,
    /// For a membership key that took over from its predecessor: the handover, signed by both.
    /// A verifier that pins either key learns the other from it.
    pub handover: Option<identity::membership::KeyHandover>,
    /// For a log key that took over from its predecessor: the last checkpoint both signed. A
    /// verifier that pins the predecessor checks it with that key, finds the handover's `begun`
    /// leaf in the tree it commits to, and pins this key from then on.
    pub handover_checkpoint: Option<String>,
    /// When its state last changed, Unix seconds.
    pub changed_at: i64,
}

/// `POST /api/v1/feed/ack` (nodes): the node has durably processed the change feed up to
/// `cursor`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FeedAck {
    /// The last feed position the node has processed and saved.
    pub cursor: i64,
}

/// `POST /api/v1/intermediates/{number}/activate` (administrators).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ActivateIntermediate {
    /// Activate even though nodes that report to the feed have not acknowledged the
    /// intermediate's publication (they are gone for good, say).
    #[serde(default)]
    pub force: bool,
}

/// `POST /api/v1/intermediates/{number}/certificate` (administrators): the certificate an
/// offline root signed for a `requested` intermediate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AdoptIntermediate {
    /// The certificate, PEM.
    pub certificate: String,
}

/// One event of the change feed (`/api/v1/feed`, `/api/v1/feed/stream`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum FeedEvent {
    /// A subchain's new membership revision, with its signed statement.
    Membership {
        /// Feed position.
        seq: i64,
        /// The subchain.
        subchain: String,
        /// The revision.
        revision: i64,
        /// Unix seconds.
        at: i64,
        /// The signed statement.
        statement: Envelope,
    },
    /// A certificate was revoked.
    Revocation {
        /// Feed position.
        seq: i64,
        /// Serial, lowercase hex.
        serial: String,
        /// The holder's id.
        identity: String,
        /// RFC 5280 reason name.
        reason: String,
        /// Unix seconds.
        at: i64,
    },
    /// A new revision of the node directory (every node sees it).
    Directory {
        /// Feed position.
        seq: i64,
        /// The directory's revision.
        revision: i64,
        /// Unix seconds.
        at: i64,
        /// The signed directory.
        directory: Envelope,
    },
    /// An issuing intermediate was published, activated or retired (every node sees it). Its
    /// certificate proves itself: a node uses it only for chains that verify to its bundle.
    Intermediate {
        /// Feed position.
        seq: i64,
        /// The intermediate's number.
        number: i64,
        /// `published`, `activated` or `retired`.
        step: String,
        /// Unix seconds.
        at: i64,
        /// The certificate, base64 DER.
        certificate: String,
    },
    /// A root was published, activated or withdrawn (every node sees it). Its
    /// cross-certificate proves itself: a node uses it only for chains that verify to its
    /// bundle.
    Root {
        /// Feed position.
        seq: i64,
        /// The root's number.
        number: i64,
        /// `published`, `activated` or `withdrawn`.
        step: String,
        /// Unix seconds.
        at: i64,
        /// The self-signed certificate, base64 DER.
        certificate: String,
        /// Its cross-certificate from the root before it, base64 DER.
        cross: String,
    },
    /// The CA's membership key was handed over to its successor (every node sees it): from now
    /// on statements, directory revisions and heartbeats are signed by the new key. The
    /// handover proves itself (signed by both keys); a node follows it from the key it pinned.
    Key {
        /// Feed position.
        seq: i64,
        /// The new membership key's number.
        number: i64,
        /// Unix seconds.
        at: i64,
        /// The handover, signed by the old key and the new one.
        handover: identity::membership::KeyHandover,
    },
}

impl FeedEvent {
    /// Feed position.
    pub fn seq(&self) -> i64 {
        match self {
            FeedEvent::Membership { seq, .. }
            | FeedEvent::Revocation { seq, .. }
            | FeedEvent::Directory { seq, .. }
            | FeedEvent::Intermediate { seq, .. }
            | FeedEvent::Root { seq, .. }
            | FeedEvent::Key { seq, .. } => *seq,
        }
    }
}

/// `GET /api/v1/feed` (node identities): a page of events for the calling node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FeedPage {
    /// Events after the cursor asked for.
    pub events: Vec<FeedEvent>,
    /// The cursor to ask with next.
    pub cursor: i64,
    /// Whether more events are waiting.
    pub more: bool,
    /// A signed heartbeat naming the node and the cursor.
    pub heartbeat: Envelope,
}

// ---- trust bundles -------------------------------------------------------------------------

/// One root in the SPIFFE bundle (a JWK, RFC 7517).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct BundleKey {
    /// `x509-svid`.
    #[serde(rename = "use")]
    pub usage: String,
    /// `EC`.
    pub kty: String,
    /// `P-256` or `P-384`.
    pub crv: String,
    /// The point's x, base64url.
    pub x: String,
    /// The point's y, base64url.
    pub y: String,
    /// The root certificate, base64 DER.
    pub x5c: Vec<String>,
}

/// The membership key as the SPIFFE bundle carries it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct BundleMembershipKey {
    /// `Ed25519`.
    pub alg: String,
    /// The public key, base64.
    pub key: String,
}

/// `GET /api/v1/spiffe-bundle`: the SPIFFE trust bundle (a JWK Set).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct SpiffeBundle {
    /// The roots.
    pub keys: Vec<BundleKey>,
    /// Changes when the bundle or the CRL changes.
    pub spiffe_sequence: i64,
    /// Seconds between refreshes.
    pub spiffe_refresh_hint: i64,
    /// The key BSN ledger nodes check membership statements with.
    pub bsn_membership_key: BundleMembershipKey,
}

// ---- the portal ----------------------------------------------------------------------------

/// `POST /api/v1/portal/register`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PortalRegister {
    /// The id asked for.
    pub id: String,
    /// Full name.
    pub name: String,
    /// Email address.
    pub email: String,
    /// Organisation.
    #[serde(default)]
    pub organisation: String,
    /// Password (12 characters or more).
    pub password: String,
    /// An invitation code (approved at once).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub invitation: Option<String>,
    /// Claim an identity a registrar registered: its one-time enrollment secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
}

/// A portal account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Account {
    /// The id.
    pub id: String,
    /// Full name.
    pub name: String,
    /// Email address.
    pub email: String,
    /// Organisation.
    pub organisation: String,
    /// `pending`, `approved` or `rejected`.
    pub state: String,
    /// When it registered.
    pub created_at: String,
}

/// An administrator's decision on an account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AccountDecision {
    /// The account.
    pub id: String,
    /// Its state now.
    pub state: String,
}

/// `POST /api/v1/portal/login`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Login {
    /// The account id.
    pub id: String,
    /// Its password.
    pub password: String,
}

/// The answer to a sign-in (the session cookie comes with it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SignedIn {
    /// The account id.
    pub id: String,
    /// Its state.
    pub state: String,
    /// Send as `X-CSRF-Token` with every write.
    pub csrf_token: String,
}

/// `GET /api/v1/portal/me`: the signed-in account, or `{"signed_in": false}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Me {
    /// Whether a session came with the request.
    pub signed_in: bool,
    /// The account id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Its SPIFFE id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spiffe_id: Option<String>,
    /// Full name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Email address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// Organisation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub organisation: Option<String>,
    /// `pending`, `approved` or `rejected`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    /// The identity's CA roles (once the account is bound to it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub roles: Option<Vec<String>>,
    /// Send as `X-CSRF-Token` with every write.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub csrf_token: Option<String>,
}

/// `POST /api/v1/portal/challenge`: a one-time challenge for proof of possession.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Challenge {
    /// The challenge, base64url.
    pub challenge: String,
    /// When it expires.
    pub expires_at: String,
}

/// `POST /api/v1/portal/enroll`: a browser-made key and its proof of possession.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PortalEnroll {
    /// The challenge, as received.
    pub challenge: String,
    /// The new public key's SubjectPublicKeyInfo, DER, base64.
    pub spki: String,
    /// Signature over the proof context and the challenge's bytes, base64.
    pub signature: String,
}

/// `GET /api/v1/portal/certificates`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MyCertificates {
    /// The signed-in identity's certificates.
    pub items: Vec<Certificate>,
    /// The issuing chain, PEM.
    pub chain: String,
}

fn week() -> i64 {
    7 * 86_400
}
fn one() -> i64 {
    1
}

/// `POST /api/v1/invitations` (administrators, registrars).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct InviteRequest {
    /// Lifetime in seconds (default a week).
    #[serde(default = "week")]
    pub ttl_seconds: i64,
    /// Registrations it admits (default 1).
    #[serde(default = "one")]
    pub uses: i64,
}

/// An invitation code, shown once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Invitation {
    /// The code.
    pub code: String,
    /// When it expires.
    pub expires_at: String,
    /// Registrations it admits.
    pub uses: i64,
}
