//! Group commit of issuances: handlers sign certificates concurrently and hand them to one
//! writer task, which stores every pending certificate in a single transaction and answers each
//! handler only after that transaction has committed (fsynced). One fsync serves a whole batch,
//! so throughput scales with concurrency while "acknowledged means durable" still holds.
//!
//! Each job carries its precondition (the enrollment secret still has uses; the renewing
//! certificate is still unrevoked), checked inside the batch transaction, so a job whose
//! precondition fails is answered with that failure and writes nothing, without affecting the
//! others.

use tokio::sync::{mpsc, oneshot};

use crate::db::Db;
use crate::pki::IssuedCert;

/// The most certificates written in one transaction.
pub const MAX_BATCH: usize = 1024;

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
    /// Renewal: the certificate with this serial is not revoked.
    NotRevoked {
        /// Serial of the certificate that authenticated the renewal.
        serial: String,
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
    /// The renewing certificate was revoked meanwhile.
    #[error("certificate was revoked")]
    Revoked,
    /// The database failed; nothing of the batch was stored.
    #[error("database: {0}")]
    Database(String),
    /// The writer has stopped (shutting down).
    #[error("the issuance writer has stopped")]
    Stopped,
}

type Reply = oneshot::Sender<Result<(), CommitError>>;

/// The handle handlers use to store certificates.
#[derive(Clone)]
pub struct Committer {
    tx: mpsc::Sender<(Job, Reply)>,
}

impl Committer {
    /// Starts the writer task.
    pub fn start(db: Db) -> Self {
        let (tx, rx) = mpsc::channel(4 * MAX_BATCH);
        tokio::spawn(writer(db, rx));
        Self { tx }
    }

    /// Stores one certificate; returns once it is durable, or why it was not stored.
    pub async fn store(&self, job: Job) -> Result<(), CommitError> {
        let (reply, wait) = oneshot::channel();
        self.tx.send((job, reply)).await.map_err(|_| CommitError::Stopped)?;
        wait.await.map_err(|_| CommitError::Stopped)?
    }
}

async fn writer(db: Db, mut rx: mpsc::Receiver<(Job, Reply)>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while rx.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let results = match write_batch(&db, &batch).await {
            Ok(results) => results,
            Err(e) => {
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

async fn write_batch(db: &Db, batch: &[(Job, Reply)]) -> Result<Vec<Result<(), CommitError>>, sqlx::Error> {
    let mut tx = db.begin().await?;
    let mut results = Vec::with_capacity(batch.len());
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
            Precondition::NotRevoked { serial } => {
                let revoked: Option<Option<i64>> =
                    sqlx::query_scalar("SELECT revoked_at FROM certificates WHERE serial = $1")
                        .bind(serial)
                        .fetch_optional(&mut *tx)
                        .await?;
                if matches!(revoked, Some(None)) {
                    Ok(())
                } else {
                    Err(CommitError::Revoked)
                }
            }
        };
        if ok.is_ok() {
            insert_cert(
                &mut tx,
                &job.identity,
                &job.cert,
                job.issued_via,
                &job.authorized_by,
                job.issued_at,
            )
            .await?;
        }
        results.push(ok);
    }
    tx.commit().await?;
    Ok(results)
}

/// Inserts one certificate row (also used by initialisation for the server's own certificate).
pub async fn insert_cert(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    identity: &str,
    cert: &IssuedCert,
    issued_via: &str,
    authorized_by: &str,
    issued_at: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO certificates (serial, identity_id, not_before, not_after, der, key_sha256, issued_at, \
         issued_via, authorized_by) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(&cert.serial_hex)
    .bind(identity)
    .bind(cert.not_before)
    .bind(cert.not_after)
    .bind(&cert.der)
    .bind(&cert.key_sha256)
    .bind(issued_at)
    .bind(issued_via)
    .bind(authorized_by)
    .execute(&mut **tx)
    .await?;
    Ok(())
}
