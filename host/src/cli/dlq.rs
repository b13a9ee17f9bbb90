//! `causeway dlq`: the records sinks rejected, and replaying them once the
//! cause is fixed.

use std::collections::BTreeMap;
use std::process::ExitCode;

use anyhow::Context;

use crate::bindings::WriteOutcome;
use crate::db::DbError;
use crate::operation::{Answer, Operation};
use crate::pipeline::dlq::{self, DeadLetter};

/// The dead-letter queue: records a sink rejected.
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
    /// Write dead letters to their sink again: one by id, or all of a
    /// pipeline's. Written ones leave the queue; rejected ones stay, with the
    /// new reason.
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
}

impl Opts {
    /// Runs the command.
    pub async fn run(&self, cli: &super::Cli) -> anyhow::Result<ExitCode> {
        match &self.command {
            DlqCommand::List { pipeline, json } => list(cli, pipeline.as_deref(), *json),
            DlqCommand::Replay { id, pipeline } => replay(cli, *id, pipeline.as_deref()).await,
        }
    }
}

fn list(cli: &super::Cli, pipeline: Option<&str>, json: bool) -> anyhow::Result<ExitCode> {
    let config = cli.config()?;
    let letters = match super::read_database(&config)? {
        Some(conn) => dlq::list(&conn, pipeline)?,
        None => Vec::new(),
    };
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
                l.sink.clone(),
                l.key.clone(),
                l.attempts.to_string(),
                l.created_at.clone(),
                l.reason.clone(),
            ]
        })
        .collect();
    super::print(&format!(
        "{}\n",
        super::table::render(
            &[
                "ID", "PIPELINE", "SINK", "KEY", "ATTEMPTS", "SINCE", "REASON"
            ],
            &rows
        )
    ))?;
    Ok(ExitCode::SUCCESS)
}

async fn replay(
    cli: &super::Cli,
    id: Option<i64>,
    pipeline: Option<&str>,
) -> anyhow::Result<ExitCode> {
    let host = cli.host()?;
    let letters: Vec<DeadLetter> = match super::read_database(&host.config)? {
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
    let registry = host.registry()?;
    let writer = host.open_database()?;
    let db = writer.handle();
    let mut groups: BTreeMap<(String, String), Vec<DeadLetter>> = BTreeMap::new();
    for letter in letters {
        groups
            .entry((letter.pipeline.clone(), letter.sink.clone()))
            .or_default()
            .push(letter);
    }
    let (mut written, mut rejected, mut retry) = (0, 0, 0);
    for ((pipeline, sink), letters) in groups {
        let installed = registry
            .callable(&sink)
            .with_context(|| format!("cannot replay into {sink}"))?;
        // The sink's configuration in that pipeline, if it still has one.
        let stage = host
            .config
            .pipelines
            .get(&pipeline)
            .and_then(|p| p.sinks.iter().find(|s| s.plugin == sink))
            .and_then(|s| s.config.as_ref());
        let config = host.config.stage_config(&sink, stage);
        let context = installed.call_context(&config, &db, &host.secrets, &pipeline);
        let batch = letters.iter().map(DeadLetter::record).collect();
        let answer = installed
            .plugin
            .call_typed(&host.runtime.engine, Operation::Write(batch), &context)
            .await
            .with_context(|| format!("replaying {} records into {sink}", letters.len()))?;
        let Answer::Outcomes(outcomes) = answer else {
            anyhow::bail!("{sink} did not answer write outcomes");
        };
        let mut done = Vec::new();
        let mut again = Vec::new();
        for (letter, outcome) in letters.iter().zip(outcomes) {
            match outcome {
                WriteOutcome::Ok => {
                    written += 1;
                    done.push(letter.id);
                }
                WriteOutcome::Rejected(reason) => {
                    rejected += 1;
                    again.push((letter.id, reason));
                }
                WriteOutcome::Retry(_) => retry += 1,
            }
        }
        db.transact(move |conn| {
            for id in done {
                dlq::delete(conn, id)?;
            }
            for (id, reason) in again {
                dlq::rejected_again(conn, id, &reason)?;
            }
            Ok::<_, DbError>(())
        })
        .await?;
    }
    writer.close();
    super::print(&format!(
        "{written} written, {rejected} rejected again, {retry} left for a later replay\n"
    ))?;
    Ok(ExitCode::SUCCESS)
}
