//! Subchain membership as the CA states it: roles, membership statements and feed heartbeats,
//! signed by the CA's membership key (Ed25519) and verified here, offline, by ledger nodes and
//! auditors.
//!
//! A signed document travels as an [`Envelope`]: the exact payload bytes (JSON) and an Ed25519
//! signature over a per-type context string followed by those bytes. Verifiers check the
//! signature over the bytes they received, then parse; nothing is re-serialised, so no canonical
//! JSON is needed, and a statement cannot be passed off as a heartbeat or the reverse.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde::{Deserialize, Serialize};

use crate::names::IdentityId;

/// Signature context of a membership statement.
pub const STATEMENT_CONTEXT: &[u8] = b"bsn membership statement v1\n";
/// Signature context of a feed heartbeat.
pub const HEARTBEAT_CONTEXT: &[u8] = b"bsn feed heartbeat v1\n";
/// Signature context of the node directory.
pub const DIRECTORY_CONTEXT: &[u8] = b"bsn node directory v1\n";
/// Signature context of a membership key handover (signed by both keys).
pub const HANDOVER_CONTEXT: &[u8] = b"bsn membership key handover v1\n";

/// What a member may do on a subchain. Each role includes the ones before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Reads blocks and state.
    Reader,
    /// Also submits transactions.
    Writer,
    /// Also manages the subchain's members.
    Admin,
}

impl Role {
    /// All roles, weakest first.
    pub const ALL: [Role; 3] = [Role::Reader, Role::Writer, Role::Admin];

    /// Parses `reader`, `writer` or `admin`.
    pub fn parse(s: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.name() == s)
    }

    /// The role's name.
    pub fn name(self) -> &'static str {
        match self {
            Role::Reader => "reader",
            Role::Writer => "writer",
            Role::Admin => "admin",
        }
    }

    /// Whether this role grants what `needed` grants.
    pub fn allows(self, needed: Role) -> bool {
        self >= needed
    }
}

/// A subchain id: 1 to 63 characters of `[a-z0-9-]`, starting with a letter or digit (so it
/// works as a DNS label, a file name and a URL path segment unchanged).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[cfg_attr(feature = "schema", schemars(extend("pattern" = "^[a-z0-9][a-z0-9-]{0,62}$")))]
#[serde(transparent)]
pub struct SubchainId(String);

impl SubchainId {
    /// Parses a subchain id.
    pub fn parse(s: &str) -> Result<Self, StatementError> {
        let ok = !s.is_empty()
            && s.len() <= 63
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !s.starts_with('-');
        if ok {
            Ok(Self(s.to_string()))
        } else {
            Err(StatementError::Invalid(format!(
                "subchain id '{s}' must be 1-63 characters of a-z, 0-9 and '-', not starting with '-'"
            )))
        }
    }

    /// The id.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for SubchainId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for SubchainId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        SubchainId::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// One member of a subchain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct Member {
    /// The participant's identity id.
    pub id: String,
    /// Its role.
    pub role: Role,
}

/// The membership of a subchain at one revision, as the CA signs it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct Statement {
    /// Always 1.
    pub version: u8,
    /// The CA's trust domain.
    pub trust_domain: String,
    /// The subchain.
    pub subchain: SubchainId,
    /// Revision, starting at 1 and growing by one with each change.
    pub revision: u64,
    /// Unix seconds.
    pub issued_at: i64,
    /// Ids of the city nodes that host the subchain (store its chain and serve its gateway),
    /// sorted. When `orderers` is empty they also order it (their own Raft group).
    pub nodes: Vec<String>,
    /// Ids of the orderers of the consensus ordering cluster that order the subchain (its Raft
    /// voters, normally 3 or 5), sorted. Absent in statements of subchains ordered by their
    /// city nodes themselves.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub orderers: Vec<String>,
    /// Members, sorted by id, each once.
    pub members: Vec<Member>,
    /// The resource plan in force (DESIGN.md section 12): what the subchain may take from each
    /// node hosting it, enforced there. Absent: none chosen (hosts pinned by an administrator),
    /// no quotas.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan: Option<crate::plan::Plan>,
}

impl Statement {
    /// The member's role, if it is a member.
    pub fn role_of(&self, id: &str) -> Option<Role> {
        self.members
            .binary_search_by(|m| m.id.as_str().cmp(id))
            .ok()
            .map(|i| self.members[i].role)
    }

    /// Whether the node hosts the subchain.
    pub fn hosted_by(&self, node: &str) -> bool {
        self.nodes.binary_search_by(|n| n.as_str().cmp(node)).is_ok()
    }

    /// Whether `node` is one of the subchain's Raft voters: an orderer it names, or (when it
    /// names none) a hosting city node.
    pub fn orders(&self, node: &str) -> bool {
        if self.orderers.is_empty() {
            self.hosted_by(node)
        } else {
            self.orderers.binary_search_by(|n| n.as_str().cmp(node)).is_ok()
        }
    }

    /// The subchain's Raft voters: its orderers, or its city nodes when it names no orderer.
    pub fn voters(&self) -> &[String] {
        if self.orderers.is_empty() {
            &self.nodes
        } else {
            &self.orderers
        }
    }

    /// Whether `node` takes part in the subchain at all (orders it or hosts it).
    pub fn involves(&self, node: &str) -> bool {
        self.hosted_by(node) || self.orders(node)
    }

    fn check(&self) -> Result<(), StatementError> {
        let bad = |m: &str| Err(StatementError::Invalid(m.to_string()));
        if self.version != 1 {
            return bad("unknown statement version");
        }
        if self.revision == 0 {
            return bad("revision must be at least 1");
        }
        if !self.members.windows(2).all(|w| w[0].id < w[1].id) {
            return bad("members must be sorted by id, each once");
        }
        if !self.nodes.windows(2).all(|w| w[0] < w[1]) {
            return bad("nodes must be sorted, each once");
        }
        if !self.orderers.windows(2).all(|w| w[0] < w[1]) {
            return bad("orderers must be sorted, each once");
        }
        if let Some(plan) = &self.plan {
            plan.check().map_err(StatementError::Invalid)?;
        }
        for id in self
            .members
            .iter()
            .map(|m| &m.id)
            .chain(&self.nodes)
            .chain(&self.orderers)
        {
            IdentityId::parse(id).map_err(|e| StatementError::Invalid(e.to_string()))?;
        }
        Ok(())
    }
}

/// One node of the network as the directory lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct DirectoryEntry {
    /// The node's identity id.
    pub id: String,
    /// `node` (a city node) or `orderer`: the kind of its identity.
    pub role: crate::IdentityKind,
    /// The city it runs in.
    pub city: String,
    /// Its public HTTPS endpoint (gateway and node-to-node API), such as `https://n1.example:8444`.
    pub url: String,
    /// What a city node declared it can give the subchains it hosts; absent: it takes no
    /// automatically placed subchains (orderers never declare one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capacity: Option<crate::plan::Capacity>,
    /// Taken out of service by an administrator: nothing new is placed on it and its subchains
    /// move elsewhere.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub draining: bool,
}

/// The network's nodes at one revision, as the CA signs it: who runs where. Only a node itself
/// (with its certificate) sets its own entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct NodeDirectory {
    /// Always 1.
    pub version: u8,
    /// The CA's trust domain.
    pub trust_domain: String,
    /// Revision, starting at 1 and growing by one with each change.
    pub revision: u64,
    /// Unix seconds.
    pub issued_at: i64,
    /// The nodes, sorted by id, each once.
    pub nodes: Vec<DirectoryEntry>,
}

impl NodeDirectory {
    /// A node's entry.
    pub fn entry(&self, id: &str) -> Option<&DirectoryEntry> {
        self.nodes
            .binary_search_by(|n| n.id.as_str().cmp(id))
            .ok()
            .map(|i| &self.nodes[i])
    }

    /// The rules: sorted, unique, valid ids, roles, cities and URLs.
    pub fn check(&self) -> Result<(), StatementError> {
        let bad = |m: String| Err(StatementError::Invalid(m));
        if self.version != 1 {
            return bad("unknown directory version".into());
        }
        if self.revision == 0 {
            return bad("revision must be at least 1".into());
        }
        if !self.nodes.windows(2).all(|w| w[0].id < w[1].id) {
            return bad("nodes must be sorted by id, each once".into());
        }
        for n in &self.nodes {
            IdentityId::parse(&n.id).map_err(|e| StatementError::Invalid(e.to_string()))?;
            if !n.role.is_network_node() {
                return bad(format!("{} is not a node or an orderer", n.id));
            }
            check_city(&n.city).map_err(StatementError::Invalid)?;
            check_node_url(&n.url).map_err(StatementError::Invalid)?;
            if let Some(c) = &n.capacity {
                if n.role != crate::IdentityKind::Node {
                    return bad(format!("{}: only city nodes declare a capacity", n.id));
                }
                c.check()
                    .map_err(|e| StatementError::Invalid(format!("{}: {e}", n.id)))?;
            }
        }
        Ok(())
    }
}

/// A city name: 1 to 64 letters, digits, spaces, `.`, `-` or `_` (any script), not starting or
/// ending with a space.
pub fn check_city(city: &str) -> Result<(), String> {
    let ok = !city.is_empty()
        && city.chars().count() <= 64
        && city.trim() == city
        && city.chars().all(|c| c.is_alphanumeric() || " .-_".contains(c));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "city {city:?} must be 1 to 64 letters, digits, spaces, '.', '-' or '_'"
        ))
    }
}

/// A node's public endpoint: `https://HOST[:PORT]` with an optional path, at most 256
/// characters, no user information, query or fragment.
pub fn check_node_url(url: &str) -> Result<(), String> {
    let bad = || {
        Err(format!(
            "url {url:?} must be https://HOST[:PORT], at most 256 characters"
        ))
    };
    let Some(rest) = url.strip_prefix("https://") else {
        return bad();
    };
    let authority = rest.split('/').next().unwrap_or_default();
    let ok = url.len() <= 256
        && !authority.is_empty()
        && !authority.starts_with(':')
        && url.bytes().all(|b| b.is_ascii_graphic())
        && !url.contains(['@', '?', '#', '\\']);
    if ok { Ok(()) } else { bad() }
}

/// A signed feed heartbeat: "nothing after `cursor` for you as of `at`".
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct Heartbeat {
    /// The CA's trust domain.
    pub trust_domain: String,
    /// The node it was sent to.
    pub node: String,
    /// The feed position the node has been sent everything up to.
    pub cursor: u64,
    /// Unix milliseconds.
    pub at_ms: i64,
}

/// A signed document: payload bytes and a signature, both base64.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct Envelope {
    /// The payload (JSON), base64.
    pub payload: String,
    /// Ed25519 signature over the context followed by the payload, base64.
    pub signature: String,
}

/// Why a signed document was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StatementError {
    /// Not base64, not JSON, or not the expected shape.
    #[error("malformed signed document: {0}")]
    Malformed(String),
    /// The signature does not verify with the membership key.
    #[error("signature does not verify with the CA's membership key")]
    BadSignature,
    /// Well formed and signed, but its content breaks the rules.
    #[error("invalid statement: {0}")]
    Invalid(String),
}

/// The message an envelope's signature covers.
pub fn signed_message(context: &[u8], payload: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(context.len() + payload.len());
    m.extend_from_slice(context);
    m.extend_from_slice(payload);
    m
}

/// The CA's membership verification key (raw Ed25519 public key).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MembershipKey([u8; 32]);

impl MembershipKey {
    /// From the raw 32-byte key.
    pub fn from_bytes(b: &[u8]) -> Result<Self, StatementError> {
        b.try_into()
            .map(Self)
            .map_err(|_| StatementError::Malformed("a membership key is 32 bytes".into()))
    }

    /// From its base64 form (as the CA serves and writes it).
    pub fn from_base64(s: &str) -> Result<Self, StatementError> {
        let b = B64
            .decode(s.trim())
            .map_err(|_| StatementError::Malformed("membership key is not base64".into()))?;
        Self::from_bytes(&b)
    }

    /// The base64 form.
    pub fn to_base64(&self) -> String {
        B64.encode(self.0)
    }

    /// Checks an envelope's signature under `context` and parses its payload.
    pub fn open<T: serde::de::DeserializeOwned>(&self, context: &[u8], env: &Envelope) -> Result<T, StatementError> {
        let payload = B64
            .decode(&env.payload)
            .map_err(|_| StatementError::Malformed("payload is not base64".into()))?;
        let sig = B64
            .decode(&env.signature)
            .map_err(|_| StatementError::Malformed("signature is not base64".into()))?;
        ring::signature::UnparsedPublicKey::new(&ring::signature::ED25519, self.0)
            .verify(&signed_message(context, &payload), &sig)
            .map_err(|_| StatementError::BadSignature)?;
        serde_json::from_slice(&payload).map_err(|e| StatementError::Malformed(e.to_string()))
    }

    /// Verifies a membership statement: signature, shape, and the rules (sorted, unique, valid ids).
    pub fn verify_statement(&self, env: &Envelope) -> Result<Statement, StatementError> {
        let s: Statement = self.open(STATEMENT_CONTEXT, env)?;
        s.check()?;
        Ok(s)
    }

    /// Verifies the node directory: signature, shape, and the rules (sorted, unique, valid ids,
    /// roles, cities and URLs).
    pub fn verify_directory(&self, env: &Envelope) -> Result<NodeDirectory, StatementError> {
        let d: NodeDirectory = self.open(DIRECTORY_CONTEXT, env)?;
        d.check()?;
        Ok(d)
    }

    /// Verifies a heartbeat's signature and shape.
    pub fn verify_heartbeat(&self, env: &Envelope) -> Result<Heartbeat, StatementError> {
        self.open(HEARTBEAT_CONTEXT, env)
    }
}

/// What a membership key handover says: the CA's membership key `from` handed over to `to`
/// (its number `number` at the CA) at `issued_at`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HandoverTerms {
    /// Format version, 1.
    pub version: u32,
    /// The CA's trust domain.
    pub trust_domain: String,
    /// The key handing over, raw Ed25519, base64.
    pub from: String,
    /// The key taking over, raw Ed25519, base64.
    pub to: String,
    /// The new key's number at the CA.
    pub number: u64,
    /// Unix seconds.
    pub issued_at: i64,
}

/// A membership key handover as the CA publishes it (`GET /api/v1/keys/membership`): the terms
/// (JSON, base64) signed under [`HANDOVER_CONTEXT`] by the old key and by the new one. A verifier
/// that trusts either key learns the other from it: forward, the old key vouches for its
/// successor; backward, the new key vouches for what its predecessor signed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct KeyHandover {
    /// The [`HandoverTerms`] (JSON), base64.
    pub payload: String,
    /// The old key's signature over the context and the payload, base64.
    pub from_signature: String,
    /// The new key's signature over the context and the payload, base64.
    pub to_signature: String,
}

impl KeyHandover {
    /// Checks both signatures and returns the terms with the two keys.
    pub fn verify(&self) -> Result<(HandoverTerms, MembershipKey, MembershipKey), StatementError> {
        let payload = B64
            .decode(&self.payload)
            .map_err(|_| StatementError::Malformed("handover payload is not base64".into()))?;
        let terms: HandoverTerms =
            serde_json::from_slice(&payload).map_err(|e| StatementError::Malformed(format!("handover: {e}")))?;
        if terms.version != 1 {
            return Err(StatementError::Malformed(format!("handover version {}", terms.version)));
        }
        let (from, to) = (
            MembershipKey::from_base64(&terms.from)?,
            MembershipKey::from_base64(&terms.to)?,
        );
        if from == to {
            return Err(StatementError::Invalid("a key cannot hand over to itself".into()));
        }
        let message = signed_message(HANDOVER_CONTEXT, &payload);
        for (key, sig) in [(&from, &self.from_signature), (&to, &self.to_signature)] {
            let sig = B64
                .decode(sig)
                .map_err(|_| StatementError::Malformed("handover signature is not base64".into()))?;
            ring::signature::UnparsedPublicKey::new(&ring::signature::ED25519, key.0)
                .verify(&message, &sig)
                .map_err(|_| StatementError::BadSignature)?;
        }
        Ok((terms, from, to))
    }
}

/// The membership keys a verifier trusts: the one it pinned and those linked to it by verified
/// [`KeyHandover`]s, oldest first; the last is the key the CA signs with now.
///
/// A document signed by any of them verifies: statements and directory revisions the CA signed
/// before a handover stay valid (their revisions still have to increase where the verifier
/// tracks them). Non-feature: recovering from a stolen membership key; a handover is for keys
/// that are still the CA's alone (the CA erases the retired one), and a stolen key means pinning
/// afresh.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MembershipKeys {
    keys: Vec<MembershipKey>,
}

impl MembershipKeys {
    /// The set of one pinned key.
    pub fn pinned(key: MembershipKey) -> Self {
        Self { keys: vec![key] }
    }

    /// The pinned key followed through `handovers` (in any order; ones that do not link to it are
    /// ignored). A handover whose signatures do not verify is an error.
    pub fn following(key: MembershipKey, handovers: &[KeyHandover]) -> Result<Self, StatementError> {
        let mut keys = Self::pinned(key);
        keys.learn(handovers)?;
        Ok(keys)
    }

    /// The newest key: the one the CA signs with now, as far as this set knows.
    pub fn current(&self) -> &MembershipKey {
        self.keys.last().expect("a key set is never empty")
    }

    /// Every key, oldest first.
    pub fn keys(&self) -> &[MembershipKey] {
        &self.keys
    }

    /// Whether `key` is one of them.
    pub fn contains(&self, key: &MembershipKey) -> bool {
        self.keys.contains(key)
    }

    /// Extends the set through `handovers` linking to it (forward from the newest key, backward
    /// from the oldest). Returns whether it learned a key. Checks every handover's signatures
    /// first: one that does not verify changes nothing.
    pub fn learn(&mut self, handovers: &[KeyHandover]) -> Result<bool, StatementError> {
        let links = handovers
            .iter()
            .map(|h| h.verify().map(|(_, from, to)| (from, to)))
            .collect::<Result<Vec<_>, _>>()?;
        let mut learned = false;
        loop {
            let before = self.keys.len();
            for (from, to) in &links {
                if from == self.current() && !self.contains(to) {
                    self.keys.push(to.clone());
                } else if to == &self.keys[0] && !self.contains(from) {
                    self.keys.insert(0, from.clone());
                }
            }
            if self.keys.len() == before {
                return Ok(learned);
            }
            learned = true;
        }
    }

    /// A copy that also follows `handovers`.
    pub fn with(&self, handovers: &[KeyHandover]) -> Result<Self, StatementError> {
        let mut keys = self.clone();
        keys.learn(handovers)?;
        Ok(keys)
    }

    /// Opens an envelope signed by any of the keys (the newest tried first); returns the payload
    /// and the key that signed it.
    pub fn open<T: serde::de::DeserializeOwned>(
        &self,
        context: &[u8],
        env: &Envelope,
    ) -> Result<(T, &MembershipKey), StatementError> {
        for key in self.keys.iter().rev() {
            match key.open(context, env) {
                Err(StatementError::BadSignature) => continue,
                other => return other.map(|t| (t, key)),
            }
        }
        Err(StatementError::BadSignature)
    }

    /// [`MembershipKey::verify_statement`] with any of the keys.
    pub fn verify_statement(&self, env: &Envelope) -> Result<Statement, StatementError> {
        let (s, _): (Statement, _) = self.open(STATEMENT_CONTEXT, env)?;
        s.check()?;
        Ok(s)
    }

    /// [`MembershipKey::verify_directory`] with any of the keys.
    pub fn verify_directory(&self, env: &Envelope) -> Result<NodeDirectory, StatementError> {
        let (d, _): (NodeDirectory, _) = self.open(DIRECTORY_CONTEXT, env)?;
        d.check()?;
        Ok(d)
    }

    /// [`MembershipKey::verify_heartbeat`] with any of the keys.
    pub fn verify_heartbeat(&self, env: &Envelope) -> Result<Heartbeat, StatementError> {
        Ok(self.open(HEARTBEAT_CONTEXT, env)?.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ring::signature::KeyPair;

    fn key() -> (ring::signature::Ed25519KeyPair, MembershipKey) {
        let rng = ring::rand::SystemRandom::new();
        let pkcs8 = ring::signature::Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
        let kp = ring::signature::Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap();
        let public = MembershipKey::from_bytes(kp.public_key().as_ref()).unwrap();
        (kp, public)
    }

    fn seal(kp: &ring::signature::Ed25519KeyPair, context: &[u8], payload: &[u8]) -> Envelope {
        Envelope {
            payload: B64.encode(payload),
            signature: B64.encode(kp.sign(&signed_message(context, payload))),
        }
    }

    fn statement() -> Statement {
        Statement {
            version: 1,
            trust_domain: "example.org".into(),
            subchain: SubchainId::parse("supply-chain").unwrap(),
            revision: 3,
            issued_at: 1_700_000_000,
            nodes: vec!["beijing-1".into(), "shanghai-1".into()],
            orderers: vec![],
            members: vec![
                Member {
                    id: "alice".into(),
                    role: Role::Admin,
                },
                Member {
                    id: "bob".into(),
                    role: Role::Reader,
                },
            ],
            plan: None,
        }
    }

    #[test]
    fn a_statement_carries_its_plan_and_a_bad_plan_fails_it() {
        let (kp, public) = key();
        let mut s = statement();
        // Without a plan the field is absent, so statements signed before plans read the same.
        assert!(
            !String::from_utf8(serde_json::to_vec(&s).unwrap())
                .unwrap()
                .contains("plan")
        );
        s.plan = Some(crate::plan::Plan::defaults().remove(0));
        let env = seal(&kp, STATEMENT_CONTEXT, &serde_json::to_vec(&s).unwrap());
        assert_eq!(public.verify_statement(&env).unwrap().plan, s.plan);
        s.plan.as_mut().unwrap().rate = 0;
        let env = seal(&kp, STATEMENT_CONTEXT, &serde_json::to_vec(&s).unwrap());
        assert!(matches!(public.verify_statement(&env), Err(StatementError::Invalid(m)) if m.contains("rate")));
    }

    #[test]
    fn a_signed_statement_verifies_and_answers_role_queries() {
        let (kp, public) = key();
        let s = statement();
        let env = seal(&kp, STATEMENT_CONTEXT, &serde_json::to_vec(&s).unwrap());
        let got = public.verify_statement(&env).unwrap();
        assert_eq!(got, s);
        assert_eq!(got.role_of("alice"), Some(Role::Admin));
        assert_eq!(got.role_of("bob"), Some(Role::Reader));
        assert_eq!(got.role_of("carol"), None);
        assert!(got.hosted_by("shanghai-1") && !got.hosted_by("shenzhen-1"));
        assert!(Role::Admin.allows(Role::Writer) && !Role::Reader.allows(Role::Writer));
    }

    #[test]
    fn a_signed_directory_verifies_and_a_bad_one_does_not() {
        let (kp, public) = key();
        let entry = |id: &str, role, url: &str| DirectoryEntry {
            id: id.into(),
            role,
            city: "Beijing".into(),
            url: url.into(),
            capacity: None,
            draining: false,
        };
        let shared = crate::plan::Capacity {
            tenancy: crate::plan::Tenancy::Shared,
            rate: 1000,
            storage: 1 << 40,
        };
        let d = NodeDirectory {
            version: 1,
            trust_domain: "example.org".into(),
            revision: 2,
            issued_at: 1_700_000_000,
            nodes: vec![
                entry("n1", crate::IdentityKind::Node, "https://n1.example:8444"),
                entry("o1", crate::IdentityKind::Orderer, "https://10.0.0.7:9000"),
            ],
        };
        let mut d = d;
        d.nodes[0].capacity = Some(shared.clone());
        d.nodes[0].draining = true;
        let env = seal(&kp, DIRECTORY_CONTEXT, &serde_json::to_vec(&d).unwrap());
        let got = public.verify_directory(&env).unwrap();
        assert_eq!(got.entry("n1").unwrap().capacity, Some(shared.clone()));
        assert!(got.entry("n1").unwrap().draining && !got.entry("o1").unwrap().draining);
        assert_eq!(got.entry("o1").unwrap().url, "https://10.0.0.7:9000");
        assert!(got.entry("n2").is_none());
        // A statement's context cannot pass for a directory's.
        assert!(public.verify_statement(&env).is_err());
        for bad in [
            entry("p1", crate::IdentityKind::Participant, "https://p1:1"),
            entry("n1", crate::IdentityKind::Node, "http://n1:1"),
            entry("n1", crate::IdentityKind::Node, "https://user@n1:1"),
            entry("n1", crate::IdentityKind::Node, "https://"),
            DirectoryEntry {
                capacity: Some(shared.clone()),
                ..entry("o1", crate::IdentityKind::Orderer, "https://o1:1")
            },
            DirectoryEntry {
                capacity: Some(crate::plan::Capacity {
                    rate: 0,
                    ..shared.clone()
                }),
                ..entry("n1", crate::IdentityKind::Node, "https://n1:1")
            },
        ] {
            let mut d = d.clone();
            d.nodes = vec![bad];
            let env = seal(&kp, DIRECTORY_CONTEXT, &serde_json::to_vec(&d).unwrap());
            assert!(public.verify_directory(&env).is_err(), "{:?}", d.nodes);
        }
        assert!(check_city("Shanghai").is_ok() && check_city("São Paulo").is_ok());
        assert!(check_city("").is_err() && check_city(" x").is_err() && check_city("a/b").is_err());
    }

    #[test]
    fn tampering_in_transit_is_refused() {
        let (kp, public) = key();
        let payload = serde_json::to_vec(&statement()).unwrap();
        let env = seal(&kp, STATEMENT_CONTEXT, &payload);
        // Promote bob to admin in the payload, keep the signature.
        let forged = String::from_utf8(payload.clone())
            .unwrap()
            .replace(r#"{"id":"bob","role":"reader"}"#, r#"{"id":"bob","role":"admin"}"#);
        assert_ne!(forged.as_bytes(), payload.as_slice());
        let tampered = Envelope {
            payload: B64.encode(forged),
            signature: env.signature.clone(),
        };
        assert_eq!(public.verify_statement(&tampered), Err(StatementError::BadSignature));
        // Every single-bit flip of the payload or the signature is refused.
        let raw_sig = B64.decode(&env.signature).unwrap();
        for i in 0..payload.len() * 8 {
            let mut p = payload.clone();
            p[i / 8] ^= 1 << (i % 8);
            let e = Envelope {
                payload: B64.encode(&p),
                signature: env.signature.clone(),
            };
            assert!(public.verify_statement(&e).is_err(), "payload bit {i}");
        }
        for i in 0..raw_sig.len() * 8 {
            let mut s = raw_sig.clone();
            s[i / 8] ^= 1 << (i % 8);
            let e = Envelope {
                payload: env.payload.clone(),
                signature: B64.encode(&s),
            };
            assert!(public.verify_statement(&e).is_err(), "signature bit {i}");
        }
        // Another key, and a statement signed as a heartbeat, are refused.
        let (_, other) = key();
        assert_eq!(other.verify_statement(&env), Err(StatementError::BadSignature));
        let as_heartbeat = seal(&kp, HEARTBEAT_CONTEXT, &payload);
        assert_eq!(
            public.verify_statement(&as_heartbeat),
            Err(StatementError::BadSignature)
        );
    }

    #[test]
    fn signed_but_invalid_statements_are_refused() {
        let (kp, public) = key();
        let mut unsorted = statement();
        unsorted.members.reverse();
        let mut dup_node = statement();
        dup_node.nodes = vec!["n".into(), "n".into()];
        let mut zero = statement();
        zero.revision = 0;
        let mut bad_id = statement();
        bad_id.members[0].id = "alice/../x".into();
        for s in [unsorted, dup_node, zero, bad_id] {
            let env = seal(&kp, STATEMENT_CONTEXT, &serde_json::to_vec(&s).unwrap());
            assert!(
                matches!(public.verify_statement(&env), Err(StatementError::Invalid(_))),
                "{s:?}"
            );
        }
        let extra = br#"{"version":1,"trust_domain":"t","subchain":"s","revision":1,"issued_at":0,"nodes":[],"members":[],"admin":true}"#;
        let env = seal(&kp, STATEMENT_CONTEXT, extra);
        assert!(matches!(
            public.verify_statement(&env),
            Err(StatementError::Malformed(_))
        ));
        let bad_role = br#"{"version":1,"trust_domain":"t","subchain":"s","revision":1,"issued_at":0,"nodes":[],"members":[{"id":"a","role":"owner"}]}"#;
        let env = seal(&kp, STATEMENT_CONTEXT, bad_role);
        assert!(matches!(
            public.verify_statement(&env),
            Err(StatementError::Malformed(_))
        ));
    }

    #[test]
    fn subchain_ids() {
        for ok in ["a", "supply-chain", "x1", &"a".repeat(63)] {
            SubchainId::parse(ok).unwrap();
        }
        for bad in ["", "-a", "A", "a_b", "a.b", "a/b", &"a".repeat(64)] {
            assert!(SubchainId::parse(bad).is_err(), "{bad}");
        }
    }

    fn handover(
        old: &ring::signature::Ed25519KeyPair,
        new: &ring::signature::Ed25519KeyPair,
        number: u64,
    ) -> KeyHandover {
        let terms = HandoverTerms {
            version: 1,
            trust_domain: "example.org".into(),
            from: B64.encode(old.public_key()),
            to: B64.encode(new.public_key()),
            number,
            issued_at: 1_700_000_000,
        };
        let payload = serde_json::to_vec(&terms).unwrap();
        KeyHandover {
            payload: B64.encode(&payload),
            from_signature: B64.encode(old.sign(&signed_message(HANDOVER_CONTEXT, &payload))),
            to_signature: B64.encode(new.sign(&signed_message(HANDOVER_CONTEXT, &payload))),
        }
    }

    #[test]
    fn a_pinned_key_follows_handovers_forward_and_backward() {
        let (k1, p1) = key();
        let (k2, p2) = key();
        let (k3, p3) = key();
        let docs = [handover(&k2, &k3, 3), handover(&k1, &k2, 2)];
        // Pinned before both handovers: learns 2 then 3, in whatever order they came.
        let keys = MembershipKeys::following(p1.clone(), &docs).unwrap();
        assert_eq!(keys.keys(), &[p1.clone(), p2.clone(), p3.clone()]);
        assert_eq!(keys.current(), &p3);
        // Pinned after them: learns the predecessors, so what they signed still verifies.
        let keys = MembershipKeys::following(p3.clone(), &docs).unwrap();
        assert_eq!(keys.keys(), &[p1.clone(), p2.clone(), p3.clone()]);
        let old = seal(&k1, STATEMENT_CONTEXT, &serde_json::to_vec(&statement()).unwrap());
        assert_eq!(keys.verify_statement(&old).unwrap(), statement());
        // Pinned in the middle: both ways.
        let mut keys = MembershipKeys::pinned(p2.clone());
        assert!(keys.learn(&docs).unwrap());
        assert!(!keys.learn(&docs).unwrap(), "nothing new the second time");
        assert_eq!(keys.keys().len(), 3);
    }

    #[test]
    fn a_handover_needs_both_signatures_and_a_link() {
        let (k1, p1) = key();
        let (k2, p2) = key();
        let (stranger, _) = key();
        // A stranger claims the pinned key handed over to it: only the stranger signed as `from`.
        let mut forged = handover(&stranger, &k2, 2);
        let real = handover(&k1, &k2, 2);
        forged.payload = real.payload.clone();
        assert_eq!(forged.verify().unwrap_err(), StatementError::BadSignature);
        let mut keys = MembershipKeys::pinned(p1.clone());
        assert!(keys.learn(&[forged]).is_err());
        assert_eq!(
            keys.keys(),
            std::slice::from_ref(&p1),
            "a refused handover changes nothing"
        );
        // Signed by the new key alone (the old key's signature is the new key's).
        let mut half = real.clone();
        half.from_signature = half.to_signature.clone();
        assert!(half.verify().is_err());
        // A valid handover between keys the set does not know is ignored.
        let (k3, _) = key();
        let (k4, _) = key();
        assert!(!keys.learn(&[handover(&k3, &k4, 9)]).unwrap());
        assert_eq!(keys.keys(), std::slice::from_ref(&p1));
        // A statement signed by a key not linked fails.
        let env = seal(&k3, STATEMENT_CONTEXT, &serde_json::to_vec(&statement()).unwrap());
        assert_eq!(keys.verify_statement(&env).unwrap_err(), StatementError::BadSignature);
        // The real one links.
        assert!(keys.learn(&[real]).unwrap());
        assert_eq!(keys.current(), &p2);
        // A handover to itself is refused.
        assert!(handover(&k1, &k1, 2).verify().is_err());
    }
}
