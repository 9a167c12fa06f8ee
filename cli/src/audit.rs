//! Auditing the CA's issuance log without trusting the CA: verify the signed checkpoint with a
//! verifier key obtained out of band, download every entry bundle, recompute the RFC 6962 root,
//! and check every entry: it parses, each issued certificate chains to the trust bundle and
//! matches its entry, serials are unique, and each revocation refers to a logged issuance.

use std::collections::HashMap;

use identity::logleaf::{HandoverStep, IntermediateStep, KeyPurpose, LeafRef, LogLeaf, RootStep};
use identity::tree::CompactRange;
use identity::verify::{LeafVerifier, TrustBundle};
use rustls_pki_types::CertificateDer;
use tlog_tiles::{Checkpoint, EMPTY_HASH, Hash, record_hash};

use bsn_api::client::{Api, ClientError};

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
    /// Membership change entries.
    pub memberships: u64,
    /// Every issued serial, and whether the log revoked it.
    pub issued: HashMap<String, bool>,
    /// Each subchain's latest logged membership revision.
    pub revisions: HashMap<String, u64>,
    /// Issuing intermediates' steps (published, activated, retired) in the log.
    pub intermediate_steps: u64,
    /// Each logged intermediate's last step, by its certificate's SHA-256.
    steps: HashMap<[u8; 32], (u64, IntermediateStep)>,
    /// The one intermediate that issued without being announced in the log: the CA's first,
    /// made at initialisation.
    unannounced: Option<[u8; 32]>,
    /// Root rotation steps (published, activated, withdrawn) in the log.
    pub root_steps: u64,
    /// Each logged root's last step, by number.
    roots: HashMap<u64, RootStep>,
    /// Key handover steps (log and membership keys) in the log.
    pub key_steps: u64,
    /// Each purpose's keys as the log tells them.
    keys: HashMap<u8, KeyTrack>,
    /// Log-key handovers begun: (entry index, old key, new key).
    log_handovers: Vec<(u64, [u8; 32], [u8; 32])>,
    /// Membership-key handovers finished: (the new key's number, old key, new key).
    membership_handovers: Vec<(u64, [u8; 32], [u8; 32])>,
    /// Log keys this audit took over from the pinned one by following handovers (verifier keys,
    /// in order); the last one signs the verified checkpoint and is the one to pin from now on.
    pub handed_over_to: Vec<String>,
}

/// A purpose's keys as the log tells them: the active one (known from the first handover leaf
/// on) and an incoming one.
#[derive(Debug, Clone, Default)]
struct KeyTrack {
    active: Option<[u8; 32]>,
    incoming: Option<(u64, [u8; 32])>,
}

/// Checks that `vkey` is a note verifier key (`<name>+<hash>+<key>`) this audit can use.
pub fn check_vkey(vkey: &str) -> Result<(), String> {
    signed_note::StandardVerifier::new(vkey.trim())
        .map(|_| ())
        .map_err(|e| e.to_string())
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

/// The raw Ed25519 key of a verifier key (`name+id+base64(0x01 || key)`).
fn vkey_public(vkey: &str) -> Option<[u8; 32]> {
    use base64::Engine;
    let raw = base64::engine::general_purpose::STANDARD
        .decode(vkey.trim().splitn(3, '+').nth(2)?)
        .ok()?;
    match raw.split_first() {
        Some((1, key)) => key.try_into().ok(),
        _ => None,
    }
}

/// A log-key handover followed from a pinned key: the last checkpoint both keys signed (its
/// size and root) and the key taken over.
#[derive(Debug, Clone)]
pub struct Hop {
    /// The handover checkpoint's tree size.
    pub size: u64,
    /// Its root.
    pub root: Hash,
    /// The key handed over.
    pub from: [u8; 32],
    /// The key that took over.
    pub to: [u8; 32],
    /// The new key's verifier key.
    pub vkey: String,
}

/// Opens `note` with `pinned`, or, when it is signed by a key the pinned one handed over to,
/// follows the handovers the CA lists (`GET /api/v1/keys/log`): each hop's handover checkpoint
/// must verify with the key pinned so far and with the next one, naming the same tree. Returns
/// the note's size and root and the hops taken; the caller checks that each hop's tree holds the
/// `begun` leaf naming both keys and has the hop's root (nothing here trusts the listing).
pub async fn open_following_handovers(
    api: &Api,
    pinned: &str,
    note: &[u8],
) -> Result<(u64, Hash, Vec<Hop>), AuditError> {
    let first_error = match open_checkpoint(pinned, note) {
        Ok((_, size, root)) => return Ok((size, root, Vec::new())),
        Err(e) => e,
    };
    let keys = match api
        .get_as::<bsn_api::ca::Items<bsn_api::ca::SigningKey>>("/api/v1/keys/log", &[])
        .await
    {
        Ok(k) => k.items,
        Err(ClientError::Problem { status: 404, .. }) => return Err(first_error),
        Err(e) => return Err(e.into()),
    };
    let mut current = pinned.trim().to_string();
    let mut hops: Vec<Hop> = Vec::new();
    for _ in 0..keys.len() {
        let next = keys.iter().find_map(|k| {
            let (vkey, cp) = (k.vkey.as_deref()?, k.handover_checkpoint.as_deref()?);
            if vkey.trim() == current {
                return None;
            }
            let (_, size, root) = open_checkpoint(&current, cp.as_bytes()).ok()?;
            let (_, size2, root2) = open_checkpoint(vkey, cp.as_bytes()).ok()?;
            (size == size2 && root == root2).then(|| Hop {
                size,
                root,
                from: vkey_public(&current).unwrap_or_default(),
                to: vkey_public(vkey).unwrap_or_default(),
                vkey: vkey.trim().to_string(),
            })
        });
        let Some(hop) = next else { break };
        if hops.last().is_some_and(|h| h.size > hop.size) {
            return Err(AuditError::Invalid(
                "the CA's log keys' handover checkpoints go back in time".into(),
            ));
        }
        current = hop.vkey.clone();
        hops.push(hop);
        if let Ok((_, size, root)) = open_checkpoint(&current, note) {
            if hops.last().is_some_and(|h| h.size > size) {
                return Err(AuditError::Invalid(
                    "a handover checkpoint is larger than the latest checkpoint".into(),
                ));
            }
            return Ok((size, root, hops));
        }
    }
    Err(first_error)
}

/// Checks, after a verified replay, that each hop's tree held the `begun` leaf of its handover.
fn check_hops(hops: &[Hop], report: &AuditReport) -> Result<(), AuditError> {
    for hop in hops {
        if !report
            .log_handovers
            .iter()
            .any(|(at, old, new)| *at < hop.size && *old == hop.from && *new == hop.to)
        {
            return Err(AuditError::Invalid(format!(
                "the checkpoint is signed by {}, but the log holds no handover to it from the pinned key \
                 within the {} entries its handover checkpoint covers",
                hop.vkey, hop.size
            )));
        }
    }
    Ok(())
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

/// Entry bundles downloaded ahead of the one being verified.
const PREFETCH: usize = 16;
/// Entry bundles verified together (in parallel, one slice of entries per core).
const GROUP: usize = 16;

/// Downloads entry bundles `first..last` of a tree of `size`, in order, keeping up to
/// [`PREFETCH`] requests in flight, and hands each group of up to [`GROUP`] bundles to `each`
/// (with the index of its first entry).
async fn for_each_group(
    api: &Api,
    size: u64,
    first: u64,
    last: u64,
    mut each: impl AsyncFnMut(u64, Vec<Vec<u8>>) -> Result<(), AuditError>,
) -> Result<(), AuditError> {
    let mut pending = std::collections::VecDeque::new();
    let mut next = first;
    let mut group = Vec::with_capacity(GROUP);
    let mut group_start = first * 256;
    while next < last || !pending.is_empty() {
        while next < last && pending.len() < PREFETCH {
            let (api, n) = (api.clone(), next);
            let width = (size - n * 256).min(256);
            pending.push_back(tokio::spawn(
                async move { api.get_bytes(&entries_path(n, width)).await },
            ));
            next += 1;
        }
        let Some(handle) = pending.pop_front() else { break };
        let bytes = handle
            .await
            .map_err(|e| AuditError::Invalid(format!("download task failed: {e}")))??;
        group.push(bytes);
        let done = last - next + pending.len() as u64 == 0;
        if group.len() == GROUP || done {
            let n = group.len() as u64;
            each(group_start, std::mem::take(&mut group)).await?;
            group_start += n * 256;
        }
    }
    Ok(())
}

/// Splits entry bundles (starting at entry `start`) into their entries.
fn split_bundles(start: u64, bundles: &[Vec<u8>], size: u64) -> Result<Vec<&[u8]>, AuditError> {
    let mut out = Vec::with_capacity(bundles.len() * 256);
    for (k, bytes) in bundles.iter().enumerate() {
        let n = start / 256 + k as u64;
        let width = (size - n * 256).min(256);
        let mut rest = bytes.as_slice();
        for i in 0..width {
            let index = n * 256 + i;
            if rest.len() < 2 {
                return Err(AuditError::Invalid(format!("entry bundle {n} is truncated")));
            }
            let len = u16::from_be_bytes([rest[0], rest[1]]) as usize;
            let leaf = rest
                .get(2..2 + len)
                .ok_or_else(|| AuditError::Invalid(format!("entry {index} is truncated")))?;
            rest = &rest[2 + len..];
            out.push(leaf);
        }
        if !rest.is_empty() {
            return Err(AuditError::Invalid(format!("entry bundle {n} has trailing bytes")));
        }
    }
    Ok(out)
}

/// How much of each entry an audit checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Depth {
    /// Everything: each issued certificate is parsed, verified against the CA's chain (one
    /// ECDSA verification each) and compared with its entry.
    #[default]
    Full,
    /// The log's structure only: every entry hashed into the tree and decoded, the checkpoint's
    /// signature, serials issued once, revocations of issued certificates, membership revisions
    /// in order; certificates are neither parsed nor verified. Fast enough to re-check a large
    /// log often; run a full audit at least once per log.
    Structure,
}

/// An entry decoded and checked, with the issuing intermediate of its certificate when it is an
/// issuance checked at [`Depth::Full`] (its index in the chain given to the audit).
type Checked<'a> = (LeafRef<'a>, Option<usize>);

/// Hashes, decodes and checks entries `start..` in parallel: one worker per core takes slices
/// of [`SLICE`] entries in turn until none are left (so a worker the scheduler delays does not
/// hold the others up), and at [`Depth::Full`] each issued certificate verifies against the
/// bundle and matches its entry. Returns the record hashes and the decoded entries, in order.
fn check_entries<'a>(
    start: u64,
    leaves: &[&'a [u8]],
    bundle: &TrustBundle,
    chain: &[CertificateDer<'static>],
    depth: Depth,
) -> Result<(Vec<Hash>, Vec<Checked<'a>>), AuditError> {
    const SLICE: usize = 64;
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let slices = leaves.len().div_ceil(SLICE);
    let next = std::sync::atomic::AtomicUsize::new(0);
    type Done<'a> = Vec<(usize, Vec<Hash>, Vec<Checked<'a>>)>;
    let parts: Vec<Result<Done<'a>, AuditError>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads.min(slices))
            .map(|_| {
                let next = &next;
                scope.spawn(move || {
                    let mut verifier = match depth {
                        Depth::Full => Some(
                            LeafVerifier::new(bundle, chain)
                                .map_err(|e| AuditError::Invalid(format!("CA chain: {e}")))?,
                        ),
                        Depth::Structure => None,
                    };
                    let mut done = Vec::new();
                    loop {
                        let k = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        if k >= slices {
                            return Ok(done);
                        }
                        let part = &leaves[k * SLICE..((k + 1) * SLICE).min(leaves.len())];
                        let hashes = part.iter().map(|l| record_hash(l)).collect();
                        let checked = part
                            .iter()
                            .enumerate()
                            .map(|(i, leaf)| {
                                check_entry(start + (k * SLICE + i) as u64, leaf, bundle, verifier.as_mut())
                            })
                            .collect::<Result<_, _>>()?;
                        done.push((k, hashes, checked));
                    }
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(AuditError::Invalid("a verification thread panicked".into())))
            })
            .collect()
    });
    let mut all = Vec::with_capacity(slices);
    for part in parts {
        all.extend(part?);
    }
    all.sort_unstable_by_key(|(k, _, _)| *k);
    let mut hashes = Vec::with_capacity(leaves.len());
    let mut out = Vec::with_capacity(leaves.len());
    for (_, h, l) in all {
        hashes.extend(h);
        out.extend(l);
    }
    Ok((hashes, out))
}

/// Audits the whole log. `progress` is called with (entries verified, total).
///
/// Bundles are downloaded [`PREFETCH`] ahead; each group is hashed into the tree in order, then
/// its certificates are verified on every core while the next bundles download.
pub async fn verify(
    api: &Api,
    vkey: &str,
    bundle: &TrustBundle,
    chain: &[CertificateDer<'static>],
    depth: Depth,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<AuditReport, AuditError> {
    // Read before the checkpoint: everything published here is in the tree it commits to (a
    // handover is published in the transaction that logs it).
    let membership_keys = api
        .get_as::<bsn_api::ca::Items<bsn_api::ca::SigningKey>>("/api/v1/keys/membership", &[])
        .await?
        .items;
    let note = api.get_bytes("/log/checkpoint").await?;
    let (size, root, hops) = open_following_handovers(api, vkey, &note).await?;
    let mut next_hop = 0;
    let mut edge = CompactRange::default();
    // The books travel into each group's blocking task, which records its entries in log order
    // while they are still borrowed from the downloaded bundles, and come back with the hashes.
    let mut books = Some((
        HashMap::<String, bool>::new(),
        AuditReport {
            size,
            ..Default::default()
        },
    ));
    let shared = std::sync::Arc::new((bundle.clone(), chain.to_vec(), issuer_hashes(chain)));
    for_each_group(api, size, 0, size.div_ceil(256), async |start, bundles| {
        let shared = shared.clone();
        let (mut issued, mut report) = books.take().unwrap_or_default();
        let done = tokio::task::spawn_blocking(move || {
            let leaves = split_bundles(start, &bundles, size)?;
            let (hashes, checked) = check_entries(start, &leaves, &shared.0, &shared.1, depth)?;
            for (i, (leaf, issuer)) in checked.into_iter().enumerate() {
                let issuer = issuer.map(|k| &shared.2[k]);
                record(start + i as u64, leaf, issuer, &mut issued, true, &mut report)?;
            }
            Ok::<_, AuditError>((hashes, issued, report))
        })
        .await
        .map_err(|e| AuditError::Invalid(format!("verification task failed: {e}")))?;
        let (hashes, issued, report) = done?;
        let n = hashes.len() as u64;
        for (i, h) in hashes.into_iter().enumerate() {
            edge.push(h);
            while let Some(hop) = hops.get(next_hop)
                && hop.size == start + i as u64 + 1
            {
                if edge.root() != hop.root {
                    return Err(AuditError::Invalid(format!(
                        "the root recomputed from {} entries differs from the handover checkpoint to {}",
                        hop.size, hop.vkey
                    )));
                }
                next_hop += 1;
            }
        }
        books = Some((issued, report));
        progress(start + n, size);
        Ok(())
    })
    .await?;
    let (issued, mut report) = books.unwrap_or_default();
    if edge.root() != root {
        return Err(AuditError::Invalid(format!(
            "the root recomputed from {size} entries differs from the signed checkpoint"
        )));
    }
    if next_hop != hops.len() {
        return Err(AuditError::Invalid(
            "a handover checkpoint names a tree the log never had".into(),
        ));
    }
    check_hops(&hops, &report)?;
    check_membership_keys(&membership_keys, &report)?;
    report.handed_over_to = hops.into_iter().map(|h| h.vkey).collect();
    use base64::Engine;
    report.root = base64::engine::general_purpose::STANDARD.encode(root.0);
    report.issued = issued;
    Ok(report)
}

/// The membership keys the CA publishes agree with the log: every published handover verifies
/// (both keys signed it) and is one the log holds (same number, same old and new key), and the
/// active key is key 1 or one the log handed over to. A CA that served a key nodes would follow
/// without logging it is caught here.
fn check_membership_keys(keys: &[bsn_api::ca::SigningKey], report: &AuditReport) -> Result<(), AuditError> {
    use base64::Engine;
    let b64 = |k: &[u8; 32]| base64::engine::general_purpose::STANDARD.encode(k);
    for k in keys {
        let Some(h) = &k.handover else { continue };
        let (terms, from, to) = h
            .verify()
            .map_err(|e| AuditError::Invalid(format!("membership key {}'s published handover: {e}", k.number)))?;
        let logged = report.membership_handovers.iter().any(|(n, old, new)| {
            *n == terms.number
                && i64::try_from(*n) == Ok(k.number)
                && b64(old) == from.to_base64()
                && b64(new) == to.to_base64()
                && to.to_base64() == k.public_key
        });
        if !logged {
            return Err(AuditError::Invalid(format!(
                "the CA publishes a handover to membership key {} that the log does not hold",
                k.number
            )));
        }
    }
    if let Some(active) = keys.iter().find(|k| k.state == "active")
        && active.number > 1
        && !report
            .membership_handovers
            .iter()
            .any(|(n, _, new)| i64::try_from(*n) == Ok(active.number) && b64(new) == active.public_key)
    {
        return Err(AuditError::Invalid(format!(
            "the CA signs with membership key {}, which the log never handed over to",
            active.number
        )));
    }
    Ok(())
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
    /// The log's verifier key pinned now, once a handover was followed (until then, the one the
    /// follower was given).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vkey: Option<String>,
    /// Log-key handovers begun in the verified entries: (entry index, old key, new key), base64.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub handovers: Vec<(u64, String, String)>,
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
///
/// `vkey` is the key the follower was given; once a handover of the log's key was followed (its
/// handover checkpoint verified with the pinned key, the `begun` leaf naming both keys in the
/// tree it commits to), the state pins the new key and later rounds use it alone.
pub async fn follow_once(
    api: &Api,
    vkey: &str,
    bundle: &TrustBundle,
    chain: &[CertificateDer<'static>],
    state: &mut FollowState,
    on_entry: &mut dyn FnMut(u64, &LogLeaf),
) -> Result<u64, AuditError> {
    let note = api.get_bytes("/log/checkpoint").await?;
    let pinned = state.vkey.clone().unwrap_or_else(|| vkey.trim().to_string());
    let (size, root, hops) = open_following_handovers(api, &pinned, &note).await?;
    let from = state.size;
    for hop in hops {
        advance(api, bundle, chain, state, hop.size, hop.root, on_entry).await?;
        use base64::Engine;
        let b64 = |k: &[u8; 32]| base64::engine::general_purpose::STANDARD.encode(k);
        let (old, new) = (b64(&hop.from), b64(&hop.to));
        if !state
            .handovers
            .iter()
            .any(|(at, o, n)| *at < hop.size && *o == old && *n == new)
        {
            return Err(AuditError::Invalid(format!(
                "the checkpoint is signed by {}, but the log holds no handover to it from the pinned key",
                hop.vkey
            )));
        }
        state.vkey = Some(hop.vkey);
    }
    advance(api, bundle, chain, state, size, root, on_entry).await?;
    Ok(size - from)
}

/// Extends the verified tree in `state` to the checkpoint (`size`, `root`), already verified.
async fn advance(
    api: &Api,
    bundle: &TrustBundle,
    chain: &[CertificateDer<'static>],
    state: &mut FollowState,
    size: u64,
    root: Hash,
    on_entry: &mut dyn FnMut(u64, &LogLeaf),
) -> Result<(), AuditError> {
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
        return Ok(());
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
    let mut issued = HashMap::new();
    let mut scratch = AuditReport::default();
    let mut begun = Vec::new();
    let shared = std::sync::Arc::new((bundle.clone(), chain.to_vec()));
    let from = state.size;
    for_each_group(api, size, from / 256, size.div_ceil(256), async |start, bundles| {
        let shared = shared.clone();
        let checked = tokio::task::spawn_blocking(move || {
            let leaves = split_bundles(start, &bundles, size)?;
            // The first bundle may hold entries verified in an earlier round.
            let skip = from.saturating_sub(start) as usize;
            let new = &leaves[skip.min(leaves.len())..];
            let (hashes, checked) = check_entries(start + skip as u64, new, &shared.0, &shared.1, Depth::Full)?;
            let checked: Vec<LogLeaf> = checked.into_iter().map(|(l, _)| l.to_owned()).collect();
            Ok::<_, AuditError>((start + skip as u64, hashes, checked))
        })
        .await
        .map_err(|e| AuditError::Invalid(format!("verification task failed: {e}")))?;
        let (first, hashes, checked) = checked?;
        for (i, (h, leaf)) in hashes.into_iter().zip(checked).enumerate() {
            let at = first + i as u64;
            edge.push(h);
            if let LogLeaf::Key {
                purpose: KeyPurpose::Log,
                step: HandoverStep::Begun,
                old_key,
                new_key,
                ..
            } = &leaf
            {
                use base64::Engine;
                let b64 = |k: &[u8; 32]| base64::engine::general_purpose::STANDARD.encode(k);
                begun.push((at, b64(old_key), b64(new_key)));
            }
            // This round sees only the new entries: a revocation may refer to an earlier issuance.
            record(at, leaf.as_ref(), None, &mut issued, false, &mut scratch)?;
            on_entry(at, &leaf);
        }
        Ok(())
    })
    .await?;
    if edge.root() != root {
        return Err(AuditError::Invalid(format!(
            "the new entries do not extend the verified tree to the signed root of size {size}"
        )));
    }
    state.size = size;
    state.root = b64(&root);
    state.edge = edge.subtrees().iter().map(|(n, h)| (*n, b64(h))).collect();
    state.handovers.extend(begun);
    Ok(())
}

/// Decodes one entry and, for an issuance and with a verifier, verifies its certificate (at its own start of
/// validity: a certificate that has expired since was still correctly issued) and that the
/// certificate matches the entry.
fn check_entry<'a>(
    index: u64,
    leaf: &'a [u8],
    bundle: &TrustBundle,
    verifier: Option<&mut LeafVerifier<'_>>,
) -> Result<Checked<'a>, AuditError> {
    let bad = |m: String| AuditError::Invalid(format!("entry {index}: {m}"));
    let decoded = LeafRef::parse(leaf).map_err(|e| bad(e.to_string()))?;
    let mut issuer = None;
    if verifier.is_some()
        && let LeafRef::Intermediate {
            number, certificate, ..
        } = decoded
    {
        bundle
            .verify_intermediate(certificate)
            .map_err(|e| bad(format!("intermediate {number}'s certificate: {e}")))?;
    }
    if verifier.is_some()
        && let LeafRef::Root {
            number,
            certificate,
            cross,
            ..
        } = decoded
    {
        // The first root has no cross-certificate: it is the one the auditor pins, and the log
        // names it only when it is withdrawn.
        let checked = match number {
            1 if cross.is_empty() => bundle
                .roots()
                .iter()
                .any(|r| r.as_ref() == certificate)
                .then_some(())
                .ok_or_else(|| "is not the first root of the pinned bundle".to_string()),
            _ => check_cross(bundle, certificate, cross),
        };
        checked.map_err(|e| bad(format!("root {number}: {e}")))?;
    }
    if let Some(verifier) = verifier
        && let LeafRef::Issuance {
            identity,
            serial,
            not_before,
            not_after,
            certificate,
            ..
        } = decoded
    {
        let (cert, by) = verifier
            .verify_issued(certificate, not_before + 60)
            .map_err(|e| bad(format!("certificate does not verify: {e}")))?;
        issuer = Some(by);
        if cert.serial_hex != serial
            || cert.spiffe_id.to_string() != identity
            || cert.not_after != not_after
            || cert.not_before != not_before
        {
            return Err(bad("the certificate does not match its entry".into()));
        }
    }
    Ok((decoded, issuer))
}

/// Checks a later root against its cross-certificate: the root is a self-signed CA
/// certificate, the cross-certificate certifies exactly its subject and key, and a root of
/// `bundle` signed the cross-certificate.
pub fn check_cross(bundle: &TrustBundle, root: &[u8], cross: &[u8]) -> Result<(), String> {
    let (_, r) = x509_parser::parse_x509_certificate(root).map_err(|e| format!("the root does not parse: {e}"))?;
    let (_, c) =
        x509_parser::parse_x509_certificate(cross).map_err(|e| format!("the cross-certificate does not parse: {e}"))?;
    if !r.is_ca() || r.subject() != r.issuer() || r.verify_signature(None).is_err() {
        return Err("the root is not a self-signed CA certificate".into());
    }
    if c.subject().as_raw() != r.subject().as_raw() || c.public_key().raw != r.public_key().raw {
        return Err("the cross-certificate certifies another subject or key than the root".into());
    }
    bundle
        .verify_intermediate(cross)
        .map_err(|e| format!("the cross-certificate: {e}"))
}

/// The pinned bundle, extended with each later root the CA lists (`/api/v1/roots`) whose
/// cross-certificate a root already trusted signed, in order: a verifier that pins the old root
/// accepts its successors through their cross-certificates (withdrawn ones too, so old entries
/// verify). A CA from before root rotation existed lists none.
pub async fn follow_roots(api: &Api, pinned: &TrustBundle) -> Result<TrustBundle, AuditError> {
    use rustls_pki_types::pem::PemObject;
    let listed = match api
        .get_as::<bsn_api::ca::Items<bsn_api::ca::Root>>("/api/v1/roots", &[])
        .await
    {
        Ok(list) => list.items,
        Err(ClientError::Problem { status: 404, .. }) => return Ok(pinned.clone()),
        Err(e) => return Err(e.into()),
    };
    let mut roots: Vec<CertificateDer<'static>> = pinned.roots().to_vec();
    for r in listed.into_iter().filter(|r| r.number > 1) {
        let bad = |m: String| AuditError::Invalid(format!("the CA's root {}: {m}", r.number));
        let der = CertificateDer::from_pem_slice(r.certificate.as_bytes()).map_err(|e| bad(e.to_string()))?;
        let cross = r
            .cross
            .as_deref()
            .ok_or_else(|| bad("listed without a cross-certificate".into()))
            .and_then(|c| CertificateDer::from_pem_slice(c.as_bytes()).map_err(|e| bad(e.to_string())))?;
        if roots.contains(&der) {
            continue;
        }
        let trusted = TrustBundle::from_der(roots.clone()).map_err(|e| bad(e.to_string()))?;
        check_cross(&trusted, &der, &cross).map_err(bad)?;
        roots.push(der);
    }
    TrustBundle::from_der(roots).map_err(|e| AuditError::Invalid(format!("the CA's roots: {e}")))
}

/// SHA-256 of each intermediate of the chain, in order.
fn issuer_hashes(chain: &[CertificateDer<'static>]) -> Vec<[u8; 32]> {
    chain.iter().map(|c| identity::ledger::sha256(c)).collect()
}

/// Books a checked entry in log order: serials are issued once, and (with the complete history)
/// each revocation refers to an issued, not yet revoked certificate.
///
/// An intermediate's steps come in order (published, activated, retired; the intermediate of
/// initialisation is never published or activated in the log, only retired), and with the
/// issuer of each certificate known (`issuer`, at [`Depth::Full`]): a certificate is issued
/// only by an intermediate that was activated and not yet retired, or by the one intermediate
/// the log never announced (the first).
fn record(
    index: u64,
    leaf: LeafRef<'_>,
    issuer: Option<&[u8; 32]>,
    issued: &mut HashMap<String, bool>,
    complete_history: bool,
    report: &mut AuditReport,
) -> Result<(), AuditError> {
    let bad = |m: String| AuditError::Invalid(format!("entry {index}: {m}"));
    match leaf {
        LeafRef::Issuance { serial, .. } => {
            if issued.insert(serial.to_string(), false).is_some() {
                return Err(bad(format!("serial {serial} was issued twice")));
            }
            if let Some(sha) = issuer {
                match report.steps.get(sha) {
                    Some((_, IntermediateStep::Activated)) => {}
                    Some((n, IntermediateStep::Published)) => {
                        return Err(bad(format!(
                            "serial {serial} was issued by intermediate {n} before it was activated"
                        )));
                    }
                    Some((n, IntermediateStep::Retired)) => {
                        return Err(bad(format!(
                            "serial {serial} was issued by intermediate {n} after it was retired"
                        )));
                    }
                    None => match report.unannounced {
                        Some(first) if first != *sha => {
                            return Err(bad(format!(
                                "serial {serial} was issued by an intermediate the log never announced \
                                 (only the first intermediate may be unannounced)"
                            )));
                        }
                        _ => report.unannounced = Some(*sha),
                    },
                }
            }
            report.issuances += 1;
        }
        LeafRef::Intermediate {
            step,
            number,
            certificate,
            ..
        } => {
            let sha = identity::ledger::sha256(certificate);
            let last = report.steps.get(&sha).map(|(_, s)| *s);
            let fits = match (step, last) {
                (IntermediateStep::Published, None) => true,
                (IntermediateStep::Activated, Some(IntermediateStep::Published)) => true,
                (IntermediateStep::Retired, Some(IntermediateStep::Activated)) => true,
                // The first intermediate (never announced) retires; or, following the log
                // from the middle, an earlier step is not known.
                (IntermediateStep::Retired | IntermediateStep::Activated, None) => {
                    !complete_history || step == IntermediateStep::Retired
                }
                _ => false,
            };
            if !fits {
                return Err(bad(format!(
                    "intermediate {number} is {} after {}",
                    step.name(),
                    last.map_or("nothing", IntermediateStep::name)
                )));
            }
            if report.steps.values().any(|(n, _)| *n == number) && last.is_none() {
                return Err(bad(format!(
                    "intermediate number {number} is announced with a second certificate"
                )));
            }
            report.steps.insert(sha, (number, step));
            report.intermediate_steps += 1;
        }
        LeafRef::Membership { subchain, revision, .. } => {
            let last = report.revisions.get(subchain).copied();
            let expected = match last {
                Some(r) => Some(r + 1),
                None if complete_history => Some(1),
                None => None,
            };
            if expected.is_some_and(|e| e != revision) {
                return Err(bad(format!(
                    "subchain {subchain} jumps to revision {revision} after {}",
                    last.unwrap_or(0)
                )));
            }
            report.revisions.insert(subchain.to_string(), revision);
            report.memberships += 1;
        }
        LeafRef::Key {
            purpose,
            step,
            number,
            old_key,
            new_key,
            ..
        } => {
            let name = purpose.name();
            if old_key == new_key {
                return Err(bad(format!("{name} key {number} hands a key over to itself")));
            }
            let track = report.keys.entry(purpose as u8).or_default();
            if track.active.is_some_and(|a| a != *old_key) {
                return Err(bad(format!(
                    "{name} key {number}: the handover is {} from a key that is not the active one",
                    step.name()
                )));
            }
            match step {
                HandoverStep::Begun => {
                    if let Some((n, _)) = track.incoming {
                        return Err(bad(format!("{name} key {number} begun while key {n} is incoming")));
                    }
                    track.incoming = Some((number, *new_key));
                    if purpose == KeyPurpose::Log {
                        report.log_handovers.push((index, *old_key, *new_key));
                    }
                }
                HandoverStep::Finished => {
                    match track.incoming {
                        Some((n, k)) if n == number && k == *new_key => {}
                        None if !complete_history => {}
                        _ => return Err(bad(format!("{name} key {number} finished without being begun"))),
                    }
                    track.incoming = None;
                    if purpose == KeyPurpose::Membership {
                        report.membership_handovers.push((number, *old_key, *new_key));
                    }
                }
            }
            track.active = Some(if step == HandoverStep::Finished {
                *new_key
            } else {
                *old_key
            });
            report.key_steps += 1;
        }
        LeafRef::Root { step, number, .. } => {
            let last = report.roots.get(&number).copied();
            let fits = match (step, last) {
                (RootStep::Published, None) => {
                    number >= 2
                        && (!complete_history || number == 2 || report.roots.contains_key(&(number - 1)))
                        && !report.roots.values().any(|s| *s == RootStep::Published)
                }
                (RootStep::Activated, Some(RootStep::Published)) => true,
                // The root before an activated one retires; the first (never announced) too.
                (RootStep::Withdrawn, Some(RootStep::Activated)) => true,
                (RootStep::Withdrawn, None) => !complete_history || number == 1,
                (RootStep::Activated, None) => !complete_history,
                _ => false,
            };
            if !fits {
                return Err(bad(format!(
                    "root {number} is {} after {}",
                    step.name(),
                    last.map_or("nothing", RootStep::name)
                )));
            }
            report.roots.insert(number, step);
            report.root_steps += 1;
        }
        LeafRef::Revocation { serial, .. } => match issued.get_mut(serial) {
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

/// Every issuing intermediate the CA lists (`/api/v1/intermediates`, retired ones included, so
/// old entries verify); a CA from before rotation existed answers with its chain. Nothing here
/// is trusted: each one verifies to the pinned bundle before a certificate under it counts.
pub async fn fetch_intermediates(api: &Api) -> Result<Vec<CertificateDer<'static>>, AuditError> {
    use rustls_pki_types::pem::PemObject;
    let pem = match api
        .get_as::<bsn_api::ca::Items<bsn_api::ca::Intermediate>>("/api/v1/intermediates", &[])
        .await
    {
        Ok(list) => list
            .items
            .into_iter()
            .map(|i| i.certificate)
            .collect::<String>()
            .into_bytes(),
        Err(ClientError::Problem { status: 404, .. }) => api.get_bytes("/api/v1/ca-chain").await?,
        Err(e) => return Err(e.into()),
    };
    CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<_, _>>()
        .map_err(|e| AuditError::Invalid(format!("the CA's intermediates: {e}")))
}

/// A certificate as the CA's listing shows it.
#[derive(Debug, Clone)]
pub struct Listed {
    /// Serial, lowercase hex.
    pub serial: String,
    /// `valid`, `expired` or `revoked`.
    pub status: String,
}

/// Reads the CA's whole certificate listing (needs an administrator's or auditor's credential).
/// Read it before the checkpoint you verify: every certificate committed before the listing was
/// read is then covered by that checkpoint.
pub async fn fetch_listing(api: &Api, progress: &mut dyn FnMut(u64)) -> Result<Vec<Listed>, AuditError> {
    let mut out = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let mut query = vec![("limit", "1000".to_string())];
        if let Some(a) = &after {
            query.push(("after", a.clone()));
        }
        let page = api.get("/api/v1/certificates", &query).await?;
        let items = page["items"]
            .as_array()
            .ok_or_else(|| AuditError::Invalid("the certificate listing is malformed".into()))?;
        for item in items {
            out.push(Listed {
                serial: item["serial"].as_str().unwrap_or_default().to_string(),
                status: item["status"].as_str().unwrap_or_default().to_string(),
            });
        }
        progress(out.len() as u64);
        match page["next_after"].as_str() {
            Some(next) if !items.is_empty() => after = Some(next.to_string()),
            _ => return Ok(out),
        }
    }
}

/// Checks the listing against a verified log: every listed certificate has an issuance entry,
/// and every certificate listed as revoked has a revocation entry. Returns how many were checked.
pub fn check_listing(listing: &[Listed], report: &AuditReport) -> Result<u64, AuditError> {
    let mut missing = Vec::new();
    let mut unlogged_revocations = Vec::new();
    for c in listing {
        match report.issued.get(&c.serial) {
            None => missing.push(c.serial.as_str()),
            Some(false) if c.status == "revoked" => unlogged_revocations.push(c.serial.as_str()),
            Some(_) => {}
        }
    }
    let show = |v: &[&str]| {
        let mut s = v.iter().take(5).copied().collect::<Vec<_>>().join(", ");
        if v.len() > 5 {
            s.push_str(&format!(" and {} more", v.len() - 5));
        }
        s
    };
    if !missing.is_empty() {
        return Err(AuditError::Invalid(format!(
            "{} certificate(s) the CA lists have no issuance entry in the log: {}",
            missing.len(),
            show(&missing)
        )));
    }
    if !unlogged_revocations.is_empty() {
        return Err(AuditError::Invalid(format!(
            "{} certificate(s) the CA lists as revoked have no revocation entry in the log: {}",
            unlogged_revocations.len(),
            show(&unlogged_revocations)
        )));
    }
    Ok(listing.len() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(step: IntermediateStep, number: u64, cert: &[u8]) -> LeafRef<'_> {
        LeafRef::Intermediate {
            time: 0,
            step,
            number,
            authorized_by: "admin",
            certificate: cert,
        }
    }

    fn issuance(serial: &str) -> LeafRef<'_> {
        LeafRef::Issuance {
            time: 0,
            identity: "spiffe://t/participant/a",
            serial,
            authorized_by: "secret:admin",
            not_before: 0,
            not_after: 1,
            key_sha256: &[0; 32],
            certificate: b"",
        }
    }

    /// An intermediate's steps come in order, and certificates come only from an intermediate
    /// that is activated and not retired, or from the one the log never announced.
    #[test]
    fn intermediates_step_in_order_and_issue_only_while_active() {
        use IntermediateStep::*;
        let (first, second, third) = (b"one".as_slice(), b"two".as_slice(), b"three".as_slice());
        let (h1, h2, h3) = (
            identity::ledger::sha256(first),
            identity::ledger::sha256(second),
            identity::ledger::sha256(third),
        );
        let mut issued = HashMap::new();
        let mut r = AuditReport::default();
        let mut at = 0u64;
        let mut go = |leaf: LeafRef<'_>, issuer: Option<&[u8; 32]>, r: &mut AuditReport| {
            at += 1;
            record(at, leaf, issuer, &mut issued, true, r)
        };
        go(issuance("01"), Some(&h1), &mut r).unwrap();
        go(step(Published, 2, second), None, &mut r).unwrap();
        let e = go(issuance("02"), Some(&h2), &mut r).unwrap_err();
        assert!(e.to_string().contains("before it was activated"), "{e}");
        let e = go(step(Retired, 2, second), None, &mut r).unwrap_err();
        assert!(e.to_string().contains("retired after published"), "{e}");
        go(step(Activated, 2, second), None, &mut r).unwrap();
        go(issuance("03"), Some(&h2), &mut r).unwrap();
        // The first intermediate still issues while replicas switch, until it retires.
        go(issuance("04"), Some(&h1), &mut r).unwrap();
        let e = go(issuance("05"), Some(&h3), &mut r).unwrap_err();
        assert!(e.to_string().contains("never announced"), "{e}");
        let e = go(step(Activated, 3, third), None, &mut r).unwrap_err();
        assert!(e.to_string().contains("activated after nothing"), "{e}");
        let e = go(step(Published, 2, third), None, &mut r).unwrap_err();
        assert!(e.to_string().contains("second certificate"), "{e}");
        go(step(Retired, 1, first), None, &mut r).unwrap();
        let e = go(issuance("06"), Some(&h1), &mut r).unwrap_err();
        assert!(e.to_string().contains("after it was retired"), "{e}");
        assert_eq!((r.issuances, r.intermediate_steps), (3, 3));
    }
}
