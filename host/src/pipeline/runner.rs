//! One run of a pipeline: page by page, read from the checkpoint, transform,
//! write to every sink, and commit the checkpoint only once every sink has
//! answered for every record of the page (at-least-once: a crash before the
//! commit re-reads the page; a record's key is the sink's idempotency key).
//!
//! Each page takes the current [`Snapshot`], so a
//! plugin upgraded mid-run is swapped in between pages, never inside one.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use crate::bindings::{Record, WriteOutcome};
use crate::db::{DbError, WriterHandle};
use crate::engine::Runtime;
use crate::live::{Live, Snapshot};
use crate::operation::{Answer, Operation};
use crate::registry::Installed;
use crate::secrets::Secrets;

use super::config::{PipelineConfig, RetryConfig};
use super::retry::{GaveUp, backoff, jitter, pause, retry, retry_spending_waits};
use super::stuck::{Counted, SET_ASIDE_AFTER, Stuck};
use super::{dlq, history, isolate, versions};
use crate::operation::FailureKind;
use crate::sandbox::{CallContext, CallError};
use crate::webhook::inbox;

/// The trigger of a run that handles the pending webhook deliveries
/// (every other trigger reads the source from its checkpoint).
pub const WEBHOOK: &str = "webhook";

/// The most webhook deliveries a run takes from the inbox at once.
const DELIVERIES_PER_BATCH: usize = 100;

/// A batch of deliveries takes no more once it holds this many records.
const RECORDS_PER_BATCH: usize = 1000;

/// ... nor once their bodies add up to this many bytes (a body may be up to
/// its trigger's `max-body-bytes`, 1 MiB by default).
const BYTES_PER_BATCH: usize = 8 << 20;

/// The longest a run of deliveries may go on taking those arriving while it
/// runs ([`Runner::run_taking_newer`]): under a steady stream, a run every
/// few seconds instead of one per batch (a row each in the run history).
pub const DELIVERY_RUN_SPAN: Duration = Duration::from_secs(5);

/// How a run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunEnd {
    /// Every page up to the source's end was delivered.
    Done,
    /// The host is stopping: the run ended between pages.
    Interrupted,
    /// An operator paused the pipeline while it ran: the run ended between
    /// pages, and the next one goes on from the checkpoint.
    Paused,
    /// A step kept failing past its retry budget: the circuit opens.
    Exhausted(String),
    /// The source's reads kept failing past the retry budget (its API is
    /// down), or its pages go round: the circuit opens for reads, and
    /// webhook deliveries, which need nothing from that API, go on.
    SourceExhausted(String),
    /// A source read failed in a way waiting cannot heal (`auth`, `config`,
    /// `fatal`: an expired API token): reads stop until an operator acts,
    /// and webhook deliveries go on.
    SourceStopped(String),
    /// A step failed in a way waiting cannot heal: the pipeline stops until
    /// an operator acts (or the configuration or a plugin changes).
    Stopped(String),
}

/// The host's stop signal: a run checks it between pages, and a step
/// waiting to retry wakes up for it.
#[derive(Clone)]
pub struct Stop {
    signal: tokio::sync::watch::Receiver<bool>,
    // Keeps the channel open for a stop nobody will ever give.
    _never: Option<Arc<tokio::sync::watch::Sender<bool>>>,
}

impl Stop {
    /// A stop signal and the lever that gives it.
    pub fn new() -> (tokio::sync::watch::Sender<bool>, Stop) {
        let (lever, signal) = tokio::sync::watch::channel(false);
        (
            lever,
            Stop {
                signal,
                _never: None,
            },
        )
    }

    /// A stop that never comes (a one-off run in a command).
    pub fn never() -> Stop {
        let (lever, mut stop) = Stop::new();
        stop._never = Some(Arc::new(lever));
        stop
    }

    /// Whether the stop was given.
    pub fn is_set(&self) -> bool {
        *self.signal.borrow()
    }

    /// Resolves once the stop is given (or its lever is gone).
    pub async fn wait(&self) {
        let mut signal = self.signal.clone();
        let _ = signal.wait_for(|stop| *stop).await;
    }
}

/// What a run needs from the host.
#[derive(Clone)]
pub struct Runner {
    /// The pipeline's name.
    pub name: String,
    /// Configuration, grants and plugins.
    pub live: Arc<Live>,
    /// The engine.
    pub runtime: Arc<Runtime>,
    /// Secrets for the plugins' credentials.
    pub secrets: Arc<Secrets>,
    /// The database.
    pub db: WriterHandle,
    /// Its counters (`/metrics`).
    pub stats: Arc<crate::metrics::PipelineStats>,
    /// Records its sinks keep asking to retry, from run to run (saved as
    /// they change: load it with [`recall`]).
    pub stuck: Arc<Stuck>,
    /// Its stages that took batches, from run to run (saved with each page:
    /// load it with [`recall`]).
    pub proven: Arc<isolate::Proven>,
    /// Told of each webhook delivery accepted for the pipeline: a source
    /// read waiting to be retried handles them meanwhile.
    pub arrivals: Arc<tokio::sync::Notify>,
    /// The snapshot its last page or batch of deliveries ran on
    /// ([`Runner::ran_on`]).
    pub(super) ran_on: Arc<std::sync::Mutex<Option<Arc<Snapshot>>>>,
}

/// What one run carries from page to page.
struct ThisRun {
    id: i64,
    /// Paused when it started (a `run-now` of a paused pipeline), and not
    /// resumed since: only a pause that comes while it runs stops it.
    started_paused: bool,
    /// The checkpoints it has read from.
    visited: crate::checkpoint::Visited,
    /// Webhook deliveries were waiting when its last page began.
    deliveries_waiting: bool,
    /// A run of deliveries takes those stored up to this inbox id, moved
    /// on to the newest only until `newer_until`: the ones arriving after
    /// are the next run's, so a steady stream cannot keep it going, nor
    /// hold back the polls behind it.
    deliveries_up_to: i64,
    newer_until: Option<tokio::time::Instant>,
}

impl ThisRun {
    /// Ends the run (between pages) when the pipeline was paused since it
    /// started, or since it was last seen resumed.
    fn pause_taken(&mut self, paused: bool) -> Result<(), RunEnd> {
        if !paused {
            self.started_paused = false;
        } else if !self.started_paused {
            return Err(RunEnd::Paused);
        }
        Ok(())
    }
}

/// Counts of one page.
#[derive(Debug, Default)]
struct PageCounts {
    read: usize,
    written: usize,
    rejected: usize,
    /// Older than a version let through before ([`versions`]).
    skipped: usize,
    /// Given to a transform that answered nothing for them.
    dropped: usize,
}

impl PageCounts {
    /// As the run's history adds them up.
    fn moved(&self) -> history::Moved {
        let n = |count: usize| i64::try_from(count).unwrap_or(i64::MAX);
        history::Moved {
            read: n(self.read),
            written: n(self.written),
            rejected: n(self.rejected),
            skipped: n(self.skipped),
            dropped: n(self.dropped),
        }
    }
}

/// Adds to `unwritten` the records of `rejected` (one sink's) that no
/// sink before refused: a record two sinks refuse is one record not
/// written. Compared whole, since one batch may hold several versions of
/// a record.
fn not_written(unwritten: &mut Vec<Record>, rejected: &[(Record, String)]) {
    let fresh: Vec<Record> = {
        // The earlier sinks' by key, so a page all sinks refuse is not
        // compared record by record against each other.
        let mut earlier: std::collections::HashMap<(&str, &str), Vec<&Record>> =
            std::collections::HashMap::new();
        for r in unwritten.iter() {
            earlier.entry((&r.stream, &r.key)).or_default().push(r);
        }
        rejected
            .iter()
            .map(|(r, _)| r)
            .filter(|r| {
                earlier
                    .get(&(r.stream.as_str(), r.key.as_str()))
                    .is_none_or(|versions| !versions.contains(r))
            })
            .cloned()
            .collect()
    };
    unwritten.extend(fresh);
}

/// How many of the records with keys `given` a transform answered
/// nothing for: neither a record (it may answer several for one) nor a
/// rejection. A filter drops records so.
fn answered_nothing(given: &[String], mapped: &[Record], aside: &[(Record, String)]) -> usize {
    let answered: std::collections::HashSet<&str> = mapped
        .iter()
        .chain(aside.iter().map(|(r, _)| r))
        .map(|r| r.key.as_str())
        .collect();
    given
        .iter()
        .filter(|k| !answered.contains(k.as_str()))
        .count()
}

/// What one page or batch of deliveries did.
struct Delivered {
    dead: Vec<SetAside>,
    /// What each stage took of the records it had dead letters of: those
    /// letters are superseded ([`dlq::supersede`]).
    took: Vec<Took>,
    /// The source's records of the page, by key: what each letter set
    /// aside is a version of.
    origins: dlq::Origins,
    /// Those of them that may have letters of older versions, at any
    /// stage: forgotten ([`dlq::forget_older`]).
    older: Vec<(String, String)>,
    /// The versions let through, when the pipeline keeps them
    /// ([`versions`]).
    versions: Vec<versions::Versioned>,
    counts: PageCounts,
}

/// The records (streams and keys) one stage took from a page: mapped (or
/// dropped) by a transform, written by a sink.
struct Took {
    plugin: String,
    stage: dlq::Stage,
    records: Vec<(String, String)>,
}

impl Took {
    /// The records `plugin` was given (of those it has letters of), but
    /// for those it set `aside`; nothing when it was given none.
    fn all_but<'a>(
        plugin: &str,
        stage: dlq::Stage,
        mut given: Vec<(String, String)>,
        aside: impl IntoIterator<Item = &'a Record>,
    ) -> Option<Took> {
        if given.is_empty() {
            return None;
        }
        let aside: std::collections::HashSet<(&str, &str)> = aside
            .into_iter()
            .map(|r| (r.stream.as_str(), r.key.as_str()))
            .collect();
        given.retain(|(stream, key)| !aside.contains(&(stream.as_str(), key.as_str())));
        Some(Took {
            plugin: plugin.to_string(),
            stage,
            records: given,
        })
    }
}

/// A record a stage set aside, for the dead-letter queue.
struct SetAside {
    /// The stage's plugin, and its kind.
    plugin: String,
    stage: dlq::Stage,
    record: Record,
    reason: String,
}

/// The kind of stage a [`StageCall`] calls with a batch.
#[derive(Debug, Clone, Copy)]
enum Called {
    Transform,
    Sink,
}

impl Called {
    /// The stage, as its dead letters name it.
    fn stage(self) -> dlq::Stage {
        match self {
            Called::Transform => dlq::Stage::Transform,
            Called::Sink => dlq::Stage::Sink,
        }
    }

    /// `transform` or `sink`, for messages.
    fn as_str(self) -> &'static str {
        self.stage().as_str()
    }
}

/// A transform or a sink of a pipeline, called.
struct StageCall<'a> {
    /// `pipeline NAME: transform PLUGIN` (or `write PLUGIN`), for messages.
    what: String,
    kind: Called,
    plugin: &'a str,
}

impl<'a> StageCall<'a> {
    fn new(pipeline: &str, kind: Called, plugin: &'a str) -> StageCall<'a> {
        let verb = match kind {
            Called::Transform => "transform",
            Called::Sink => "write",
        };
        StageCall {
            what: format!("pipeline {pipeline}: {verb} {plugin}"),
            kind,
            plugin,
        }
    }

    /// The call that hands it `records`.
    fn operation(&self, records: &[Record]) -> Operation {
        match self.kind {
            Called::Transform => Operation::Transform(records.to_vec()),
            Called::Sink => Operation::Write(records.to_vec()),
        }
    }

    /// What it does with a record, for messages.
    fn takes(&self) -> &'static str {
        match self.kind {
            Called::Transform => "maps",
            Called::Sink => "writes",
        }
    }

    /// `answer`, if it keeps the contract for the `given` records: a
    /// transform's records must each keep it (a stream, a key, JSON data)
    /// and carry a key it was given (which record each is for is how a
    /// pipeline supersedes its dead letters). One that breaks it fails the
    /// call, as a record can make it fail: the search finds the record.
    fn kept_to(
        &self,
        bound: &Bound<'_>,
        given: &[Record],
        answer: Answer,
    ) -> Result<Answer, GaveUp> {
        let (Called::Transform, Answer::Records(records)) = (self.kind, &answer) else {
            return Ok(answer);
        };
        match broken_answer(given, records) {
            None => Ok(answer),
            Some(message) => Err(GaveUp::Stopped(CallError::BrokenAnswer {
                plugin: bound.installed.plugin.info.label(),
                message,
            })),
        }
    }

    /// What it did with records, for messages.
    fn took(&self) -> &'static str {
        match self.kind {
            Called::Transform => "mapped",
            Called::Sink => "wrote",
        }
    }
}

/// A pipeline's stages, bound to the plugins of one snapshot.
struct Stages<'a> {
    source: Bound<'a>,
    transforms: Vec<Bound<'a>>,
    sinks: Vec<Bound<'a>>,
}

/// A stage's plugin, callable, and its configuration in this pipeline.
struct Bound<'a> {
    installed: &'a Installed,
    config: serde_json::Value,
}

/// What `pipeline`'s runs showed before, as saved: the stages proven to
/// work and the records its sinks keep asking to retry. Not known (the
/// database failed, logged): nothing.
pub async fn recall(db: &WriterHandle, pipeline: &str) -> (Arc<isolate::Proven>, Arc<Stuck>) {
    let name = pipeline.to_string();
    let recalled = db
        .transact(move |conn| {
            Ok::<_, DbError>((
                isolate::Proven::load(conn, &name)?,
                Stuck::load(conn, &name)?,
            ))
        })
        .await;
    match recalled {
        Ok((proven, stuck)) => (Arc::new(proven), Arc::new(stuck)),
        Err(e) => {
            tracing::warn!(
                pipeline,
                "what earlier runs showed (stages proven to work, records a sink will not take) is not known: {e}"
            );
            (Arc::default(), Arc::default())
        }
    }
}

impl Runner {
    /// A runner for pipeline `name` in this process, over `registry` as
    /// loaded by `host` (no hot reload: for one-off runs and benchmarks).
    pub async fn in_process(
        host: &crate::host::Host,
        name: &str,
        registry: crate::registry::Registry,
        db: WriterHandle,
    ) -> Runner {
        let (proven, stuck) = recall(&db, name).await;
        Runner {
            name: name.to_string(),
            live: Arc::new(Live::new(Snapshot {
                config: host.config.clone(),
                grants: host.grants.clone(),
                registry,
            })),
            runtime: host.runtime.clone(),
            secrets: host.secrets.clone(),
            db,
            stats: Arc::default(),
            stuck,
            proven,
            arrivals: Arc::default(),
            ran_on: Default::default(),
        }
    }

    /// The snapshot the last page or batch of deliveries ran on. A run
    /// that stopped was stopped on it, which may be newer than the one
    /// its task woke on (the configuration, grants or a plugin changed
    /// while it ran): only a change after that one is worth another try.
    pub fn ran_on(&self) -> Option<Arc<Snapshot>> {
        self.ran_on
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Notes the snapshot a page or batch runs on ([`Runner::ran_on`]).
    fn running_on(&self, snapshot: &Arc<Snapshot>) {
        *self.ran_on.lock().unwrap_or_else(|p| p.into_inner()) = Some(snapshot.clone());
    }

    /// Runs the pipeline until the source has nothing more, `stop` is set,
    /// or a step fails for good. Records the run in the history. A run of
    /// deliveries takes those pending when it starts.
    pub async fn run(&self, trigger: &str, stop: &Stop) -> Result<RunEnd, DbError> {
        self.run_taking_newer(trigger, stop, None).await
    }

    /// [`Runner::run`]; a run of deliveries also takes those arriving
    /// until `newer_until`, or for [`DELIVERY_RUN_SPAN`] if that is sooner
    /// (when no poll is due before).
    pub async fn run_taking_newer(
        &self,
        trigger: &str,
        stop: &Stop,
        newer_until: Option<tokio::time::Instant>,
    ) -> Result<RunEnd, DbError> {
        let newer_until =
            newer_until.map(|until| until.min(tokio::time::Instant::now() + DELIVERY_RUN_SPAN));
        let name = self.name.clone();
        let trigger_is_webhook = trigger == WEBHOOK;
        let trigger = trigger.to_string();
        let (run_id, started_paused, deliveries_up_to) = self
            .db
            .transact(move |conn| {
                history::set_running(conn, &name, trigger_is_webhook)?;
                let paused = history::paused(conn, &name)?;
                let newest = if trigger_is_webhook {
                    inbox::newest_pending(conn, &name)?.unwrap_or(0)
                } else {
                    0
                };
                let run = history::start_run(conn, &name, &trigger)?;
                Ok::<_, DbError>((run, paused, newest))
            })
            .await?;
        let mut run = ThisRun {
            id: run_id,
            started_paused,
            visited: crate::checkpoint::Visited::default(),
            deliveries_waiting: false,
            deliveries_up_to,
            newer_until,
        };
        let end = loop {
            if stop.is_set() {
                break RunEnd::Interrupted;
            }
            let step = if trigger_is_webhook {
                self.deliveries(&mut run, stop).await
            } else {
                self.page(&mut run, stop).await
            };
            match step {
                Ok(true) => {}
                Ok(false) => break RunEnd::Done,
                Err(end) => break end,
            }
            // Deliveries are pushed for their speed: a long poll (an
            // initial sync) does not hold them back. They run between its
            // pages, as a run of their own.
            if run.deliveries_waiting {
                match Box::pin(self.run(WEBHOOK, stop)).await {
                    Ok(RunEnd::Done) => {}
                    Ok(end) => break end,
                    Err(e) => break RunEnd::Exhausted(format!("cannot record a webhook run: {e}")),
                }
            }
        };
        let (outcome, error) = match &end {
            RunEnd::Done => ("ok", None),
            RunEnd::Interrupted => ("interrupted", Some("the host is stopping".to_string())),
            RunEnd::Paused => ("paused", Some("paused by an operator".to_string())),
            RunEnd::Exhausted(e) | RunEnd::SourceExhausted(e) => ("failed", Some(e.clone())),
            RunEnd::Stopped(e) | RunEnd::SourceStopped(e) => ("stopped", Some(e.clone())),
        };
        self.stats.run_ended(outcome);
        match (&end, &error) {
            // Stopping between pages is how a host stops: nothing to act on,
            // what was not committed (a page, a pending delivery) is redone.
            (RunEnd::Interrupted, _) => tracing::info!(
                pipeline = %self.name,
                run = run_id,
                "run interrupted: the host is stopping; what it had not committed is done again at the next start"
            ),
            (RunEnd::Paused, _) => tracing::info!(
                pipeline = %self.name,
                run = run_id,
                "run paused by an operator between pages; `causeway pipeline resume` goes on from the checkpoint"
            ),
            // Told by whoever runs it, with what follows (the pipeline's
            // task: the circuit opened, the pipeline stopped; `run-now`:
            // its error): at this level too it was logged twice, three
            // times from a run of deliveries inside a poll.
            (_, Some(error)) => {
                tracing::debug!(pipeline = %self.name, run = run_id, "run {outcome}: {error}")
            }
            (_, None) => {}
        }
        let moved = self
            .db
            .transact(move |conn| {
                Ok::<_, DbError>(history::finish_run(
                    conn,
                    run_id,
                    outcome,
                    error.as_deref(),
                )?)
            })
            .await?;
        if end == RunEnd::Done {
            let history::Moved {
                read,
                written,
                rejected,
                skipped,
                dropped,
            } = moved;
            // A poll that found nothing new, every few seconds, is no news.
            if moved == history::Moved::default() {
                tracing::debug!(pipeline = %self.name, run = run_id, "run ok: nothing new");
            } else {
                // The rarer counts only when there are any.
                let rarer: String = [(skipped, "skipped"), (dropped, "dropped")]
                    .into_iter()
                    .filter(|(n, _)| *n > 0)
                    .map(|(n, what)| format!(", {what} {n}"))
                    .collect();
                tracing::info!(
                    pipeline = %self.name,
                    run = run_id,
                    "run ok: read {read}, written {written}, rejected {rejected}{rarer}"
                );
            }
        }
        Ok(end)
    }

    /// One page; whether the source has more.
    async fn page(&self, run: &mut ThisRun, stop: &Stop) -> Result<bool, RunEnd> {
        let snapshot = self.live.snapshot();
        self.running_on(&snapshot);
        let (pipeline, stages) = self.stages(&snapshot)?;
        let (name, stream) = (self.name.clone(), pipeline.source.stream.clone());
        let (previous, paused, waiting, letters) = self
            .db
            .transact(move |conn| {
                let paused = history::paused(conn, &name)?;
                let waiting = inbox::has_pending(conn, &name)?;
                let checkpoint = crate::checkpoint::read(conn, &name, &stream)?;
                let letters = dlq::queued(conn, &name)?;
                Ok::<_, DbError>((checkpoint, paused, waiting, letters))
            })
            .await
            .map_err(|e| RunEnd::Exhausted(format!("cannot read the checkpoint: {e}")))?;
        run.pause_taken(paused)?;
        run.deliveries_waiting = waiting;
        let run_id = run.id;

        let what = format!("pipeline {}: read {}", self.name, pipeline.source.plugin);
        let page = match self
            .read(pipeline, &stages.source, &what, previous.as_deref(), stop)
            .await
            .map_err(|gave_up| match gave_up {
                GaveUp::Exhausted(e) => RunEnd::SourceExhausted(format!("{what}: {e}")),
                GaveUp::Stopped(e) => RunEnd::SourceStopped(format!("{what}: {e}")),
                other => ended(&what, other),
            })? {
            Answer::Page(page) => page,
            other => return Err(unexpected(&pipeline.source.plugin, &other)),
        };
        let has_more = page.has_more;
        run.visited.start(previous.as_deref());
        let looped = run.visited.loops(previous.as_deref(), &page);
        let delivered = self
            .flow(pipeline, &stages, page.records, letters, stop)
            .await?;
        let checkpoint = page
            .checkpoint
            .filter(|c| Some(c.as_str()) != previous.as_deref());
        self.commit(pipeline, run_id, checkpoint, Vec::new(), delivered)
            .await?;
        // The page is delivered; the reads after it would go round forever.
        // Whether the source system or the plugin is at fault, the circuit's
        // cooldown paces the next tries.
        if let Some(looped) = looped {
            return Err(RunEnd::SourceExhausted(format!(
                "{what}: {looped}: reading on would go round forever; the page was delivered, and the next read waits for the circuit's cooldown (if the plugin does this whatever its API answers, `causeway test` fails its read-completes rule)"
            )));
        }
        Ok(has_more)
    }

    /// The source's page at `checkpoint`. While a failed read waits to be
    /// retried (an outage's backoff, a rate limit's `Retry-After`), webhook
    /// deliveries are handled: they carry their records, and need nothing
    /// from the API that is failing.
    async fn read(
        &self,
        pipeline: &PipelineConfig,
        source: &Bound<'_>,
        what: &str,
        checkpoint: Option<&str>,
        stop: &Stop,
    ) -> Result<Answer, GaveUp> {
        self.attempt_spending(
            &pipeline.retry,
            what,
            source,
            || Operation::Read {
                stream: pipeline.source.stream.clone(),
                checkpoint: checkpoint.map(str::to_string),
            },
            |wait| self.deliveries_meanwhile(wait, stop),
        )
        .await
    }

    /// Waits `wait`, handling the webhook deliveries waiting (some may
    /// have come before the wait began) or arriving meanwhile, as runs of
    /// their own.
    async fn deliveries_meanwhile(&self, wait: Duration, stop: &Stop) -> Result<(), GaveUp> {
        let until = tokio::time::Instant::now() + wait;
        loop {
            if super::has_pending(&self.db, &self.name).await {
                match Box::pin(self.run(WEBHOOK, stop)).await {
                    Ok(RunEnd::Done) => {}
                    Ok(end) => return Err(GaveUp::Meanwhile(end)),
                    Err(e) => {
                        return Err(GaveUp::Meanwhile(RunEnd::Exhausted(format!(
                            "cannot record a webhook run: {e}"
                        ))));
                    }
                }
            }
            tokio::select! {
                () = tokio::time::sleep_until(until) => return Ok(()),
                () = stop.wait() => return Err(GaveUp::Interrupted),
                () = self.arrivals.notified() => {}
            }
        }
    }

    /// The oldest pending webhook deliveries, handled together: each turned
    /// into records by the source, then all their records transformed and
    /// written as one batch, and the deliveries marked done in one commit.
    /// A burst of deliveries costs the sinks a request per batch, not one
    /// per delivery (against a rate limit of 20 a second, the difference
    /// between keeping up and falling behind). Whether there may be more.
    async fn deliveries(&self, run: &mut ThisRun, stop: &Stop) -> Result<bool, RunEnd> {
        let snapshot = self.live.snapshot();
        self.running_on(&snapshot);
        let (pipeline, stages) = self.stages(&snapshot)?;
        let name = self.name.clone();
        let up_to = run.deliveries_up_to;
        let may_take_newer = run
            .newer_until
            .is_some_and(|until| tokio::time::Instant::now() < until);
        let (pending, paused, newer, letters) = self
            .db
            .transact(move |conn| {
                let paused = history::paused(conn, &name)?;
                let letters = dlq::queued(conn, &name)?;
                let pending =
                    inbox::pending(conn, &name, up_to, DELIVERIES_PER_BATCH, BYTES_PER_BATCH)?;
                let newer = if pending.is_empty() && may_take_newer {
                    inbox::newest_pending(conn, &name)?.filter(|&newest| newest > up_to)
                } else {
                    None
                };
                Ok::<_, DbError>((pending, paused, newer, letters))
            })
            .await
            .map_err(|e| RunEnd::Exhausted(format!("cannot read the webhook inbox: {e}")))?;
        run.pause_taken(paused)?;
        let run_id = run.id;
        if pending.is_empty() {
            // Those that came meanwhile, while the run may take them.
            let Some(newest) = newer else {
                return Ok(false);
            };
            run.deliveries_up_to = newest;
            return Ok(true);
        }
        let context = stages.source.installed.call_context(
            &stages.source.config,
            &self.db,
            &self.secrets,
            &self.name,
        );
        let mut records = Vec::new();
        let mut done = Vec::new();
        for delivery in pending {
            // What was handled and not committed is handled again later.
            if stop.is_set() {
                return Err(RunEnd::Interrupted);
            }
            // The rest stay pending for the next batch.
            if records.len() >= RECORDS_PER_BATCH {
                break;
            }
            if let Some(handled) = self
                .handle(pipeline, &stages, &context, &delivery, stop)
                .await?
            {
                records.extend(handled);
                done.push(delivery.id);
            }
        }
        if done.is_empty() {
            // Every one was set aside: look for more.
            return Ok(true);
        }
        let delivered = self.flow(pipeline, &stages, records, letters, stop).await?;
        self.commit(pipeline, run_id, None, done, delivered).await?;
        Ok(true)
    }

    /// One delivery turned into records by the source; `None` when the
    /// plugin cannot make sense of it, and it is set aside, visibly, for
    /// the others to go on.
    async fn handle(
        &self,
        pipeline: &PipelineConfig,
        stages: &Stages<'_>,
        context: &CallContext,
        delivery: &inbox::Delivery,
        stop: &Stop,
    ) -> Result<Option<Vec<Record>>, RunEnd> {
        let what = format!(
            "pipeline {}: handle webhook {} with {}",
            self.name, delivery.delivery_id, pipeline.source.plugin
        );
        let installed = &stages.source.installed;
        let handled = retry(&pipeline.retry, &what, stop, || {
            installed.call_warm(
                &self.runtime.engine,
                Operation::Handle(delivery.request.clone()),
                context,
            )
        })
        .await;
        match handled {
            Ok(Answer::Records(records)) => Ok(Some(records)),
            Ok(other) => Err(unexpected(&pipeline.source.plugin, &other)),
            Err(GaveUp::Stopped(CallError::Plugin { error, .. }))
                if error.kind == FailureKind::Fatal =>
            {
                let reason = format!("{what}: {error}");
                tracing::warn!("{reason}: the delivery is set aside");
                let id = delivery.id;
                self.db
                    .transact(move |conn| Ok::<_, DbError>(inbox::finish(conn, id, Some(&reason))?))
                    .await
                    .map_err(|e| RunEnd::Exhausted(e.to_string()))?;
                Ok(None)
            }
            Err(gave_up) => Err(ended(&what, gave_up)),
        }
    }

    /// The pipeline's configuration and its stages, callable now.
    fn stages<'a>(
        &self,
        snapshot: &'a Snapshot,
    ) -> Result<(&'a PipelineConfig, Stages<'a>), RunEnd> {
        let pipeline = snapshot.config.pipelines.get(&self.name).ok_or_else(|| {
            RunEnd::Stopped(format!(
                "pipeline {} is no longer in the configuration",
                self.name
            ))
        })?;
        let source = bind(
            snapshot,
            &pipeline.source.plugin,
            pipeline.source.config.as_ref(),
        )?;
        let transforms = pipeline
            .transforms
            .iter()
            .map(|t| bind(snapshot, &t.plugin, t.config.as_ref()))
            .collect::<Result<Vec<_>, _>>()?;
        let sinks = pipeline
            .sinks
            .iter()
            .map(|s| bind(snapshot, &s.plugin, s.config.as_ref()))
            .collect::<Result<Vec<_>, _>>()?;
        Ok((
            pipeline,
            Stages {
                source,
                transforms,
                sinks,
            },
        ))
    }

    /// Transforms `records` and writes them to every sink: what was
    /// rejected, and the counts; and what each stage took of the records
    /// it has `letters` of.
    async fn flow(
        &self,
        pipeline: &PipelineConfig,
        stages: &Stages<'_>,
        mut records: Vec<Record>,
        letters: dlq::Queued,
        stop: &Stop,
    ) -> Result<Delivered, RunEnd> {
        let mut counts = PageCounts {
            read: records.len(),
            ..PageCounts::default()
        };
        let source = &pipeline.source.plugin;
        let (through, versions) = self.skip_older(pipeline, records).await?;
        counts.skipped = counts.read.saturating_sub(through.len());
        records = through;
        let origins = dlq::Origins::of(&records);
        let older = letters.older_versions(&records, &origins);
        let (valid, mut dead) = self.against_the_contract(source, records);
        records = valid;
        // Each record a stage refused counts, though of several versions
        // of one record in the batch only the newest stays a letter.
        let mut refused = dead.len();
        let mut took = Vec::new();
        took.extend(Took::all_but(
            source,
            dlq::Stage::Source,
            letters.of((source, dlq::Stage::Source), &records),
            [],
        ));
        for (stage, transform) in pipeline.transforms.iter().zip(&stages.transforms) {
            if records.is_empty() {
                break;
            }
            let given = letters.of((&stage.plugin, dlq::Stage::Transform), &records);
            let repeated = dlq::repeated(&records);
            let keys: Vec<String> = records.iter().map(|r| r.key.clone()).collect();
            let (mapped, aside) = self
                .transform(pipeline, &stage.plugin, transform, records, stop)
                .await?;
            counts.dropped += answered_nothing(&keys, &mapped, &aside);
            refused += aside.len();
            let aside = dlq::newest_only(&repeated, aside);
            took.extend(Took::all_but(
                &stage.plugin,
                dlq::Stage::Transform,
                given,
                aside.iter().map(|(r, _)| r),
            ));
            records = mapped;
            dead.extend(aside.into_iter().map(|(record, reason)| SetAside {
                plugin: stage.plugin.clone(),
                stage: dlq::Stage::Transform,
                record,
                reason,
            }));
        }
        // The records some sink refused: not written.
        let mut unwritten: Vec<Record> = Vec::new();
        for (stage, sink) in pipeline.sinks.iter().zip(&stages.sinks) {
            if records.is_empty() {
                break;
            }
            let rejected = self
                .write(pipeline, &stage.plugin, sink, &records, stop)
                .await?;
            not_written(&mut unwritten, &rejected);
            let rejected = if rejected.is_empty() {
                rejected
            } else {
                dlq::newest_only(&dlq::repeated(&records), rejected)
            };
            took.extend(Took::all_but(
                &stage.plugin,
                dlq::Stage::Sink,
                letters.of((&stage.plugin, dlq::Stage::Sink), &records),
                rejected.iter().map(|(r, _)| r),
            ));
            for (record, reason) in rejected {
                dead.push(SetAside {
                    plugin: stage.plugin.clone(),
                    stage: dlq::Stage::Sink,
                    record,
                    reason,
                });
            }
        }
        counts.written = records.len().saturating_sub(unwritten.len());
        counts.rejected = refused + unwritten.len();
        Ok(Delivered {
            dead,
            took,
            origins,
            older,
            versions,
            counts,
        })
    }

    /// The records of `records` to let through: in a pipeline with a
    /// webhook trigger, those older (by the source's timestamp) than a
    /// version of them let through before are skipped and logged
    /// ([`versions`]). With the versions to remember.
    async fn skip_older(
        &self,
        pipeline: &PipelineConfig,
        records: Vec<Record>,
    ) -> Result<(Vec<Record>, Vec<versions::Versioned>), RunEnd> {
        // A polled pipeline's page copies no keys for it.
        if pipeline.webhook.is_none() {
            return Ok((records, Vec::new()));
        }
        let timestamped = versions::timestamped(&records);
        if timestamped.is_empty() {
            return Ok((records, Vec::new()));
        }
        let name = self.name.clone();
        let mut known = self
            .db
            .transact(move |conn| Ok::<_, DbError>(versions::known(conn, &name, timestamped)?))
            .await
            .map_err(|e| {
                RunEnd::Exhausted(format!(
                    "pipeline {}: cannot read the versions of records let through: {e}",
                    self.name
                ))
            })?;
        let (through, older) = known.skip_older(records);
        if !known.ahead().is_empty() {
            tracing::warn!(
                pipeline = %self.name,
                "source {}: {} records carry a timestamp more than a day ahead of this host's clock ({}): taken as having none, so they skip nothing later; the plugin may stamp microseconds or nanoseconds where the contract wants milliseconds",
                pipeline.source.plugin,
                known.ahead().len(),
                some_keys(known.ahead())
            );
        }
        if !older.is_empty() {
            tracing::info!(
                pipeline = %self.name,
                "{} records skipped, each older than a version of it already let through (a late webhook delivery, or a read of a lagging source): {}",
                older.len(),
                some_keys(&older)
            );
        }
        Ok((through, known.newer()))
    }

    /// The records of `records` that keep the contract, and those the
    /// source `plugin` answered breaking it (no key, data that is not a
    /// JSON object), set aside: passed on, they would reach every sink
    /// (all of a page's keyless records written over one another).
    fn against_the_contract(
        &self,
        plugin: &str,
        records: Vec<Record>,
    ) -> (Vec<Record>, Vec<SetAside>) {
        let problems: Vec<_> = records
            .iter()
            .map(crate::contract::record_problems)
            .collect();
        if problems.iter().all(Vec::is_empty) {
            return (records, Vec::new());
        }
        // Of versions of one record in the batch, only the newest is a
        // letter (dlq::newest_only).
        let repeated = dlq::repeated(&records);
        let mut broken = Vec::new();
        let mut valid = Vec::with_capacity(records.len());
        for (record, problems) in records.into_iter().zip(problems) {
            if problems.is_empty() {
                valid.push(record);
            } else {
                broken.push((record, dlq::broken_by_source(plugin, &problems)));
            }
        }
        let aside: Vec<SetAside> = dlq::newest_only(&repeated, broken)
            .into_iter()
            .map(|(record, reason)| SetAside {
                plugin: plugin.to_string(),
                stage: dlq::Stage::Source,
                reason,
                record,
            })
            .collect();
        if !aside.is_empty() {
            tracing::warn!(
                "pipeline {}: source {plugin}: {} records ({}) set aside as dead letters, the first {}; `causeway test` checks what a record must be (records-valid)",
                self.name,
                aside.len(),
                some_keys(aside.iter().map(|a| &a.record)),
                aside[0].reason.trim_start_matches("set aside: "),
            );
        }
        (valid, aside)
    }

    /// Writes `records` to one sink until each is acknowledged or rejected;
    /// the rejected ones with their reasons.
    async fn write(
        &self,
        pipeline: &PipelineConfig,
        sink_name: &str,
        sink: &Bound<'_>,
        records: &[Record],
        stop: &Stop,
    ) -> Result<Vec<(Record, String)>, RunEnd> {
        let stage = StageCall::new(&self.name, Called::Sink, sink_name);
        let what = &stage.what;
        let mut pending: Vec<Record> = records.to_vec();
        let mut rejected = Vec::new();
        let mut spent = Duration::ZERO;
        let mut attempt = 0;
        // Whether the sink took or refused any record of the batch yet.
        let mut took_some = false;
        loop {
            let answered = self
                .write_once(pipeline, &stage, sink, pending, stop)
                .await?;
            let mut again = Vec::new();
            let mut last_reason = String::new();
            let before = rejected.len();
            let mut written = Vec::new();
            for (record, outcome) in answered {
                match outcome {
                    WriteOutcome::Ok => written.push(record),
                    WriteOutcome::Rejected(reason) => rejected.push((record, reason)),
                    WriteOutcome::Retry(reason) => {
                        last_reason = reason;
                        again.push(record);
                    }
                }
            }
            let took = !written.is_empty() || rejected.len() > before;
            took_some |= took;
            let settled = self.stuck.settled(
                sink_name,
                written
                    .iter()
                    .chain(rejected[before..].iter().map(|(r, _)| r)),
            );
            self.remember(settled).await;
            if again.is_empty() {
                return Ok(rejected);
            }
            // Records the sink asked to retry share the step's budget.
            let wait = backoff(&pipeline.retry, attempt, jitter());
            // Named, so a record the sink can never take is found.
            let keys = some_keys(&again);
            if spent + wait > pipeline.retry.budget.0 {
                // The sink wrote the rest but none of these in its last
                // answer: once they have spent enough budgets in a row,
                // they are set aside instead of holding back the rest.
                let set_aside = took_some && !took && {
                    let (all, counted) = self.stuck.spent_budget(sink_name, &again);
                    self.remember(counted).await;
                    all
                };
                if set_aside {
                    tracing::warn!(
                        "{what}: {} records ({keys}) set aside as dead letters: the sink asked to retry them through {SET_ASIDE_AFTER} retry budgets in a row while it wrote the rest: {last_reason}",
                        again.len()
                    );
                    let reason = format!(
                        "set aside: the sink asked to retry it through {SET_ASIDE_AFTER} retry budgets in a row while it wrote the rest of its batch; last: {last_reason}"
                    );
                    rejected.extend(again.into_iter().map(|r| (r, reason.clone())));
                    return Ok(rejected);
                }
                return Err(RunEnd::Exhausted(format!(
                    "{what}: {} records ({keys}) still asked to be retried after {spent:?}: {last_reason}",
                    again.len()
                )));
            }
            tracing::warn!(
                "{what}: {} records ({keys}) to retry in {wait:?}: {last_reason}",
                again.len()
            );
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = stop.wait() => return Err(RunEnd::Interrupted),
            }
            spent += wait;
            attempt += 1;
            pending = again;
        }
    }

    /// Maps `records` through one transform: what it answered, and the
    /// records it failed on alone while it mapped the rest, set aside with
    /// why ([`isolate`]).
    async fn transform(
        &self,
        pipeline: &PipelineConfig,
        plugin: &str,
        transform: &Bound<'_>,
        records: Vec<Record>,
        stop: &Stop,
    ) -> Result<(Vec<Record>, Vec<(Record, String)>), RunEnd> {
        let stage = StageCall::new(&self.name, Called::Transform, plugin);
        self.isolating(
            pipeline,
            &stage,
            transform,
            records,
            stop,
            |_, answer| match answer {
                Answer::Records(records) => Ok(records),
                other => Err(unexpected(plugin, &other)),
            },
        )
        .await
    }

    /// Writes `records` to one sink once (retried as the policy says): each
    /// record with its outcome. Records the sink fails the whole batch on,
    /// alone, while it writes the rest ([`isolate`]), come back rejected
    /// (set aside).
    async fn write_once(
        &self,
        pipeline: &PipelineConfig,
        stage: &StageCall<'_>,
        sink: &Bound<'_>,
        records: Vec<Record>,
        stop: &Stop,
    ) -> Result<Vec<(Record, WriteOutcome)>, RunEnd> {
        let (mut answered, aside) = self
            .isolating(
                pipeline,
                stage,
                sink,
                records,
                stop,
                |part, answer| match answer {
                    Answer::Outcomes(outcomes) => Ok(part.into_iter().zip(outcomes).collect()),
                    other => Err(unexpected(stage.plugin, &other)),
                },
            )
            .await?;
        answered.extend(
            aside
                .into_iter()
                .map(|(record, reason)| (record, WriteOutcome::Rejected(reason))),
        );
        Ok(answered)
    }

    /// Hands `records` to a transform or a sink: what `answer` makes of its
    /// answers, and the records it fails on alone while it takes the rest,
    /// set aside with why. A batch it fails in a way one record can cause
    /// is split until they are found ([`isolate`]); one it fails record by
    /// record too stops the pipeline, as any such failure does. A batch of
    /// one record is set aside only by a stage proven to work
    /// ([`isolate::Proven`]).
    async fn isolating<T>(
        &self,
        pipeline: &PipelineConfig,
        stage: &StageCall<'_>,
        bound: &Bound<'_>,
        records: Vec<Record>,
        stop: &Stop,
        answer: impl Fn(Vec<Record>, Answer) -> Result<Vec<T>, RunEnd>,
    ) -> Result<(Vec<T>, Vec<(Record, String)>), RunEnd> {
        let what = &stage.what;
        // The stage as this pipeline runs it: its build and configuration.
        let proven_as = isolate::Proven::key(&bound.installed.plugin.info.digest, &bound.config);
        let first = self
            .attempt(&pipeline.retry, what, bound, stop, || {
                stage.operation(&records)
            })
            .await
            .and_then(|answered| stage.kept_to(bound, &records, answered));
        let error = match first {
            Ok(answered) => {
                self.proven.took(&proven_as);
                return Ok((answer(records, answered)?, Vec::new()));
            }
            Err(GaveUp::Stopped(error)) if isolate::may_be_a_record(&error) => error,
            Err(gave_up) => return Err(ended(what, gave_up)),
        };
        let records = match <[Record; 1]>::try_from(records) {
            Ok([record]) => {
                if !self.proven.failed_alone(&proven_as) {
                    return Err(ended(what, GaveUp::Stopped(error)));
                }
                tracing::warn!(
                    "{what}: {error}; record {} set aside as a dead letter: alone in its batch, and the {} {} others before",
                    some_keys([&record]),
                    stage.kind.as_str(),
                    stage.took(),
                );
                let reason = format!(
                    "set aside: {} {} fails on this record, alone in its batch, though it {} others before: {error}",
                    stage.kind.as_str(),
                    stage.plugin,
                    stage.took(),
                );
                return Ok((Vec::new(), vec![(record, reason)]));
            }
            Err(records) => records,
        };
        tracing::warn!(
            "{what}: {error}; looking for the records of the {} it fails on",
            records.len()
        );
        let found = isolate::isolate(records, |part| {
            let (answer, proven_as) = (&answer, &proven_as);
            async move {
                match self
                    .attempt(&pipeline.retry, what, bound, stop, || {
                        stage.operation(&part)
                    })
                    .await
                    .and_then(|answered| stage.kept_to(bound, &part, answered))
                {
                    Ok(answered) => {
                        self.proven.took(proven_as);
                        answer(part, answered).map_err(isolate::Failure::End)
                    }
                    Err(GaveUp::Stopped(error)) if isolate::may_be_a_record(&error) => {
                        Err(isolate::Failure::Record(error.to_string()))
                    }
                    Err(gave_up) => Err(isolate::Failure::End(ended(what, gave_up))),
                }
            }
        })
        .await?;
        let found = match found {
            isolate::Search::Found(found) => found,
            isolate::Search::Plugin => {
                return Err(RunEnd::Stopped(format!(
                    "{what}: {error} (it fails its records alone too: the plugin's trouble, not a record's)"
                )));
            }
            isolate::Search::TooLong => {
                return Err(RunEnd::Stopped(format!(
                    "{what}: {error} (so many of its records fail alone that {} calls did not find them all: the plugin's trouble, or the batch's)",
                    isolate::MAX_CALLS
                )));
            }
        };
        let keys = some_keys(found.aside.iter().map(|(r, _)| r));
        tracing::warn!(
            "{what}: {} records ({keys}) set aside as dead letters: the {} fails on each alone while it {} the rest",
            found.aside.len(),
            stage.kind.as_str(),
            stage.takes(),
        );
        let aside = found
            .aside
            .into_iter()
            .map(|(record, why)| {
                let reason = format!(
                    "set aside: {} {} fails on this record alone while it {} the rest of its batch: {why}",
                    stage.kind.as_str(),
                    stage.plugin,
                    stage.takes()
                );
                (record, reason)
            })
            .collect();
        Ok((found.mapped, aside))
    }

    /// One call, retried as the retry policy says; why it gave up, if it
    /// did ([`ended`] makes that the run's end).
    async fn attempt(
        &self,
        config: &RetryConfig,
        what: &str,
        bound: &Bound<'_>,
        stop: &Stop,
        operation: impl Fn() -> Operation,
    ) -> Result<Answer, GaveUp> {
        self.attempt_spending(config, what, bound, operation, |wait| pause(wait, stop))
            .await
    }

    /// [`Runner::attempt`], each wait before a retry spent in `spend`.
    async fn attempt_spending<S, SFut>(
        &self,
        config: &RetryConfig,
        what: &str,
        bound: &Bound<'_>,
        operation: impl Fn() -> Operation,
        spend: S,
    ) -> Result<Answer, GaveUp>
    where
        S: FnMut(Duration) -> SFut,
        SFut: std::future::Future<Output = Result<(), GaveUp>>,
    {
        let context =
            bound
                .installed
                .call_context(&bound.config, &self.db, &self.secrets, &self.name);
        let installed = &bound.installed;
        retry_spending_waits(
            config,
            what,
            || installed.call_warm(&self.runtime.engine, operation(), &context),
            spend,
        )
        .await
    }

    /// Saves a change to the counts of records a sink will not take. Not
    /// saved (logged), it holds in this process and a restart counts anew.
    async fn remember(&self, counted: Counted) {
        if counted.is_empty() {
            return;
        }
        let name = self.name.clone();
        let saved = self
            .db
            .transact(move |conn| Ok::<_, DbError>(counted.save(conn, &name)?))
            .await;
        if let Err(e) = saved {
            tracing::warn!(
                pipeline = %self.name,
                "the count of records a sink will not take is not saved: {e}; a restart counts them anew"
            );
        }
    }

    /// Commits what a page or a batch of deliveries did, in one
    /// transaction: its dead letters and counts, and the new checkpoint or
    /// the deliveries marked done.
    async fn commit(
        &self,
        pipeline: &PipelineConfig,
        run_id: i64,
        checkpoint: Option<String>,
        deliveries: Vec<i64>,
        delivered: Delivered,
    ) -> Result<(), RunEnd> {
        let name = self.name.clone();
        let stream = pipeline.source.stream.clone();
        let Delivered {
            dead,
            took,
            origins,
            older,
            versions,
            counts,
        } = delivered;
        let moved = counts.moved();
        // Letters superseded and replaced, told once the page commits.
        let tally: Arc<[AtomicUsize; 2]> = Arc::default();
        let told = Arc::clone(&tally);
        // Taken now, put back if the page does not commit.
        let proven = self.proven.changes();
        let saving = proven.clone();
        let bookkeeping = move |conn: &rusqlite::Connection| -> Result<(), String> {
            saving.save(conn, &name).map_err(|e| e.to_string())?;
            versions::remember(conn, &name, &versions).map_err(|e| e.to_string())?;
            // Older letters first: a letter this page sets aside replaces
            // its record's older one at that stage itself.
            let mut superseded = 0;
            for t in &took {
                let records = t.records.iter().map(|(s, k)| (s.as_str(), k.as_str()));
                superseded += dlq::supersede(conn, &name, (&t.plugin, t.stage), records)
                    .map_err(|e| e.to_string())?;
            }
            // Only asked for when there are older letters to forget.
            let newest = if older.is_empty() {
                0
            } else {
                dlq::newest(conn).map_err(|e| e.to_string())?
            };
            let mut replaced = 0;
            for d in &dead {
                replaced += usize::from(
                    dlq::insert(
                        conn,
                        &name,
                        (&d.plugin, d.stage),
                        &d.record,
                        origins.of_key(&d.record.key),
                        &d.reason,
                        Some(run_id),
                    )
                    .map_err(|e| e.to_string())?,
                );
            }
            // Then those of other stages: what this page did with each
            // record, at whichever stage, is newer.
            let older = older.iter().map(|(o, k)| (o.as_str(), k.as_str()));
            superseded +=
                dlq::forget_older(conn, &name, older, newest).map_err(|e| e.to_string())?;
            tally[0].store(superseded, Ordering::Relaxed);
            tally[1].store(replaced, Ordering::Relaxed);
            history::count(conn, run_id, moved).map_err(|e| e.to_string())?;
            for &id in &deliveries {
                inbox::finish(conn, id, None).map_err(|e| e.to_string())?;
            }
            Ok(())
        };
        let committed = match checkpoint {
            Some(checkpoint) => {
                crate::checkpoint::commit(&self.db, &self.name, &stream, &checkpoint, bookkeeping)
                    .await
                    .map_err(|e| e.to_string())
            }
            None => self
                .db
                .transact(move |conn| {
                    bookkeeping(conn).map_err(crate::checkpoint::CheckpointError::Bookkeeping)
                })
                .await
                .map_err(|e| e.to_string()),
        };
        if committed.is_err() {
            self.proven.put_back(proven);
        }
        committed.map_err(|e| {
            RunEnd::Exhausted(format!(
                "pipeline {}: the page's bookkeeping was not committed ({e}); it will be read again",
                self.name
            ))
        })?;
        // Counted once committed, as the run's history counts them.
        self.stats.records(&moved);
        let [superseded, replaced] = [0, 1].map(|i| told[i].load(Ordering::Relaxed));
        if superseded > 0 {
            tracing::info!(
                pipeline = %self.name,
                "{superseded} dead letters forgotten: a newer version of each one's record has come through the pipeline since"
            );
        }
        if replaced > 0 {
            tracing::info!(
                pipeline = %self.name,
                "{replaced} dead letters replaced by a newer version of their record, set aside again"
            );
        }
        Ok(())
    }
}

/// How a transform's answer `records` to `given` breaks the contract, if
/// it does: the first record that breaks it.
fn broken_answer(given: &[Record], records: &[Record]) -> Option<String> {
    let keys: std::collections::HashSet<&str> = given.iter().map(|r| r.key.as_str()).collect();
    records.iter().enumerate().find_map(|(i, record)| {
        let problems = crate::contract::record_problems(record);
        if let Some(problem) = problems.first() {
            return Some(match record.key.as_str() {
                "" => format!("its record {i} {problem}"),
                key => format!("its record {i} ({key}) {problem}"),
            });
        }
        (!keys.contains(record.key.as_str())).then(|| {
            format!(
                "its record {i} has the key {:?}, which none of the records it was given has",
                record.key
            )
        })
    })
}

/// The stage's plugin, if it can run now.
fn bind<'a>(
    snapshot: &'a Snapshot,
    plugin: &str,
    config: Option<&serde_json::Map<String, serde_json::Value>>,
) -> Result<Bound<'a>, RunEnd> {
    let installed = snapshot
        .registry
        .callable(plugin)
        .map_err(|e| RunEnd::Stopped(e.to_string()))?;
    Ok(Bound {
        installed,
        config: snapshot.config.stage_config(plugin, config),
    })
}

/// How a run ends when `what` gave up.
fn ended(what: &str, gave_up: GaveUp) -> RunEnd {
    match gave_up {
        GaveUp::Exhausted(e) => RunEnd::Exhausted(format!("{what}: {e}")),
        GaveUp::Stopped(e) => RunEnd::Stopped(format!("{what}: {e}")),
        GaveUp::Interrupted => RunEnd::Interrupted,
        GaveUp::Meanwhile(end) => end,
    }
}

fn unexpected(plugin: &str, answer: &Answer) -> RunEnd {
    let kind = match answer {
        Answer::Checked => "a check",
        Answer::Streams(_) => "streams",
        Answer::Page(_) => "a page",
        Answer::Records(_) => "records",
        Answer::Outcomes(_) => "write outcomes",
    };
    RunEnd::Stopped(format!(
        "plugin {plugin} answered {kind} where the pipeline expected another kind of answer"
    ))
}

/// The keys of `records` for a message: the first few, each cut short
/// (a source chooses them), and how many more.
fn some_keys<'a>(records: impl IntoIterator<Item = &'a Record>) -> String {
    const SHOWN: usize = 5;
    const KEY_CHARS: usize = 80;
    let mut keys = Vec::new();
    let mut more = 0;
    for r in records {
        if keys.len() == SHOWN {
            more += 1;
            continue;
        }
        keys.push(match r.key.char_indices().nth(KEY_CHARS) {
            Some((cut, _)) => format!("{}…", &r.key[..cut]),
            // Shown, or the list would read "records ()".
            None if r.key.is_empty() => "\"\"".to_string(),
            None => r.key.clone(),
        });
    }
    if more > 0 {
        keys.push(format!("and {more} more"));
    }
    keys.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keyed(key: &str) -> Record {
        Record {
            stream: "contacts".into(),
            key: key.into(),
            op: crate::bindings::Op::Upsert,
            data: "{}".into(),
            source_timestamp: None,
        }
    }

    #[test]
    fn a_record_two_sinks_refuse_is_one_record_not_written_and_each_version_counts() {
        let versioned = |key: &str, data: &str| Record {
            data: data.into(),
            ..keyed(key)
        };
        let refused = |records: &[Record]| -> Vec<(Record, String)> {
            records.iter().map(|r| (r.clone(), "no".into())).collect()
        };
        let (a, b1, b2) = (keyed("a"), versioned("b", "1"), versioned("b", "2"));
        let mut unwritten = Vec::new();
        not_written(&mut unwritten, &refused(&[a.clone(), b1.clone()]));
        assert_eq!(unwritten.len(), 2);
        // The second sink refuses a and b1 again, and b's other version.
        not_written(&mut unwritten, &refused(&[a, b1, b2.clone()]));
        assert_eq!(unwritten.len(), 3);
        assert_eq!(unwritten[2], b2);
        // One sink refusing two versions of one record: two records.
        let mut unwritten = Vec::new();
        not_written(
            &mut unwritten,
            &refused(&[versioned("c", "1"), versioned("c", "2")]),
        );
        assert_eq!(unwritten.len(), 2);
    }

    #[test]
    fn a_record_a_transform_answers_nothing_for_is_dropped() {
        let given = ["a", "b", "c", "d"].map(String::from);
        // a mapped into two records, b set aside, c and d answered nothing.
        let mapped = [keyed("a"), keyed("a")];
        let aside = [(keyed("b"), "no".to_string())];
        assert_eq!(answered_nothing(&given, &mapped, &aside), 2);
        assert_eq!(answered_nothing(&given[..2], &mapped, &aside), 0);
    }

    #[test]
    fn a_message_names_the_first_keys_cut_short_and_counts_the_rest() {
        let few: Vec<Record> = ["c-1", "c-2"].map(keyed).into();
        assert_eq!(some_keys(&few), "c-1, c-2");
        let many: Vec<Record> = (0..8).map(|i| keyed(&format!("c-{i}"))).collect();
        assert_eq!(some_keys(&many), "c-0, c-1, c-2, c-3, c-4, and 3 more");
        let long = keyed(&"é".repeat(300));
        assert_eq!(some_keys(&[long]), format!("{}…", "é".repeat(80)));
        assert_eq!(some_keys(&[keyed(""), keyed("c-1")]), "\"\", c-1");
    }

    #[test]
    fn a_transform_answer_must_keep_the_contract_and_the_keys_it_was_given() {
        let given: Vec<Record> = ["a", "b"].map(keyed).into();
        // Fewer, reordered, or several records of one key: all kept.
        assert_eq!(broken_answer(&given, &[keyed("b")]), None);
        assert_eq!(
            broken_answer(&given, &[keyed("b"), keyed("a"), keyed("a")]),
            None
        );
        assert_eq!(broken_answer(&given, &[]), None);
        let stranger = broken_answer(&given, &[keyed("a"), keyed("c")]);
        assert_eq!(
            stranger.as_deref(),
            Some("its record 1 has the key \"c\", which none of the records it was given has")
        );
        let mut array = keyed("b");
        array.data = "[1]".into();
        let broken = broken_answer(&given, &[keyed("a"), array]);
        assert_eq!(
            broken.as_deref(),
            Some("its record 1 (b) is an upsert whose data is not a JSON object")
        );
    }
}
