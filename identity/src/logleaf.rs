//! The issuance log's leaf encoding, version 1: one canonical binary form for issuance and
//! revocation events, at most 65,535 bytes (tile entry bundles use 16-bit lengths).
//!
//! ```text
//! u8 version = 1
//! u8 kind    = 1 (issuance) | 2 (revocation) | 3 (membership) | 4 (intermediate) | 5 (key)
//!              | 6 (root)
//! u64 time   (Unix seconds, big-endian)
//! issuance:     str identity (SPIFFE ID), str serial (lowercase hex), str authorised_by,
//!               i64 not_before, i64 not_after, [32] key_sha256, bytes certificate (DER)
//! revocation:   str identity, str serial, str authorised_by, u8 reason (RFC 5280 code)
//! membership:   str subchain, u64 revision, str authorised_by, [32] statement_sha256
//! intermediate: u8 step (1 published, 2 activated, 3 retired), u64 number, str authorised_by,
//!               bytes certificate (DER)
//! key:          u8 purpose (1 log, 2 membership), u8 step (1 begun, 2 finished), u64 number,
//!               str authorised_by, [32] old_key, [32] new_key (Ed25519 public keys)
//! root:         u8 step (1 published, 2 activated, 3 withdrawn), u64 number, str authorised_by,
//!               bytes certificate (the self-signed root, DER), bytes cross (the same subject and
//!               key certified by the root before it, DER)
//! ```
//! A root leaf records a step of the root's rotation: published (the new root and its
//! cross-certificate are in the trust bundle; a verifier that trusts the old root trusts the new
//! one through the cross-certificate), activated (the new root certifies every intermediate from
//! now on) and withdrawn (the old root leaves the bundle: everything it certified has retired).
//! A key leaf records a step of handing one of the CA's Ed25519 keys over to its successor
//! (number `number`): begun (the new key is published; a log key co-signs every checkpoint beside
//! the old one from this leaf on) and finished (the new key alone signs; the old one is retired).
//! An intermediate leaf records a step of an issuing CA's rotation: published (in the bundle,
//! not yet issuing), activated (issuing from now on; the one active before keeps its CRL until it
//! is retired) and retired (no longer issuing or publishing a CRL: its last certificate expired).
//! A membership leaf commits to the signed statement's payload by its SHA-256 (a statement of a
//! large subchain does not fit in a leaf).
//! `str` and `bytes` are a big-endian u16 length followed by that many bytes. Decoding refuses
//! anything that would not re-encode to the same bytes (trailing data, bad UTF-8, unknown kind).

/// Largest encoded leaf.
pub const MAX_LEAF: usize = 65_535;

/// Why bytes are not a v1 leaf.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LeafError {
    /// Wrong version, kind, length or encoding.
    #[error("malformed log leaf: {0}")]
    Malformed(&'static str),
    /// The encoding would exceed 65,535 bytes.
    #[error("log leaf larger than 65,535 bytes")]
    TooLarge,
}

/// An event in the issuance log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogLeaf {
    /// A certificate was issued.
    Issuance {
        /// Unix seconds.
        time: u64,
        /// SPIFFE ID of the holder.
        identity: String,
        /// Serial, lowercase hex.
        serial: String,
        /// What authorised it (`secret:<registrar>`, `renew:<serial>`, `init`).
        authorized_by: String,
        /// Unix seconds.
        not_before: i64,
        /// Unix seconds.
        not_after: i64,
        /// SHA-256 of the subject public key info.
        key_sha256: [u8; 32],
        /// The certificate, DER.
        certificate: Vec<u8>,
    },
    /// A certificate was revoked.
    Revocation {
        /// Unix seconds.
        time: u64,
        /// SPIFFE ID of the holder.
        identity: String,
        /// Serial, lowercase hex.
        serial: String,
        /// Who revoked it.
        authorized_by: String,
        /// RFC 5280 reason code.
        reason: u8,
    },
    /// A subchain's membership changed: a new revision and its signed statement.
    Membership {
        /// Unix seconds.
        time: u64,
        /// The subchain id.
        subchain: String,
        /// The new revision.
        revision: u64,
        /// Who made the change.
        authorized_by: String,
        /// SHA-256 of the signed statement's payload bytes.
        statement_sha256: [u8; 32],
    },
    /// A step in the life of an issuing intermediate.
    Intermediate {
        /// Unix seconds.
        time: u64,
        /// Which step.
        step: IntermediateStep,
        /// The intermediate's number at this CA.
        number: u64,
        /// Who took the step.
        authorized_by: String,
        /// The intermediate's certificate, DER.
        certificate: Vec<u8>,
    },
    /// A step in handing a CA signing key over to its successor.
    Key {
        /// Unix seconds.
        time: u64,
        /// Which key.
        purpose: KeyPurpose,
        /// Which step.
        step: HandoverStep,
        /// The new key's number at this CA (the key of initialisation is 1).
        number: u64,
        /// Who took the step.
        authorized_by: String,
        /// The key handed over (Ed25519 public key).
        old_key: [u8; 32],
        /// Its successor (Ed25519 public key).
        new_key: [u8; 32],
    },
    /// A step in the rotation of the root.
    Root {
        /// Unix seconds.
        time: u64,
        /// Which step.
        step: RootStep,
        /// The root's number at this CA (the root of initialisation is 1).
        number: u64,
        /// Who took the step.
        authorized_by: String,
        /// The root's self-signed certificate, DER.
        certificate: Vec<u8>,
        /// The root's subject and key certified by its predecessor, DER.
        cross: Vec<u8>,
    },
}

/// The steps of a root's rotation, in the order they happen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RootStep {
    /// In the trust bundle beside its predecessor, with its cross-certificate.
    Published = 1,
    /// Certifying: every intermediate from now on is signed by it.
    Activated = 2,
    /// Out of the trust bundle: everything it certified has retired.
    Withdrawn = 3,
}

impl RootStep {
    fn from_code(c: u8) -> Result<Self, LeafError> {
        match c {
            1 => Ok(Self::Published),
            2 => Ok(Self::Activated),
            3 => Ok(Self::Withdrawn),
            _ => Err(LeafError::Malformed("unknown root step")),
        }
    }

    /// Its name: `published`, `activated` or `withdrawn`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Published => "published",
            Self::Activated => "activated",
            Self::Withdrawn => "withdrawn",
        }
    }
}

/// Which of the CA's Ed25519 keys a handover is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyPurpose {
    /// The issuance log's checkpoint key.
    Log = 1,
    /// The membership key (statements, the node directory, heartbeats).
    Membership = 2,
}

impl KeyPurpose {
    fn from_code(c: u8) -> Result<Self, LeafError> {
        match c {
            1 => Ok(Self::Log),
            2 => Ok(Self::Membership),
            _ => Err(LeafError::Malformed("unknown key purpose")),
        }
    }

    /// Its name: `log` or `membership`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Log => "log",
            Self::Membership => "membership",
        }
    }

    /// Parses a name.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "log" => Some(Self::Log),
            "membership" => Some(Self::Membership),
            _ => None,
        }
    }
}

/// The steps of a key handover, in the order they happen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum HandoverStep {
    /// The new key is published; the old one still signs (a log key's checkpoints carry both).
    Begun = 1,
    /// The new key alone signs; the old one is retired.
    Finished = 2,
}

impl HandoverStep {
    fn from_code(c: u8) -> Result<Self, LeafError> {
        match c {
            1 => Ok(Self::Begun),
            2 => Ok(Self::Finished),
            _ => Err(LeafError::Malformed("unknown handover step")),
        }
    }

    /// Its name: `begun` or `finished`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Begun => "begun",
            Self::Finished => "finished",
        }
    }
}

/// The steps of an issuing intermediate's rotation, in the order they happen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum IntermediateStep {
    /// In the bundle: relying parties learn it; nothing is issued under it yet.
    Published = 1,
    /// Issuing: every certificate from now on is signed by it.
    Activated = 2,
    /// Withdrawn: it issues nothing more and its CRL is no longer published.
    Retired = 3,
}

impl IntermediateStep {
    fn from_code(c: u8) -> Result<Self, LeafError> {
        match c {
            1 => Ok(Self::Published),
            2 => Ok(Self::Activated),
            3 => Ok(Self::Retired),
            _ => Err(LeafError::Malformed("unknown intermediate step")),
        }
    }

    /// Its name: `published`, `activated` or `retired`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Published => "published",
            Self::Activated => "activated",
            Self::Retired => "retired",
        }
    }
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) -> Result<(), LeafError> {
    let len = u16::try_from(b.len()).map_err(|_| LeafError::TooLarge)?;
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(b);
    Ok(())
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], LeafError> {
        if self.0.len() < n {
            return Err(LeafError::Malformed("truncated"));
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Ok(a)
    }
    fn u8(&mut self) -> Result<u8, LeafError> {
        Ok(self.take(1)?[0])
    }
    fn u64(&mut self) -> Result<u64, LeafError> {
        Ok(u64::from_be_bytes(
            self.take(8)?.try_into().map_err(|_| LeafError::Malformed("int"))?,
        ))
    }
    fn bytes(&mut self) -> Result<&'a [u8], LeafError> {
        let n = u16::from_be_bytes(self.take(2)?.try_into().map_err(|_| LeafError::Malformed("len"))?);
        self.take(n as usize)
    }
    fn str(&mut self) -> Result<&'a str, LeafError> {
        std::str::from_utf8(self.bytes()?).map_err(|_| LeafError::Malformed("text is not UTF-8"))
    }
    fn hash(&mut self, what: &'static str) -> Result<&'a [u8; 32], LeafError> {
        self.take(32)?.try_into().map_err(|_| LeafError::Malformed(what))
    }
}

/// A leaf decoded in place, borrowing from its bytes: the same checks as [`LogLeaf::decode`]
/// without a copy (an auditor reads millions of them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeafRef<'a> {
    /// See [`LogLeaf::Issuance`].
    #[allow(missing_docs)]
    Issuance {
        time: u64,
        identity: &'a str,
        serial: &'a str,
        authorized_by: &'a str,
        not_before: i64,
        not_after: i64,
        key_sha256: &'a [u8; 32],
        certificate: &'a [u8],
    },
    /// See [`LogLeaf::Revocation`].
    #[allow(missing_docs)]
    Revocation {
        time: u64,
        identity: &'a str,
        serial: &'a str,
        authorized_by: &'a str,
        reason: u8,
    },
    /// See [`LogLeaf::Membership`].
    #[allow(missing_docs)]
    Membership {
        time: u64,
        subchain: &'a str,
        revision: u64,
        authorized_by: &'a str,
        statement_sha256: &'a [u8; 32],
    },
    /// See [`LogLeaf::Intermediate`].
    #[allow(missing_docs)]
    Intermediate {
        time: u64,
        step: IntermediateStep,
        number: u64,
        authorized_by: &'a str,
        certificate: &'a [u8],
    },
    /// See [`LogLeaf::Key`].
    #[allow(missing_docs)]
    Key {
        time: u64,
        purpose: KeyPurpose,
        step: HandoverStep,
        number: u64,
        authorized_by: &'a str,
        old_key: &'a [u8; 32],
        new_key: &'a [u8; 32],
    },
    /// See [`LogLeaf::Root`].
    #[allow(missing_docs)]
    Root {
        time: u64,
        step: RootStep,
        number: u64,
        authorized_by: &'a str,
        certificate: &'a [u8],
        cross: &'a [u8],
    },
}

impl<'a> LeafRef<'a> {
    /// Decodes a leaf, refusing anything but the canonical encoding.
    pub fn parse(b: &'a [u8]) -> Result<Self, LeafError> {
        let mut r = Reader(b);
        if r.u8()? != 1 {
            return Err(LeafError::Malformed("unknown version"));
        }
        let kind = r.u8()?;
        let time = r.u64()?;
        let leaf = if kind == 3 {
            LeafRef::Membership {
                time,
                subchain: r.str()?,
                revision: r.u64()?,
                authorized_by: r.str()?,
                statement_sha256: r.hash("statement hash")?,
            }
        } else if kind == 4 {
            LeafRef::Intermediate {
                time,
                step: IntermediateStep::from_code(r.u8()?)?,
                number: r.u64()?,
                authorized_by: r.str()?,
                certificate: r.bytes()?,
            }
        } else if kind == 5 {
            LeafRef::Key {
                time,
                purpose: KeyPurpose::from_code(r.u8()?)?,
                step: HandoverStep::from_code(r.u8()?)?,
                number: r.u64()?,
                authorized_by: r.str()?,
                old_key: r.hash("old key")?,
                new_key: r.hash("new key")?,
            }
        } else if kind == 6 {
            LeafRef::Root {
                time,
                step: RootStep::from_code(r.u8()?)?,
                number: r.u64()?,
                authorized_by: r.str()?,
                certificate: r.bytes()?,
                cross: r.bytes()?,
            }
        } else {
            let identity = r.str()?;
            let serial = r.str()?;
            let authorized_by = r.str()?;
            match kind {
                1 => LeafRef::Issuance {
                    time,
                    identity,
                    serial,
                    authorized_by,
                    not_before: r.u64()? as i64,
                    not_after: r.u64()? as i64,
                    key_sha256: r.hash("key hash")?,
                    certificate: r.bytes()?,
                },
                2 => LeafRef::Revocation {
                    time,
                    identity,
                    serial,
                    authorized_by,
                    reason: r.u8()?,
                },
                _ => return Err(LeafError::Malformed("unknown kind")),
            }
        };
        if !r.0.is_empty() {
            return Err(LeafError::Malformed("trailing bytes"));
        }
        Ok(leaf)
    }

    /// The owned form.
    pub fn to_owned(self) -> LogLeaf {
        match self {
            LeafRef::Issuance {
                time,
                identity,
                serial,
                authorized_by,
                not_before,
                not_after,
                key_sha256,
                certificate,
            } => LogLeaf::Issuance {
                time,
                identity: identity.into(),
                serial: serial.into(),
                authorized_by: authorized_by.into(),
                not_before,
                not_after,
                key_sha256: *key_sha256,
                certificate: certificate.to_vec(),
            },
            LeafRef::Revocation {
                time,
                identity,
                serial,
                authorized_by,
                reason,
            } => LogLeaf::Revocation {
                time,
                identity: identity.into(),
                serial: serial.into(),
                authorized_by: authorized_by.into(),
                reason,
            },
            LeafRef::Membership {
                time,
                subchain,
                revision,
                authorized_by,
                statement_sha256,
            } => LogLeaf::Membership {
                time,
                subchain: subchain.into(),
                revision,
                authorized_by: authorized_by.into(),
                statement_sha256: *statement_sha256,
            },
            LeafRef::Intermediate {
                time,
                step,
                number,
                authorized_by,
                certificate,
            } => LogLeaf::Intermediate {
                time,
                step,
                number,
                authorized_by: authorized_by.into(),
                certificate: certificate.to_vec(),
            },
            LeafRef::Key {
                time,
                purpose,
                step,
                number,
                authorized_by,
                old_key,
                new_key,
            } => LogLeaf::Key {
                time,
                purpose,
                step,
                number,
                authorized_by: authorized_by.into(),
                old_key: *old_key,
                new_key: *new_key,
            },
            LeafRef::Root {
                time,
                step,
                number,
                authorized_by,
                certificate,
                cross,
            } => LogLeaf::Root {
                time,
                step,
                number,
                authorized_by: authorized_by.into(),
                certificate: certificate.to_vec(),
                cross: cross.to_vec(),
            },
        }
    }
}

impl LogLeaf {
    /// The canonical encoding.
    pub fn encode(&self) -> Result<Vec<u8>, LeafError> {
        let mut out = vec![1u8];
        match self {
            LogLeaf::Issuance {
                time,
                identity,
                serial,
                authorized_by,
                not_before,
                not_after,
                key_sha256,
                certificate,
            } => {
                out.push(1);
                out.extend_from_slice(&time.to_be_bytes());
                put_bytes(&mut out, identity.as_bytes())?;
                put_bytes(&mut out, serial.as_bytes())?;
                put_bytes(&mut out, authorized_by.as_bytes())?;
                out.extend_from_slice(&not_before.to_be_bytes());
                out.extend_from_slice(&not_after.to_be_bytes());
                out.extend_from_slice(key_sha256);
                put_bytes(&mut out, certificate)?;
            }
            LogLeaf::Revocation {
                time,
                identity,
                serial,
                authorized_by,
                reason,
            } => {
                out.push(2);
                out.extend_from_slice(&time.to_be_bytes());
                put_bytes(&mut out, identity.as_bytes())?;
                put_bytes(&mut out, serial.as_bytes())?;
                put_bytes(&mut out, authorized_by.as_bytes())?;
                out.push(*reason);
            }
            LogLeaf::Membership {
                time,
                subchain,
                revision,
                authorized_by,
                statement_sha256,
            } => {
                out.push(3);
                out.extend_from_slice(&time.to_be_bytes());
                put_bytes(&mut out, subchain.as_bytes())?;
                out.extend_from_slice(&revision.to_be_bytes());
                put_bytes(&mut out, authorized_by.as_bytes())?;
                out.extend_from_slice(statement_sha256);
            }
            LogLeaf::Intermediate {
                time,
                step,
                number,
                authorized_by,
                certificate,
            } => {
                out.push(4);
                out.extend_from_slice(&time.to_be_bytes());
                out.push(*step as u8);
                out.extend_from_slice(&number.to_be_bytes());
                put_bytes(&mut out, authorized_by.as_bytes())?;
                put_bytes(&mut out, certificate)?;
            }
            LogLeaf::Key {
                time,
                purpose,
                step,
                number,
                authorized_by,
                old_key,
                new_key,
            } => {
                out.push(5);
                out.extend_from_slice(&time.to_be_bytes());
                out.push(*purpose as u8);
                out.push(*step as u8);
                out.extend_from_slice(&number.to_be_bytes());
                put_bytes(&mut out, authorized_by.as_bytes())?;
                out.extend_from_slice(old_key);
                out.extend_from_slice(new_key);
            }
            LogLeaf::Root {
                time,
                step,
                number,
                authorized_by,
                certificate,
                cross,
            } => {
                out.push(6);
                out.extend_from_slice(&time.to_be_bytes());
                out.push(*step as u8);
                out.extend_from_slice(&number.to_be_bytes());
                put_bytes(&mut out, authorized_by.as_bytes())?;
                put_bytes(&mut out, certificate)?;
                put_bytes(&mut out, cross)?;
            }
        }
        if out.len() > MAX_LEAF {
            return Err(LeafError::TooLarge);
        }
        Ok(out)
    }

    /// Decodes a leaf, refusing anything but the canonical encoding.
    pub fn decode(b: &[u8]) -> Result<Self, LeafError> {
        LeafRef::parse(b).map(LeafRef::to_owned)
    }

    /// The borrowed form.
    pub fn as_ref(&self) -> LeafRef<'_> {
        match self {
            LogLeaf::Issuance {
                time,
                identity,
                serial,
                authorized_by,
                not_before,
                not_after,
                key_sha256,
                certificate,
            } => LeafRef::Issuance {
                time: *time,
                identity,
                serial,
                authorized_by,
                not_before: *not_before,
                not_after: *not_after,
                key_sha256,
                certificate,
            },
            LogLeaf::Revocation {
                time,
                identity,
                serial,
                authorized_by,
                reason,
            } => LeafRef::Revocation {
                time: *time,
                identity,
                serial,
                authorized_by,
                reason: *reason,
            },
            LogLeaf::Membership {
                time,
                subchain,
                revision,
                authorized_by,
                statement_sha256,
            } => LeafRef::Membership {
                time: *time,
                subchain,
                revision: *revision,
                authorized_by,
                statement_sha256,
            },
            LogLeaf::Intermediate {
                time,
                step,
                number,
                authorized_by,
                certificate,
            } => LeafRef::Intermediate {
                time: *time,
                step: *step,
                number: *number,
                authorized_by,
                certificate,
            },
            LogLeaf::Key {
                time,
                purpose,
                step,
                number,
                authorized_by,
                old_key,
                new_key,
            } => LeafRef::Key {
                time: *time,
                purpose: *purpose,
                step: *step,
                number: *number,
                authorized_by,
                old_key,
                new_key,
            },
            LogLeaf::Root {
                time,
                step,
                number,
                authorized_by,
                certificate,
                cross,
            } => LeafRef::Root {
                time: *time,
                step: *step,
                number: *number,
                authorized_by,
                certificate,
                cross,
            },
        }
    }

    /// The serial the event is about (empty for a membership change, an intermediate's or a
    /// root's step, or a key handover).
    pub fn serial(&self) -> &str {
        match self {
            LogLeaf::Issuance { serial, .. } | LogLeaf::Revocation { serial, .. } => serial,
            LogLeaf::Membership { .. } | LogLeaf::Intermediate { .. } | LogLeaf::Key { .. } | LogLeaf::Root { .. } => {
                ""
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refuses_non_canonical_bytes() {
        let leaves = [
            LogLeaf::Issuance {
                time: 1_800_000_000,
                identity: "spiffe://t/participant/a".into(),
                serial: "0a1b".into(),
                authorized_by: "secret:admin".into(),
                not_before: -5,
                not_after: 1_900_000_000,
                key_sha256: [7; 32],
                certificate: vec![0x30, 0x82, 1, 2],
            },
            LogLeaf::Revocation {
                time: 1,
                identity: "spiffe://t/node/n".into(),
                serial: "ff".into(),
                authorized_by: "admin".into(),
                reason: 1,
            },
            LogLeaf::Membership {
                time: 2,
                subchain: "supply-chain".into(),
                revision: 9,
                authorized_by: "publisher".into(),
                statement_sha256: [3; 32],
            },
            LogLeaf::Intermediate {
                time: 3,
                step: IntermediateStep::Activated,
                number: 2,
                authorized_by: "admin".into(),
                certificate: vec![0x30, 0x82, 3, 4],
            },
            LogLeaf::Key {
                time: 4,
                purpose: KeyPurpose::Log,
                step: HandoverStep::Begun,
                number: 2,
                authorized_by: "admin".into(),
                old_key: [5; 32],
                new_key: [6; 32],
            },
            LogLeaf::Root {
                time: 5,
                step: RootStep::Published,
                number: 2,
                authorized_by: "admin".into(),
                certificate: vec![0x30, 0x82, 5, 6],
                cross: vec![0x30, 0x82, 7, 8],
            },
        ];
        for leaf in leaves {
            let bytes = leaf.encode().unwrap();
            assert_eq!(LogLeaf::decode(&bytes).unwrap(), leaf);
            assert_eq!(LeafRef::parse(&bytes).unwrap(), leaf.as_ref());
            let mut longer = bytes.clone();
            longer.push(0);
            assert!(LogLeaf::decode(&longer).is_err());
            assert!(LogLeaf::decode(&bytes[..bytes.len() - 1]).is_err());
            let mut v2 = bytes.clone();
            v2[0] = 2;
            assert!(LogLeaf::decode(&v2).is_err());
        }
        let huge = LogLeaf::Issuance {
            time: 0,
            identity: String::new(),
            serial: String::new(),
            authorized_by: String::new(),
            not_before: 0,
            not_after: 0,
            key_sha256: [0; 32],
            certificate: vec![0; 65_500],
        };
        assert_eq!(huge.encode(), Err(LeafError::TooLarge));
        let mut step = LogLeaf::Intermediate {
            time: 0,
            step: IntermediateStep::Retired,
            number: 1,
            authorized_by: "a".into(),
            certificate: vec![1],
        }
        .encode()
        .unwrap();
        step[10] = 9;
        assert_eq!(
            LogLeaf::decode(&step),
            Err(LeafError::Malformed("unknown intermediate step"))
        );
        let mut key = LogLeaf::Key {
            time: 0,
            purpose: KeyPurpose::Membership,
            step: HandoverStep::Finished,
            number: 2,
            authorized_by: "a".into(),
            old_key: [1; 32],
            new_key: [2; 32],
        }
        .encode()
        .unwrap();
        key[10] = 3;
        assert_eq!(LogLeaf::decode(&key), Err(LeafError::Malformed("unknown key purpose")));
        let mut root = LogLeaf::Root {
            time: 0,
            step: RootStep::Withdrawn,
            number: 1,
            authorized_by: "a".into(),
            certificate: vec![1],
            cross: vec![2],
        }
        .encode()
        .unwrap();
        root[10] = 4;
        assert_eq!(LogLeaf::decode(&root), Err(LeafError::Malformed("unknown root step")));
        key[10] = 1;
        key[11] = 0;
        assert_eq!(
            LogLeaf::decode(&key),
            Err(LeafError::Malformed("unknown handover step"))
        );
    }
}
