//! Auditing the CA's issuance log without trusting the CA: verify the signed checkpoint with a
//! verifier key obtained out of band, download every entry bundle, recompute the RFC 6962 root,
//! and check every entry: it parses, each issued certificate chains to the trust bundle and
//! matches its entry, serials are unique, and each revocation refers to a logged issuance.

use std::collections::HashMap;

use identity::logleaf::LogLeaf;
use identity::tree::CompactRange;
use identity::verify::TrustBundle;
use rustls_pki_types::CertificateDer;
use tlog_tiles::{Checkpoint, EMPTY_HASH, Hash, record_hash};

use crate::client::{Api, ClientError};

/// Why an audit failed.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// Talking to the CA failed.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// The log is not what it claims to be.
    #[error("log verification failed: {0}")]
    Invalid(String),
}

/// What a successful audit saw.
#[derive(Debug, Clone, Default)]
pub struct AuditReport {
    /// Tree size verified.
    pub size: u64,
    /// Its root, base64.
    pub root: String,
    /// Issuance entries.
    pub issuances: u64,
    /// Revocation entries.
    pub revocations: u64,
}

/// Verifies a checkpoint note with a vkey; returns (origin, size, root).
pub fn open_checkpoint(vkey: &str, note: &[u8]) -> Result<(String, u64, Hash), AuditError> {
    let bad = |m: String| AuditError::Invalid(m);
    let verifier = signed_note::StandardVerifier::new(vkey.trim()).map_err(|e| bad(format!("verifier key: {e}")))?;
    let origin = signed_note::Verifier::name(&verifier).to_string();
    let n = signed_note::Note::from_bytes(note).map_err(|e| bad(format!("checkpoint note: {e}")))?;
    n.verify(&signed_note::VerifierList::new(vec![Box::new(verifier)]))
        .map_err(|e| bad(format!("checkpoint signature does not verify with the given key: {e}")))?;
    let cp = Checkpoint::from_bytes(n.text()).map_err(|_| bad("checkpoint text is malformed".into()))?;
    if cp.origin() != origin {
        return Err(bad(format!(
            "checkpoint origin '{}' is not the key's name '{origin}'",
            cp.origin()
        )));
    }
    Ok((origin, cp.size(), *cp.hash()))
}

/// The C2SP path of entry bundle `n` with `width` entries.
pub fn entries_path(n: u64, width: u64) -> String {
    let mut s = format!("{:03}", n % 1000);
    let mut m = n / 1000;
    while m > 0 {
        s = format!("x{:03}/{s}", m % 1000);
        m /= 1000;
    }
    if width == 256 {
        format!("/log/tile/entries/{s}")
    } else {
        format!("/log/tile/entries/{s}.p/{width}")
    }
}

/// Audits the whole log. `progress` is called with (entries verified, total).
pub async fn verify(
    api: &Api,
    vkey: &str,
    bundle: &TrustBundle,
    chain: &[CertificateDer<'static>],
    progress: &mut dyn FnMut(u64, u64),
) -> Result<AuditReport, AuditError> {
    let note = api.get_bytes("/log/checkpoint").await?;
    let (_, size, root) = open_checkpoint(vkey, &note)?;
    let mut edge = CompactRange::default();
    let mut issued: HashMap<String, bool> = HashMap::new();
    let mut report = AuditReport {
        size,
        ..Default::default()
    };
    let mut index = 0u64;
    for n in 0..size.div_ceil(256) {
        let width = (size - n * 256).min(256);
        let bytes = api.get_bytes(&entries_path(n, width)).await?;
        let mut rest = bytes.as_slice();
        for _ in 0..width {
            if rest.len() < 2 {
                return Err(AuditError::Invalid(format!("entry bundle {n} is truncated")));
            }
            let len = u16::from_be_bytes([rest[0], rest[1]]) as usize;
            let leaf = rest
                .get(2..2 + len)
                .ok_or_else(|| AuditError::Invalid(format!("entry {index} is truncated")))?;
            rest = &rest[2 + len..];
            edge.push(record_hash(leaf));
            check_entry(index, leaf, bundle, chain, &mut issued, true, &mut report)?;
            index += 1;
        }
        if !rest.is_empty() {
            return Err(AuditError::Invalid(format!("entry bundle {n} has trailing bytes")));
        }
        progress(index, size);
    }
    if edge.root() != root {
        return Err(AuditError::Invalid(format!(
            "the root recomputed from {size} entries differs from the signed checkpoint"
        )));
    }
    use base64::Engine;
    report.root = base64::engine::general_purpose::STANDARD.encode(root.0);
    Ok(report)
}

/// What `follow` remembers between runs: the verified tree's size, root and right edge.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct FollowState {
    /// Verified tree size.
    pub size: u64,
    /// Its root, base64.
    pub root: String,
    /// The right edge (subtree sizes and base64 hashes), enough to extend the tree.
    pub edge: Vec<(u64, String)>,
}

fn b64(h: &Hash) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(h.0)
}

fn unb64(s: &str) -> Result<Hash, AuditError> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD
        .decode(s)
        .ok()
        .and_then(|b| b.try_into().ok())
        .map(Hash)
        .ok_or_else(|| AuditError::Invalid("the state file holds a malformed hash".into()))
}

/// One round of following the log: verifies the latest checkpoint against the state (it must
/// extend the verified tree: a consistency proof checks out, and the new entries appended to the
/// stored right edge give the new root), checks each new entry and reports it to `on_entry`,
/// then advances the state. Returns the number of new entries.
pub async fn follow_once(
    api: &Api,
    vkey: &str,
    bundle: &TrustBundle,
    chain: &[CertificateDer<'static>],
    state: &mut FollowState,
    on_entry: &mut dyn FnMut(u64, &LogLeaf),
) -> Result<u64, AuditError> {
    let note = api.get_bytes("/log/checkpoint").await?;
    let (_, size, root) = open_checkpoint(vkey, &note)?;
    let old_root = if state.size == 0 {
        EMPTY_HASH
    } else {
        unb64(&state.root)?
    };
    if size < state.size {
        return Err(AuditError::Invalid(format!(
            "the log shrank from {} to {size} entries",
            state.size
        )));
    }
    if size == state.size {
        if root != old_root {
            return Err(AuditError::Invalid(format!(
                "two different roots signed for size {size}: the log forked"
            )));
        }
        return Ok(0);
    }
    if state.size > 0 {
        let v = api
            .get(
                "/api/v1/log/proof/consistency",
                &[("first", state.size.to_string()), ("second", size.to_string())],
            )
            .await?;
        let proof = v["consistency_proof"]
            .as_array()
            .ok_or_else(|| AuditError::Invalid("malformed consistency proof".into()))?
            .iter()
            .map(|h| unb64(h.as_str().unwrap_or_default()))
            .collect::<Result<Vec<_>, _>>()?;
        tlog_tiles::check_tree(&proof, size, root, state.size, old_root).map_err(|_| {
            AuditError::Invalid(format!(
                "checkpoint {size} is not consistent with verified checkpoint {}",
                state.size
            ))
        })?;
    }
    let mut edge = CompactRange::from_subtrees(
        state
            .edge
            .iter()
            .map(|(n, h)| Ok((*n, unb64(h)?)))
            .collect::<Result<_, AuditError>>()?,
    );
    let mut index = state.size;
    let mut issued = HashMap::new();
    let mut scratch = AuditReport::default();
    while index < size {
        let n = index / 256;
        let width = (size - n * 256).min(256);
        let bytes = api.get_bytes(&entries_path(n, width)).await?;
        let mut rest = bytes.as_slice();
        for i in 0..width {
            let len = u16::from_be_bytes([*rest.first().unwrap_or(&0), *rest.get(1).unwrap_or(&0)]) as usize;
            let leaf = rest
                .get(2..2 + len)
                .ok_or_else(|| AuditError::Invalid(format!("entry bundle {n} is truncated")))?;
            rest = &rest[2 + len..];
            let at = n * 256 + i;
            if at < index {
                continue;
            }
            edge.push(record_hash(leaf));
            // This round sees only the new entries: a revocation may refer to an earlier issuance.
            check_entry(at, leaf, bundle, chain, &mut issued, false, &mut scratch)?;
            on_entry(
                at,
                &LogLeaf::decode(leaf).map_err(|e| AuditError::Invalid(e.to_string()))?,
            );
            index += 1;
        }
    }
    if edge.root() != root {
        return Err(AuditError::Invalid(format!(
            "the new entries do not extend the verified tree to the signed root of size {size}"
        )));
    }
    let new = size - state.size;
    *state = FollowState {
        size,
        root: b64(&root),
        edge: edge.subtrees().iter().map(|(n, h)| (*n, b64(h))).collect(),
    };
    Ok(new)
}

fn check_entry(
    index: u64,
    leaf: &[u8],
    bundle: &TrustBundle,
    chain: &[CertificateDer<'static>],
    issued: &mut HashMap<String, bool>,
    complete_history: bool,
    report: &mut AuditReport,
) -> Result<(), AuditError> {
    let bad = |m: String| AuditError::Invalid(format!("entry {index}: {m}"));
    match LogLeaf::decode(leaf).map_err(|e| bad(e.to_string()))? {
        LogLeaf::Issuance {
            identity,
            serial,
            not_before,
            not_after,
            certificate,
            ..
        } => {
            let mut full = vec![CertificateDer::from(certificate.as_slice())];
            full.extend(chain.iter().cloned());
            // Verified at its own start of validity: a certificate that has expired since was
            // still correctly issued.
            let at = (not_before + 60).max(0) as u64;
            let cert = bundle
                .verify_client(&full, at, &[])
                .map_err(|e| bad(format!("certificate does not verify: {e}")))?;
            if cert.serial_hex != serial
                || cert.spiffe_id.to_string() != identity
                || cert.not_after != not_after
                || cert.not_before != not_before
            {
                return Err(bad("the certificate does not match its entry".into()));
            }
            if issued.insert(serial.clone(), false).is_some() {
                return Err(bad(format!("serial {serial} was issued twice")));
            }
            report.issuances += 1;
        }
        LogLeaf::Revocation { serial, .. } => match issued.get_mut(&serial) {
            None if complete_history => return Err(bad(format!("revocation of {serial}, which the log never issued"))),
            None => report.revocations += 1,
            Some(true) => return Err(bad(format!("{serial} revoked twice"))),
            Some(revoked) => {
                *revoked = true;
                report.revocations += 1;
            }
        },
    }
    Ok(())
}
