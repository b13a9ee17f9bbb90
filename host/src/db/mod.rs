//! The one SQLite database in the data directory: opened and migrated here
//! (`migrations`: versioned, run at open; a database from a newer
//! Causeway is refused rather than misread), written by one [`Writer`]
//! thread (`writer`). Readers open their own connections (WAL lets them
//! read while the writer writes).

mod migrations;
mod writer;

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};

pub use migrations::SCHEMA_VERSION;
#[cfg(test)]
pub(crate) use writer::cap_pages;
pub use writer::{
    AUDIT_COMMIT_SPACING, AUDIT_LINGER, AuditedJob, MAX_QUEUED_AUDIT_EVENTS, WRITE_RETRY, Writer,
    WriterHandle, WriterStats,
};

/// Why the database cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// The file or its folder cannot be opened or created.
    #[error("cannot open the database {path}: {message}")]
    Open {
        /// The database file.
        path: PathBuf,
        /// What failed.
        message: String,
    },
    /// The database was written by a newer Causeway.
    #[error(
        "the database {path} has schema version {found}, newer than this causeway supports ({supported}): run a newer causeway, or point data-dir elsewhere"
    )]
    NewerSchema {
        /// The database file.
        path: PathBuf,
        /// Its version.
        found: i64,
        /// The newest this build knows.
        supported: i64,
    },
    /// A query failed.
    #[error("database error: {0}")]
    Sqlite(rusqlite::Error),
    /// The writer thread is gone.
    #[error("the database writer has stopped")]
    WriterGone,
    /// The transaction a job ran in did not commit.
    #[error("the database did not commit: {0}")]
    NotCommitted(String),
}

// Not `#[from]`: that would also make the error its source, and the
// message, which already carries it, would print it twice.
impl From<rusqlite::Error> for DbError {
    fn from(e: rusqlite::Error) -> Self {
        DbError::Sqlite(e)
    }
}

/// Opens (creating if needed) and migrates the database at `path`.
pub fn open(path: &Path) -> Result<Connection, DbError> {
    let open_error = |message: String| DbError::Open {
        path: path.to_path_buf(),
        message,
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        crate::files::create_private_dir(dir).map_err(|e| open_error(e.to_string()))?;
    }
    let mut conn = Connection::open(path).map_err(|e| open_error(e.to_string()))?;
    conn.busy_timeout(Duration::from_secs(5))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    // FULL syncs the WAL at every commit. NORMAL survives a killed process
    // but not a power cut, and a commit here can be a webhook delivery its
    // sender was already told we have (2xx), or the audit rows the head
    // file is written after: both must still be there after a reboot. The
    // writer batches commits, so this is one sync per batch.
    conn.pragma_update(None, "synchronous", "FULL")?;
    migrate(&mut conn, path)?;
    Ok(conn)
}

/// Opens an existing database read-only, if there is one; it must not be newer.
pub fn open_read_only(path: &Path) -> Result<Option<Connection>, DbError> {
    if !path.is_file() {
        return Ok(None);
    }
    let conn =
        Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY).map_err(|e| {
            DbError::Open {
                path: path.to_path_buf(),
                message: e.to_string(),
            }
        })?;
    conn.busy_timeout(Duration::from_secs(5))?;
    schema_version(&conn, path)?;
    Ok(Some(conn))
}

/// The database's schema version; one newer than this build is an error.
fn schema_version(conn: &Connection, path: &Path) -> Result<i64, DbError> {
    let found: i64 = conn.pragma_query_value(None, "user_version", |row| row.get(0))?;
    if found > SCHEMA_VERSION {
        return Err(DbError::NewerSchema {
            path: path.to_path_buf(),
            found,
            supported: SCHEMA_VERSION,
        });
    }
    Ok(found)
}

fn migrate(conn: &mut Connection, path: &Path) -> Result<(), DbError> {
    let found = schema_version(conn, path)?;
    for (version, sql) in migrations::MIGRATIONS
        .iter()
        .enumerate()
        .skip(found.max(0) as usize)
    {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", version as i64 + 1)?;
        tx.commit()?;
    }
    Ok(())
}

/// A plugin's state as the running host records it.
#[derive(Debug, Clone, PartialEq)]
pub struct PluginRow {
    /// The plugin file.
    pub file: String,
    /// The plugin name (the file stem when unknown).
    pub name: String,
    /// The version, when known.
    pub version: Option<String>,
    /// The digest, when known.
    pub digest: Option<String>,
    /// The worlds, comma-separated.
    pub worlds: String,
    /// `active`, `pending-approval` or `failed`.
    pub state: String,
    /// Why it is not active.
    pub error: Option<String>,
    /// What it requests that is not granted, one per line.
    pub not_granted: String,
}

/// The listen address of the host running on this database, if one is.
pub fn running_host(conn: &Connection) -> Option<String> {
    let (pid, listen): (u32, String) = conn
        .query_row(
            "SELECT pid, listen FROM host_status WHERE id = 1 AND stopped_at IS NULL",
            [],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )
        .ok()?;
    // A host killed without a clean stop leaves its row: trust it only while
    // that process still exists.
    Path::new(&format!("/proc/{pid}"))
        .exists()
        .then_some(listen)
}

/// The plugin states recorded by a running host, if one is running.
pub fn running_host_states(path: &Path) -> Result<Option<Vec<PluginRow>>, DbError> {
    let Some(conn) = open_read_only(path)? else {
        return Ok(None);
    };
    if running_host(&conn).is_none() {
        return Ok(None);
    }
    let mut stmt = conn.prepare("SELECT file, name, version, digest, worlds, state, error, not_granted FROM plugin_state ORDER BY name, file")?;
    let rows = stmt
        .query_map([], |row| {
            Ok(PluginRow {
                file: row.get(0)?,
                name: row.get(1)?,
                version: row.get(2)?,
                digest: row.get(3)?,
                worlds: row.get(4)?,
                state: row.get(5)?,
                error: row.get(6)?,
                not_granted: row.get(7)?,
            })
        })?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Some(rows))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fresh_database_is_migrated_to_the_current_version() {
        let dir = tempfile::tempdir().unwrap();
        let conn = open(&dir.path().join("x/causeway.db")).unwrap();
        let version: i64 = conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        assert_eq!(version, SCHEMA_VERSION);
    }

    #[test]
    fn every_commit_is_synced_to_disk() {
        // 2 is FULL: NORMAL (1) loses the last commits on a power cut, and
        // with them webhook deliveries already answered 2xx.
        let dir = tempfile::tempdir().unwrap();
        let conn = open(&dir.path().join("causeway.db")).unwrap();
        let synchronous: i64 = conn
            .pragma_query_value(None, "synchronous", |r| r.get(0))
            .unwrap();
        assert_eq!(synchronous, 2);
    }

    #[test]
    fn a_newer_schema_is_refused_with_what_to_do() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("causeway.db");
        Connection::open(&path)
            .unwrap()
            .pragma_update(None, "user_version", 999)
            .unwrap();
        let err = open(&path).unwrap_err().to_string();
        assert!(
            err.contains("schema version 999, newer than this causeway supports"),
            "{err}"
        );
    }
}
