//! The deterministic rules that turn an ordered proposal into the next block. Pure: every
//! replica of a subchain applies the same proposals to the same tip and gets the same block.
//!
//! The leader checks what depends on the moment (signatures, certificate validity and revocation)
//! before it proposes; what depends only on the chain (the creator's role at the membership
//! revision in force, a transaction id seen before, the subchain) is checked here, at apply time,
//! so an invalid transaction never enters a block whichever node cut it.

use identity::ledger::{Block, BlockKind, Digest32};
use identity::membership::{KeyHandover, MembershipKeys, Role, Statement};
use serde::{Deserialize, Serialize};

/// What the leader proposes through the ordering service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Proposal {
    /// A new membership statement from the CA (its envelope, JSON).
    Config {
        /// The envelope bytes, as the CA served them.
        #[serde(with = "b64")]
        envelope: Vec<u8>,
        /// The CA's membership key handovers the leader knows, so that every replica verifies
        /// a statement signed by a key it has not heard of yet alike (each proves itself and
        /// must link to the keys the replica trusts).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        handovers: Vec<KeyHandover>,
    },
    /// Validated transactions.
    Txs {
        /// The leader's clock, Unix milliseconds.
        timestamp_ms: i64,
        /// Each transaction with its creator's identity id (read from its certificate by the leader).
        txs: Vec<ProposedTx>,
    },
}

/// A transaction the leader validated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProposedTx {
    /// The creator's identity id.
    pub creator: String,
    /// The signed transaction.
    #[serde(with = "b64")]
    pub bytes: Vec<u8>,
    /// Its id.
    #[serde(with = "hex32")]
    pub id: Digest32,
}

/// What became of one proposed transaction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    /// In block `height` at `index`.
    Committed {
        /// Block height.
        height: u64,
        /// Index in the block.
        index: u32,
    },
    /// Its id is already on the chain (or earlier in the same proposal).
    Duplicate,
    /// The creator is not a writer at the membership revision in force.
    NotWriter {
        /// The revision in force.
        revision: u64,
    },
    /// The transaction is for another subchain.
    WrongSubchain,
}

/// What applying a proposal did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Applied {
    /// The block written, if any.
    pub height: Option<u64>,
    /// One outcome per proposed transaction (empty for config).
    pub outcomes: Vec<Outcome>,
    /// Why a config proposal made no block.
    pub refused: Option<String>,
    /// The orderer that led the group when it ordered the proposal (set by the node that
    /// answers a forwarded proposal), so that a city node sends the next one there directly.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leader: Option<String>,
}

/// The end of the chain as the rules need it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tip {
    /// Height and hash of the last block, if any.
    pub last: Option<(u64, Digest32)>,
    /// Timestamp of the last block.
    pub timestamp_ms: i64,
    /// The membership in force (from the last config block).
    pub membership: Option<Statement>,
}

impl Tip {
    fn next(&self) -> (u64, Digest32) {
        match self.last {
            None => (0, [0; 32]),
            Some((h, hash)) => (h + 1, hash),
        }
    }

    /// The membership revision in force (0 before genesis).
    pub fn revision(&self) -> u64 {
        self.membership.as_ref().map_or(0, |s| s.revision)
    }
}

/// Builds the next block from a proposal. `seen` says whether a transaction id is already on the
/// chain. Returns the block (if one is made), the statement now in force for a config block, and
/// what happened to each transaction.
pub fn next_block(
    subchain: &str,
    keys: &MembershipKeys,
    tip: &Tip,
    proposal: &Proposal,
    seen: impl Fn(&Digest32) -> bool,
) -> (Option<(Block, Option<Statement>)>, Applied) {
    let (height, previous) = tip.next();
    match proposal {
        Proposal::Config { envelope, handovers } => {
            let refuse = |why: String| {
                (
                    None,
                    Applied {
                        refused: Some(why),
                        ..Applied::default()
                    },
                )
            };
            let statement = match keys
                .with(handovers)
                .map_err(|e| format!("a membership key handover: {e}"))
                .and_then(|keys| {
                    serde_json::from_slice(envelope)
                        .map_err(|e| e.to_string())
                        .and_then(|env| keys.verify_statement(&env).map_err(|e| e.to_string()))
                }) {
                Ok(s) => s,
                Err(e) => return refuse(format!("statement refused: {e}")),
            };
            if statement.subchain.as_str() != subchain {
                return refuse("statement is for another subchain".into());
            }
            if statement.revision <= tip.revision() {
                return refuse(format!(
                    "revision {} is not newer than {} in force",
                    statement.revision,
                    tip.revision()
                ));
            }
            let ts = statement.issued_at.saturating_mul(1000).max(tip.timestamp_ms);
            let block = Block::new(
                BlockKind::Config,
                height,
                previous,
                statement.revision,
                ts,
                vec![envelope.clone()],
            );
            (
                Some((block, Some(statement))),
                Applied {
                    height: Some(height),
                    ..Applied::default()
                },
            )
        }
        Proposal::Txs { timestamp_ms, txs } => {
            let revision = tip.revision();
            let mut outcomes = Vec::with_capacity(txs.len());
            let mut entries = Vec::with_capacity(txs.len());
            let mut in_block = std::collections::HashSet::with_capacity(txs.len());
            for tx in txs {
                let role = tip.membership.as_ref().and_then(|m| m.role_of(&tx.creator));
                let ok_subchain = identity::ledger::SignedTx::parse(tx.bytes.clone())
                    .map(|t| t.body.subchain.as_str() == subchain && t.id == tx.id)
                    .unwrap_or(false);
                outcomes.push(if !ok_subchain {
                    Outcome::WrongSubchain
                } else if !role.is_some_and(|r| r.allows(Role::Writer)) {
                    Outcome::NotWriter { revision }
                } else if seen(&tx.id) || !in_block.insert(tx.id) {
                    Outcome::Duplicate
                } else {
                    entries.push(tx.bytes.clone());
                    Outcome::Committed {
                        height,
                        index: (entries.len() - 1) as u32,
                    }
                });
            }
            if entries.is_empty() {
                return (
                    None,
                    Applied {
                        outcomes,
                        ..Applied::default()
                    },
                );
            }
            let block = Block::new(
                BlockKind::Transactions,
                height,
                previous,
                revision,
                (*timestamp_ms).max(tip.timestamp_ms),
                entries,
            );
            (
                Some((block, None)),
                Applied {
                    height: Some(height),
                    outcomes,
                    ..Applied::default()
                },
            )
        }
    }
}

mod b64 {
    use base64::Engine;
    use base64::engine::general_purpose::STANDARD;

    pub(crate) fn serialize<S: serde::Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&STANDARD.encode(v))
    }
    pub(crate) fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s: String = serde::Deserialize::deserialize(d)?;
        STANDARD.decode(s).map_err(serde::de::Error::custom)
    }
}

mod hex32 {
    pub(crate) fn serialize<S: serde::Serializer>(v: &[u8; 32], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(v))
    }
    pub(crate) fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<[u8; 32], D::Error> {
        let s: String = serde::Deserialize::deserialize(d)?;
        hex::decode(s)
            .ok()
            .and_then(|v| v.try_into().ok())
            .ok_or_else(|| serde::de::Error::custom("expected 32 hex bytes"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;
    use base64::engine::general_purpose::STANDARD;
    use identity::membership::{Envelope, Member, MembershipKey, STATEMENT_CONTEXT, SubchainId, signed_message};
    use ring::signature::{Ed25519KeyPair, KeyPair};

    fn signer() -> (Ed25519KeyPair, MembershipKeys) {
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&ring::rand::SystemRandom::new()).unwrap();
        let kp = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap();
        let key = MembershipKey::from_bytes(kp.public_key().as_ref()).unwrap();
        (kp, MembershipKeys::pinned(key))
    }

    fn handover(old: &Ed25519KeyPair, new: &Ed25519KeyPair) -> KeyHandover {
        let terms = identity::membership::HandoverTerms {
            version: 1,
            trust_domain: "t.example".into(),
            from: STANDARD.encode(old.public_key()),
            to: STANDARD.encode(new.public_key()),
            number: 2,
            issued_at: 1000,
        };
        let payload = serde_json::to_vec(&terms).unwrap();
        let message = signed_message(identity::membership::HANDOVER_CONTEXT, &payload);
        KeyHandover {
            payload: STANDARD.encode(&payload),
            from_signature: STANDARD.encode(old.sign(&message)),
            to_signature: STANDARD.encode(new.sign(&message)),
        }
    }

    fn config(envelope: Vec<u8>) -> Proposal {
        Proposal::Config {
            envelope,
            handovers: vec![],
        }
    }

    fn statement(kp: &Ed25519KeyPair, revision: u64, members: &[(&str, Role)]) -> Vec<u8> {
        let s = Statement {
            version: 1,
            trust_domain: "t.example".into(),
            subchain: SubchainId::parse("demo").unwrap(),
            revision,
            issued_at: 1000 + revision as i64,
            nodes: vec!["n1".into()],
            orderers: vec![],
            members: members
                .iter()
                .map(|(id, role)| Member {
                    id: id.to_string(),
                    role: *role,
                })
                .collect(),
            plan: None,
        };
        let payload = serde_json::to_vec(&s).unwrap();
        let sig = kp.sign(&signed_message(STATEMENT_CONTEXT, &payload));
        serde_json::to_vec(&Envelope {
            payload: STANDARD.encode(&payload),
            signature: STANDARD.encode(sig.as_ref()),
        })
        .unwrap()
    }

    fn tx(creator: &str, nonce: u8, subchain: &str) -> ProposedTx {
        let body = identity::ledger::TxBody {
            subchain: SubchainId::parse(subchain).unwrap(),
            nonce: vec![nonce; 8],
            creator_cert: vec![0x30, 0],
            ops: vec![identity::ledger::Op::Delete { key: "k".into() }],
        }
        .encode()
        .unwrap();
        ProposedTx {
            creator: creator.into(),
            id: identity::ledger::sha256(&body),
            bytes: identity::ledger::assemble(&body, b"sig"),
        }
    }

    /// Applies a proposal to the tip as the store does.
    fn apply(tip: &mut Tip, key: &MembershipKeys, p: &Proposal, seen: &[Digest32]) -> Applied {
        let (made, applied) = next_block("demo", key, tip, p, |id| seen.contains(id));
        if let Some((block, statement)) = made {
            if statement.is_some() {
                tip.membership = statement;
            }
            tip.last = Some((block.header.height, block.header.hash()));
            tip.timestamp_ms = block.header.timestamp_ms;
        }
        applied
    }

    #[test]
    fn a_statement_signed_by_the_next_key_applies_on_every_replica_through_the_handover_it_carries() {
        let (old, keys) = signer();
        let (new, _) = signer();
        let (stranger, _) = signer();
        let mut tip = Tip::default();
        assert_eq!(
            apply(&mut tip, &keys, &config(statement(&old, 1, &[])), &[]).height,
            Some(0)
        );
        // A replica that has not heard of the new key yet: refused without the handover ...
        let a = apply(&mut tip, &keys, &config(statement(&new, 2, &[])), &[]);
        assert!(a.refused.as_deref().is_some_and(|r| r.contains("signature")), "{a:?}");
        // ... applied with it, as on the leader that knew it.
        let with = |envelope, handovers| Proposal::Config { envelope, handovers };
        let a = apply(
            &mut tip,
            &keys,
            &with(statement(&new, 2, &[]), vec![handover(&old, &new)]),
            &[],
        );
        assert_eq!((a.height, tip.revision()), (Some(1), 2), "{a:?}");
        // A handover the old key did not sign is refused, whatever it carries.
        let mut forged = handover(&old, &new);
        forged.from_signature = handover(&stranger, &new).from_signature;
        let a = apply(&mut tip, &keys, &with(statement(&new, 3, &[]), vec![forged]), &[]);
        assert!(a.refused.as_deref().is_some_and(|r| r.contains("handover")), "{a:?}");
        // One that does not link to the keys trusted here does not help a stranger's statement.
        let a = apply(
            &mut tip,
            &keys,
            &with(statement(&stranger, 3, &[]), vec![handover(&new, &stranger)]),
            &[],
        );
        assert!(a.refused.is_some(), "{a:?}");
        // Statements the old key signed still apply (revisions still go forward).
        assert_eq!(
            apply(&mut tip, &keys, &config(statement(&old, 3, &[])), &[]).height,
            Some(2)
        );
    }

    #[test]
    fn config_blocks_only_move_the_revision_forward_and_only_with_the_cas_signature() {
        let (kp, key) = signer();
        let (other, _) = signer();
        let mut tip = Tip::default();
        let a = apply(&mut tip, &key, &config(statement(&kp, 2, &[])), &[]);
        assert_eq!((a.height, tip.revision()), (Some(0), 2), "genesis is a config block");
        for (env, why) in [
            (statement(&kp, 2, &[]), "not newer"),
            (statement(&kp, 1, &[]), "not newer"),
            (statement(&other, 3, &[]), "signature"),
            (b"{}".to_vec(), "refused"),
        ] {
            let a = apply(&mut tip, &key, &config(env), &[]);
            assert!(
                a.height.is_none() && a.refused.as_deref().is_some_and(|r| r.contains(why)),
                "{a:?}"
            );
        }
        assert_eq!((tip.last.unwrap().0, tip.revision()), (0, 2));
    }

    #[test]
    fn only_new_transactions_of_writers_for_this_subchain_enter_a_block() {
        let (kp, key) = signer();
        let mut tip = Tip::default();
        let members = [("a", Role::Admin), ("r", Role::Reader), ("w", Role::Writer)];
        apply(&mut tip, &key, &config(statement(&kp, 1, &members)), &[]);
        let old = tx("w", 9, "demo");
        let txs = vec![
            tx("w", 1, "demo"),
            tx("r", 2, "demo"),
            tx("a", 3, "demo"),
            tx("nobody", 4, "demo"),
            tx("w", 5, "other"),
            tx("w", 1, "demo"),
            old.clone(),
        ];
        let a = apply(&mut tip, &key, &Proposal::Txs { timestamp_ms: 5, txs }, &[old.id]);
        assert_eq!(a.height, Some(1), "{:?}", a.outcomes);
        assert_eq!(
            a.outcomes,
            vec![
                Outcome::Committed { height: 1, index: 0 },
                Outcome::NotWriter { revision: 1 },
                Outcome::Committed { height: 1, index: 1 },
                Outcome::NotWriter { revision: 1 },
                Outcome::WrongSubchain,
                Outcome::Duplicate,
                Outcome::Duplicate,
            ]
        );
        // Nothing valid: no block, the tip stays.
        let a = apply(
            &mut tip,
            &key,
            &Proposal::Txs {
                timestamp_ms: 1,
                txs: vec![tx("r", 7, "demo")],
            },
            &[],
        );
        assert_eq!((a.height, tip.last.unwrap().0), (None, 1));
        // Timestamps never go back.
        apply(
            &mut tip,
            &key,
            &Proposal::Txs {
                timestamp_ms: 1,
                txs: vec![tx("w", 8, "demo")],
            },
            &[],
        );
        assert_eq!(tip.timestamp_ms, 1_001_000, "never before the genesis block's time");
    }
}
