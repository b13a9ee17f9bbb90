//! The single writer: a thread owning the write connection, which drains
//! everything queued and commits it in one transaction, chaining the audit
//! events that came meanwhile. Guest calls never block the async runtime on
//! SQLite, and writes are batched.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rusqlite::{Connection, TransactionBehavior, params};

use super::{DbError, PluginRow, open};
use crate::audit::journal::{self, Journal, Seal};
use crate::audit::{AuditEvent, Chain, Decision, Head};

/// Delivers a job's answer once its transaction's fate is known.
type Deliver = Box<dyn FnOnce(Result<(), String>) + Send>;

/// Work run by the writer inside its current transaction.
type Job = Box<dyn FnOnce(&mut rusqlite::Transaction<'_>) -> Deliver + Send>;

/// Work whose outcome is audit events, chained in the same transaction.
pub type AuditedJob =
    Box<dyn FnOnce(&rusqlite::Connection) -> rusqlite::Result<Vec<AuditEvent>> + Send>;

/// One write for the writer thread.
enum Write {
    /// Audit events wait in the [`AuditQueue`]; this wakes the writer for
    /// the first of them.
    AuditsWaiting,
    Audited(AuditedJob),
    Prune(String),
    PluginStates(Vec<PluginRow>),
    HostStarted {
        pid: u32,
        listen: String,
    },
    HostStopped,
    Job(Job),
    Flush(mpsc::Sender<()>),
}

/// How long audit events alone wait for more before they commit, when the
/// writer has been quiet. Nobody waits on an audit event, and every commit
/// is synced to disk (the WAL and the chain's head file): committing after
/// every event or two would spend the machine on syncing.
pub const AUDIT_LINGER: Duration = Duration::from_millis(5);

/// The least time from one commit to the next when that next one carries
/// only audit events. A busy host (an audited HTTP request every 100 µs)
/// then syncs twenty times a second, not two hundred: on a two-core machine
/// an audited loopback request cost 5–10 points more (against plain
/// reqwest) with commits 5 ms apart than with 50 ms (docs/performance.md
/// §4). A write somebody waits on (a job, a flush) never waits for this,
/// and takes the waiting events with it.
pub const AUDIT_COMMIT_SPACING: Duration = Duration::from_millis(50);

/// Audit events on their way to the writer. They wait beside the writer's
/// queue, not in it: only the first of a batch wakes the writer, so the
/// capability that records an event (on every HTTP request, every storage
/// call) never pays for waking a thread.
type AuditQueue = Arc<Mutex<Pending>>;

/// Audit events not committed yet, and the journal that holds them too
/// until they are, so a killed process loses none ([`Journal`]).
#[derive(Debug, Default)]
struct Pending {
    events: Vec<AuditEvent>,
    /// `None` where no journal could be made: the events wait in memory
    /// only, as the log said.
    journal: Option<Journal>,
}

impl Pending {
    /// The events waiting, taken for a commit (the journal marks where
    /// their lines end).
    fn take(&mut self) -> Vec<AuditEvent> {
        if let Some(journal) = &mut self.journal {
            journal.mark();
        }
        std::mem::take(&mut self.events)
    }

    /// Cuts the journal back to the events still waiting: those the last
    /// [`Pending::take`] took are committed.
    fn committed(&mut self) {
        if let Some(journal) = &mut self.journal {
            journal.cut();
        }
    }
}

/// The single writer: a thread owning the write connection.
pub struct Writer {
    queue: mpsc::Sender<Write>,
    audits: AuditQueue,
    seal: Arc<Seal>,
    thread: Option<JoinHandle<()>>,
    stats: Arc<WriterStats>,
}

/// A cheap, cloneable handle to queue writes.
#[derive(Clone)]
pub struct WriterHandle {
    queue: mpsc::Sender<Write>,
    audits: AuditQueue,
    /// Seals the journal's lines, outside the queue's lock.
    seal: Arc<Seal>,
    stats: Arc<WriterStats>,
}

/// Audit events that may wait for the database at once. Only a database
/// refusing writes for long fills the queue (a writer keeping up holds a
/// few dozen); past it, events are counted rather than held, so the host
/// is not killed for its memory with all of them, and the count goes into
/// the log once it is written again. Tens of MB of events.
pub const MAX_QUEUED_AUDIT_EVENTS: usize = 100_000;

/// What the writer has committed since it started (`/metrics`), and
/// whether it is failing (`/healthz`).
#[derive(Debug, Default)]
pub struct WriterStats {
    commits: AtomicU64,
    audit_events: AtomicU64,
    /// Audit events counted, not queued: the queue was full.
    dropped: AtomicU64,
    /// Since when audit events wait to be written again, and why.
    failing: Mutex<Option<(String, String)>>,
}

impl WriterStats {
    /// While audit events from a refused commit wait to be written again:
    /// since when (RFC 3339) and the database's error.
    pub fn failing(&self) -> Option<(String, String)> {
        self.failing
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn set_failing(&self, error: Option<&str>) {
        let mut failing = self.failing.lock().unwrap_or_else(|p| p.into_inner());
        match error {
            None => *failing = None,
            Some(e) => {
                let since = failing
                    .take()
                    .map_or_else(crate::audit::now, |(since, _)| since);
                *failing = Some((since, e.to_string()));
            }
        }
    }

    /// Transactions committed.
    pub fn commits(&self) -> u64 {
        self.commits.load(Ordering::Relaxed)
    }

    /// Audit events committed into the chain.
    pub fn audit_events(&self) -> u64 {
        self.audit_events.load(Ordering::Relaxed)
    }
}

impl Writer {
    /// A writer on a database in a new temporary folder (which holds the
    /// audit key and head too), and the database's path: for unit tests.
    #[cfg(test)]
    pub(crate) fn temporary() -> (tempfile::TempDir, std::path::PathBuf, Writer) {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("db");
        let chain = Chain::open(&dir.path().join("k"), &dir.path().join("h")).unwrap();
        let writer = Writer::start(&db, chain).unwrap();
        (dir, db, writer)
    }

    /// Opens the database at `path` and starts the writer thread, which
    /// chains audit rows with `chain`.
    pub fn start(path: &Path, chain: Chain) -> Result<Writer, DbError> {
        let mut conn = open(path)?;
        chain_legacy_rows(&mut conn, &chain)?;
        let seal = chain.seal();
        let journal = Journal::create(path)
            .inspect_err(|e| {
                tracing::error!(
                    "cannot make an audit journal beside {}: {e}; audit events wait in memory only \
                     until they are committed, so a process killed meanwhile loses them",
                    path.display()
                );
            })
            .ok();
        // Only with a journal of its own to take them into.
        let abandoned = match journal {
            Some(_) => journal::abandoned(path, &conn, &seal),
            None => Vec::new(),
        };
        let (queue, jobs) = mpsc::channel();
        let stats = Arc::new(WriterStats::default());
        let audits = Arc::new(Mutex::new(Pending {
            events: Vec::new(),
            journal,
        }));
        let (counted, waiting) = (stats.clone(), audits.clone());
        let thread = std::thread::Builder::new()
            .name("causeway-db-writer".into())
            .spawn(move || write_loop(conn, chain, jobs, &waiting, &counted))
            .map_err(|e| DbError::Open {
                path: path.to_path_buf(),
                message: format!("cannot start the writer thread: {e}"),
            })?;
        let writer = Writer {
            queue,
            audits,
            seal: Arc::new(seal),
            thread: Some(thread),
            stats,
        };
        writer.recover(abandoned);
        Ok(writer)
    }

    /// Queues the events journals of writers gone before committing them
    /// left (into this writer's journal, so they are safe there), and a
    /// row saying so; then removes those journals.
    fn recover(&self, abandoned: Vec<journal::Abandoned>) {
        let handle = self.handle();
        for journal in abandoned {
            if journal.events.is_empty() && journal.unreadable == 0 && journal.unsealed == 0 {
                journal.remove();
                continue;
            }
            let recovered = journal.events.len();
            let mut detail = format!(
                "{recovered} audit events a process that ended before committing them left in its journal, written now"
            );
            if journal.unreadable > 0 {
                detail.push_str(&format!(
                    "; lines not an event (the last one cut short by the kill): {}",
                    journal.unreadable
                ));
            }
            if journal.unsealed > 0 {
                detail.push_str(&format!(
                    "; lines without the seal of this audit key, left out (not written by causeway: look into who could write {}): {}",
                    journal.path.display(),
                    journal.unsealed
                ));
                tracing::error!("{}: {detail}", journal.path.display());
            } else {
                tracing::warn!("{}: {detail}", journal.path.display());
            }
            let target = journal.path.display().to_string();
            for event in journal.events.iter().cloned() {
                handle.audit(event);
            }
            // Lines forged, or sealed by another key, stand out as denied.
            let decision = match journal.unsealed {
                0 => Decision::Allowed,
                _ => Decision::Denied,
            };
            handle.audit(AuditEvent::host(
                "audit",
                "recovered",
                &target,
                decision,
                detail,
            ));
            journal.remove();
        }
    }

    /// A handle for queueing writes.
    pub fn handle(&self) -> WriterHandle {
        WriterHandle {
            queue: self.queue.clone(),
            audits: self.audits.clone(),
            seal: self.seal.clone(),
            stats: self.stats.clone(),
        }
    }

    /// Writes everything queued so far and stops the thread.
    pub fn close(mut self) {
        self.stop();
    }

    /// Waits until everything queued is committed. The thread itself ends
    /// when the last handle is dropped.
    fn stop(&mut self) {
        if self.thread.take().is_some() {
            let (done, wait) = mpsc::channel();
            if self.queue.send(Write::Flush(done)).is_ok() {
                let _ = wait.recv();
            }
            // Everything is committed: a clean stop leaves no journal.
            // (A use recorded after this, through a handle still held,
            // waits in memory only.)
            let mut pending = self.audits.lock().unwrap_or_else(|p| p.into_inner());
            if pending.events.is_empty()
                && let Some(journal) = pending.journal.take()
            {
                journal.remove();
            }
        }
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.stop();
    }
}

impl WriterHandle {
    /// What the writer has committed.
    pub fn stats(&self) -> &WriterStats {
        &self.stats
    }

    /// Queues an audit event. Past [`MAX_QUEUED_AUDIT_EVENTS`] waiting (a
    /// database refusing writes for long) it is counted instead, and the
    /// count is recorded once the log is written again.
    pub fn audit(&self, event: AuditEvent) {
        let line = self.seal.line(&event);
        let first = {
            let mut audits = self.audits.lock().unwrap_or_else(|p| p.into_inner());
            if audits.events.len() >= MAX_QUEUED_AUDIT_EVENTS {
                self.stats.dropped.fetch_add(1, Ordering::Relaxed);
                return;
            }
            if let Some(journal) = &mut audits.journal {
                journal.append(&line);
            }
            audits.events.push(event);
            audits.events.len() == 1
        };
        if first && self.queue.send(Write::AuditsWaiting).is_err() {
            // Still in the journal: the next writer to start writes them.
            let lost =
                std::mem::take(&mut self.audits.lock().unwrap_or_else(|p| p.into_inner()).events);
            tracing::error!(
                ?lost,
                "audit events not written: the database writer has stopped"
            );
        }
    }

    /// Runs `job` in the next transaction and chains the events it returns
    /// into the audit log; if it fails, none of its writes stay.
    pub fn audited(&self, job: AuditedJob) {
        let _ = self.queue.send(Write::Audited(job));
    }

    /// Prunes audit rows older than `before` (RFC 3339), recording the
    /// pruning in the log itself.
    pub fn prune_audit(&self, before: String) {
        let _ = self.queue.send(Write::Prune(before));
    }

    /// Replaces the recorded plugin states.
    pub fn plugin_states(&self, rows: Vec<PluginRow>) {
        let _ = self.queue.send(Write::PluginStates(rows));
    }

    /// Records that a host started.
    pub fn host_started(&self, pid: u32, listen: String) {
        let _ = self.queue.send(Write::HostStarted { pid, listen });
    }

    /// Records that the host stopped.
    pub fn host_stopped(&self) {
        let _ = self.queue.send(Write::HostStopped);
    }

    /// Runs `work` in the writer's next transaction, in a savepoint of its
    /// own: if `work` fails, none of its writes stay. The answer comes only
    /// once the transaction has committed, so an `Ok` is durable.
    pub async fn transact<T, E, F>(&self, work: F) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<DbError> + From<rusqlite::Error> + Send + 'static,
        F: FnOnce(&rusqlite::Connection) -> Result<T, E> + Send + 'static,
    {
        let (answer, wait) = tokio::sync::oneshot::channel::<Result<T, E>>();
        let job: Job = Box::new(move |tx: &mut rusqlite::Transaction<'_>| {
            let outcome = match tx.savepoint() {
                Err(e) => Err(E::from(e)),
                Ok(savepoint) => match work(&savepoint) {
                    Ok(value) => savepoint.commit().map(|()| value).map_err(E::from),
                    // Dropping the savepoint rolls its writes back.
                    Err(e) => Err(e),
                },
            };
            Box::new(move |committed: Result<(), String>| {
                let _ = answer.send(match committed {
                    Ok(()) => outcome,
                    Err(message) => Err(E::from(DbError::NotCommitted(message))),
                });
            })
        });
        self.queue
            .send(Write::Job(job))
            .map_err(|_| E::from(DbError::WriterGone))?;
        wait.await.map_err(|_| E::from(DbError::WriterGone))?
    }

    /// Waits until everything queued before this call is committed.
    pub async fn flush(&self) -> Result<(), DbError> {
        let (done, wait) = mpsc::channel();
        self.queue
            .send(Write::Flush(done))
            .map_err(|_| DbError::WriterGone)?;
        tokio::task::spawn_blocking(move || wait.recv())
            .await
            .map_err(|_| DbError::WriterGone)?
            .map_err(|_| DbError::WriterGone)
    }
}

/// Chains rows a writer from before schema 6 left unchained.
fn chain_legacy_rows(conn: &mut Connection, chain: &Chain) -> Result<(), DbError> {
    let _lock = chain.lock();
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let head = chain.chain_legacy_rows(&tx)?;
    tx.commit()?;
    if let Some(head) = head
        && let Err(e) = chain.write_head(&head)
    {
        tracing::error!("{e}");
    }
    Ok(())
}

/// How long after a failed commit the writer tries the audit events it
/// put back again, if nothing else comes first.
pub const WRITE_RETRY: Duration = Duration::from_secs(1);

fn write_loop(
    mut conn: Connection,
    chain: Chain,
    jobs: mpsc::Receiver<Write>,
    audits: &Mutex<Pending>,
    stats: &WriterStats,
) {
    let mut last_commit = None;
    // Set while audit events from a failed commit wait to be tried again.
    let mut retry_at: Option<Instant> = None;
    let mut last_try = false;
    // A prune with more chunks to go, for the next batch; the flushes that
    // wait for its end.
    let mut pruning: Option<String> = None;
    let mut held_flushes = Vec::new();
    loop {
        let first = match (pruning.take(), retry_at) {
            (Some(before), _) => Write::Prune(before),
            (None, None) => match jobs.recv() {
                Ok(first) => first,
                Err(_) => return,
            },
            (None, Some(at)) => {
                match jobs.recv_timeout(at.saturating_duration_since(Instant::now())) {
                    Ok(first) => first,
                    Err(mpsc::RecvTimeoutError::Timeout) => Write::AuditsWaiting,
                    // The last handle is gone: one last try for them.
                    Err(mpsc::RecvTimeoutError::Disconnected) => {
                        last_try = true;
                        Write::AuditsWaiting
                    }
                }
            }
        };
        let mut batch = vec![first];
        batch.extend(jobs.try_iter());
        linger(&jobs, &mut batch, last_commit);
        // Every event recorded before anything in the batch was sent.
        let mut events = audits.lock().unwrap_or_else(|p| p.into_inner()).take();
        let dropped = stats.dropped.swap(0, Ordering::Relaxed);
        if dropped > 0 {
            events.push(dropped_event(dropped));
        }
        let mut flushes = Vec::new();
        let mut answers = Vec::new();
        let audited = batch
            .iter()
            .any(|w| matches!(w, Write::Audited(_) | Write::Prune(_)))
            || !events.is_empty();
        // Other processes append to the chain too (a command-line tool):
        // the lock, held from before the transaction reads the chain's end
        // until the head is recorded, keeps them from forking it.
        let lock = audited.then(|| chain.lock());
        let committed = write_batch(&mut conn, &chain, events, batch, &mut flushes, &mut answers);
        if let Ok((Some(head), _, _)) = &committed
            && let Err(e) = chain.write_head(head)
        {
            tracing::error!("{e}");
        }
        drop(lock);
        let committed = match committed {
            Ok((_, events, more)) => {
                pruning = more;
                if retry_at.take().is_some() {
                    stats.set_failing(None);
                    tracing::info!("the audit events that waited are written");
                }
                if events > 0 {
                    audits.lock().unwrap_or_else(|p| p.into_inner()).committed();
                }
                last_commit = Some(Instant::now());
                stats.commits.fetch_add(1, Ordering::Relaxed);
                stats
                    .audit_events
                    .fetch_add(events as u64, Ordering::Relaxed);
                Ok(())
            }
            Err((e, mut unwritten)) => {
                tracing::error!("database write failed: {e}");
                // The count goes back to the count, not into the queue.
                if dropped > 0 {
                    unwritten.pop();
                    stats.dropped.fetch_add(dropped, Ordering::Relaxed);
                }
                // A full disk or a failing one: the capability uses stay
                // queued, ahead of those recorded since, and are tried
                // again, rather than lost from the audit log.
                if !unwritten.is_empty() {
                    tracing::error!(
                        "{} audit events wait to be written again in {WRITE_RETRY:?}",
                        unwritten.len()
                    );
                    let mut pending = audits.lock().unwrap_or_else(|p| p.into_inner());
                    let queue = &mut pending.events;
                    let mut since = std::mem::replace(queue, unwritten);
                    // The oldest stay; what is past the cap is counted.
                    let room = MAX_QUEUED_AUDIT_EVENTS.saturating_sub(queue.len());
                    if since.len() > room {
                        let over = since.len() - room;
                        since.truncate(room);
                        stats.dropped.fetch_add(over as u64, Ordering::Relaxed);
                    }
                    queue.extend(since);
                    retry_at = Some(Instant::now() + WRITE_RETRY);
                    stats.set_failing(Some(&e.to_string()));
                }
                Err(e.to_string())
            }
        };
        for answer in answers {
            answer(committed.clone());
        }
        // A flush waits for what was queued before it: a prune, to its end.
        held_flushes.extend(flushes);
        if pruning.is_none() {
            for done in held_flushes.drain(..) {
                let _ = done.send(());
            }
        }
        if last_try && retry_at.is_some() {
            let lost = audits
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .events
                .len();
            tracing::error!(
                "{lost} audit events not written: the database could not be written when the writer stopped; they stay in its journal, for the next writer to start on this database"
            );
            return;
        }
    }
}

/// Caps the database at `pages` (its size now: `None`): a write past it
/// fails with SQLITE_FULL, as on a full disk. For tests.
#[cfg(test)]
pub(crate) fn cap_pages(conn: &Connection, pages: Option<i64>) -> rusqlite::Result<()> {
    let now: i64 = conn.pragma_query_value(None, "page_count", |r| r.get(0))?;
    conn.pragma_update(None, "max_page_count", pages.unwrap_or(now))
}

/// The audit row that says `dropped` events were counted, not recorded.
fn dropped_event(dropped: u64) -> AuditEvent {
    AuditEvent::host(
        "audit",
        "dropped",
        "audit log",
        crate::audit::Decision::Denied,
        format!(
            "{dropped} audit events were counted, not recorded: {MAX_QUEUED_AUDIT_EVENTS} already waited for a database that refused writes"
        ),
    )
}

/// When `batch` only says audit events are waiting, waits for more: for
/// [`AUDIT_LINGER`], and at least until [`AUDIT_COMMIT_SPACING`] has passed
/// since the `last` commit. A write somebody waits on ends the wait at once.
/// The events themselves do not wake the writer meanwhile.
fn linger(jobs: &mpsc::Receiver<Write>, batch: &mut Vec<Write>, last: Option<Instant>) {
    if !batch.iter().all(|w| matches!(w, Write::AuditsWaiting)) {
        return;
    }
    // Time is up, or every handle is gone: commit what there is.
    if let Ok(next) = jobs.recv_timeout(audit_wait(Instant::now(), last)) {
        batch.push(next);
        batch.extend(jobs.try_iter());
    }
}

/// How long audit events alone wait at `now`, the last commit being `last`.
fn audit_wait(now: Instant, last: Option<Instant>) -> Duration {
    let until = last.map_or(now, |last| last + AUDIT_COMMIT_SPACING);
    until.saturating_duration_since(now).max(AUDIT_LINGER)
}

/// What a committed batch did: the chain's new head, if the batch touched
/// the audit log; how many audit events it chained; and the prune to go on
/// with in the next batch, if it left older rows.
type Committed = (Option<Head>, usize, Option<String>);

/// Writes one batch in one transaction ([`Committed`]). If it fails, the
/// queued `events` come back, to be tried again (the events of an audited
/// job went with its writes).
fn write_batch(
    conn: &mut Connection,
    chain: &Chain,
    mut events: Vec<AuditEvent>,
    batch: Vec<Write>,
    flushes: &mut Vec<mpsc::Sender<()>>,
    answers: &mut Vec<Deliver>,
) -> Result<Committed, (rusqlite::Error, Vec<AuditEvent>)> {
    let queued = events.len();
    write_batch_in(conn, chain, &mut events, batch, flushes, answers).map_err(|e| {
        events.truncate(queued);
        (e, events)
    })
}

/// [`write_batch`]'s transaction; job-made events are added to `events`.
fn write_batch_in(
    conn: &mut Connection,
    chain: &Chain,
    events: &mut Vec<AuditEvent>,
    batch: Vec<Write>,
    flushes: &mut Vec<mpsc::Sender<()>>,
    answers: &mut Vec<Deliver>,
) -> Result<Committed, rusqlite::Error> {
    let mut tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let mut audited = !events.is_empty();
    let mut prune: Option<String> = None;
    for write in batch {
        match write {
            // Its events came in `events`.
            Write::AuditsWaiting => {}
            Write::Audited(job) => {
                audited = true;
                let savepoint = tx.savepoint()?;
                match job(&savepoint) {
                    Ok(more) => {
                        savepoint.commit()?;
                        events.extend(more);
                    }
                    // Dropping the savepoint rolls its writes back.
                    Err(e) => tracing::error!("an audited write failed: {e}"),
                }
            }
            Write::Prune(before) => {
                audited = true;
                prune = Some(prune.map_or(before.clone(), |p| p.max(before)));
            }
            Write::PluginStates(rows) => {
                tx.execute("DELETE FROM plugin_state", [])?;
                let now = crate::audit::now();
                for r in rows {
                    tx.prepare_cached(
                        "INSERT INTO plugin_state (file, name, version, digest, worlds, state, error, not_granted, updated_at)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                    )?
                    .execute(params![r.file, r.name, r.version, r.digest, r.worlds, r.state, r.error, r.not_granted, now])?;
                }
            }
            Write::HostStarted { pid, listen } => {
                tx.execute(
                    "INSERT OR REPLACE INTO host_status (id, pid, listen, started_at, stopped_at) VALUES (1, ?1, ?2, ?3, NULL)",
                    params![pid, listen, crate::audit::now()],
                )?;
            }
            Write::HostStopped => {
                tx.execute(
                    "UPDATE host_status SET stopped_at = ?1 WHERE id = 1",
                    params![crate::audit::now()],
                )?;
            }
            Write::Job(job) => answers.push(job(&mut tx)),
            Write::Flush(done) => flushes.push(done),
        }
    }
    let chained = events.len();
    let (head, more) = if audited {
        let (head, more) = chain.append(&tx, events, prune.as_deref())?;
        (Some(head), prune.filter(|_| more))
    } else {
        (None, None)
    };
    tx.commit()?;
    Ok((head, chained, more))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::open_read_only;

    /// A writer on a scratch database whose room can be taken away, as a
    /// full disk does.
    struct Cramped {
        dir: tempfile::TempDir,
        writer: Writer,
        handle: WriterHandle,
        runtime: tokio::runtime::Runtime,
    }

    impl Cramped {
        fn new() -> Cramped {
            let dir = tempfile::tempdir().unwrap();
            let chain = Chain::open(&dir.path().join("k"), &dir.path().join("h")).unwrap();
            let writer = Writer::start(&dir.path().join("causeway.db"), chain).unwrap();
            let handle = writer.handle();
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .build()
                .unwrap();
            Cramped {
                dir,
                writer,
                handle,
                runtime,
            }
        }

        /// Caps the database at `pages` (at its size now: `None`).
        fn room(&self, pages: Option<i64>) {
            self.runtime
                .block_on(
                    self.handle
                        .transact(move |conn| Ok::<_, DbError>(cap_pages(conn, pages)?)),
                )
                .unwrap()
        }

        fn flush(&self) {
            self.runtime.block_on(self.handle.flush()).unwrap();
        }

        /// Closes the writer; a reader of the database, and its chain.
        fn close(self) -> (Connection, Chain, tempfile::TempDir) {
            self.writer.close();
            let d = self.dir.path();
            let reader = open_read_only(&d.join("causeway.db")).unwrap().unwrap();
            let chain = Chain::open(&d.join("k"), &d.join("h")).unwrap();
            (reader, chain, self.dir)
        }
    }

    fn use_(target: &str, detail: String) -> AuditEvent {
        AuditEvent::host(
            "api",
            "test",
            target,
            crate::audit::Decision::Allowed,
            detail,
        )
    }

    /// `(rows, the first row's target, the last row's detail)`.
    fn audit_rows(conn: &Connection) -> (usize, String, String) {
        conn.query_row(
            "SELECT (SELECT COUNT(*) FROM audit), (SELECT target FROM audit ORDER BY seq LIMIT 1), detail FROM audit ORDER BY seq DESC LIMIT 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .unwrap_or((0, String::new(), String::new()))
    }

    #[test]
    fn audit_events_a_full_disk_refused_are_written_once_there_is_room() {
        let cramped = Cramped::new();
        // A database that may not grow: SQLITE_FULL, as on a full disk.
        cramped.room(None);
        for i in 0..100 {
            cramped
                .handle
                .audit(use_(&format!("use {i}"), "x".repeat(4096)));
        }
        cramped.flush();
        let reader = open_read_only(&cramped.dir.path().join("causeway.db"))
            .unwrap()
            .unwrap();
        assert_eq!(audit_rows(&reader).0, 0, "nothing fits");
        let (_, error) = cramped
            .handle
            .stats()
            .failing()
            .expect("failing, and saying so");
        assert!(error.contains("full"), "{error}");
        // Room again: the uses refused are written, in order, chained.
        cramped.room(Some(1 << 20));
        cramped.flush();
        assert_eq!(cramped.handle.stats().failing(), None);
        let (reader, chain, _dir) = cramped.close();
        let (rows, first, _) = audit_rows(&reader);
        assert_eq!(rows, 100, "no capability use lost");
        assert_eq!(first, "use 0");
        assert_eq!(chain.verify(&reader).unwrap().rows, 100);
    }

    #[test]
    fn past_the_cap_audit_events_are_counted_and_the_count_is_recorded() {
        let cramped = Cramped::new();
        cramped.room(None);
        // Refused by the full database (too large for the room left in its
        // pages), then more than the queue holds.
        cramped.handle.audit(use_("0", "x".repeat(16 << 10)));
        cramped.flush();
        assert!(
            cramped.handle.stats().failing().is_some(),
            "the first is refused"
        );
        for i in 1..MAX_QUEUED_AUDIT_EVENTS + 25 {
            cramped.handle.audit(use_(&i.to_string(), String::new()));
        }
        cramped.room(Some(1 << 22));
        cramped.flush();
        let (reader, chain, _dir) = cramped.close();
        let (rows, first, last_detail) = audit_rows(&reader);
        assert_eq!(
            rows,
            MAX_QUEUED_AUDIT_EVENTS + 1,
            "the cap's worth, and the count"
        );
        assert_eq!(first, "0", "the oldest are kept");
        assert!(
            last_detail.starts_with("25 audit events were counted, not recorded"),
            "{last_detail}"
        );
        chain.verify(&reader).unwrap();
    }

    #[test]
    fn audit_events_arriving_one_by_one_are_committed_together_and_a_job_commits_them_with_it() {
        let dir = tempfile::tempdir().unwrap();
        let chain = Chain::open(&dir.path().join("k"), &dir.path().join("h")).unwrap();
        let writer = Writer::start(&dir.path().join("causeway.db"), chain).unwrap();
        let handle = writer.handle();
        let event = || {
            AuditEvent::host(
                "api",
                "test",
                "",
                crate::audit::Decision::Allowed,
                String::new(),
            )
        };
        // Events one by one, as audited HTTP requests come: without the
        // wait each would be a commit of its own (each a sync to disk), and
        // with only the short linger one every 5 ms.
        let started = Instant::now();
        for _ in 0..300 {
            handle.audit(event());
            std::thread::sleep(Duration::from_micros(50));
        }
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        runtime.block_on(handle.flush()).unwrap();
        let elapsed = started.elapsed();
        let commits = handle.stats().commits();
        let bound = elapsed.as_millis() as u64 / AUDIT_COMMIT_SPACING.as_millis() as u64 + 2;
        assert!(
            commits <= bound,
            "{commits} commits for 300 events in {elapsed:?}: at most one per {AUDIT_COMMIT_SPACING:?} (+2)"
        );
        assert_eq!(handle.stats().audit_events(), 300);

        // Events queued before a job are committed by the time the job's
        // answer comes (the linger never holds them back behind it).
        handle.audit(event());
        runtime
            .block_on(handle.transact(|_| Ok::<_, DbError>(())))
            .unwrap();
        let conn = open_read_only(&dir.path().join("causeway.db"))
            .unwrap()
            .unwrap();
        let rows: i64 = conn
            .query_row("SELECT COUNT(*) FROM audit", [], |r| r.get(0))
            .unwrap();
        assert_eq!(rows, 301);
        writer.close();
    }

    #[test]
    fn audit_events_wait_briefly_after_a_quiet_spell_and_commits_stay_spaced_while_busy() {
        let now = Instant::now();
        assert_eq!(audit_wait(now, None), AUDIT_LINGER);
        assert_eq!(
            audit_wait(now, Some(now - Duration::from_secs(1))),
            AUDIT_LINGER
        );
        assert_eq!(audit_wait(now, Some(now)), AUDIT_COMMIT_SPACING);
        assert_eq!(
            audit_wait(now, Some(now - Duration::from_millis(20))),
            AUDIT_COMMIT_SPACING - Duration::from_millis(20)
        );
        assert_eq!(
            audit_wait(
                now,
                Some(now - AUDIT_COMMIT_SPACING + Duration::from_millis(1))
            ),
            AUDIT_LINGER
        );
    }
}
