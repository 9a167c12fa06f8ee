//! Group commit of issuances: handlers sign certificates concurrently and hand them to one
//! writer task, which stores every pending certificate in a single transaction and answers each
//! handler only after that transaction has committed (fsynced). One fsync serves a whole batch,
//! so throughput scales with concurrency while "acknowledged means durable" still holds.
//!
//! Each job carries its precondition (the enrollment secret still has uses; the renewing
//! certificate is still unrevoked), checked inside the batch transaction, so a job whose
//! precondition fails is answered with that failure and writes nothing, without affecting the
//! others.

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use crate::log::{Appended, LogError, LogSigner, NewLeaf, Receipt};
use crate::metrics::Metrics;
use identity::logleaf::LogLeaf;

use crate::db::{Backend, Db, placeholders};
use crate::pki::IssuedCert;

/// The most certificates written in one transaction.
pub const MAX_BATCH: usize = 1024;

/// A batch smaller than this waits [`GATHER_DELAY`] for more requests before it is written.
const GATHER_BELOW: usize = 64;

/// How long a small batch waits for company (the latency it may add to one issuance).
const GATHER_DELAY: std::time::Duration = std::time::Duration::from_millis(2);

/// What must still hold when the certificate is written.
#[derive(Debug)]
pub enum Precondition {
    /// Enrollment: consume one use of this identity's current secret (matched by its hash),
    /// which must be unexpired at `now`.
    ConsumeSecret {
        /// The secret's hash as read when it was verified.
        secret_hash: String,
        /// Unix seconds.
        now: i64,
    },
    /// Portal enrollment: consume this identity's one-time challenge (matched by its hash),
    /// unexpired at `now`; the identity must be active.
    ConsumeChallenge {
        /// SHA-256 (hex) of the challenge.
        challenge_hash: String,
        /// Unix seconds.
        now: i64,
    },
    /// Renewal: the certificate that authenticated it is on record for this identity,
    /// unrevoked and unexpired at `now`; the identity is active; and its host names are still the
    /// ones the new certificate was issued with (they may have come from a cache).
    Renewal {
        /// Serial of the certificate that authenticated the renewal.
        serial: String,
        /// Unix seconds.
        now: i64,
        /// `dns_names` and `ip_addresses` as JSON, as used to issue.
        sans: (String, String),
    },
}

/// One certificate to store.
#[derive(Debug)]
pub struct Job {
    /// Holder.
    pub identity: String,
    /// The certificate.
    pub cert: IssuedCert,
    /// `enroll` or `renew`.
    pub issued_via: &'static str,
    /// Who authorised it.
    pub authorized_by: String,
    /// Unix seconds.
    pub issued_at: i64,
    /// Checked in the transaction.
    pub precondition: Precondition,
}

/// Why a job was not stored.
#[derive(Debug, thiserror::Error)]
pub enum CommitError {
    /// The secret was used up, expired or replaced meanwhile.
    #[error("enrollment secret is used up or expired")]
    SecretUsedUp,
    /// The portal enrollment challenge was used, expired, or the identity is not active.
    #[error("enrollment challenge used or expired")]
    ChallengeUsed,
    /// The renewing certificate is revoked.
    #[error("certificate was revoked")]
    Revoked,
    /// The renewing certificate is not on record for this identity.
    #[error("certificate unknown")]
    Unknown,
    /// The renewing certificate has expired.
    #[error("certificate expired")]
    Expired,
    /// The identity is disabled.
    #[error("identity disabled")]
    Disabled,
    /// The identity's record changed since the certificate was built; build it again.
    #[error("identity record changed")]
    Stale,
    /// The database or the log failed; nothing of the batch was stored.
    #[error("database: {0}")]
    Database(String),
    /// The writer has stopped (shutting down).
    #[error("the issuance writer has stopped")]
    Stopped,
}

type Reply = oneshot::Sender<Result<Receipt, CommitError>>;

/// The handle handlers use to store certificates.
#[derive(Clone)]
pub struct Committer {
    tx: mpsc::Sender<(Job, Reply)>,
}

impl Committer {
    /// Starts the writer task.
    pub fn start(db: Db, log: Arc<LogSigner>, metrics: Arc<Metrics>) -> Self {
        let (tx, rx) = mpsc::channel(4 * MAX_BATCH);
        tokio::spawn(writer(db, log, rx, metrics));
        Self { tx }
    }

    /// Stores one certificate and its log leaf; returns the log receipt once both are durable,
    /// or why nothing was stored.
    pub async fn store(&self, job: Job) -> Result<Receipt, CommitError> {
        let (reply, wait) = oneshot::channel();
        self.tx.send((job, reply)).await.map_err(|_| CommitError::Stopped)?;
        wait.await.map_err(|_| CommitError::Stopped)?
    }
}

async fn writer(db: Db, log: Arc<LogSigner>, mut rx: mpsc::Receiver<(Job, Reply)>, metrics: Arc<Metrics>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while rx.recv_many(&mut batch, MAX_BATCH).await > 0 {
        if batch.len() < GATHER_BELOW {
            // Like PostgreSQL's commit_delay: a moment's wait lets concurrent requests share
            // this transaction's fsync and index page writes.
            tokio::time::sleep(GATHER_DELAY).await;
            while batch.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(job) => batch.push(job),
                    Err(_) => break,
                }
            }
        }
        let started = std::time::Instant::now();
        let outcome = write_batch(&db, &log, &batch).await;
        metrics.batch_time.add(started.elapsed().as_micros() as u64);
        let results = match outcome {
            Ok(results) => {
                let ok = results.iter().filter(|r| r.is_ok()).count() as u64;
                metrics.batches.inc();
                metrics.certificates.add(ok);
                metrics.refused.add(results.len() as u64 - ok);
                results
            }
            Err(e) => {
                metrics.batch_failures.inc();
                tracing::error!(error = %e, size = batch.len(), "issuance batch failed; nothing stored");
                batch
                    .iter()
                    .map(|_| Err(CommitError::Database(e.to_string())))
                    .collect()
            }
        };
        for ((_, reply), result) in batch.drain(..).zip(results) {
            let _ = reply.send(result);
        }
    }
}

async fn write_batch(
    db: &Db,
    log: &LogSigner,
    batch: &[(Job, Reply)],
) -> Result<Vec<Result<Receipt, CommitError>>, LogError> {
    let mut tx = db.begin().await?;
    // Renewals: one query reads the authenticating certificates and their holders.
    let serials: Vec<&str> = batch
        .iter()
        .filter_map(|(j, _)| match &j.precondition {
            Precondition::Renewal { serial, .. } => Some(serial.as_str()),
            _ => None,
        })
        .collect();
    let mut on_record = std::collections::HashMap::new();
    for chunk in serials.chunks(INSERT_CHUNK) {
        let sql = format!(
            "SELECT c.serial, c.identity_id, c.revoked_at, c.not_after, i.status, i.dns_names, i.ip_addresses \
             FROM certificates c JOIN identities i ON i.id = c.identity_id WHERE c.serial IN ({})",
            placeholders(db.backend, 1, chunk.len())
        );
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        for s in chunk {
            q = q.bind(*s);
        }
        for row in q.fetch_all(&mut *tx).await? {
            use sqlx::Row;
            let facts = OnRecord {
                identity: row.try_get(1)?,
                revoked: row.try_get::<Option<i64>, _>(2)?.is_some(),
                not_after: row.try_get(3)?,
                active: row.try_get::<String, _>(4)? == "active",
                sans: (row.try_get(5)?, row.try_get(6)?),
            };
            on_record.insert(row.try_get::<String, _>(0)?, facts);
        }
    }
    let mut results = Vec::with_capacity(batch.len());
    let mut accepted = Vec::with_capacity(batch.len());
    for (job, _) in batch {
        let ok = match &job.precondition {
            Precondition::ConsumeSecret { secret_hash, now } => {
                let r = sqlx::query(
                    "UPDATE identities SET enrollments_left = enrollments_left - 1 \
                     WHERE id = $1 AND secret_hash = $2 AND enrollments_left > 0 AND secret_expires_at > $3 \
                       AND status = 'active'",
                )
                .bind(&job.identity)
                .bind(secret_hash)
                .bind(now)
                .execute(&mut *tx)
                .await?;
                if r.rows_affected() == 1 {
                    Ok(())
                } else {
                    Err(CommitError::SecretUsedUp)
                }
            }
            Precondition::ConsumeChallenge { challenge_hash, now } => {
                let r = sqlx::query(
                    "UPDATE enroll_challenges SET used = 1 WHERE challenge_hash = $1 AND identity_id = $2 \
                     AND used = 0 AND expires_at > $3 \
                     AND EXISTS (SELECT 1 FROM identities WHERE id = $2 AND status = 'active')",
                )
                .bind(challenge_hash)
                .bind(&job.identity)
                .bind(now)
                .execute(&mut *tx)
                .await?;
                if r.rows_affected() == 1 {
                    Ok(())
                } else {
                    Err(CommitError::ChallengeUsed)
                }
            }
            Precondition::Renewal { serial, now, sans } => match on_record.get(serial) {
                Some(r) if r.identity != job.identity => Err(CommitError::Unknown),
                None => Err(CommitError::Unknown),
                Some(r) if r.revoked => Err(CommitError::Revoked),
                Some(r) if r.not_after <= *now => Err(CommitError::Expired),
                Some(r) if !r.active => Err(CommitError::Disabled),
                Some(r) if r.sans != *sans => Err(CommitError::Stale),
                Some(_) => Ok(()),
            },
        };
        if ok.is_ok() {
            accepted.push(job.row());
        }
        results.push(ok);
    }
    let appended = record_certs(&mut tx, db.backend, log, &accepted).await?;
    tx.commit().await?;
    let mut next = 0;
    Ok(results
        .into_iter()
        .map(|r| {
            r.map(|()| {
                next += 1;
                appended
                    .as_ref()
                    .map(|a| a.receipt(next - 1))
                    .expect("accepted jobs were logged")
            })
        })
        .collect())
}

/// What the database says about a renewing certificate and its holder.
struct OnRecord {
    identity: String,
    revoked: bool,
    not_after: i64,
    active: bool,
    sans: (String, String),
}

/// Rows per multi-row statement (11 parameters a row stays far below both databases' limits).
const INSERT_CHUNK: usize = 256;

const INSERT_CERT: &str = "INSERT INTO certificates (serial, identity_id, not_before, not_after, der, key_sha256, \
     issued_at, issued_via, authorized_by, log_index, issuer) VALUES ";

/// One certificate row to insert.
#[derive(Debug, Clone, Copy)]
pub struct NewCert<'a> {
    /// Holder.
    pub identity: &'a str,
    /// The certificate.
    pub cert: &'a IssuedCert,
    /// `enroll`, `renew` or `init`.
    pub issued_via: &'a str,
    /// Who authorised it.
    pub authorized_by: &'a str,
    /// Unix seconds.
    pub issued_at: i64,
}

impl Job {
    fn row(&self) -> NewCert<'_> {
        NewCert {
            identity: &self.identity,
            cert: &self.cert,
            issued_via: self.issued_via,
            authorized_by: &self.authorized_by,
            issued_at: self.issued_at,
        }
    }
}

/// Records certificates: appends one issuance leaf each to the log and inserts the certificate
/// rows with their leaf index, in the caller's transaction. This is the only way certificates are
/// written, so none exists without its leaf. `None` when `rows` is empty.
pub async fn record_certs(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    backend: Backend,
    log: &LogSigner,
    rows: &[NewCert<'_>],
) -> Result<Option<Appended>, LogError> {
    if rows.is_empty() {
        return Ok(None);
    }
    let leaves = rows
        .iter()
        .map(|r| {
            let leaf = LogLeaf::Issuance {
                time: r.issued_at.max(0) as u64,
                identity: r.cert.spiffe_id.clone(),
                serial: r.cert.serial_hex.clone(),
                authorized_by: r.authorized_by.to_string(),
                not_before: r.cert.not_before,
                not_after: r.cert.not_after,
                key_sha256: hex::decode(&r.cert.key_sha256)
                    .ok()
                    .and_then(|k| k.try_into().ok())
                    .ok_or_else(|| LogError::Corrupt("key hash".into()))?,
                certificate: r.cert.der.clone(),
            };
            Ok(NewLeaf {
                bytes: leaf.encode().map_err(|e| LogError::Corrupt(e.to_string()))?,
                kind: "issuance",
                serial: r.cert.serial_hex.clone(),
                identity: r.identity.to_string(),
                at: r.issued_at,
            })
        })
        .collect::<Result<Vec<_>, LogError>>()?;
    let appended = crate::log::append(tx, backend, log, &leaves, true).await?;
    for (chunk_no, chunk) in rows.chunks(INSERT_CHUNK).enumerate() {
        let values: Vec<String> = (0..chunk.len())
            .map(|i| format!("({})", placeholders(backend, i * 11 + 1, 11)))
            .collect();
        let sql = format!("{INSERT_CERT}{}", values.join(", "));
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        for (i, r) in chunk.iter().enumerate() {
            q = q
                .bind(&r.cert.serial_hex)
                .bind(r.identity)
                .bind(r.cert.not_before)
                .bind(r.cert.not_after)
                .bind(&r.cert.der)
                .bind(&r.cert.key_sha256)
                .bind(r.issued_at)
                .bind(r.issued_via)
                .bind(r.authorized_by)
                .bind((appended.first + (chunk_no * INSERT_CHUNK + i) as u64) as i64)
                .bind(r.cert.issuer);
        }
        q.execute(&mut **tx).await?;
    }
    Ok(Some(appended))
}
