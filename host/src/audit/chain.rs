//! The audit chain: every row carries an HMAC-SHA256 over the row before's
//! hash and its own fields, keyed with a host key kept outside the database;
//! the chain's head (last sequence number and hash) and its base (where
//! pruning cut it) are kept outside the database too.
//!
//! So: an altered, reordered or inserted row breaks its own hash; a deleted
//! row leaves a gap in the sequence; a truncated tail ends before the head;
//! a chain recomputed with the key still ends on a hash the head does not
//! hold. Writers (the host's, and a command-line tool's when it writes) take
//! an exclusive lock beside the head file for the whole transaction, so two
//! processes never fork the chain.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use hmac::{Hmac, Mac};
use rusqlite::{OptionalExtension, Transaction, params};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use super::{AuditEvent, Decision};
use crate::files::{self, Durability};

type HmacSha256 = Hmac<Sha256>;

/// The chain's end and its start, as recorded outside the database.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Head {
    /// The sequence number of the last row written.
    pub seq: i64,
    /// That row's hash.
    pub hash: String,
    /// The last row pruned away (0 when nothing was pruned).
    pub base_seq: i64,
    /// Its hash: the first remaining row chains from it.
    pub base_hash: String,
}

/// The most audit rows one transaction prunes; a longer prune goes on in
/// the next ones (about 0.1 s and a few tens of MB of write-ahead log each).
pub const PRUNE_CHUNK: usize = if cfg!(test) { 4 } else { 50_000 };

/// The key and head files, and the lock serialising writers.
#[derive(Debug)]
pub struct Chain {
    /// The MAC with the host key already absorbed: each row clones it
    /// rather than keying a new one (two SHA-256 blocks a row saved).
    keyed: HmacSha256,
    head_file: PathBuf,
    lock_file: PathBuf,
    /// The head this chain last wrote.
    written: Mutex<Option<Head>>,
}

/// One stored row, as the chain sees it.
struct Row {
    seq: i64,
    hash: Option<String>,
    decision: String,
    event: AuditEvent,
}

impl Chain {
    /// The chain keyed by `key_file` (created on first use) whose head lives
    /// in `head_file`.
    pub fn open(key_file: &Path, head_file: &Path) -> Result<Chain, String> {
        let key = crate::keyfile::load_or_create(key_file)?;
        if let Some(dir) = head_file.parent().filter(|d| !d.as_os_str().is_empty()) {
            crate::files::create_private_dir(dir)
                .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        }
        // HMAC takes keys of any length: this cannot fail.
        let keyed = <HmacSha256 as Mac>::new_from_slice(&key).unwrap_or_else(|_| unreachable!());
        Ok(Chain {
            keyed,
            lock_file: head_file.with_extension("lock"),
            head_file: head_file.to_path_buf(),
            written: Mutex::new(None),
        })
    }

    /// The head this chain last wrote, if any.
    fn written(&self) -> Option<Head> {
        self.written.lock().ok().and_then(|head| head.clone())
    }

    /// Where the head is kept.
    pub fn head_file(&self) -> &Path {
        &self.head_file
    }

    /// The hash the first row chains from when nothing was pruned.
    pub fn genesis(&self) -> String {
        let mut mac = self.mac();
        mac.update(b"causeway-audit-v1 genesis");
        hex(&mac.finalize().into_bytes())
    }

    fn mac(&self) -> HmacSha256 {
        self.keyed.clone()
    }

    /// What seals this chain's journal lines: the same key, in a domain of
    /// its own.
    pub fn seal(&self) -> super::journal::Seal {
        let mut mac = self.mac();
        mac.update(b"causeway-audit-v1 journal");
        let key = mac.finalize().into_bytes();
        super::journal::Seal::new(&key)
    }

    /// The hash of row `seq` holding `event`, chained from `prev`.
    pub fn row_hash(&self, prev: &str, seq: i64, event: &AuditEvent) -> String {
        self.hash_fields(prev, seq, event, event.decision.name())
    }

    /// As [`Chain::row_hash`], over the decision as stored: a verifier
    /// must hash what is in the row, not what it parses to.
    fn hash_fields(&self, prev: &str, seq: i64, event: &AuditEvent, decision: &str) -> String {
        let mut mac = self.mac();
        mac.update(b"causeway-audit-v1 row");
        mac.update(prev.as_bytes());
        mac.update(&seq.to_be_bytes());
        // Length-prefixed fields: no two rows encode alike.
        for field in [
            &event.time,
            &event.plugin,
            &event.version,
            &event.digest,
            &event.capability,
            &event.action,
            &event.target,
            decision,
            &event.detail,
        ] {
            mac.update(&(field.len() as u64).to_be_bytes());
            mac.update(field.as_bytes());
        }
        match &event.run_id {
            None => mac.update(&[0]),
            Some(run) => {
                mac.update(&[1]);
                mac.update(&(run.len() as u64).to_be_bytes());
                mac.update(run.as_bytes());
            }
        }
        hex(&mac.finalize().into_bytes())
    }

    /// Takes the writers' lock; released when the file is dropped. Without
    /// a lock file (a read-only folder) the caller goes on unlocked: losing
    /// the audit would be worse than risking a fork the verifier reports.
    pub fn lock(&self) -> Option<File> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&self.lock_file)
            .and_then(|file| file.lock().map(|()| file));
        match file {
            Ok(file) => Some(file),
            Err(e) => {
                tracing::warn!(
                    "cannot lock {}: going on without the audit lock: {e}",
                    self.lock_file.display()
                );
                None
            }
        }
    }

    /// The recorded head; `None` when there is no head file yet.
    pub fn read_head(&self) -> Result<Option<Head>, String> {
        match std::fs::read(&self.head_file) {
            Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| {
                format!(
                    "the audit head file {} is unreadable: {e}",
                    self.head_file.display()
                )
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(format!(
                "cannot read the audit head file {}: {e}",
                self.head_file.display()
            )),
        }
    }

    /// Replaces the head file atomically. Its bytes reach the disk before
    /// the rename, so after a power cut the head file is the old head or the
    /// new one, never an empty file.
    pub fn write_head(&self, head: &Head) -> Result<(), String> {
        self.replace_head(head, Durability::Contents)
    }

    fn replace_head(&self, head: &Head, durability: Durability) -> Result<(), String> {
        let partial = self.head_file.with_extension("partial");
        let text = serde_json::to_vec(head).map_err(|e| e.to_string())?;
        files::replace(&self.head_file, &partial, &text, durability).map_err(|e| {
            format!(
                "cannot write the audit head file {}: {e}",
                self.head_file.display()
            )
        })?;
        if let Ok(mut written) = self.written.lock() {
            *written = Some(head.clone());
        }
        Ok(())
    }

    /// Appends `events` to the chain inside `tx`, pruning first the rows
    /// older than `prune_before` (RFC 3339) if asked, at most
    /// [`PRUNE_CHUNK`] of them. Returns the head to record once `tx` has
    /// committed, and whether older rows remain to prune (in the next
    /// transaction).
    ///
    /// The caller holds [`Chain::lock`].
    pub fn append(
        &self,
        tx: &Transaction<'_>,
        events: &[AuditEvent],
        prune_before: Option<&str>,
    ) -> rusqlite::Result<(Head, bool)> {
        let mut notes = Vec::new();
        let last: Option<(i64, Option<String>)> = tx
            .query_row(
                "SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        // The head this chain wrote last is still the head while the log
        // ends on it (any other writer's row, or a deletion, would change
        // the last row): then the file need not be read again.
        let cached = self.written().filter(|h| {
            last.as_ref()
                .is_some_and(|(s, hash)| *s == h.seq && hash.as_deref() == Some(h.hash.as_str()))
        });
        let head = match cached {
            Some(head) => Some(head),
            None => match self.read_head() {
                Ok(head) => head,
                Err(e) => {
                    tracing::error!("{e}: the chain goes on from the database's last row");
                    notes.push(AuditEvent::host(
                        "audit",
                        "head-unreadable",
                        &self.head_file.display().to_string(),
                        Decision::Denied,
                        e,
                    ));
                    None
                }
            },
        };
        let (mut base_seq, mut base_hash) = head
            .as_ref()
            .map(|h| (h.base_seq, h.base_hash.clone()))
            .unwrap_or_else(|| (0, self.genesis()));
        let (mut seq, mut prev) = match (&head, last) {
            (Some(h), Some((s, hash))) if s >= h.seq => (s, hash.unwrap_or_default()),
            // The database ends before the head: rows were deleted. Going
            // on from the head keeps the gap where the verifier sees it.
            (Some(h), _) => (h.seq, h.hash.clone()),
            (None, Some((s, hash))) => {
                if notes.is_empty() {
                    notes.push(AuditEvent::host(
                        "audit",
                        "head-missing",
                        &self.head_file.display().to_string(),
                        Decision::Denied,
                        format!("no head file, yet the log holds rows up to {s}: the chain goes on from there"),
                    ));
                }
                (s, hash.unwrap_or_default())
            }
            (None, None) => (0, self.genesis()),
        };
        let mut more_to_prune = false;
        if let Some(before) = prune_before {
            // A chunk at a time: one transaction deleting months of rows
            // would hold the database from every other writer for minutes
            // and grow the write-ahead log by as much as it deletes. The
            // chunk is a range of `seq`, read by the primary key alone: the
            // rows of the next PRUNE_CHUNK that are older than `before`.
            let first: Option<i64> = tx.query_row(
                "SELECT MIN(seq) FROM audit WHERE seq > ?1",
                [base_seq],
                |r| r.get(0),
            )?;
            let (cut, chunk_end) = match first {
                Some(first) => {
                    let end = first.saturating_add(PRUNE_CHUNK as i64 - 1);
                    let (cut, last): (Option<i64>, Option<i64>) = tx.query_row(
                        "SELECT MAX(CASE WHEN time < ?3 THEN seq END), MAX(seq) FROM audit
                         WHERE seq BETWEEN ?1 AND ?2",
                        params![first, end, before],
                        |r| Ok((r.get(0)?, r.get(1)?)),
                    )?;
                    (cut, last.filter(|&last| last == end))
                }
                None => (None, None),
            };
            let cut: Option<(i64, Option<String>)> = match cut {
                Some(cut) => tx
                    .query_row("SELECT seq, hash FROM audit WHERE seq = ?1", [cut], |r| {
                        Ok((r.get(0)?, r.get(1)?))
                    })
                    .optional()?,
                None => None,
            };
            if let Some((cut, Some(cut_hash))) = cut.filter(|(cut, _)| *cut > base_seq) {
                // The new base goes out (on disk, rename included) before
                // the rows go: a crash or power cut in between leaves rows
                // older than the base, which the verifier skips, never a
                // base the rows do not reach.
                let staged = Head {
                    seq: head.as_ref().map_or(seq, |h| h.seq),
                    hash: head.as_ref().map_or(prev.clone(), |h| h.hash.clone()),
                    base_seq: cut,
                    base_hash: cut_hash.clone(),
                };
                if let Err(e) = self.replace_head(&staged, Durability::Rename) {
                    tracing::error!("{e}: not pruning the audit log");
                } else {
                    // Rows come in time order: when the chunk's last row is
                    // old enough, the next chunk may hold more.
                    more_to_prune = chunk_end == Some(cut);
                    let removed = tx.execute("DELETE FROM audit WHERE seq <= ?1", [cut])?;
                    base_seq = cut;
                    base_hash = cut_hash;
                    notes.push(AuditEvent::host(
                        "audit",
                        "prune",
                        "audit log",
                        Decision::Allowed,
                        format!(
                            "removed {removed} rows up to {cut}, older than {before}; the chain now starts after {cut}"
                        ),
                    ));
                }
            }
        }
        let mut insert = tx.prepare_cached(
            "INSERT INTO audit (seq, time, plugin, version, digest, capability, action, target, decision, detail, run_id, hash)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
        )?;
        for e in notes.iter().chain(events) {
            seq += 1;
            prev = self.row_hash(&prev, seq, e);
            insert.execute(params![
                seq,
                e.time,
                e.plugin,
                e.version,
                e.digest,
                e.capability,
                e.action,
                e.target,
                e.decision.name(),
                e.detail,
                e.run_id,
                prev
            ])?;
        }
        Ok((
            Head {
                seq,
                hash: prev,
                base_seq,
                base_hash,
            },
            more_to_prune,
        ))
    }

    /// Chains rows written before the log was chained (schema 6), once.
    pub fn chain_legacy_rows(&self, tx: &Transaction<'_>) -> rusqlite::Result<Option<Head>> {
        let rows = read_rows(tx, "WHERE hash IS NULL")?;
        let Some(first) = rows.first() else {
            return Ok(None);
        };
        let mut prev: String = tx
            .query_row(
                "SELECT hash FROM audit WHERE seq < ?1 AND hash IS NOT NULL ORDER BY seq DESC LIMIT 1",
                [first.seq],
                |r| r.get(0),
            )
            .optional()?
            .unwrap_or_else(|| self.genesis());
        let mut seq = 0;
        for row in &rows {
            seq = row.seq;
            prev = self.hash_fields(&prev, row.seq, &row.event, &row.decision);
            tx.execute(
                "UPDATE audit SET hash = ?1 WHERE seq = ?2",
                params![prev, row.seq],
            )?;
        }
        Ok(Some(Head {
            seq,
            hash: prev,
            base_seq: 0,
            base_hash: self.genesis(),
        }))
    }

    /// Checks the whole chain in `conn` against the key and the head file.
    pub fn verify(&self, conn: &rusqlite::Connection) -> Result<Report, Broken> {
        let head = self
            .read_head()
            .map_err(|message| Broken { seq: 0, message })?;
        let unreadable = |e: rusqlite::Error| Broken {
            seq: 0,
            message: format!("cannot read the audit log: {e}"),
        };
        // Streamed: a long log is checked without holding it in memory.
        let mut stmt = conn
            .prepare(&format!(
                "SELECT {} FROM audit ORDER BY seq",
                super::query::COLUMNS
            ))
            .map_err(unreadable)?;
        let rows = stmt.query_map([], row_of).map_err(unreadable)?;
        let (mut first_row, mut first_checked) = (None, None);
        let (base_seq, base_hash) = head
            .as_ref()
            .map(|h| (h.base_seq, h.base_hash.clone()))
            .unwrap_or_else(|| (0, self.genesis()));
        let (mut prev_seq, mut prev) = (base_seq, base_hash.clone());
        let mut checked = 0u64;
        for row in rows {
            let row = row.map_err(unreadable)?;
            first_row.get_or_insert(row.seq);
            let broken = |message: String| Broken {
                seq: row.seq,
                message,
            };
            if row.seq < base_seq {
                // Pruning wrote its base and stopped before deleting.
                continue;
            }
            if row.seq == base_seq {
                if row.hash.as_deref() != Some(base_hash.as_str()) {
                    return Err(broken(format!(
                        "row {} is where pruning cut the chain, but its hash is not the one the head file records",
                        row.seq
                    )));
                }
                continue;
            }
            if row.seq != prev_seq + 1 {
                let missing = prev_seq + 1;
                return Err(Broken {
                    seq: missing,
                    message: if row.seq == missing + 1 {
                        format!(
                            "row {missing} is missing (deleted): the next row is {}",
                            row.seq
                        )
                    } else {
                        format!(
                            "rows {missing} to {} are missing (deleted): the next row is {}",
                            row.seq - 1,
                            row.seq
                        )
                    },
                });
            }
            let hash = self.hash_fields(&prev, row.seq, &row.event, &row.decision);
            match &row.hash {
                None => {
                    return Err(broken(format!(
                        "row {} has no chain hash: it was inserted behind the host's back",
                        row.seq
                    )));
                }
                Some(stored) if *stored != hash => {
                    return Err(broken(format!(
                        "row {} does not match its chain hash: it, or the row before it, was altered, reordered or replaced",
                        row.seq
                    )));
                }
                Some(_) => {}
            }
            if let Some(h) = &head
                && h.seq == row.seq
                && h.hash != hash
            {
                return Err(broken(format!(
                    "row {} is where the head file says the chain ends, but its hash differs: the chain was rewritten",
                    row.seq
                )));
            }
            prev_seq = row.seq;
            prev = hash;
            checked += 1;
            first_checked.get_or_insert(row.seq);
        }
        let Some(head) = head else {
            return match first_row {
                None => Ok(Report::default()),
                Some(first) => Err(Broken {
                    seq: first,
                    message: format!(
                        "the audit head file {} is missing, so truncation cannot be ruled out: restore it from a backup",
                        self.head_file.display()
                    ),
                }),
            };
        };
        if prev_seq < head.seq {
            let missing = prev_seq + 1;
            return Err(Broken {
                seq: missing,
                message: if missing == head.seq {
                    format!(
                        "row {missing} is missing: the log ends at {prev_seq} but the head file records {}",
                        head.seq
                    )
                } else {
                    format!(
                        "rows {missing} to {} are missing: the log ends at {prev_seq} but the head file records {}",
                        head.seq, head.seq
                    )
                },
            });
        }
        Ok(Report {
            rows: checked,
            first: first_checked,
            last: (prev_seq > base_seq).then_some(prev_seq),
            head: head.seq,
            after_head: (prev_seq - head.seq).max(0) as u64,
            pruned_through: base_seq,
        })
    }
}

/// What a verification found intact.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Report {
    /// Rows checked.
    pub rows: u64,
    /// The first row's sequence number.
    pub first: Option<i64>,
    /// The last row's.
    pub last: Option<i64>,
    /// Where the head file says the chain ends.
    pub head: i64,
    /// Rows past the head: written since it was read, or by a host that
    /// stopped between committing them and recording the head.
    pub after_head: u64,
    /// The last row pruned away (0: none).
    pub pruned_through: i64,
}

impl Report {
    /// "rows A to B", or "no rows".
    pub fn span(&self) -> String {
        match (self.first, self.last) {
            (Some(first), Some(last)) => format!("rows {first} to {last}"),
            _ => "no rows".into(),
        }
    }
}

/// Where the chain breaks, and how.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("audit log broken at row {seq}: {message}")]
pub struct Broken {
    /// The first bad row (0 when the log could not be read at all).
    pub seq: i64,
    /// What is wrong there.
    pub message: String,
}

fn read_rows(conn: &rusqlite::Connection, filter: &str) -> rusqlite::Result<Vec<Row>> {
    let mut stmt = conn.prepare(&format!(
        "SELECT {} FROM audit {filter} ORDER BY seq",
        super::query::COLUMNS
    ))?;
    stmt.query_map([], row_of)?.collect()
}

fn row_of(r: &rusqlite::Row<'_>) -> rusqlite::Result<Row> {
    let (stored, decision) = super::query::from_row(r)?;
    Ok(Row {
        seq: stored.seq,
        hash: stored.hash,
        decision,
        event: stored.event,
    })
}

/// A MAC's output in lower-case hex (one formatting pass, not one
/// allocation a byte: this runs for every audit row).
fn hex(bytes: &hmac::digest::Output<HmacSha256>) -> String {
    format!("{bytes:x}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::Writer;
    use rusqlite::Connection;

    struct World {
        _dir: tempfile::TempDir,
        db: PathBuf,
        key: PathBuf,
        head: PathBuf,
    }

    impl World {
        /// A log of `n` rows written through the real writer.
        fn with_rows(n: usize) -> World {
            let dir = tempfile::tempdir().unwrap();
            let world = World {
                db: dir.path().join("causeway.db"),
                key: dir.path().join("audit.key"),
                head: dir.path().join("audit.head"),
                _dir: dir,
            };
            world.write(n, "plugin-a");
            world
        }

        fn chain(&self) -> Chain {
            Chain::open(&self.key, &self.head).unwrap()
        }

        fn write(&self, n: usize, plugin: &str) {
            let writer = Writer::start(&self.db, self.chain()).unwrap();
            let handle = writer.handle();
            for i in 0..n {
                let mut event = AuditEvent::host(
                    "http",
                    "GET",
                    "https://a.example/",
                    Decision::Allowed,
                    format!("{i}"),
                );
                event.plugin = plugin.to_string();
                handle.audit(event);
            }
            writer.close();
        }

        fn conn(&self) -> Connection {
            Connection::open(&self.db).unwrap()
        }

        fn verify(&self) -> Result<Report, Broken> {
            self.chain().verify(&self.conn())
        }
    }

    #[test]
    fn an_untouched_log_verifies_and_every_row_is_chained() {
        let world = World::with_rows(5);
        world.write(3, "plugin-b");
        let report = world.verify().unwrap();
        assert_eq!(
            (report.rows, report.first, report.last),
            (8, Some(1), Some(8))
        );
        assert_eq!((report.head, report.after_head), (8, 0));
    }

    #[test]
    fn an_altered_row_is_named() {
        let world = World::with_rows(5);
        world
            .conn()
            .execute("UPDATE audit SET decision = 'denied' WHERE seq = 3", [])
            .unwrap();
        let err = world.verify().unwrap_err();
        assert_eq!(err.seq, 3, "{err}");
        assert!(
            err.message.contains("does not match its chain hash"),
            "{err}"
        );
    }

    #[test]
    fn reordered_rows_are_named() {
        let world = World::with_rows(5);
        let conn = world.conn();
        // Swap rows 2 and 4 whole, hashes included.
        conn.execute_batch(
            "UPDATE audit SET seq = -2 WHERE seq = 2;
             UPDATE audit SET seq = 2 WHERE seq = 4;
             UPDATE audit SET seq = 4 WHERE seq = -2;",
        )
        .unwrap();
        let err = world.verify().unwrap_err();
        assert_eq!(err.seq, 2, "{err}");
    }

    #[test]
    fn a_deleted_row_is_named() {
        let world = World::with_rows(5);
        world
            .conn()
            .execute("DELETE FROM audit WHERE seq = 2", [])
            .unwrap();
        let err = world.verify().unwrap_err();
        assert_eq!(err.seq, 2, "{err}");
        assert!(err.message.contains("row 2 is missing"), "{err}");
        let world = World::with_rows(5);
        world
            .conn()
            .execute("DELETE FROM audit WHERE seq = 1", [])
            .unwrap();
        assert_eq!(world.verify().unwrap_err().seq, 1);
    }

    #[test]
    fn a_truncated_tail_is_named_and_not_papered_over_by_later_writes() {
        let world = World::with_rows(5);
        world
            .conn()
            .execute("DELETE FROM audit WHERE seq >= 4", [])
            .unwrap();
        let err = world.verify().unwrap_err();
        assert_eq!(err.seq, 4, "{err}");
        assert!(err.message.contains("head file records 5"), "{err}");
        // A host writing on after the truncation does not hide it.
        world.write(2, "plugin-a");
        let err = world.verify().unwrap_err();
        assert_eq!(err.seq, 4, "{err}");
    }

    #[test]
    fn a_rows_hash_is_the_documented_hmac_in_lower_case_hex() {
        // Computed here by hand, field by field, and hexed byte by byte as
        // the first chained rows were: rows any build wrote must verify
        // under every later one.
        let dir = tempfile::tempdir().unwrap();
        let key = [7u8; crate::keyfile::KEY_LEN];
        std::fs::write(dir.path().join("k"), key).unwrap();
        let chain = Chain::open(&dir.path().join("k"), &dir.path().join("h")).unwrap();
        let event = AuditEvent {
            time: "2026-11-25T10:00:00.000001Z".into(),
            plugin: "crm-source".into(),
            version: "1.2.0".into(),
            digest: "sha256:00ff".into(),
            capability: "http".into(),
            action: "GET".into(),
            target: "https://api.crm.example/v1/contacts?page=…".into(),
            decision: Decision::Allowed,
            detail: "status 200".into(),
            run_id: Some("run-1".into()),
        };
        let mut mac = <HmacSha256 as Mac>::new_from_slice(&key).unwrap();
        mac.update(b"causeway-audit-v1 row");
        mac.update(b"prev");
        mac.update(&41i64.to_be_bytes());
        for field in [
            "2026-11-25T10:00:00.000001Z",
            "crm-source",
            "1.2.0",
            "sha256:00ff",
            "http",
            "GET",
            "https://api.crm.example/v1/contacts?page=…",
            "allowed",
            "status 200",
        ] {
            mac.update(&(field.len() as u64).to_be_bytes());
            mac.update(field.as_bytes());
        }
        mac.update(&[1]);
        mac.update(&5u64.to_be_bytes());
        mac.update(b"run-1");
        let expected: String = mac
            .finalize()
            .into_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(chain.row_hash("prev", 41, &event), expected);
        assert_eq!(expected.len(), 64);
    }

    #[test]
    fn a_chain_rewritten_with_fresh_hashes_is_detected() {
        // Without the key: the first rewritten row breaks.
        let world = World::with_rows(5);
        let impostor = Chain::open(&world.key.with_extension("other"), &world.head).unwrap();
        rechain(&world.conn(), &impostor, "plugin-evil");
        let err = world.verify().unwrap_err();
        assert_eq!(err.seq, 1, "{err}");
        // With the key itself: the head outside the database still differs.
        let world = World::with_rows(5);
        rechain(&world.conn(), &world.chain(), "plugin-evil");
        let err = world.verify().unwrap_err();
        assert_eq!(err.seq, 5, "{err}");
        assert!(err.message.contains("chain was rewritten"), "{err}");
    }

    /// Rewrites every row's plugin and recomputes every hash with `chain`.
    fn rechain(conn: &Connection, chain: &Chain, plugin: &str) {
        conn.execute("UPDATE audit SET plugin = ?1", [plugin])
            .unwrap();
        let rows = read_rows(conn, "").unwrap();
        let mut prev = chain.genesis();
        for row in rows {
            prev = chain.row_hash(&prev, row.seq, &row.event);
            conn.execute(
                "UPDATE audit SET hash = ?1 WHERE seq = ?2",
                params![prev, row.seq],
            )
            .unwrap();
        }
    }

    #[test]
    fn a_missing_head_file_fails_verification_and_is_recorded_by_the_next_writer() {
        let world = World::with_rows(3);
        std::fs::remove_file(&world.head).unwrap();
        let err = world.verify().unwrap_err();
        assert!(err.message.contains("head file"), "{err}");
        world.write(1, "plugin-a");
        let action: String = world
            .conn()
            .query_row("SELECT action FROM audit WHERE seq = 4", [], |r| r.get(0))
            .unwrap();
        assert_eq!(action, "head-missing");
    }

    #[test]
    fn pruning_is_recorded_and_leaves_the_remainder_verifiable() {
        let world = World::with_rows(5);
        let cutoff = super::super::now();
        world.write(2, "plugin-b");
        let writer = Writer::start(&world.db, world.chain()).unwrap();
        writer.handle().prune_audit(cutoff.clone());
        writer.close();
        let conn = world.conn();
        let (first, count): (i64, i64) = conn
            .query_row("SELECT MIN(seq), COUNT(*) FROM audit", [], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .unwrap();
        assert_eq!(
            (first, count),
            (6, 4),
            "rows 1-5 pruned, 6-7 kept, a prune row added per chunk"
        );
        // PRUNE_CHUNK rows at a time (4 in tests), each chunk recorded; the
        // writer's close waited for the last.
        let details: Vec<String> = conn
            .prepare("SELECT detail FROM audit WHERE action = 'prune' ORDER BY seq")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(details.len(), 2, "{details:?}");
        assert!(details[0].contains("removed 4 rows up to 4"), "{details:?}");
        assert!(details[1].contains("removed 1 rows up to 5"), "{details:?}");
        let report = world.verify().unwrap();
        assert_eq!(
            (report.pruned_through, report.first, report.last),
            (5, Some(6), Some(9))
        );
        // Deleting the first remaining row is still caught.
        conn.execute("DELETE FROM audit WHERE seq = 6", []).unwrap();
        assert_eq!(world.verify().unwrap_err().seq, 6);
    }

    #[test]
    fn rows_from_before_the_chain_are_chained_once_by_the_next_writer() {
        let world = World::with_rows(3);
        let conn = world.conn();
        conn.execute("UPDATE audit SET hash = NULL", []).unwrap();
        std::fs::remove_file(&world.head).unwrap();
        assert!(world.verify().is_err());
        world.write(1, "plugin-a");
        let report = world.verify().unwrap();
        assert_eq!(report.rows, 4);
    }
}
