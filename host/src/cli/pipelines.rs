//! `causeway pipelines` and `causeway runs`: what the pipelines are doing
//! and what their runs did, from the database a running host writes.

use std::process::ExitCode;
use std::time::SystemTime;

use serde::Serialize;

use crate::pipeline::history::{self, PipelineRow, RunRow};

/// List the configured pipelines: trigger, state (idle, running,
/// circuit-open, stopped), paused, last run and lag.
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:\n  causeway pipelines\n  causeway pipelines --json")]
pub struct Opts {
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// One row of `causeway pipelines`.
#[derive(Debug, Serialize)]
pub struct PipelineStatus {
    /// The pipeline.
    pub name: String,
    /// What starts it.
    pub trigger: String,
    /// `idle`, `running`, `circuit-open`, `stopped`, or `never-run`.
    pub state: String,
    /// Paused by an operator.
    pub paused: bool,
    /// Why it is not running normally.
    pub reason: Option<String>,
    /// While the circuit is open: when it probes next.
    pub circuit_until: Option<String>,
    /// The latest run.
    pub last_run: Option<RunRow>,
    /// When a run last ended well.
    pub last_ok_at: Option<String>,
    /// Seconds since then: how far behind the source it may be.
    pub lag_seconds: Option<u64>,
}

impl Opts {
    /// Runs the command.
    pub fn run(&self, cli: &super::Cli) -> anyhow::Result<ExitCode> {
        let config = cli.config()?;
        let conn = super::read_database(&config)?;
        let mut statuses = Vec::new();
        for (name, pipeline) in &config.pipelines {
            let row: Option<PipelineRow> = match &conn {
                Some(conn) => history::state(conn, name)?,
                None => None,
            };
            let (last_run, last_ok_at) = match &conn {
                Some(conn) => (
                    history::runs(conn, Some(name), 1)?.pop(),
                    history::last_ok_at(conn, name)?,
                ),
                None => (None, None),
            };
            let lag_seconds = last_ok_at
                .as_deref()
                .and_then(|at| humantime::parse_rfc3339(at).ok())
                .and_then(|at| SystemTime::now().duration_since(at).ok())
                .map(|d| d.as_secs());
            statuses.push(PipelineStatus {
                name: name.clone(),
                trigger: pipeline
                    .every
                    .map(|d| format!("every {}", humantime::format_duration(d.0)))
                    .unwrap_or_else(|| "-".into()),
                state: row
                    .as_ref()
                    .map(|r| r.state.clone())
                    .unwrap_or_else(|| "never-run".into()),
                paused: row.as_ref().is_some_and(|r| r.paused),
                reason: row.as_ref().and_then(|r| r.reason.clone()),
                circuit_until: row.as_ref().and_then(|r| r.circuit_until.clone()),
                last_run,
                last_ok_at,
                lag_seconds,
            });
        }
        if self.json {
            super::print_json(&statuses)?;
            return Ok(ExitCode::SUCCESS);
        }
        if statuses.is_empty() {
            super::print("no pipelines in the configuration\n")?;
            return Ok(ExitCode::SUCCESS);
        }
        let rows: Vec<Vec<String>> = statuses
            .iter()
            .map(|s| {
                vec![
                    s.name.clone(),
                    s.trigger.clone(),
                    if s.paused {
                        format!("{} (paused)", s.state)
                    } else {
                        s.state.clone()
                    },
                    s.last_run
                        .as_ref()
                        .map(|r| format!("#{} {}", r.id, r.outcome))
                        .unwrap_or_else(|| "-".into()),
                    s.lag_seconds
                        .map(|l| format!("{l}s"))
                        .unwrap_or_else(|| "-".into()),
                ]
            })
            .collect();
        let mut out = super::table::render(&["NAME", "TRIGGER", "STATE", "LAST RUN", "LAG"], &rows);
        for s in statuses.iter().filter(|s| s.reason.is_some()) {
            out.push_str(&format!(
                "\n{}: {}",
                s.name,
                s.reason.as_deref().unwrap_or_default()
            ));
        }
        out.push('\n');
        super::print(&out)?;
        Ok(ExitCode::SUCCESS)
    }
}

/// List pipeline runs, newest first: counts read, written and rejected,
/// duration and outcome.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Examples:\n  causeway runs\n  causeway runs --pipeline contacts-to-mailer --json"
)]
pub struct RunsOpts {
    /// Only this pipeline's runs.
    #[arg(long, value_name = "NAME")]
    pub pipeline: Option<String>,
    /// At most this many runs.
    #[arg(long, default_value_t = 50)]
    pub limit: usize,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

impl RunsOpts {
    /// Runs the command.
    pub fn run(&self, cli: &super::Cli) -> anyhow::Result<ExitCode> {
        let config = cli.config()?;
        let runs = match super::read_database(&config)? {
            Some(conn) => history::runs(&conn, self.pipeline.as_deref(), self.limit)?,
            None => Vec::new(),
        };
        // A removed pipeline's runs still show; a name that was never one
        // (a typo) is said to be unknown, not shown as an empty history.
        if let Some(name) = &self.pipeline {
            anyhow::ensure!(
                !runs.is_empty() || config.pipelines.contains_key(name),
                "no pipeline named {name:?} in the configuration, and no runs recorded for one (see `causeway pipelines`)"
            );
        }
        if self.json {
            super::print_json(&runs)?;
            return Ok(ExitCode::SUCCESS);
        }
        let rows: Vec<Vec<String>> = runs
            .iter()
            .map(|r| {
                let duration = r
                    .finished_at
                    .as_deref()
                    .and_then(|end| {
                        let start = humantime::parse_rfc3339(&r.started_at).ok()?;
                        let end = humantime::parse_rfc3339(end).ok()?;
                        end.duration_since(start).ok()
                    })
                    .map(|d| format!("{} ms", d.as_millis()))
                    .unwrap_or_else(|| "-".into());
                vec![
                    r.id.to_string(),
                    r.pipeline.clone(),
                    r.trigger.clone(),
                    r.started_at.clone(),
                    duration,
                    r.read.to_string(),
                    r.written.to_string(),
                    r.rejected.to_string(),
                    r.outcome.clone(),
                ]
            })
            .collect();
        let mut out = super::table::render(
            &[
                "RUN", "PIPELINE", "TRIGGER", "STARTED", "DURATION", "READ", "WRITTEN", "REJECTED",
                "OUTCOME",
            ],
            &rows,
        );
        for r in runs.iter().filter(|r| r.error.is_some()) {
            out.push_str(&format!(
                "\n#{}: {}",
                r.id,
                r.error.as_deref().unwrap_or_default()
            ));
        }
        out.push('\n');
        super::print(&out)?;
        Ok(ExitCode::SUCCESS)
    }
}
