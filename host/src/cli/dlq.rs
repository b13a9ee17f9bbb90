//! `causeway dlq`: the records sinks rejected or transforms could not map,
//! and replaying them once the cause is fixed.

use std::collections::BTreeMap;
use std::process::ExitCode;

use anyhow::Context;

use crate::audit::{AuditEvent, Decision};
use crate::bindings::{Record, WriteOutcome};
use crate::db::DbError;
use crate::operation::{Answer, Operation};
use crate::pipeline::dlq::{self, DeadLetter, Stage};
use crate::pipeline::isolate;
use crate::pipeline::unchanged;
use crate::sandbox::CallError;

/// The dead-letter queue: records a sink rejected or a transform could not
/// map.
#[derive(Debug, clap::Args)]
pub struct Opts {
    /// What to do.
    #[command(subcommand)]
    pub command: DlqCommand,
}

/// `dlq` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum DlqCommand {
    /// List dead letters, oldest first.
    #[command(
        after_help = "Examples:\n  causeway dlq list\n  causeway dlq list --pipeline contacts-to-mailer --json"
    )]
    List {
        /// Only this pipeline's.
        #[arg(long, value_name = "NAME")]
        pipeline: Option<String>,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Write dead letters to their sink again (a transform's: map them from
    /// that transform on, then write them to every sink): one by id, or all
    /// of a pipeline's. Written ones leave the queue; rejected ones stay,
    /// with the new reason.
    #[command(
        after_help = "Examples:\n  causeway dlq replay 42\n  causeway dlq replay --pipeline contacts-to-mailer"
    )]
    Replay {
        /// The dead letter's id.
        #[arg(required_unless_present = "pipeline", conflicts_with = "pipeline")]
        id: Option<i64>,
        /// Every dead letter of this pipeline.
        #[arg(long, value_name = "NAME")]
        pipeline: Option<String>,
    },
    /// Forget dead letters that are not to be written (looked at, and
    /// found to be garbage): one by id, or all of a pipeline's. Recorded in
    /// the audit log with their keys.
    #[command(
        after_help = "Examples:\n  causeway dlq drop 42\n  causeway dlq drop --pipeline contacts-to-mailer"
    )]
    Drop {
        /// The dead letter's id.
        #[arg(required_unless_present = "pipeline", conflicts_with = "pipeline")]
        id: Option<i64>,
        /// Every dead letter of this pipeline.
        #[arg(long, value_name = "NAME")]
        pipeline: Option<String>,
    },
}

impl Opts {
    /// Runs the command.
    pub async fn run(&self, cli: &super::Cli) -> anyhow::Result<ExitCode> {
        match &self.command {
            DlqCommand::List { pipeline, json } => list(cli, pipeline.as_deref(), *json),
            DlqCommand::Replay { id, pipeline } => replay(cli, *id, pipeline.as_deref()).await,
            DlqCommand::Drop { id, pipeline } => drop_letters(cli, *id, pipeline.as_deref()),
        }
    }
}

/// The dead letters a command names: one by id (which must exist), or a
/// pipeline's (all, without one).
fn named(
    config: &crate::config::Config,
    id: Option<i64>,
    pipeline: Option<&str>,
) -> anyhow::Result<Vec<DeadLetter>> {
    let letters: Vec<DeadLetter> = match super::read_database(config)? {
        Some(conn) => dlq::list(&conn, pipeline)?
            .into_iter()
            .filter(|l| id.is_none_or(|id| l.id == id))
            .collect(),
        None => Vec::new(),
    };
    if let Some(id) = id
        && letters.is_empty()
    {
        anyhow::bail!("no dead letter with id {id} (see `causeway dlq list`)");
    }
    if let Some(name) = pipeline {
        super::known_pipeline(config, name, !letters.is_empty())?;
    }
    Ok(letters)
}

fn drop_letters(
    cli: &super::Cli,
    id: Option<i64>,
    pipeline: Option<&str>,
) -> anyhow::Result<ExitCode> {
    let config = cli.config()?;
    let letters = named(&config, id, pipeline)?;
    if letters.is_empty() {
        super::print("no dead letters to drop\n")?;
        return Ok(ExitCode::SUCCESS);
    }
    let chain = config.audit.chain().map_err(anyhow::Error::msg)?;
    let writer = crate::db::Writer::start(&config.database_file(), chain)?;
    let (dropped, answer) = std::sync::mpsc::channel();
    writer.handle().audited(Box::new(move |conn| {
        let mut events = Vec::new();
        let mut by_pipeline: BTreeMap<&str, Vec<&DeadLetter>> = BTreeMap::new();
        for letter in &letters {
            by_pipeline
                .entry(&letter.pipeline)
                .or_default()
                .push(letter);
        }
        let mut ids = Vec::new();
        for (pipeline, letters) in by_pipeline {
            let mut gone = Vec::new();
            for letter in letters {
                // One a replay or the retention took meanwhile is not counted.
                if dlq::delete(conn, letter.id)? {
                    gone.push(letter);
                }
            }
            if gone.is_empty() {
                continue;
            }
            ids.extend(gone.iter().map(|l| l.id));
            let keys: Vec<String> = gone
                .iter()
                .take(20)
                .map(|l| format!("{} ({}, {})", l.id, l.key, l.sink))
                .collect();
            let more = gone.len().saturating_sub(keys.len());
            events.push(AuditEvent::host(
                "dlq",
                "drop",
                &format!("pipeline {pipeline}"),
                Decision::Allowed,
                format!(
                    "dropped {} dead letters, not to be written: {}{}",
                    gone.len(),
                    keys.join(", "),
                    if more > 0 {
                        format!(" and {more} more")
                    } else {
                        String::new()
                    }
                ),
            ));
        }
        let _ = dropped.send(ids);
        Ok(events)
    }));
    writer.close();
    // The job ran; whether its transaction committed, the queue says.
    let not_dropped = || {
        anyhow::anyhow!(
            "the dead letters were not dropped: the database write failed (see the log above)"
        )
    };
    let ids = answer.recv().map_err(|_| not_dropped())?;
    let left = named(&config, None, pipeline)?;
    if left.iter().any(|l| ids.contains(&l.id)) {
        return Err(not_dropped());
    }
    super::print(&format!(
        "{} dead letters dropped (recorded in the audit log: `causeway audit --plugin causeway`)\n",
        ids.len()
    ))?;
    Ok(ExitCode::SUCCESS)
}

fn list(cli: &super::Cli, pipeline: Option<&str>, json: bool) -> anyhow::Result<ExitCode> {
    let config = cli.config()?;
    let letters = named(&config, None, pipeline)?;
    if json {
        super::print_json(&letters)?;
        return Ok(ExitCode::SUCCESS);
    }
    let rows: Vec<Vec<String>> = letters
        .iter()
        .map(|l| {
            vec![
                l.id.to_string(),
                l.pipeline.clone(),
                match l.stage {
                    Stage::Sink => l.sink.clone(),
                    Stage::Transform => format!("{} (transform)", l.sink),
                    Stage::Source => format!("{} (source)", l.sink),
                },
                // Whole in --json.
                crate::contract::shown_key(&l.key).into_owned(),
                l.attempts.to_string(),
                l.created_at.clone(),
                l.reason.clone(),
            ]
        })
        .collect();
    super::print(&super::table::render(
        &[
            "ID", "PIPELINE", "STAGE", "KEY", "ATTEMPTS", "SINCE", "REASON",
        ],
        &rows,
    ))?;
    Ok(ExitCode::SUCCESS)
}

/// Forgets what the pipelines' sinks were given of the `replayed` records
/// (pipeline and key), and marks them replayed now ([`unchanged::replayed`]).
async fn mark_replayed(
    writer: &crate::db::Writer,
    replayed: Vec<(String, String)>,
) -> anyhow::Result<()> {
    writer
        .handle()
        .transact(move |conn| {
            for (pipeline, key) in &replayed {
                unchanged::replayed(conn, pipeline, [key.as_str()])?;
            }
            Ok::<_, DbError>(())
        })
        .await?;
    Ok(())
}

async fn replay(
    cli: &super::Cli,
    id: Option<i64>,
    pipeline: Option<&str>,
) -> anyhow::Result<ExitCode> {
    let host = cli.host()?;
    let letters = named(&host.config, id, pipeline)?;
    let ids: Vec<i64> = letters.iter().map(|l| l.id).collect();
    let registry = host.registry()?;
    let writer = host.open_database()?;
    // What the pipelines' sinks were last given of these records no longer
    // says what they hold once the replay writes them (pipeline::unchanged):
    // forgotten first, once, so a replay that fails halfway leaves nothing
    // to trust; and again once it is done, so a runner's page that wrote
    // them meanwhile keeps nothing of them either.
    let replayed: Vec<(String, String)> = letters
        .iter()
        .map(|l| (l.pipeline.clone(), l.key.clone()))
        .collect();
    mark_replayed(&writer, replayed.clone()).await?;
    let replay = Replay {
        host: &host,
        registry: &registry,
        db: writer.handle(),
    };
    let mut sinks: BTreeMap<(String, String), Vec<DeadLetter>> = BTreeMap::new();
    let mut transformed: BTreeMap<String, Vec<DeadLetter>> = BTreeMap::new();
    for letter in letters {
        match letter.stage {
            Stage::Sink => sinks
                .entry((letter.pipeline.clone(), letter.sink.clone()))
                .or_default()
                .push(letter),
            Stage::Transform | Stage::Source => transformed
                .entry(letter.pipeline.clone())
                .or_default()
                .push(letter),
        }
    }
    let mut counts = Counts::default();
    // A group that cannot be replayed (its plugin gone, its sink down)
    // keeps its letters, untouched, and does not hold back the others.
    let mut problems = Vec::new();
    for ((pipeline, sink), letters) in sinks {
        let count = letters.len();
        let mut group = Counts::default();
        match replay.to_sink(&pipeline, &sink, letters, &mut group).await {
            Ok(()) => counts.add(group),
            Err(e) => {
                counts.retry += count;
                problems.push(format!(
                    "{count} dead letters of {sink} in {pipeline}: {e:#}"
                ));
            }
        }
    }
    for (pipeline, letters) in transformed {
        let count = letters.len();
        let mut group = Counts::default();
        match replay
            .through_pipeline(&pipeline, letters, &mut group)
            .await
        {
            Ok(()) => counts.add(group),
            Err(e) => {
                counts.retry += count;
                problems.push(format!(
                    "{count} dead letters of transforms in {pipeline}: {e:#}"
                ));
            }
        }
    }
    mark_replayed(&writer, replayed).await?;
    // Dropped only when some were: a sink's letters never are.
    let dropped = match counts.dropped {
        0 => String::new(),
        n => format!(", {n} dropped by a transform"),
    };
    let summary = format!(
        "{} written{dropped}, {} rejected again, {} left for a later replay",
        counts.written, counts.rejected, counts.retry
    );
    // An operator's act, on record as `dlq drop` is (the writes themselves
    // are the sinks' audited calls).
    if !ids.is_empty() {
        let target = match (id, pipeline) {
            (Some(id), _) => format!("dead letter {id}"),
            (None, Some(pipeline)) => format!("pipeline {pipeline}"),
            (None, None) => "dead letters".to_string(),
        };
        let shown: Vec<String> = ids.iter().take(20).map(i64::to_string).collect();
        let more = match ids.len().saturating_sub(shown.len()) {
            0 => String::new(),
            n => format!(" and {n} more"),
        };
        writer.handle().audit(AuditEvent::host(
            "dlq",
            "replay",
            &target,
            Decision::Allowed,
            format!(
                "replayed {} dead letters ({}{more}): {summary}",
                ids.len(),
                shown.join(", ")
            ),
        ));
    }
    writer.close();
    super::print(&format!("{summary}\n"))?;
    for problem in &problems {
        // A plugin's words may be in it, as in any error (main.rs).
        let problem = super::table::printable(problem, true);
        eprintln!("error: not replayed: {problem}");
    }
    Ok(if problems.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// What a replay did, letter by letter.
#[derive(Debug, Default)]
struct Counts {
    written: usize,
    /// Letters a transform answered nothing for: a filter drops them, and
    /// there is nothing left to write.
    dropped: usize,
    rejected: usize,
    retry: usize,
}

impl Counts {
    fn add(&mut self, other: Counts) {
        self.written += other.written;
        self.dropped += other.dropped;
        self.rejected += other.rejected;
        self.retry += other.retry;
    }
}

/// What a replay calls plugins with.
struct Replay<'a> {
    host: &'a crate::host::Host,
    registry: &'a crate::registry::Registry,
    db: crate::db::WriterHandle,
}

impl Replay<'_> {
    /// One call of `plugin` as a stage of `pipeline` (with its stage
    /// configuration there, if the pipeline still has one).
    async fn call(
        &self,
        pipeline: &str,
        plugin: &str,
        stage: Option<&serde_json::Map<String, serde_json::Value>>,
        operation: Operation,
    ) -> anyhow::Result<Result<Answer, CallError>> {
        let installed = self
            .registry
            .callable(plugin)
            .with_context(|| format!("cannot replay through {plugin}"))?;
        let config = self.host.config.stage_config(plugin, stage);
        let context = installed.call_context(&config, &self.db, &self.host.secrets, pipeline);
        Ok(installed
            .plugin
            .call_typed(&self.host.runtime.engine, operation, &context)
            .await)
    }

    /// Writes `batch` to `sink` as a stage of `pipeline`: an outcome per
    /// record, or the sink's error.
    async fn write(
        &self,
        pipeline: &str,
        sink: &str,
        batch: Vec<Record>,
    ) -> anyhow::Result<Result<Vec<WriteOutcome>, CallError>> {
        let stage = self
            .host
            .config
            .pipelines
            .get(pipeline)
            .and_then(|p| p.sinks.iter().find(|s| s.plugin == sink))
            .and_then(|s| s.config.as_ref());
        match self
            .call(pipeline, sink, stage, Operation::Write(batch))
            .await?
        {
            Ok(Answer::Outcomes { outcomes, .. }) => Ok(Ok(outcomes)),
            Ok(_) => anyhow::bail!("{sink} did not answer write outcomes"),
            Err(e) => Ok(Err(e)),
        }
    }

    /// Writes the `groups` of records (a dead letter's each) to `sink` in
    /// one batch: per group, its outcomes, or why the sink failed it. A
    /// sink that fails the batch in a way one record can cause (as the
    /// runner looks into, [`isolate`]) gets each group alone, so one
    /// group's failure is its own; any other failure ends the replay.
    async fn write_groups(
        &self,
        pipeline: &str,
        sink: &str,
        groups: &[Vec<Record>],
    ) -> anyhow::Result<Vec<Result<Vec<WriteOutcome>, String>>> {
        let failed = |e: CallError| -> anyhow::Result<String> {
            if isolate::may_be_a_record(&e) {
                Ok(format!("sink {sink}: {e}"))
            } else {
                Err(anyhow::Error::new(e).context(format!("replaying records into {sink}")))
            }
        };
        let batch: Vec<Record> = groups.iter().flatten().cloned().collect();
        let count = batch.len();
        match self.write(pipeline, sink, batch).await? {
            Ok(mut outcomes) => Ok(groups
                .iter()
                .map(|group| Ok(outcomes.drain(..group.len().min(outcomes.len())).collect()))
                .collect()),
            Err(e) if groups.iter().filter(|g| !g.is_empty()).count() < 2 => {
                let why = failed(e)?;
                Ok(groups
                    .iter()
                    .map(|g| {
                        if g.is_empty() {
                            Ok(Vec::new())
                        } else {
                            Err(why.clone())
                        }
                    })
                    .collect())
            }
            Err(e) => {
                let why = failed(e)?;
                tracing::warn!("{why}; replaying the {count} records one dead letter at a time");
                let mut answers = Vec::with_capacity(groups.len());
                for group in groups {
                    answers.push(if group.is_empty() {
                        Ok(Vec::new())
                    } else {
                        match self.write(pipeline, sink, group.clone()).await? {
                            Ok(outcomes) => Ok(outcomes),
                            Err(e) => Err(failed(e)?),
                        }
                    });
                }
                Ok(answers)
            }
        }
    }

    /// Letters a sink set aside: written to that sink again.
    async fn to_sink(
        &self,
        pipeline: &str,
        sink: &str,
        letters: Vec<DeadLetter>,
        counts: &mut Counts,
    ) -> anyhow::Result<()> {
        let groups: Vec<Vec<Record>> = letters.iter().map(|l| vec![l.record()]).collect();
        let answers = self.write_groups(pipeline, sink, &groups).await?;
        let mut done = Vec::new();
        let mut again = Vec::new();
        for (letter, answer) in letters.iter().zip(answers) {
            let outcome = match answer {
                Ok(mut outcomes) => outcomes.pop(),
                Err(why) => Some(WriteOutcome::Rejected(why)),
            };
            match outcome {
                Some(WriteOutcome::Ok) => {
                    counts.written += 1;
                    done.push(letter.id);
                }
                Some(WriteOutcome::Rejected(reason)) => {
                    counts.rejected += 1;
                    again.push((letter.id, reason));
                }
                Some(WriteOutcome::Retry(_)) | None => counts.retry += 1,
            }
        }
        self.db
            .transact(move |conn| {
                for id in done {
                    dlq::delete(conn, id)?;
                }
                for (id, reason) in again {
                    dlq::rejected_again(conn, id, &reason)?;
                }
                Ok::<_, DbError>(())
            })
            .await?;
        Ok(())
    }

    /// Letters a transform (or the source) of `pipeline` set aside: each
    /// mapped from that transform (the first) on, alone (so a failure is
    /// its own), then what they became written to every sink of the
    /// pipeline together. A letter leaves the queue once every sink took or
    /// rejected what it became; what a sink rejects becomes that sink's
    /// dead letter, and what it took makes its older letters of the record
    /// stale. One a transform still fails on (or the source's, still
    /// breaking the contract) stays, with the new reason; one a sink asks
    /// to retry stays as it is.
    async fn through_pipeline(
        &self,
        name: &str,
        letters: Vec<DeadLetter>,
        counts: &mut Counts,
    ) -> anyhow::Result<()> {
        let pipeline = self.host.config.pipelines.get(name).with_context(|| {
            format!(
                "cannot replay the {} dead letters transforms of pipeline {name} set aside: it is no longer in the configuration",
                letters.len()
            )
        })?;
        let mut failed = Vec::new();
        let mut mapped = Vec::new();
        // What each mapped letter became, in the order of `mapped`.
        let mut groups: Vec<Vec<Record>> = Vec::new();
        'letters: for letter in &letters {
            let record = letter.record();
            let from = if letter.stage == Stage::Source {
                // Kept as the source answered it: as a page would be, it
                // is checked before anything is called with it.
                let problems = crate::contract::record_problems(&record);
                if !problems.is_empty() {
                    failed.push((letter.id, dlq::broken_by_source(&letter.sink, &problems)));
                    continue 'letters;
                }
                0
            } else {
                pipeline
                    .transforms
                    .iter()
                    .position(|t| t.plugin == letter.sink)
                    .with_context(|| {
                        format!(
                            "cannot replay dead letter {}: transform {} is no longer a stage of pipeline {name}",
                            letter.id, letter.sink
                        )
                    })?
            };
            let mut batch = vec![record];
            for stage in &pipeline.transforms[from..] {
                if batch.is_empty() {
                    break;
                }
                let operation = Operation::Transform(batch);
                match self
                    .call(name, &stage.plugin, stage.config.as_ref(), operation)
                    .await?
                {
                    Ok(Answer::Records(answer)) => batch = answer,
                    Ok(_) => anyhow::bail!("{} did not answer records", stage.plugin),
                    Err(e) => {
                        failed.push((letter.id, format!("transform {}: {e}", stage.plugin)));
                        continue 'letters;
                    }
                }
            }
            groups.push(batch);
            mapped.push((letter.id, letter.origin.clone()));
        }
        // Per mapped letter: whether a sink asked to retry, and what sinks
        // rejected (or failed).
        let mut retry = vec![false; mapped.len()];
        let mut rejected: Vec<Vec<(String, Record, String)>> = vec![Vec::new(); mapped.len()];
        // What each sink wrote: its older letters of those records are
        // stale now (dlq::supersede).
        let mut took: Vec<(String, String, String)> = Vec::new();
        for sink in &pipeline.sinks {
            if groups.iter().all(Vec::is_empty) {
                break;
            }
            let answers = self.write_groups(name, &sink.plugin, &groups).await?;
            for (at, (group, answer)) in groups.iter().zip(answers).enumerate() {
                let outcomes: Vec<WriteOutcome> = match answer {
                    Ok(outcomes) => outcomes,
                    Err(why) => vec![WriteOutcome::Rejected(why); group.len()],
                };
                for (record, outcome) in group.iter().zip(outcomes) {
                    match outcome {
                        WriteOutcome::Ok => took.push((
                            sink.plugin.clone(),
                            record.stream.clone(),
                            record.key.clone(),
                        )),
                        WriteOutcome::Retry(_) => retry[at] = true,
                        WriteOutcome::Rejected(reason) => {
                            rejected[at].push((sink.plugin.clone(), record.clone(), reason))
                        }
                    }
                }
            }
        }
        let mut done = Vec::new();
        let mut moved = Vec::new();
        let each = mapped.into_iter().zip(&groups).zip(retry).zip(rejected);
        for ((((id, origin), group), retry), rejected) in each {
            if retry {
                counts.retry += 1;
                continue;
            }
            if group.is_empty() {
                counts.dropped += 1;
            } else if rejected.is_empty() {
                counts.written += 1;
            } else {
                counts.rejected += 1;
            }
            done.push(id);
            // A sink's letter of what the record became, a version of the
            // same source record.
            moved.extend(
                rejected
                    .into_iter()
                    .map(|(sink, record, reason)| (sink, record, origin.clone(), reason)),
            );
        }
        counts.rejected += failed.len();
        let pipeline = name.to_string();
        self.db
            .transact(move |conn| {
                for id in done {
                    dlq::delete(conn, id)?;
                }
                for (sink, stream, key) in &took {
                    let record = [(stream.as_str(), key.as_str())];
                    dlq::supersede(conn, &pipeline, (sink, Stage::Sink), record)?;
                }
                for (sink, record, origin, reason) in &moved {
                    let origin = origin.as_deref();
                    dlq::insert(
                        conn,
                        &pipeline,
                        (sink, Stage::Sink),
                        record,
                        origin,
                        reason,
                        None,
                    )?;
                }
                for (id, reason) in failed {
                    dlq::rejected_again(conn, id, &reason)?;
                }
                Ok::<_, DbError>(())
            })
            .await?;
        Ok(())
    }
}
