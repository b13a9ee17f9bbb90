//! One run of a pipeline: page by page, read from the checkpoint, transform,
//! write to every sink, and commit the checkpoint only once every sink has
//! answered for every record of the page (at-least-once: a crash before the
//! commit re-reads the page; a record's key is the sink's idempotency key).
//!
//! Each page takes the current [`Snapshot`], so a
//! plugin upgraded mid-run is swapped in between pages, never inside one.
//!
//! Here, a run and its pages; in `deliveries`, the webhook deliveries'
//! batches; in `flow`, what a page's records go through and how they are
//! counted; in `offered`, whether the source offers the stream read; in
//! `stage`, a transform or a sink called with a batch (retries,
//! the records it fails on alone set aside); in `commit`, the page's
//! bookkeeping committed with its checkpoint.

use std::sync::Arc;
use std::time::Duration;

use crate::bindings::Record;
use crate::db::{DbError, WriterHandle};
use crate::engine::Runtime;
use crate::live::{Live, Snapshot};
use crate::operation::{Answer, Operation};
use crate::secrets::Secrets;
use crate::webhook::inbox;

use super::config::PipelineConfig;
use super::retry::GaveUp;
use super::stuck::Stuck;
use super::{dlq, history, isolate};

mod commit;
mod deliveries;
mod flow;
mod offered;
mod stage;

use stage::{Bound, Stages, bind};

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
    /// The run in progress (`PIPELINE#ID`), which the audit rows of its
    /// stages' calls name; a run of deliveries inside a poll's is its own
    /// until it ends ([`InRun`]).
    pub(super) in_run: Arc<std::sync::Mutex<Option<Arc<str>>>>,
    /// When an API that gave up a step for being unavailable said it
    /// would be back (a 503's `Retry-After` past the retry budget): the
    /// circuit stays open until then ([`Runner::back_at`]).
    pub(super) back_at: Arc<std::sync::Mutex<Option<tokio::time::Instant>>>,
    /// The waits an API asked for that are in progress, innermost last: a
    /// run of deliveries inside a read's wait may wait on a sink's, and
    /// once that ends the read's is recorded again.
    pub(super) waits: Arc<std::sync::Mutex<Vec<history::Waiting>>>,
    /// The source build and stream its `discover` did not refuse
    /// ([`Runner::stream_offered`]).
    pub(super) offered: Arc<offered::Offered>,
}

/// The run a [`Runner`] is in, until dropped: then the one it was in
/// before (a run of deliveries ends inside the poll that started it).
struct InRun<'a> {
    current: &'a std::sync::Mutex<Option<Arc<str>>>,
    before: Option<Arc<str>>,
}

impl<'a> InRun<'a> {
    fn enter(current: &'a std::sync::Mutex<Option<Arc<str>>>, run: Arc<str>) -> InRun<'a> {
        let before = current
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .replace(run);
        InRun { current, before }
    }
}

impl Drop for InRun<'_> {
    fn drop(&mut self) {
        *self.current.lock().unwrap_or_else(|p| p.into_inner()) = self.before.take();
    }
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
            in_run: Default::default(),
            back_at: Default::default(),
            waits: Default::default(),
            offered: Default::default(),
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

    /// How `bound`'s plugin is called in this pipeline, in the run in
    /// progress.
    fn context(&self, bound: &Bound<'_>) -> crate::sandbox::CallContext {
        let mut context =
            bound
                .installed
                .call_context(&bound.config, &self.db, &self.secrets, &self.name);
        context.run = self
            .in_run
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        context
    }

    /// When the API that made the last run give up said it would be back,
    /// if it did (a 503's `Retry-After`): forgotten once asked, for the
    /// circuit the run opens.
    pub fn back_at(&self) -> Option<tokio::time::Instant> {
        self.back_at
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
    }

    /// Notes that a step gave up on an API unavailable `wait` longer
    /// (a 503's `Retry-After`, at most 15 minutes).
    pub(super) fn unavailable_for(&self, wait: std::time::Duration) {
        let at = tokio::time::Instant::now() + crate::pipeline::retry::asked(wait);
        let mut back_at = self.back_at.lock().unwrap_or_else(|p| p.into_inner());
        *back_at = Some(back_at.map_or(at, |earlier| earlier.max(at)));
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
        let _in_run = InRun::enter(&self.in_run, format!("{}#{run_id}", self.name).into());
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
                "run paused by an operator (between pages, or while it waited to retry); `causeway pipeline resume` goes on from the checkpoint"
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
                unchanged,
            } = moved;
            // A poll that found nothing new, every few seconds, is no news;
            // nor is a stream read whole whose records were all unchanged
            // (`skip-unchanged`).
            let all_unchanged = history::Moved {
                read: 0,
                unchanged: 0,
                ..moved
            } == history::Moved::default()
                && read == unchanged;
            if moved == history::Moved::default() {
                tracing::debug!(pipeline = %self.name, run = run_id, "run ok: nothing new");
            } else if all_unchanged {
                tracing::debug!(
                    pipeline = %self.name,
                    run = run_id,
                    "run ok: nothing new (read {read}, each unchanged)"
                );
            } else {
                // The rarer counts only when there are any.
                let rarer: String = [
                    (skipped, "skipped"),
                    (dropped, "dropped"),
                    (unchanged, "unchanged"),
                ]
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

        self.stream_offered(&stages.source, &pipeline.source.stream)
            .await?;
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
            (what, true),
            source,
            || Operation::Read {
                stream: pipeline.source.stream.clone(),
                checkpoint: checkpoint.map(str::to_string),
            },
            |wait| self.deliveries_meanwhile(wait.duration, stop),
        )
        .await
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
        Answer::Outcomes { .. } => "write outcomes",
    };
    RunEnd::Stopped(format!(
        "plugin {plugin} answered {kind} where the pipeline expected another kind of answer"
    ))
}

/// The keys of `records` for a message: the first few, each cut short
/// (a source chooses them), and how many more.
fn some_keys<'a>(records: impl IntoIterator<Item = &'a Record>) -> String {
    const SHOWN: usize = 5;
    let mut keys = Vec::new();
    let mut more = 0;
    for r in records {
        if keys.len() == SHOWN {
            more += 1;
            continue;
        }
        keys.push(crate::contract::shown_key(&r.key).into_owned());
    }
    if more > 0 {
        keys.push(format!("and {more} more"));
    }
    keys.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A record of stream `contacts` with key `key`.
    pub(super) fn keyed(key: &str) -> Record {
        Record {
            stream: "contacts".into(),
            key: key.into(),
            op: crate::bindings::Op::Upsert,
            data: "{}".into(),
            source_timestamp: None,
        }
    }

    #[test]
    fn a_run_of_deliveries_inside_a_poll_is_its_own_until_it_ends() {
        let current = std::sync::Mutex::new(None);
        let now = || current.lock().unwrap().as_deref().map(str::to_string);
        {
            let _poll = InRun::enter(&current, "p#1".into());
            assert_eq!(now().as_deref(), Some("p#1"));
            {
                let _deliveries = InRun::enter(&current, "p#2".into());
                assert_eq!(now().as_deref(), Some("p#2"));
            }
            assert_eq!(now().as_deref(), Some("p#1"));
        }
        assert_eq!(now(), None);
    }

    #[test]
    fn a_message_names_the_first_keys_cut_short_and_counts_the_rest() {
        let few: Vec<Record> = ["c-1", "c-2"].map(keyed).into();
        assert_eq!(some_keys(&few), "c-1, c-2");
        let many: Vec<Record> = (0..8).map(|i| keyed(&format!("c-{i}"))).collect();
        assert_eq!(some_keys(&many), "c-0, c-1, c-2, c-3, c-4, and 3 more");
        let long = keyed(&"é".repeat(300));
        assert_eq!(
            some_keys(&[long]),
            format!("{}… (600 bytes)", "é".repeat(80))
        );
        assert_eq!(some_keys(&[keyed(""), keyed("c-1")]), "\"\", c-1");
    }
}
