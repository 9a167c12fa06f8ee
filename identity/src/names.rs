//! Identity names. Each type is constructed only by parsing, so holding one means it is valid.

use std::fmt;
use std::str::FromStr;

/// Why a name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// The trust domain is empty, too long or has characters outside `[a-z0-9._-]`.
    #[error("trust domain must be 1-255 characters of a-z, 0-9, '.', '-' or '_'")]
    TrustDomain,
    /// The id is empty, too long, `.`/`..`, or has characters outside `[a-zA-Z0-9._-]`.
    #[error("id must be 1-128 characters of a-z, A-Z, 0-9, '.', '-' or '_' (and not '.' or '..')")]
    Id,
    /// The kind is neither `participant` nor `node`.
    #[error("identity type must be 'participant' or 'node'")]
    Kind,
    /// The URI is not `spiffe://<trust-domain>/<participant|node>/<id>`.
    #[error("not a BSN SPIFFE ID (expected spiffe://<trust-domain>/<participant|node>/<id>)")]
    SpiffeId,
    /// The status is neither `active` nor `disabled`.
    #[error("identity status must be 'active' or 'disabled'")]
    Status,
    /// Not a CA role.
    #[error("a CA role is one of: admin, registrar, publisher, auditor")]
    Role,
}

/// A SPIFFE trust domain, such as `example.org`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TrustDomain(String);

impl TrustDomain {
    /// Parses a trust domain (the SPIFFE rule: lowercase letters, digits, `.`, `-`, `_`).
    pub fn parse(s: &str) -> Result<Self, NameError> {
        let ok = !s.is_empty()
            && s.len() <= 255
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b));
        if ok {
            Ok(Self(s.to_owned()))
        } else {
            Err(NameError::TrustDomain)
        }
    }

    /// The trust domain as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// An opaque, stable identity id: one SPIFFE path segment (`[a-zA-Z0-9._-]`, 1 to 128 bytes).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IdentityId(String);

impl IdentityId {
    /// Parses an id.
    pub fn parse(s: &str) -> Result<Self, NameError> {
        let ok = !s.is_empty()
            && s.len() <= 128
            && s != "."
            && s != ".."
            && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
        if ok { Ok(Self(s.to_owned())) } else { Err(NameError::Id) }
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// What an identity is: a participant (person, organisation or its app), a city node, or an
/// orderer of the consensus ordering cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "lowercase")]
pub enum IdentityKind {
    /// A person or organisation, and the applications acting for it.
    Participant,
    /// A city node: stores subchains' chains and serves their gateway.
    Node,
    /// An orderer of the consensus ordering cluster: a voter of subchains' ordering groups.
    Orderer,
}

impl IdentityKind {
    /// The path segment of this kind in a SPIFFE ID.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Participant => "participant",
            Self::Node => "node",
            Self::Orderer => "orderer",
        }
    }

    /// A city node or an orderer: runs `ledger-node`, may carry DNS and IP SANs, follows the
    /// CA's change feed, and uses the capacity servers reserve for operators' traffic.
    pub fn is_network_node(self) -> bool {
        matches!(self, Self::Node | Self::Orderer)
    }
}

impl FromStr for IdentityKind {
    type Err = NameError;
    fn from_str(s: &str) -> Result<Self, NameError> {
        match s {
            "participant" => Ok(Self::Participant),
            "node" => Ok(Self::Node),
            "orderer" => Ok(Self::Orderer),
            _ => Err(NameError::Kind),
        }
    }
}

/// Whether an identity may act: a disabled identity can neither enroll, renew nor call the CA.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IdentityStatus {
    /// May act.
    Active,
    /// May not act; its certificates stay valid until revoked.
    Disabled,
}

impl IdentityStatus {
    /// `active` or `disabled`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Disabled => "disabled",
        }
    }
}

impl FromStr for IdentityStatus {
    type Err = NameError;
    fn from_str(s: &str) -> Result<Self, NameError> {
        match s {
            "active" => Ok(Self::Active),
            "disabled" => Ok(Self::Disabled),
            _ => Err(NameError::Status),
        }
    }
}

/// What an identity may do at the CA (distinct from its roles on subchains).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CaRole {
    /// Everything: registers anyone, revokes any certificate, decides portal registrations.
    Admin,
    /// Registers participants and nodes without roles, and manages those it registered.
    Registrar,
    /// Publishes subchains.
    Publisher,
    /// Reads every certificate and the metrics.
    Auditor,
}

impl CaRole {
    /// Every role.
    pub const ALL: [CaRole; 4] = [Self::Admin, Self::Registrar, Self::Publisher, Self::Auditor];

    /// Its name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Admin => "admin",
            Self::Registrar => "registrar",
            Self::Publisher => "publisher",
            Self::Auditor => "auditor",
        }
    }

    /// The names of every role, comma-separated (for error messages).
    pub fn names() -> String {
        Self::ALL.map(Self::as_str).join(", ")
    }
}

impl FromStr for CaRole {
    type Err = NameError;
    fn from_str(s: &str) -> Result<Self, NameError> {
        Self::ALL.into_iter().find(|r| r.as_str() == s).ok_or(NameError::Role)
    }
}

/// A full identity name: `spiffe://<trust-domain>/<kind>/<id>`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SpiffeId {
    /// The trust domain.
    pub trust_domain: TrustDomain,
    /// Participant or node.
    pub kind: IdentityKind,
    /// The id within its kind.
    pub id: IdentityId,
}

impl SpiffeId {
    /// Parses `spiffe://<trust-domain>/<participant|node>/<id>`, and nothing looser (no query,
    /// fragment, port, user info, trailing slash or extra segment).
    pub fn parse(uri: &str) -> Result<Self, NameError> {
        let rest = uri.strip_prefix("spiffe://").ok_or(NameError::SpiffeId)?;
        let mut parts = rest.split('/');
        let (Some(td), Some(kind), Some(id), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
            return Err(NameError::SpiffeId);
        };
        Ok(Self {
            trust_domain: TrustDomain::parse(td).map_err(|_| NameError::SpiffeId)?,
            kind: kind.parse().map_err(|_| NameError::SpiffeId)?,
            id: IdentityId::parse(id).map_err(|_| NameError::SpiffeId)?,
        })
    }
}

impl fmt::Display for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "spiffe://{}/{}/{}",
            self.trust_domain.0,
            self.kind.as_str(),
            self.id.0
        )
    }
}

impl fmt::Display for TrustDomain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Display for IdentityId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_and_statuses_parse_from_their_names_only() {
        for r in CaRole::ALL {
            assert_eq!(r.as_str().parse::<CaRole>(), Ok(r));
            assert_eq!(serde_json::to_string(&r).unwrap(), format!("\"{}\"", r.as_str()));
        }
        assert_eq!(CaRole::names(), "admin, registrar, publisher, auditor");
        assert_eq!("Admin".parse::<CaRole>(), Err(NameError::Role));
        for st in [IdentityStatus::Active, IdentityStatus::Disabled] {
            assert_eq!(st.as_str().parse::<IdentityStatus>(), Ok(st));
        }
        assert_eq!("enabled".parse::<IdentityStatus>(), Err(NameError::Status));
    }

    #[test]
    fn spiffe_ids_round_trip() {
        let s = "spiffe://example.org/participant/alice_01.x-y";
        let id = SpiffeId::parse(s).unwrap();
        assert_eq!(id.kind, IdentityKind::Participant);
        assert_eq!(id.id.as_str(), "alice_01.x-y");
        assert_eq!(id.to_string(), s);
        assert_eq!(SpiffeId::parse("spiffe://td/node/n1").unwrap().kind, IdentityKind::Node);
        let o = SpiffeId::parse("spiffe://td/orderer/o1").unwrap();
        assert_eq!(o.kind, IdentityKind::Orderer);
        assert_eq!(o.to_string(), "spiffe://td/orderer/o1");
    }

    #[test]
    fn loose_spiffe_ids_are_refused() {
        for bad in [
            "spiffe://Example.org/participant/a",
            "spiffe://example.org/participant/a/",
            "spiffe://example.org/participant/a/b",
            "spiffe://example.org/admin/a",
            "spiffe://example.org/participant/..",
            "spiffe://example.org:443/participant/a",
            "spiffe://user@example.org/participant/a",
            "spiffe://example.org/participant/a?x",
            "spiffe://example.org/participant/a%20b",
            "https://example.org/participant/a",
            "spiffe:///participant/a",
            "",
        ] {
            assert_eq!(SpiffeId::parse(bad), Err(NameError::SpiffeId), "{bad}");
        }
    }

    #[test]
    fn ids_follow_the_spiffe_segment_rule() {
        assert!(IdentityId::parse("a").is_ok());
        assert!(IdentityId::parse(&"a".repeat(128)).is_ok());
        for bad in ["", ".", "..", "a b", "a/b", "é", &"a".repeat(129)] {
            assert_eq!(IdentityId::parse(bad), Err(NameError::Id), "{bad}");
        }
        assert!(TrustDomain::parse("bsn.example-1_x").is_ok());
        assert!(TrustDomain::parse("BSN").is_err());
    }
}
