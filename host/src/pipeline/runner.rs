//! One run of a pipeline: page by page, read from the checkpoint, transform,
//! write to every sink, and commit the checkpoint only once every sink has
//! answered for every record of the page (at-least-once: a crash before the
//! commit re-reads the page; a record's key is the sink's idempotency key).
//!
//! Each page takes the current [`Snapshot`](crate::live::Snapshot), so a
//! plugin upgraded mid-run is swapped in between pages, never inside one.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::bindings::{Record, WriteOutcome};
use crate::db::{DbError, WriterHandle};
use crate::engine::Runtime;
use crate::live::{Live, Snapshot};
use crate::operation::{Answer, Operation};
use crate::registry::Installed;
use crate::secrets::Secrets;

use super::config::{PipelineConfig, RetryConfig};
use super::retry::{GaveUp, backoff, retry};
use super::{dlq, history};

/// How a run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunEnd {
    /// Every page up to the source's end was delivered.
    Done,
    /// The host is stopping: the run ended between pages.
    Interrupted,
    /// A step kept failing past its retry budget: the circuit opens.
    Exhausted(String),
    /// A step failed in a way waiting cannot heal: the pipeline stops until
    /// an operator acts (or the configuration or a plugin changes).
    Stopped(String),
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
}

/// Counts of one page.
#[derive(Debug, Default)]
struct PageCounts {
    read: usize,
    written: usize,
    rejected: usize,
}

/// A stage's plugin, callable, and its configuration in this pipeline.
struct Bound<'a> {
    installed: &'a Installed,
    config: serde_json::Value,
}

impl Runner {
    /// Runs the pipeline until the source has nothing more, `stop` is set,
    /// or a step fails for good. Records the run in the history.
    pub async fn run(&self, trigger: &str, stop: &AtomicBool) -> Result<RunEnd, DbError> {
        let name = self.name.clone();
        let trigger = trigger.to_string();
        let run_id = self
            .db
            .transact(move |conn| {
                history::set_state(conn, &name, "running", None, None)?;
                Ok::<_, DbError>(history::start_run(conn, &name, &trigger)?)
            })
            .await?;
        let end = loop {
            if stop.load(Ordering::SeqCst) {
                break RunEnd::Interrupted;
            }
            match self.page(run_id).await {
                Ok(true) => continue,
                Ok(false) => break RunEnd::Done,
                Err(end) => break end,
            }
        };
        let (outcome, error) = match &end {
            RunEnd::Done => ("ok", None),
            RunEnd::Interrupted => ("interrupted", Some("the host is stopping".to_string())),
            RunEnd::Exhausted(e) => ("failed", Some(e.clone())),
            RunEnd::Stopped(e) => ("stopped", Some(e.clone())),
        };
        if let Some(error) = &error {
            tracing::warn!(pipeline = %self.name, run = run_id, "run {outcome}: {error}");
        } else {
            tracing::info!(pipeline = %self.name, run = run_id, "run ok");
        }
        self.db
            .transact(move |conn| {
                Ok::<_, DbError>(history::finish_run(
                    conn,
                    run_id,
                    outcome,
                    error.as_deref(),
                )?)
            })
            .await?;
        Ok(end)
    }

    /// One page; whether the source has more.
    async fn page(&self, run_id: i64) -> Result<bool, RunEnd> {
        let snapshot = self.live.snapshot();
        let pipeline = snapshot.config.pipelines.get(&self.name).ok_or_else(|| {
            RunEnd::Stopped(format!(
                "pipeline {} is no longer in the configuration",
                self.name
            ))
        })?;
        let retry_config = pipeline.retry;
        let source = bind(
            &snapshot,
            &pipeline.source.plugin,
            pipeline.source.config.as_ref(),
        )?;
        let transforms = pipeline
            .transforms
            .iter()
            .map(|t| bind(&snapshot, &t.plugin, t.config.as_ref()))
            .collect::<Result<Vec<_>, _>>()?;
        let sinks = pipeline
            .sinks
            .iter()
            .map(|s| bind(&snapshot, &s.plugin, s.config.as_ref()))
            .collect::<Result<Vec<_>, _>>()?;

        let (name, stream) = (self.name.clone(), pipeline.source.stream.clone());
        let previous = self
            .db
            .transact(move |conn| Ok::<_, DbError>(crate::checkpoint::read(conn, &name, &stream)?))
            .await
            .map_err(|e| RunEnd::Exhausted(format!("cannot read the checkpoint: {e}")))?;

        let what = format!("pipeline {}: read {}", self.name, pipeline.source.plugin);
        let page = match self
            .step(&retry_config, &what, &source, || Operation::Read {
                stream: pipeline.source.stream.clone(),
                checkpoint: previous.clone(),
            })
            .await?
        {
            Answer::Page(page) => page,
            other => return Err(unexpected(&pipeline.source.plugin, &other)),
        };
        let mut records = page.records;
        let mut counts = PageCounts {
            read: records.len(),
            ..PageCounts::default()
        };
        for (stage, transform) in pipeline.transforms.iter().zip(&transforms) {
            if records.is_empty() {
                break;
            }
            let what = format!("pipeline {}: transform {}", self.name, stage.plugin);
            records = match self
                .step(&retry_config, &what, transform, || {
                    Operation::Transform(records.clone())
                })
                .await?
            {
                Answer::Records(records) => records,
                other => return Err(unexpected(&stage.plugin, &other)),
            };
        }
        let mut dead: Vec<(String, Record, String)> = Vec::new();
        let mut rejected_keys = std::collections::BTreeSet::new();
        for (stage, sink) in pipeline.sinks.iter().zip(&sinks) {
            if records.is_empty() {
                break;
            }
            for (record, reason) in self.write(pipeline, &stage.plugin, sink, &records).await? {
                rejected_keys.insert((record.stream.clone(), record.key.clone()));
                dead.push((stage.plugin.clone(), record, reason));
            }
        }
        counts.rejected = rejected_keys.len();
        counts.written = records.len().saturating_sub(counts.rejected);
        self.commit(
            pipeline,
            run_id,
            previous.as_deref(),
            page.checkpoint,
            dead,
            counts,
        )
        .await?;
        Ok(page.has_more)
    }

    /// Writes `records` to one sink until each is acknowledged or rejected;
    /// the rejected ones with their reasons.
    async fn write(
        &self,
        pipeline: &PipelineConfig,
        sink_name: &str,
        sink: &Bound<'_>,
        records: &[Record],
    ) -> Result<Vec<(Record, String)>, RunEnd> {
        let what = format!("pipeline {}: write {sink_name}", self.name);
        let mut pending: Vec<Record> = records.to_vec();
        let mut rejected = Vec::new();
        let mut spent = Duration::ZERO;
        let mut attempt = 0;
        loop {
            let outcomes = match self
                .step(&pipeline.retry, &what, sink, || {
                    Operation::Write(pending.clone())
                })
                .await?
            {
                Answer::Outcomes(outcomes) => outcomes,
                other => return Err(unexpected(sink_name, &other)),
            };
            let mut again = Vec::new();
            let mut last_reason = String::new();
            for (record, outcome) in pending.into_iter().zip(outcomes) {
                match outcome {
                    WriteOutcome::Ok => {}
                    WriteOutcome::Rejected(reason) => rejected.push((record, reason)),
                    WriteOutcome::Retry(reason) => {
                        last_reason = reason;
                        again.push(record);
                    }
                }
            }
            if again.is_empty() {
                return Ok(rejected);
            }
            // Records the sink asked to retry share the step's budget.
            let wait = backoff(&pipeline.retry, attempt, 0.75);
            if spent + wait > pipeline.retry.budget.0 {
                return Err(RunEnd::Exhausted(format!(
                    "{what}: {} records still asked to be retried after {spent:?}: {last_reason}",
                    again.len()
                )));
            }
            tracing::warn!(
                "{what}: {} records to retry in {wait:?}: {last_reason}",
                again.len()
            );
            tokio::time::sleep(wait).await;
            spent += wait;
            attempt += 1;
            pending = again;
        }
    }

    /// One call, retried as the retry policy says.
    async fn step(
        &self,
        config: &RetryConfig,
        what: &str,
        bound: &Bound<'_>,
        operation: impl Fn() -> Operation,
    ) -> Result<Answer, RunEnd> {
        let context =
            bound
                .installed
                .call_context(&bound.config, &self.db, &self.secrets, &self.name);
        let plugin = &bound.installed.plugin;
        retry(config, what, || {
            plugin.call_typed(&self.runtime.engine, operation(), &context)
        })
        .await
        .map_err(|gave_up| match gave_up {
            GaveUp::Exhausted(e) => RunEnd::Exhausted(format!("{what}: {e}")),
            GaveUp::Stopped(e) => RunEnd::Stopped(format!("{what}: {e}")),
        })
    }

    /// Commits the page: dead letters, counts and the checkpoint, in one
    /// transaction.
    async fn commit(
        &self,
        pipeline: &PipelineConfig,
        run_id: i64,
        previous: Option<&str>,
        checkpoint: Option<String>,
        dead: Vec<(String, Record, String)>,
        counts: PageCounts,
    ) -> Result<(), RunEnd> {
        let name = self.name.clone();
        let stream = pipeline.source.stream.clone();
        let retention = pipeline.dlq_retention.0;
        let bookkeeping = move |conn: &rusqlite::Connection| -> Result<(), String> {
            for (sink, record, reason) in &dead {
                dlq::insert(conn, &name, sink, record, reason, Some(run_id))
                    .map_err(|e| e.to_string())?;
            }
            history::count(conn, run_id, counts.read, counts.written, counts.rejected)
                .map_err(|e| e.to_string())?;
            let cutoff = humantime::format_rfc3339_micros(
                std::time::SystemTime::now()
                    .checked_sub(retention)
                    .unwrap_or(std::time::UNIX_EPOCH),
            )
            .to_string();
            dlq::expire(conn, &name, &cutoff).map_err(|e| e.to_string())?;
            Ok(())
        };
        let committed = match checkpoint.filter(|c| Some(c.as_str()) != previous) {
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
        committed.map_err(|e| {
            RunEnd::Exhausted(format!(
                "pipeline {}: the checkpoint was not committed ({e}); the page will be read again",
                self.name
            ))
        })
    }
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
