//! The audit journal: every audit event queued for the database's writer
//! is first appended, one JSON line, to a file of that writer's own beside
//! the database, so a process killed before the next commit (SIGKILL, the
//! OOM killer) loses none of the capability uses it made. After each
//! commit the file is cut back to the events still waiting; a clean stop
//! removes it. The next writer to start on the database writes what an
//! abandoned journal holds and the log does not, and records that it did.
//!
//! A line reaches the kernel before the use goes on, but is not synced:
//! the database's commits are what is synced (every 50 ms under load), so
//! a power cut can still lose the last of them.
//!
//! Each journal is locked (the kernel's lock, gone with its process) while
//! its writer lives, so a writer starting beside a running one (a command
//! beside the host) leaves the other's journal alone.

use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use rusqlite::{Connection, OptionalExtension, params};

use super::AuditEvent;

/// What a journal's name starts with, after the database's file name.
const INFIX: &str = ".audit-pending.";

/// Journals made by this process so far: each writer's is its own.
static MADE: AtomicU64 = AtomicU64::new(0);

/// One writer's journal.
#[derive(Debug)]
pub struct Journal {
    path: PathBuf,
    file: File,
    /// The last append or cut failed (a full disk): said once, not at every
    /// event.
    failing: bool,
}

impl Journal {
    /// A new, empty journal for the database at `db`, locked.
    pub fn create(db: &Path) -> io::Result<Journal> {
        let made = MADE.fetch_add(1, Ordering::Relaxed);
        let path = sibling(db, &format!("{}-{made}", std::process::id()));
        let file = open_locked(&path)?;
        file.set_len(0)?;
        Ok(Journal {
            path,
            file,
            failing: false,
        })
    }

    /// Appends `line` ([`line`]), in one write.
    pub fn append(&mut self, line: &[u8]) {
        let written = self.file.write_all(line);
        self.said(written, "append to");
    }

    /// Cuts the journal back to `waiting`, the events not yet committed:
    /// replaced whole (a new file renamed over it), so a process killed
    /// meanwhile leaves the old journal or the new one.
    pub fn cut_to(&mut self, waiting: &[AuditEvent]) {
        let cut = if waiting.is_empty() {
            self.file.set_len(0)
        } else {
            self.replace(waiting)
        };
        self.said(cut, "cut");
    }

    fn replace(&mut self, waiting: &[AuditEvent]) -> io::Result<()> {
        let mut partial = self.path.clone().into_os_string();
        partial.push(".partial");
        let partial = PathBuf::from(partial);
        let mut file = open_locked(&partial)?;
        file.set_len(0)?;
        let mut lines = Vec::new();
        for event in waiting {
            lines.extend(line(event));
        }
        let replaced = file
            .write_all(&lines)
            .and_then(|()| std::fs::rename(&partial, &self.path));
        if replaced.is_err() {
            let _ = std::fs::remove_file(&partial);
        }
        replaced?;
        self.file = file;
        Ok(())
    }

    /// Removes the journal: everything in it is committed.
    pub fn remove(self) {
        if let Err(e) = std::fs::remove_file(&self.path) {
            tracing::warn!(
                "cannot remove the audit journal {}: {e}",
                self.path.display()
            );
        }
    }

    fn said(&mut self, done: io::Result<()>, what: &str) {
        match done {
            Ok(()) if self.failing => {
                self.failing = false;
                tracing::info!("the audit journal {} is written again", self.path.display());
            }
            Ok(()) => {}
            Err(e) if !self.failing => {
                self.failing = true;
                tracing::error!(
                    "cannot {what} the audit journal {}: {e}; audit events wait in memory only, \
                     so a process killed before the next commit loses them",
                    self.path.display()
                );
            }
            Err(_) => {}
        }
    }
}

/// `event` as a journal holds it: made before the queue is locked, so
/// capability calls wait on each other for the write alone.
pub fn line(event: &AuditEvent) -> Vec<u8> {
    let mut line = serde_json::to_vec(event).unwrap_or_default();
    line.push(b'\n');
    line
}

/// Events a journal left by a process that ended without committing them.
#[derive(Debug)]
pub struct Abandoned {
    /// The journal.
    pub path: PathBuf,
    /// Its events the database does not hold, in order.
    pub events: Vec<AuditEvent>,
    /// Lines that were not an event (the last one, cut by the kill).
    pub unreadable: usize,
    /// Held open and locked until the events are safe elsewhere.
    file: File,
}

impl Abandoned {
    /// Removes the journal, once its events are in another.
    pub fn remove(self) {
        if let Err(e) = std::fs::remove_file(&self.path) {
            tracing::warn!(
                "cannot remove the audit journal {}: {e}",
                self.path.display()
            );
        }
        drop(self.file);
    }
}

/// The journals beside the database at `db` whose writers are gone, with
/// the events the database, read through `conn`, does not hold. One that
/// cannot be read is left where it is, with a warning.
pub fn abandoned(db: &Path, conn: &Connection) -> Vec<Abandoned> {
    let (Some(dir), Some(name)) = (db.parent(), db.file_name()) else {
        return Vec::new();
    };
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    let prefix = format!("{}{INFIX}", name.to_string_lossy());
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut found = Vec::new();
    for entry in entries.flatten() {
        let file_name = entry.file_name().to_string_lossy().into_owned();
        if !file_name.starts_with(&prefix) {
            continue;
        }
        let path = entry.path();
        // A partial left by a kill mid-cut: its journal is whole beside it.
        if file_name.ends_with(".partial") {
            if try_open_locked(&path).ok().flatten().is_some() {
                let _ = std::fs::remove_file(&path);
            }
            continue;
        }
        match read_abandoned(&path, conn) {
            Ok(Some(abandoned)) => found.push(abandoned),
            Ok(None) => {}
            Err(e) => tracing::warn!(
                "cannot read the audit journal {}: {e}; its events are not recovered",
                path.display()
            ),
        }
    }
    found.sort_by(|a, b| a.path.cmp(&b.path));
    found
}

/// `path`'s events the database lacks, unless a living writer holds it.
fn read_abandoned(path: &Path, conn: &Connection) -> io::Result<Option<Abandoned>> {
    let Some(file) = try_open_locked(path)? else {
        return Ok(None);
    };
    let mut events = Vec::new();
    let mut unreadable = 0;
    for line in io::BufReader::new(&file).lines() {
        match serde_json::from_str::<AuditEvent>(&line?) {
            Ok(event) => {
                // Committed just before the kill cut the journal: written.
                if !written(conn, &event).map_err(io::Error::other)? {
                    events.push(event);
                }
            }
            Err(_) => unreadable += 1,
        }
    }
    Ok(Some(Abandoned {
        path: path.to_path_buf(),
        events,
        unreadable,
        file,
    }))
}

/// Whether the audit log holds `event`: the same use at the same
/// microsecond.
fn written(conn: &Connection, event: &AuditEvent) -> rusqlite::Result<bool> {
    conn.query_row(
        "SELECT 1 FROM audit WHERE time = ?1 AND plugin = ?2 AND capability = ?3
             AND action = ?4 AND target = ?5 AND detail = ?6 LIMIT 1",
        params![
            event.time,
            event.plugin,
            event.capability,
            event.action,
            event.target,
            event.detail
        ],
        |_| Ok(()),
    )
    .optional()
    .map(|found| found.is_some())
}

/// The journal named `tag` for the database at `db`.
fn sibling(db: &Path, tag: &str) -> PathBuf {
    let name = db
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    db.with_file_name(format!("{name}{INFIX}{tag}"))
}

/// Opens `path` (made owner-only if new) and locks it.
fn open_locked(path: &Path) -> io::Result<File> {
    let file = options().create(true).open(path)?;
    file.lock()?;
    Ok(file)
}

/// Opens `path` and locks it, unless another process holds it (`None`).
fn try_open_locked(path: &Path) -> io::Result<Option<File>> {
    let file = options().open(path)?;
    match file.try_lock() {
        Ok(()) => Ok(Some(file)),
        Err(std::fs::TryLockError::WouldBlock) => Ok(None),
        Err(std::fs::TryLockError::Error(e)) => Err(e),
    }
}

fn options() -> OpenOptions {
    let mut options = OpenOptions::new();
    options.read(true).append(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::{Chain, Decision};
    use crate::db::Writer;

    fn event(target: &str) -> AuditEvent {
        AuditEvent::host("api", "test", target, Decision::Allowed, "d".into())
    }

    fn journals(dir: &Path) -> Vec<String> {
        std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|name| name.contains(INFIX))
            .collect()
    }

    fn lines(path: &Path) -> Vec<AuditEvent> {
        std::fs::read_to_string(path)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    #[test]
    fn a_cut_keeps_only_the_events_still_waiting() {
        let dir = tempfile::tempdir().unwrap();
        let mut journal = Journal::create(&dir.path().join("causeway.db")).unwrap();
        let (a, b, c) = (event("a"), event("b"), event("c"));
        for e in [&a, &b, &c] {
            journal.append(&line(e));
        }
        assert_eq!(lines(&journal.path), [a, b, c.clone()]);
        journal.cut_to(std::slice::from_ref(&c));
        assert_eq!(lines(&journal.path), [c]);
        journal.cut_to(&[]);
        assert_eq!(lines(&journal.path), []);
        let d = event("d");
        journal.append(&line(&d));
        assert_eq!(lines(&journal.path), [d]);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&journal.path)
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        assert_eq!(journals(dir.path()).len(), 1);
        journal.remove();
        assert_eq!(journals(dir.path()), Vec::<String>::new());
    }

    #[test]
    fn a_journal_left_by_a_killed_process_is_written_by_the_next_writer_and_removed() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("causeway.db");
        let chain = || Chain::open(&dir.path().join("k"), &dir.path().join("h")).unwrap();
        // Committed, and still in the journal: the kill came before the cut.
        let committed = event("committed");
        let writer = Writer::start(&db, chain()).unwrap();
        writer.handle().audit(committed.clone());
        writer.close();
        assert_eq!(journals(dir.path()), Vec::<String>::new(), "a clean stop");

        let mut journal = Journal::create(&db).unwrap();
        for e in [&committed, &event("a"), &event("b")] {
            journal.append(&line(e));
        }
        let conn = crate::db::open(&db).unwrap();
        // A living writer's journal is left alone.
        assert!(abandoned(&db, &conn).is_empty());
        // The kill: the lock goes with the process, and a line is cut short.
        let path = journal.path.clone();
        drop(journal);
        let mut file = OpenOptions::new().append(true).open(&path).unwrap();
        file.write_all(br#"{"time":"2026-"#).unwrap();
        // And a partial of a cut it was making.
        std::fs::write(format!("{}.partial", path.display()), "x").unwrap();
        let found = abandoned(&db, &conn);
        assert_eq!(found.len(), 1);
        let targets: Vec<&str> = found[0].events.iter().map(|e| e.target.as_str()).collect();
        assert_eq!(targets, ["a", "b"]);
        assert_eq!(found[0].unreadable, 1);
        assert_eq!(journals(dir.path()).len(), 1, "the partial is removed");
        drop((found, conn));

        let writer = Writer::start(&db, chain()).unwrap();
        writer.close();
        let conn = crate::db::open(&db).unwrap();
        let rows: Vec<(String, String, String)> = conn
            .prepare("SELECT action, target, detail FROM audit ORDER BY seq")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        let targets: Vec<&str> = rows.iter().map(|r| r.1.as_str()).collect();
        assert_eq!(targets[..3], ["committed", "a", "b"]);
        let (action, target, detail) = &rows[3];
        assert_eq!(
            (action.as_str(), target.as_str()),
            ("recovered", &*path.display().to_string())
        );
        assert!(
            detail.starts_with("2 audit events a process that ended before committing them left")
                && detail.ends_with("cut short by the kill): 1"),
            "{detail}"
        );
        assert_eq!(rows.len(), 4, "{rows:#?}");
        assert!(chain().verify(&conn).is_ok());
        assert_eq!(journals(dir.path()), Vec::<String>::new());
    }
}
