//! Backups of what the host keeps in its data folder, and restoring one.
//!
//! A backup is a folder holding the database (plugin states, checkpoints,
//! the webhook inbox, dead letters, plugins' storage, the audit log) as one
//! consistent copy, and the audit head that copy ends on, so the restored
//! log verifies. It can be made while a host runs: the copy is taken under
//! the audit writers' lock, so no audit row lands between the copy and the
//! head read with it; other writes go on, and the copy is a snapshot.
//!
//! Keys are not copied. The audit key never changes and is kept apart from
//! the database on purpose (keep a copy of it elsewhere); the cache key and
//! the operator token are made again when missing. Restoring checks the
//! backup's audit log with the key before touching anything, and sets the
//! current database and head aside instead of deleting them.

use std::path::{Path, PathBuf};

use crate::audit::{Broken, Chain, Report};
use crate::config::AuditConfig;
use crate::db::{self, DbError};
use crate::files::{self, Durability};

/// The database's file name in a backup folder.
pub const DATABASE: &str = "causeway.db";

/// The audit head's file name in a backup folder.
pub const HEAD: &str = "audit.head";

/// Why a backup or a restore did not happen.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    /// There is no database to back up.
    #[error("there is no database at {0}: nothing to back up")]
    NoDatabase(PathBuf),
    /// The folder already holds a backup.
    #[error("{0} already holds a backup: give each backup a folder of its own")]
    Exists(PathBuf),
    /// The folder holds no backup.
    #[error("{0} holds no backup: there is no {DATABASE} in it")]
    NotABackup(PathBuf),
    /// The audit key a restore verifies with is missing.
    #[error(
        "no audit key at {0}: a backup's audit log is checked with the key it was written with, and backups do not hold it; put the key back first"
    )]
    NoKey(PathBuf),
    /// The backup's audit log does not verify: nothing was restored.
    #[error("the backup in {path} was not restored, nothing was changed: its {broken}")]
    Broken {
        /// The backup folder.
        path: PathBuf,
        /// Where its chain breaks.
        broken: Broken,
    },
    /// A file could not be read, written or moved.
    #[error("cannot {what} {path}: {message}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// To which file.
        path: PathBuf,
        /// What failed.
        message: String,
    },
    /// The audit chain's files could not be opened.
    #[error("{0}")]
    Chain(String),
    /// The database failed.
    #[error(transparent)]
    Db(#[from] DbError),
}

impl BackupError {
    fn io(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> BackupError {
        let path = path.to_path_buf();
        move |e| BackupError::Io {
            what,
            path,
            message: e.to_string(),
        }
    }
}

/// A backup made.
#[derive(Debug)]
pub struct Made {
    /// The database copy's size.
    pub bytes: u64,
    /// Its audit log checked against its head: `None` when there is no audit
    /// key (nothing was ever audited with this configuration).
    pub audit: Option<Result<Report, Broken>>,
}

/// Backs up `database` (its audit chain's files as `audit` names them) into
/// the folder `out`, made owner-only if it does not exist.
pub fn make(database: &Path, audit: &AuditConfig, out: &Path) -> Result<Made, BackupError> {
    let conn = db::open_read_only(database)?
        .ok_or_else(|| BackupError::NoDatabase(database.to_path_buf()))?;
    files::create_private_dir(out).map_err(BackupError::io("create", out))?;
    let copy = out.join(DATABASE);
    if copy.exists() {
        return Err(BackupError::Exists(out.to_path_buf()));
    }
    let target = copy.to_str().ok_or_else(|| BackupError::Io {
        what: "write to",
        path: copy.clone(),
        message: "SQLite takes UTF-8 file names only".into(),
    })?;
    let chain = if audit.key_file.is_file() {
        Some(audit.chain().map_err(BackupError::Chain)?)
    } else {
        None
    };
    // Writers hold this lock from reading the chain's end to recording the
    // head: holding it, the copy and the head agree.
    let lock = chain.as_ref().and_then(Chain::lock);
    conn.execute("VACUUM INTO ?1", [target]).map_err(|e| {
        // A partial copy would make the folder look like a backup.
        let _ = std::fs::remove_file(&copy);
        BackupError::Io {
            what: "copy the database into",
            path: copy.clone(),
            message: e.to_string(),
        }
    })?;
    let head = chain
        .as_ref()
        .map(Chain::read_head)
        .transpose()
        .map_err(BackupError::Chain)?
        .flatten();
    drop(lock);
    drop(conn);
    // VACUUM INTO does not sync what it wrote.
    std::fs::File::open(&copy)
        .and_then(|file| file.sync_all())
        .map_err(BackupError::io("sync", &copy))?;
    let bytes = std::fs::metadata(&copy)
        .map_err(BackupError::io("read", &copy))?
        .len();
    if let Some(head) = &head {
        let text = serde_json::to_vec(head).map_err(|e| BackupError::Chain(e.to_string()))?;
        let file = out.join(HEAD);
        files::replace(
            &file,
            &out.join("audit.head.partial"),
            &text,
            Durability::Rename,
        )
        .map_err(BackupError::io("write", &file))?;
    }
    let audit = chain.is_some().then(|| verify(audit, out)).transpose()?;
    Ok(Made { bytes, audit })
}

/// The backup in `backup`'s audit log, checked with `audit`'s key against
/// the backup's own head.
fn verify(audit: &AuditConfig, backup: &Path) -> Result<Result<Report, Broken>, BackupError> {
    let chain = Chain::open(&audit.key_file, &backup.join(HEAD)).map_err(BackupError::Chain)?;
    let conn = db::open_read_only(&backup.join(DATABASE))?
        .ok_or_else(|| BackupError::NotABackup(backup.to_path_buf()))?;
    Ok(chain.verify(&conn))
}

/// A backup restored.
#[derive(Debug)]
pub struct Restored {
    /// The backup's audit log, as checked before restoring it.
    pub audit: Report,
    /// The files it replaced, moved aside (the database and the head).
    pub set_aside: Vec<PathBuf>,
}

/// Restores the backup in `backup` as `database` and `audit`'s head file,
/// once its audit log verifies with `audit`'s key. The current database
/// (with its write-ahead log) and head are moved aside, as they are, named
/// `…replaced-TIME`. No host may be running on
/// the data folder (the caller holds its claim).
pub fn restore(
    backup: &Path,
    database: &Path,
    audit: &AuditConfig,
) -> Result<Restored, BackupError> {
    let source = backup.join(DATABASE);
    if !source.is_file() {
        return Err(BackupError::NotABackup(backup.to_path_buf()));
    }
    if !audit.key_file.is_file() {
        return Err(BackupError::NoKey(audit.key_file.clone()));
    }
    let report = verify(audit, backup)?.map_err(|broken| BackupError::Broken {
        path: backup.to_path_buf(),
        broken,
    })?;
    let stamp = crate::audit::now().replace(':', "");
    let mut set_aside = Vec::new();
    if database.is_file() {
        // Moved as they are, never opened (a broken database is why one
        // restores, often): its write-ahead log goes beside it under the
        // name SQLite looks for, `NAME-wal`; the index beside them is
        // rebuilt from the log when needed.
        let aside = move_aside(database, &stamp)?;
        let log = sibling(database, "-wal");
        if log.exists() {
            std::fs::rename(&log, sibling(&aside, "-wal"))
                .map_err(BackupError::io("move aside", &log))?;
        }
        let _ = std::fs::remove_file(sibling(database, "-shm"));
        set_aside.push(aside);
    }
    if audit.head_file.is_file() {
        set_aside.push(move_aside(&audit.head_file, &stamp)?);
    }
    if let Some(dir) = database.parent().filter(|d| !d.as_os_str().is_empty()) {
        files::create_private_dir(dir).map_err(BackupError::io("create", dir))?;
    }
    let partial = database.with_extension("db.restoring");
    std::fs::copy(&source, &partial)
        .and_then(|_| std::fs::File::open(&partial)?.sync_all())
        .and_then(|()| std::fs::rename(&partial, database))
        .map_err(|e| {
            let _ = std::fs::remove_file(&partial);
            BackupError::io("restore", database)(e)
        })?;
    let head = backup.join(HEAD);
    if head.is_file() {
        let text = std::fs::read(&head).map_err(BackupError::io("read", &head))?;
        files::replace(
            &audit.head_file,
            &audit.head_file.with_extension("partial"),
            &text,
            Durability::Rename,
        )
        .map_err(BackupError::io("write", &audit.head_file))?;
    }
    Ok(Restored {
        audit: report,
        set_aside,
    })
}

/// `file`'s name with `suffix` appended (SQLite's `-wal` and `-shm`).
fn sibling(file: &Path, suffix: &str) -> PathBuf {
    let mut name = file.as_os_str().to_os_string();
    name.push(suffix);
    PathBuf::from(name)
}

/// Renames `file` to `FILE.replaced-STAMP` beside it.
fn move_aside(file: &Path, stamp: &str) -> Result<PathBuf, BackupError> {
    let aside = sibling(file, &format!(".replaced-{stamp}"));
    std::fs::rename(file, &aside).map_err(BackupError::io("move aside", file))?;
    Ok(aside)
}
