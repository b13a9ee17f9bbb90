//! The audit journal: every audit event queued for the database's writer
//! is first written, one JSON line, into a file of that writer's own beside
//! the database, so a process killed before the next commit (SIGKILL, the
//! OOM killer) loses none of the capability uses it made. A clean stop
//! removes it. The next writer to start on the database writes what an
//! abandoned journal holds and the log does not (the committed ones found
//! by their time and fields), and records that it did.
//!
//! The file's first [`MAPPED`] bytes are mapped into memory (shared, so the
//! kernel keeps what is copied there whatever becomes of the process): an
//! event is a copy there, not a system call, which takes 1–2 µs on the
//! development machine, where an audited loopback request has a budget of
//! 10% of about 100 µs (performance.md §4). Past the mapping, lines are
//! written to the file. Once the journal holds more than [`CUT_PAST`], the
//! next commit replaces it with one holding the lines of the events still
//! waiting, copied as they are: a file made under a staging name, then
//! given the journal's, so a kill leaves the old or the new. Where the file
//! system can, the two trade names (`RENAME_EXCHANGE`), and the old one,
//! zeroed where it was written, is the next cut's file. A busy host cuts at
//! every commit, so the cut must be cheap: when each one made a new file
//! (its room set aside, mapped, each page faulted in anew, the old one
//! freed) and sealed the waiting events anew, with every capability use
//! waiting on the queue's lock, and the mapping was smaller than one
//! commit's events, each audited use cost about 2.5 µs more (performance.md,
//! Session 36).
//!
//! Each line is sealed ([`Seal`]), so a journal no causeway wrote adds
//! nothing to the log.
//!
//! Nothing is synced: the database's commits are (every 50 ms under load),
//! so a power cut can still lose the last events.
//!
//! Each journal is locked (the kernel's lock, gone with its process) while
//! its writer lives, so a writer starting beside a running one (a command
//! beside the host) leaves the other's journal alone.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, Ordering};

use hmac::{Hmac, Mac};
use rusqlite::{Connection, OptionalExtension, params};
use sha2::Sha256;

use super::AuditEvent;

/// What a journal's name starts with, after the database's file name.
const INFIX: &str = ".audit-pending.";

/// ... and a journal file's while it is made: it takes the journal's name
/// once locked, so no other process ever finds a journal nobody holds
/// that its writer is about to use.
const STAGING_INFIX: &str = ".audit-new.";

/// A staging file this old was left by a process killed while it made a
/// journal.
const STALE_STAGING: std::time::Duration = std::time::Duration::from_secs(600);

/// Journals made by this process so far: each writer's is its own.
static MADE: AtomicU64 = AtomicU64::new(0);

/// How much of a journal is mapped: its file is made this long, the room
/// set aside on disk (twice, once a writer keeps a spare). What a busy
/// host queues between two commits fits: 60,000 events a second of about
/// 500 bytes, for the 50 ms between commits and the commit itself, is
/// some 2.3 MB.
pub const MAPPED: usize = 4 << 20;

/// A journal past this many bytes is cut at the next commit: some five
/// hundred events, which a writer recovering them looks up in a few
/// milliseconds.
pub const CUT_PAST: u64 = 256 << 10;

/// The first [`MAPPED`] bytes of a journal's file, mapped shared.
#[derive(Debug)]
struct Map {
    at: NonNull<u8>,
}

// SAFETY: the mapping is its `Map`'s alone: nothing else holds its address,
// and it is written through `&mut` only.
unsafe impl Send for Map {}

impl Map {
    /// Maps the first [`MAPPED`] bytes of `file`, which is at least that
    /// long.
    fn new(file: &File) -> io::Result<Map> {
        use rustix::mm::{MapFlags, ProtFlags, mmap};
        // SAFETY: a new mapping at an address the kernel picks, aliasing no
        // Rust object; `file` is this writer's own (made by it, locked,
        // owner-only) and never shortened while mapped.
        let at = unsafe {
            mmap(
                std::ptr::null_mut(),
                MAPPED,
                ProtFlags::READ | ProtFlags::WRITE,
                MapFlags::SHARED,
                file,
                0,
            )
        }?;
        NonNull::new(at.cast())
            .map(|at| Map { at })
            .ok_or_else(|| io::Error::other("mmap gave a null address"))
    }

    /// Copies `bytes` to offset `at`; `false` if they do not fit.
    fn write(&mut self, at: u64, bytes: &[u8]) -> bool {
        let Ok(at) = usize::try_from(at) else {
            return false;
        };
        if at.checked_add(bytes.len()).is_none_or(|end| end > MAPPED) {
            return false;
        }
        // SAFETY: `at..at + bytes.len()` is inside the mapping (checked
        // above), which is writable and aliases no Rust object. Only
        // another process shortening the file could make this fault; the
        // file is owner-only and nothing in causeway does.
        unsafe {
            std::ptr::copy_nonoverlapping(bytes.as_ptr(), self.at.as_ptr().add(at), bytes.len());
        }
        true
    }

    /// Zeroes its first `len` bytes (all of it, if `len` is past its end).
    fn zero(&mut self, len: u64) {
        let len = usize::try_from(len).map_or(MAPPED, |len| len.min(MAPPED));
        // SAFETY: `0..len` is inside the mapping, which is writable and
        // aliases no Rust object (as in `write`).
        unsafe { std::ptr::write_bytes(self.at.as_ptr(), 0, len) };
    }
}

impl Drop for Map {
    fn drop(&mut self) {
        // SAFETY: the mapping `new` made, unmapped once, after its last use.
        let _ = unsafe { rustix::mm::munmap(self.at.as_ptr().cast(), MAPPED) };
    }
}

/// One writer's journal.
#[derive(Debug)]
pub struct Journal {
    path: PathBuf,
    file: File,
    /// Its first bytes, mapped; `None` where the file system cannot set
    /// them aside or map them (then every line is written).
    map: Option<Map>,
    /// Where the next line goes: the length of what it holds.
    len: u64,
    /// Where the lines of the events being committed end ([`Journal::mark`]).
    marked: u64,
    /// The last append or cut failed (a full disk): said once, not at every
    /// event.
    failing: bool,
    /// The journal before the last cut, zeroed, under the staging name
    /// and locked: the next cut's file.
    spare: Option<(File, Map)>,
}

impl Journal {
    /// A new, empty journal for the database at `db`, locked.
    pub fn create(db: &Path) -> io::Result<Journal> {
        let path = unused(db);
        let (file, map) = fresh(&path)?;
        Ok(Journal {
            path,
            file,
            map,
            len: 0,
            marked: 0,
            failing: false,
            spare: None,
        })
    }

    /// Writes `line` ([`Seal::line`]) after the last.
    pub fn append(&mut self, line: &[u8]) {
        let mapped = self
            .map
            .as_mut()
            .is_some_and(|map| map.write(self.len, line));
        let written = match mapped {
            true => Ok(()),
            false => self.file.write_all_at(line, self.len),
        };
        if written.is_ok() {
            self.len += line.len() as u64;
        }
        self.said(
            written,
            "write to",
            "audit events wait in memory only, so a process killed before the next commit loses them",
        );
    }

    /// Marks the end of the lines of the events a commit takes: those
    /// after it are the events still waiting once it is done.
    pub fn mark(&mut self) {
        self.marked = self.len;
    }

    /// Once past [`CUT_PAST`], cuts the journal back to its lines after the
    /// [mark](Journal::mark), the events the last commit did not take:
    /// replaced whole (a new file given its name), so a process killed
    /// meanwhile leaves the old journal or the new one. Their lines are
    /// copied as they are: sealing them anew cost a busy host's writer
    /// about a microsecond a line, with every capability use waiting.
    pub fn cut(&mut self) {
        if self.len <= CUT_PAST {
            return;
        }
        let cut = self.replace();
        self.said(
            cut,
            "cut",
            "it holds every event since, and grows until a cut succeeds",
        );
    }

    fn replace(&mut self) -> io::Result<()> {
        let waiting = self.len.saturating_sub(self.marked);
        let mut lines = vec![0; usize::try_from(waiting).map_err(io::Error::other)?];
        self.file.read_exact_at(&mut lines, self.marked)?;
        let staged = staging(&self.path);
        let (file, mut map) = match self.spare.take() {
            Some((file, map)) => (file, Some(map)),
            None => made_at(&staged, &self.path)?,
        };
        let filled = match map.as_mut().is_some_and(|map| map.write(0, &lines)) {
            true => Ok(()),
            false => file.write_all_at(&lines, 0),
        };
        // Traded where the file system can (and where there is a mapping
        // to zero): the old journal stays, under the staging name.
        let traded = filled.is_ok()
            && self.map.is_some()
            && map.is_some()
            && rustix::fs::renameat_with(
                rustix::fs::CWD,
                &staged,
                rustix::fs::CWD,
                &self.path,
                rustix::fs::RenameFlags::EXCHANGE,
            )
            .is_ok();
        if !traded && let Err(e) = filled.and_then(|()| std::fs::rename(&staged, &self.path)) {
            let _ = std::fs::remove_file(&staged);
            return Err(e);
        }
        let old_map = std::mem::replace(&mut self.map, map);
        let old_file = std::mem::replace(&mut self.file, file);
        let old_len = std::mem::replace(&mut self.len, lines.len() as u64);
        self.marked = 0;
        if traded {
            self.spare = spare(old_file, old_map, old_len);
            if self.spare.is_none() {
                let _ = std::fs::remove_file(&staged);
            }
        } else {
            // The old mapping goes before its file: then its lock.
            drop(old_map);
            drop(old_file);
        }
        Ok(())
    }

    /// Removes the journal: everything in it is committed.
    pub fn remove(self) {
        remove(&self.path);
    }

    /// Says once that `what` failed, and `meaning` what it means; and
    /// once that it works again.
    fn said(&mut self, done: io::Result<()>, what: &str, meaning: &str) {
        match done {
            Ok(()) if self.failing => {
                self.failing = false;
                tracing::info!("the audit journal {} is written again", self.path.display());
            }
            Ok(()) => {}
            Err(e) if !self.failing => {
                self.failing = true;
                tracing::error!(
                    "cannot {what} the audit journal {}: {e}; {meaning}",
                    self.path.display()
                );
            }
            Err(_) => {}
        }
    }
}

impl Drop for Journal {
    /// The spare goes with its writer (a journal still holding events
    /// stays for the next writer; the spare holds none).
    fn drop(&mut self) {
        if self.spare.take().is_some() {
            remove(&staging(&self.path));
        }
    }
}

/// What seals a journal's lines: an HMAC under a key derived from the audit
/// chain's ([`super::Chain::seal`]). Whoever may write the data folder but
/// not read the key (kept elsewhere: `[audit] key-file`) cannot slip a use
/// that never happened into the log through a journal: a line without its
/// seal is counted, not written.
#[derive(Clone)]
pub struct Seal(Hmac<Sha256>);

impl std::fmt::Debug for Seal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Seal(..)")
    }
}

impl Seal {
    /// The seal keyed by `key`.
    pub fn new(key: &[u8]) -> Seal {
        // HMAC takes keys of any length: this cannot fail.
        Seal(<Hmac<Sha256> as Mac>::new_from_slice(key).unwrap_or_else(|_| unreachable!()))
    }

    /// `event` as a journal holds it, `JSON<TAB>seal<LF>` (JSON text holds
    /// no raw tab): made before the queue is locked, so capability calls
    /// wait on each other for the copy alone.
    pub fn line(&self, event: &AuditEvent) -> Vec<u8> {
        let mut line = serde_json::to_vec(event).unwrap_or_default();
        let tag = self.tag(&line);
        line.push(b'\t');
        line.extend(tag.as_bytes());
        line.push(b'\n');
        line
    }

    /// The JSON of a sealed `line` (without its end), if its seal holds.
    /// (Compared as text, not in constant time: whoever writes a journal
    /// learns only, at the next start, how many of its lines were left out.)
    fn open<'a>(&self, line: &'a [u8]) -> Option<&'a [u8]> {
        let tab = line.iter().rposition(|b| *b == b'\t')?;
        let (json, tag) = (&line[..tab], &line[tab + 1..]);
        (tag == self.tag(json).as_bytes()).then_some(json)
    }

    /// The seal of `json`, in lower-case hex.
    fn tag(&self, json: &[u8]) -> String {
        let mut mac = self.0.clone();
        mac.update(json);
        format!("{:x}", mac.finalize().into_bytes())
    }
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
    /// Lines without the seal of this audit key: not causeway's, or of
    /// another key. Left out.
    pub unsealed: usize,
    /// Held open and locked until the events are safe elsewhere.
    file: File,
}

impl Abandoned {
    /// Removes the journal, once its events are in another.
    pub fn remove(self) {
        remove(&self.path);
        drop(self.file);
    }
}

/// Removes the journal at `path`; a failure is only logged (the next
/// writer skips what the log already holds).
fn remove(path: &Path) {
    if let Err(e) = std::fs::remove_file(path) {
        tracing::warn!("cannot remove the audit journal {}: {e}", path.display());
    }
}

/// The journals beside the database at `db` whose writers are gone, with
/// the events the database, read through `conn`, does not hold. One that
/// cannot be read is left where it is, with a warning.
pub fn abandoned(db: &Path, conn: &Connection, seal: &Seal) -> Vec<Abandoned> {
    let (Some(dir), Some(name)) = (db.parent(), db.file_name()) else {
        return Vec::new();
    };
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    let prefix = format!("{}{INFIX}", name.to_string_lossy());
    let staging = format!("{}{STAGING_INFIX}", name.to_string_lossy());
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut found = Vec::new();
    let mut staged = Vec::new();
    for entry in entries.flatten() {
        let file_name = entry.file_name().to_string_lossy().into_owned();
        if let Some(tag) = file_name.strip_prefix(&staging) {
            staged.push((entry, tag.to_string()));
            continue;
        }
        if !file_name.starts_with(&prefix) {
            continue;
        }
        let path = entry.path();
        match read_abandoned(&path, conn, seal) {
            Ok(Some(abandoned)) => found.push(abandoned),
            Ok(None) => {}
            Err(e) => tracing::warn!(
                "cannot read the audit journal {}: {e}; its events are not recovered",
                path.display()
            ),
        }
    }
    // Left by a kill while a journal was made (or replaced: the journal it
    // was to replace is whole), or by a writer gone (the journal its last
    // cut replaced): nothing of it is needed. A living writer holds its
    // own locked, as the next cut's file. One not held is removed at once
    // beside its writer's abandoned journal, or else once stale (it may be
    // a journal in the making, not locked yet).
    for (entry, tag) in staged {
        let journal = sibling(db, INFIX, &tag);
        let orphaned = found.iter().any(|a| a.path == journal);
        let stale = || {
            entry
                .metadata()
                .and_then(|m| m.modified())
                .is_ok_and(|at| at.elapsed().is_ok_and(|age| age > STALE_STAGING))
        };
        if (orphaned || stale())
            && let Ok(Some(_unheld)) = try_open_locked(&entry.path())
        {
            let _ = std::fs::remove_file(entry.path());
        }
    }
    found.sort_by(|a, b| a.path.cmp(&b.path));
    found
}

/// `path`'s events the database lacks, unless a living writer holds it.
fn read_abandoned(path: &Path, conn: &Connection, seal: &Seal) -> io::Result<Option<Abandoned>> {
    let Some(file) = try_open_locked(path)? else {
        return Ok(None);
    };
    let mut events = Vec::new();
    let (mut unreadable, mut unsealed) = (0, 0);
    let bytes = std::fs::read(path)?;
    // Lines, then what follows the last: the zeros of the mapping nothing
    // was written to yet, after a line the kill cut short, if it did.
    let mut lines: Vec<&[u8]> = bytes.split(|b| *b == b'\n').collect();
    if lines
        .pop()
        .map(trim_zeros)
        .is_some_and(|cut| !cut.is_empty())
    {
        unreadable += 1;
    }
    for line in lines.into_iter().filter(|line| !line.is_empty()) {
        let Some(json) = seal.open(line) else {
            unsealed += 1;
            continue;
        };
        match serde_json::from_slice::<AuditEvent>(json) {
            // Committed before the kill came (the journal is cut only now
            // and then): written already.
            Ok(event) if written(conn, &event).map_err(io::Error::other)? => {}
            Ok(event) => events.push(event),
            Err(_) => unreadable += 1,
        }
    }
    Ok(Some(Abandoned {
        path: path.to_path_buf(),
        events,
        unreadable,
        unsealed,
        file,
    }))
}

/// `line` without the zeros it ends with.
fn trim_zeros(line: &[u8]) -> &[u8] {
    let end = line.iter().rposition(|b| *b != 0).map_or(0, |i| i + 1);
    &line[..end]
}

/// Whether the audit log holds `event`: the same use by the same build at
/// the same microsecond.
fn written(conn: &Connection, event: &AuditEvent) -> rusqlite::Result<bool> {
    conn.query_row(
        "SELECT 1 FROM audit WHERE time = ?1 AND plugin = ?2 AND digest = ?3
             AND capability = ?4 AND action = ?5 AND target = ?6 AND decision = ?7
             AND detail = ?8 LIMIT 1",
        params![
            event.time,
            event.plugin,
            event.digest,
            event.capability,
            event.action,
            event.target,
            event.decision.name(),
            event.detail
        ],
        |_| Ok(()),
    )
    .optional()
    .map(|found| found.is_some())
}

/// The file `{db's name}{infix}{tag}` beside the database at `db`.
fn sibling(db: &Path, infix: &str, tag: &str) -> PathBuf {
    let name = db
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    db.with_file_name(format!("{name}{infix}{tag}"))
}

/// A journal name beside the database at `db` that no file has, nor its
/// staging name: `PID-N`, N this process's next. A process of the same PID
/// may have left one (a container's host has the same PID at every start):
/// taking its name would replace a killed host's journal before the writer
/// reads it.
fn unused(db: &Path) -> PathBuf {
    let free = |path: &Path| {
        std::fs::symlink_metadata(path).is_err_and(|e| e.kind() == io::ErrorKind::NotFound)
    };
    let mut tries = 0;
    loop {
        let made = MADE.fetch_add(1, Ordering::Relaxed);
        let path = sibling(db, INFIX, &format!("{}-{made}", std::process::id()));
        tries += 1;
        // Past a thousand, the folder cannot be read: making the file will
        // say why.
        if (free(&path) && free(&staging(&path))) || tries > 1000 {
            return path;
        }
    }
}

/// The staging name of the journal at `path`.
fn staging(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(name.replacen(INFIX, STAGING_INFIX, 1))
}

/// A new, empty journal file at `path` (in place of the one there, if
/// any), locked, and its first [`MAPPED`] bytes set aside on disk and
/// mapped (where the file system can). It is made under the staging name
/// and locked first, so no other process takes it for a journal its
/// writer left.
fn fresh(path: &Path) -> io::Result<(File, Option<Map>)> {
    let staged = staging(path);
    let made = made_at(&staged, path)?;
    if let Err(e) = std::fs::rename(&staged, path) {
        let _ = std::fs::remove_file(&staged);
        return Err(e);
    }
    Ok(made)
}

/// The journal before a cut, given the staging name by the trade, as the
/// next cut's file: zeroed where it was written, and cut back to its
/// mapping. `None` where it cannot be (no mapping, or not shortened).
fn spare(file: File, map: Option<Map>, len: u64) -> Option<(File, Map)> {
    let mut map = map?;
    map.zero(len);
    if len > MAPPED as u64 && file.set_len(MAPPED as u64).is_err() {
        return None;
    }
    Some((file, map))
}

/// A new, empty file at `staged`, locked, for the journal at `path` (which
/// the warning names), its room set aside and mapped where it can be.
fn made_at(staged: &Path, path: &Path) -> io::Result<(File, Option<Map>)> {
    let made = made_unremoved(staged, path);
    if made.is_err() {
        let _ = std::fs::remove_file(staged);
    }
    made
}

fn made_unremoved(staged: &Path, path: &Path) -> io::Result<(File, Option<Map>)> {
    let file = options().create(true).open(staged)?;
    file.lock()?;
    file.set_len(0)?;
    // Set aside, not sparse: a page of a sparse file that a full disk has
    // no room for would fault the process that copies into it (SIGBUS).
    // Without the room, each line is written, and a full disk is an error.
    let map = rustix::fs::fallocate(&file, rustix::fs::FallocateFlags::empty(), 0, MAPPED as u64)
        .map_err(io::Error::from)
        .and_then(|()| Map::new(&file))
        .inspect_err(|e| {
            tracing::warn!(
                "cannot map the audit journal {}: {e}; each event is written to it instead",
                path.display()
            );
        })
        .ok();
    Ok((file, map))
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
    // Not `append`: lines go at offsets (an appending file ignores them).
    options.read(true).write(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::{Chain, Decision};
    use crate::db::Writer;

    fn seal() -> Seal {
        Seal::new(b"a test key")
    }

    fn line(event: &AuditEvent) -> Vec<u8> {
        seal().line(event)
    }

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

    /// The events in the journal at `path`, as a recovering writer reads
    /// them (every line must be one).
    fn lines(path: &Path) -> Vec<AuditEvent> {
        std::fs::read(path)
            .unwrap()
            .split(|b| *b == b'\n')
            .map(trim_zeros)
            .filter(|l| !l.is_empty())
            .map(|l| serde_json::from_slice(seal().open(l).unwrap()).unwrap())
            .collect()
    }

    #[test]
    fn lines_past_the_mapping_and_without_one_are_written_to_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("causeway.db");
        for mapped in [true, false] {
            let mut journal = Journal::create(&db).unwrap();
            assert!(journal.map.is_some());
            if !mapped {
                journal.map = None;
            }
            let filler = event(&"f".repeat(1000));
            let mut written = Vec::new();
            // Nothing cuts it: a database refusing writes.
            while journal.len <= MAPPED as u64 + 5000 {
                journal.append(&line(&filler));
                written.push(filler.clone());
            }
            assert_eq!(lines(&journal.path), written, "mapped: {mapped}");
            assert!(!journal.failing);
            journal.remove();
        }
    }

    #[test]
    fn a_cut_keeps_only_the_events_still_waiting() {
        let dir = tempfile::tempdir().unwrap();
        let mut journal = Journal::create(&dir.path().join("causeway.db")).unwrap();
        let (a, b, c) = (event("a"), event("b"), event("c"));
        for e in [&a, &b] {
            journal.append(&line(e));
        }
        // A commit takes a and b; c comes while it runs.
        journal.mark();
        journal.append(&line(&c));
        assert_eq!(lines(&journal.path), [a.clone(), b.clone(), c.clone()]);
        // Short, it is left as it is: a writer recovering it skips what
        // the log holds.
        journal.cut();
        assert_eq!(lines(&journal.path), [a, b, c.clone()]);
        // Past its size, it is cut: to c and what came after the mark.
        let filler = event(&"f".repeat(1000));
        while journal.len <= CUT_PAST {
            journal.append(&line(&filler));
        }
        journal.mark();
        let d = event("d");
        journal.append(&line(&d));
        journal.cut();
        assert_eq!(lines(&journal.path), std::slice::from_ref(&d));
        journal.mark();
        journal.cut();
        assert_eq!(lines(&journal.path).len(), 1, "short again: kept");
        // Cut again and again, the two files trade names, each zeroed
        // before it is written again (a line longer than the next would
        // leave its end behind); past the mapping too.
        for (round, size) in [(0, 1000), (1, 10), (2, 3000), (3, 10)] {
            let filler = event(&"f".repeat(size));
            let cap = if round == 2 {
                MAPPED as u64 + 5000
            } else {
                CUT_PAST
            };
            while journal.len <= cap {
                journal.append(&line(&filler));
            }
            journal.mark();
            let e = event(&format!("e{round}"));
            journal.append(&line(&e));
            journal.cut();
            assert_eq!(lines(&journal.path), [e], "round {round}");
            assert!(journal.spare.is_some(), "round {round}");
        }
        journal.mark();
        journal.cut();
        let d = event("d");
        journal.append(&line(&d));
        assert_eq!(lines(&journal.path).last(), Some(&d));
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
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            0,
            "the journal and its spare are gone"
        );
    }

    #[test]
    fn a_new_journal_never_takes_the_name_of_one_a_process_of_the_same_pid_left() {
        // A container's host has the same PID at every start: the journals
        // (and spares) its killed predecessors left must not be replaced
        // before the writer reads them.
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("causeway.db");
        let pid = std::process::id();
        let next = MADE.load(Ordering::Relaxed);
        let mut left = Vec::new();
        for made in 0..next + 200 {
            let infix = if made % 2 == 0 { INFIX } else { STAGING_INFIX };
            let path = sibling(&db, infix, &format!("{pid}-{made}"));
            std::fs::write(&path, "left\n").unwrap();
            left.push(path);
        }
        let journal = Journal::create(&db).unwrap();
        assert!(!left.contains(&journal.path), "{}", journal.path.display());
        assert!(!left.contains(&staging(&journal.path)));
        for path in &left {
            assert_eq!(
                std::fs::read(path).unwrap(),
                b"left\n",
                "{}",
                path.display()
            );
        }
    }

    #[test]
    fn a_living_writers_spare_is_left_alone_however_old() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("causeway.db");
        let mut journal = Journal::create(&db).unwrap();
        let filler = event(&"f".repeat(1000));
        while journal.len <= CUT_PAST {
            journal.append(&line(&filler));
        }
        journal.mark();
        journal.cut();
        let spare = staging(&journal.path);
        let stale = std::time::SystemTime::now() - STALE_STAGING * 2;
        File::options()
            .write(true)
            .open(&spare)
            .unwrap()
            .set_modified(stale)
            .unwrap();
        let conn = crate::db::open(&db).unwrap();
        assert!(abandoned(&db, &conn, &seal()).is_empty());
        assert!(spare.exists(), "held by its writer, the next cut's file");
        drop(journal);
        assert!(!spare.exists(), "gone with its writer");

        // A writer killed after a cut leaves its journal and its spare:
        // the spare goes at once, the journal is read.
        let mut journal = Journal::create(&db).unwrap();
        while journal.len <= CUT_PAST {
            journal.append(&line(&filler));
        }
        journal.mark();
        journal.append(&line(&event("waiting")));
        journal.cut();
        let path = journal.path.clone();
        let (spare, held) = (staging(&path), journal.spare.take());
        assert!(held.is_some() && spare.exists());
        drop((journal, held));
        let found = abandoned(&db, &conn, &seal());
        assert!(!spare.exists(), "a killed writer's spare is removed");
        let killed = found.iter().find(|f| f.path == path).unwrap();
        let targets: Vec<&str> = killed.events.iter().map(|e| e.target.as_str()).collect();
        assert_eq!(targets, ["waiting"]);
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

        let sealed = chain().seal();
        let mut journal = Journal::create(&db).unwrap();
        for e in [&committed, &event("a"), &event("b")] {
            journal.append(&sealed.line(e));
        }
        // Lines causeway did not seal with this key: not written.
        journal.append(&line(&event("sealed by another key")));
        journal.append(b"{\"forged\": true}\n");
        journal.append(&sealed.line(&event("c")));
        let conn = crate::db::open(&db).unwrap();
        // A living writer's journal is left alone.
        assert!(abandoned(&db, &conn, &sealed).is_empty());
        // The kill: a line is cut short, and the lock goes with the process.
        journal.append(br#"{"time":"2026-"#);
        let path = journal.path.clone();
        drop(journal);
        // And a journal it was making: left alone while it may be in the
        // making, removed once stale.
        let staged = sibling(&db, STAGING_INFIX, "1-0");
        std::fs::write(&staged, "x").unwrap();
        assert!(abandoned(&db, &conn, &sealed).len() == 1 && staged.exists());
        let stale = std::time::SystemTime::now() - STALE_STAGING * 2;
        File::options()
            .write(true)
            .open(&staged)
            .unwrap()
            .set_modified(stale)
            .unwrap();
        let found = abandoned(&db, &conn, &sealed);
        assert_eq!(found.len(), 1);
        let targets: Vec<&str> = found[0].events.iter().map(|e| e.target.as_str()).collect();
        assert_eq!(targets, ["a", "b", "c"]);
        assert_eq!((found[0].unreadable, found[0].unsealed), (1, 2));
        assert!(!staged.exists(), "a stale staging file is removed");
        drop((found, conn));

        let writer = Writer::start(&db, chain()).unwrap();
        writer.close();
        let conn = crate::db::open(&db).unwrap();
        let rows: Vec<(String, String, String, String)> = conn
            .prepare("SELECT action, target, decision, detail FROM audit ORDER BY seq")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        let targets: Vec<&str> = rows.iter().map(|r| r.1.as_str()).collect();
        assert_eq!(targets[..4], ["committed", "a", "b", "c"]);
        let (action, target, decision, detail) = &rows[4];
        assert_eq!(
            (action.as_str(), target.as_str(), decision.as_str()),
            ("recovered", &*path.display().to_string(), "denied")
        );
        assert!(
            detail.starts_with("3 audit events a process that ended before committing them left")
                && detail.contains("cut short by the kill): 1;")
                && detail.contains("lines without the seal of this audit key, left out")
                && detail.ends_with(": 2"),
            "{detail}"
        );
        assert_eq!(rows.len(), 5, "{rows:#?}");
        assert!(chain().verify(&conn).is_ok());
        assert_eq!(journals(dir.path()), Vec::<String>::new());
    }
}
