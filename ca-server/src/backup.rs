//! `ca-server backup` and `ca-server restore`: a consistent copy of a CA taken while it serves,
//! and a CA brought back from one.
//!
//! Features: one archive (tar, mode 0600) holding `backup.json` (what it is: trust domain, log
//! origin, size and checkpoint, backend), every file of the data directory (sealed keys,
//! certificates, `ca.toml`, the root CRL) and, for SQLite, a snapshot of the database made by
//! `VACUUM INTO` inside one read transaction, so it is consistent however busy the CA is.
//! Restore writes into a new directory only (never over a CA, live or not), checks every entry's
//! name, and refuses an archive whose log is behind a checkpoint the caller says was published:
//! serving it would fork the log, which every auditor following it would see.
//! Non-features: PostgreSQL databases are not copied (the archive says so; `pg_dump` does it,
//! see the README); no encryption beyond the keys' own sealing (store the archive as the keys).

use std::io::{Read, Write};
use std::path::Path;

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};

use crate::config::Config;
use crate::db::{Backend, Db};

/// What an archive holds, first in it as `backup.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Format version (1).
    pub version: u32,
    /// The CA's trust domain.
    pub trust_domain: String,
    /// When the snapshot was taken (RFC 3339).
    pub created_at: String,
    /// `sqlite` (the database is in the archive as `ca.db`) or `postgres` (it is not).
    pub backend: String,
    /// The issuance log's origin.
    pub log_origin: String,
    /// The log's size in the snapshot (PostgreSQL: when the files were copied).
    pub log_size: u64,
    /// The log's signed checkpoint in the snapshot.
    pub checkpoint: String,
    /// The data directory's files in the archive.
    pub files: Vec<String>,
}

const MANIFEST: &str = "backup.json";
const DATABASE: &str = "ca.db";
/// No archive entry is larger (the database included).
const MAX_ENTRY: u64 = 1 << 40;

fn plain_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 255
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-' || b == b'_')
}

/// The data directory's files that belong in a backup: every regular file except the SQLite
/// database and its journals (copied by snapshot instead) and temporary files.
fn data_files(dir: &Path) -> anyhow::Result<Vec<String>> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let e = e?;
        let name = e.file_name().to_string_lossy().into_owned();
        if !e.file_type()?.is_file()
            || name.starts_with("ca.db")
            || name.ends_with(".tmp")
            || name.starts_with('.')
            || !plain_name(&name)
        {
            continue;
        }
        out.push(name);
    }
    out.sort();
    Ok(out)
}

fn append(builder: &mut tar::Builder<std::fs::File>, name: &str, data: &mut dyn Read, len: u64) -> anyhow::Result<()> {
    let mut h = tar::Header::new_gnu();
    h.set_size(len);
    h.set_mode(0o600);
    h.set_entry_type(tar::EntryType::Regular);
    h.set_mtime(0);
    h.set_cksum();
    builder.append_data(&mut h, name, data)?;
    Ok(())
}

/// Takes a backup of the CA in `cfg` into `out` (which must not exist) while it may be serving.
pub async fn backup(cfg: &Config, out: &Path) -> anyhow::Result<Manifest> {
    if out.exists() {
        bail!("{} exists; refusing to overwrite it: name a new file", out.display());
    }
    let db = Db::connect(&cfg.database_url)
        .await
        .with_context(|| format!("opening database {}", crate::init::redact(&cfg.database_url)))?;
    let snapshot = out.with_extension("db.tmp");
    let _ = std::fs::remove_file(&snapshot);
    let (log_size, checkpoint) = match db.backend {
        Backend::Sqlite => {
            // One statement, one read transaction: a consistent copy, writers keep writing.
            sqlx::query("VACUUM INTO $1")
                .bind(snapshot.to_string_lossy().into_owned())
                .execute(&mut *db.acquire().await?)
                .await
                .context("copying the SQLite database (VACUUM INTO)")?;
            use sqlx::Connection;
            let mut copy = sqlx::AnyConnection::connect(&format!("sqlite://{}?mode=ro", snapshot.display())).await?;
            let latest = crate::log::latest(&mut copy).await?;
            copy.close().await?;
            latest
        }
        Backend::Postgres => crate::log::latest(&mut *db.acquire().await?).await?,
    };
    db.close().await;
    let result = write_archive(cfg, out, &snapshot, log_size, checkpoint).await;
    let _ = std::fs::remove_file(&snapshot);
    result
}

async fn write_archive(
    cfg: &Config,
    out: &Path,
    snapshot: &Path,
    log_size: u64,
    checkpoint: String,
) -> anyhow::Result<Manifest> {
    let sqlite = snapshot.exists();
    let files = data_files(&cfg.paths.dir)?;
    let manifest = Manifest {
        version: 1,
        trust_domain: cfg.trust_domain.to_string(),
        created_at: time::OffsetDateTime::now_utc()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default(),
        backend: if sqlite { "sqlite" } else { "postgres" }.into(),
        log_origin: cfg.log_origin.clone(),
        log_size,
        checkpoint,
        files: files.clone(),
    };
    let tmp = out.with_extension("tmp");
    let file = {
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .with_context(|| format!("creating {}", tmp.display()))?
    };
    let written = (|| -> anyhow::Result<()> {
        let mut b = tar::Builder::new(file);
        let json = serde_json::to_vec_pretty(&manifest)?;
        append(&mut b, MANIFEST, &mut json.as_slice(), json.len() as u64)?;
        for name in &files {
            let path = cfg.paths.dir.join(name);
            let mut f = std::fs::File::open(&path).with_context(|| format!("reading {}", path.display()))?;
            let len = f.metadata()?.len();
            append(&mut b, name, &mut f, len)?;
        }
        if sqlite {
            let mut f = std::fs::File::open(snapshot)?;
            let len = f.metadata()?.len();
            append(&mut b, DATABASE, &mut f, len)?;
        }
        let mut file = b.into_inner()?;
        file.flush()?;
        file.sync_all()?;
        Ok(())
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    std::fs::rename(&tmp, out)?;
    bsn_api::files::sync_dir(
        out.parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new(".")),
    )?;
    Ok(manifest)
}

/// A checkpoint's origin, size and root line (a C2SP signed note's first three lines).
fn checkpoint_parts(note: &str) -> Option<(&str, u64, &str)> {
    let mut lines = note.lines();
    let origin = lines.next()?;
    let size = lines.next()?.parse().ok()?;
    let root = lines.next()?;
    Some((origin, size, root))
}

/// Restores the archive `from` into `dir`, which must not hold anything yet. With `published`
/// (a checkpoint the world has seen, such as an auditor's last verified one or the CA's own
/// `GET /log/checkpoint` saved by a monitor), refuses an archive whose log is behind it.
pub fn restore(from: &Path, dir: &Path, published: Option<&str>) -> anyhow::Result<Manifest> {
    if dir.exists()
        && std::fs::read_dir(dir)
            .with_context(|| format!("reading {}", dir.display()))?
            .next()
            .is_some()
    {
        bail!(
            "{} is not empty; refusing to restore over it (a CA there, live or not, would be \
             overwritten): restore into a new directory, then move it into place with the CA stopped",
            dir.display()
        );
    }
    let open = || std::fs::File::open(from).with_context(|| format!("opening {}", from.display()));
    // First pass: the manifest, before anything is written.
    let mut archive = tar::Archive::new(open()?);
    let mut entries = archive.entries()?;
    let manifest: Manifest = {
        let mut first = entries
            .next()
            .ok_or_else(|| anyhow::anyhow!("{} is empty", from.display()))??;
        if first.path()?.to_str() != Some(MANIFEST) || first.size() > 1 << 20 {
            bail!(
                "{} is not a ca-server backup (it does not start with {MANIFEST})",
                from.display()
            );
        }
        let mut text = String::new();
        first.read_to_string(&mut text)?;
        serde_json::from_str(&text).with_context(|| format!("{MANIFEST} in {}", from.display()))?
    };
    if manifest.version != 1 {
        bail!("backup format {} is not known to this ca-server", manifest.version);
    }
    // (A PostgreSQL archive holds no log: its database comes back by pg_restore.)
    if let Some(note) = published.filter(|_| manifest.backend == "sqlite") {
        let (origin, size, root) =
            checkpoint_parts(note).ok_or_else(|| anyhow::anyhow!("the published checkpoint is not a signed note"))?;
        let (_, ours, our_root) = checkpoint_parts(&manifest.checkpoint)
            .ok_or_else(|| anyhow::anyhow!("the backup's checkpoint does not parse"))?;
        if origin != manifest.log_origin {
            bail!(
                "the published checkpoint is of the log '{origin}', this backup of '{}'",
                manifest.log_origin
            );
        }
        if ours < size {
            bail!(
                "this backup's log has {ours} entries but a checkpoint of {size} was published: serving it \
                 would fork the log (the CA would sign a different entry {ours}), which every auditor would \
                 see. Restore a backup taken after that checkpoint; nothing was written"
            );
        }
        if ours == size && our_root != root {
            bail!("this backup's log has the published size but another root: it is not the published log");
        }
    }
    let tmp = dir.with_extension("restoring");
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).with_context(|| format!("removing {}", tmp.display()))?;
    }
    {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&tmp)
            .with_context(|| format!("creating {}", tmp.display()))?;
    }
    let written = (|| -> anyhow::Result<()> {
        let mut expected: Vec<String> = manifest.files.clone();
        if manifest.backend == "sqlite" {
            expected.push(DATABASE.into());
        }
        let mut seen = Vec::new();
        for e in entries {
            let mut e = e?;
            let name = e.path()?.to_string_lossy().into_owned();
            if e.header().entry_type() != tar::EntryType::Regular
                || !plain_name(&name)
                || !expected.contains(&name)
                || seen.contains(&name)
                || e.size() > MAX_ENTRY
            {
                bail!(
                    "{} holds an unexpected entry '{name}'; nothing was restored",
                    from.display()
                );
            }
            let mode = if name.ends_with(".pem") || name.ends_with(".vkey") || name.ends_with(".der") {
                0o644
            } else {
                0o600
            };
            let path = tmp.join(&name);
            let mut f = {
                use std::os::unix::fs::OpenOptionsExt;
                std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(mode)
                    .open(&path)?
            };
            std::io::copy(&mut e, &mut f)?;
            f.sync_all()?;
            seen.push(name);
        }
        expected.sort();
        seen.sort();
        if seen != expected {
            bail!(
                "{} is incomplete (expected {expected:?}); nothing was restored",
                from.display()
            );
        }
        if manifest.backend == "sqlite" {
            // The database now sits in the directory, wherever it was before.
            let path = tmp.join("ca.toml");
            let mut file: crate::config::FileConfig = toml::from_str(&std::fs::read_to_string(&path)?)?;
            if file.database_url.as_deref().is_some_and(|u| u.starts_with("sqlite:")) {
                file.database_url = None;
                bsn_api::files::write_file(&path, toml::to_string_pretty(&file)?.as_bytes(), 0o600)?;
            }
        }
        bsn_api::files::sync_dir(&tmp)?;
        Ok(())
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(e);
    }
    if dir.exists() {
        std::fs::remove_dir(dir).with_context(|| format!("replacing the empty {}", dir.display()))?;
    }
    std::fs::rename(&tmp, dir).with_context(|| format!("moving {} to {}", tmp.display(), dir.display()))?;
    bsn_api::files::sync_dir(
        dir.parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new(".")),
    )?;
    Ok(manifest)
}
