//! `causeway pipelines` and `causeway runs`: what the pipelines are doing
//! and what their runs did, from the database a running host writes.

use std::process::ExitCode;
use std::time::SystemTime;

use serde::Serialize;

use crate::pipeline::history::{self, PipelineRow, RunRow};

/// List the configured pipelines: trigger, state (idle, running,
/// circuit-open, stopped), paused, webhook deliveries waiting, dead
/// letters, last run and lag; and any pipeline no longer configured whose
/// deliveries still wait.
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
    /// What starts it: `every 30s`, `webhook /hooks/crm`, both joined by
    /// ` + `, or `-` (run-now only; `removed` for one no longer configured).
    pub trigger: String,
    /// `idle`, `running`, `circuit-open`, `stopped`, `never-run`, or
    /// `removed`.
    pub state: String,
    /// Paused by an operator.
    pub paused: bool,
    /// Why it is not running normally.
    pub reason: Option<String>,
    /// While the circuit is open: when it probes next.
    pub circuit_until: Option<String>,
    /// Webhook deliveries stored and not yet processed.
    pub pending_deliveries: u64,
    /// Webhook deliveries the source could not make sense of, set aside
    /// (`causeway pipeline redeliver` queues them again).
    pub failed_deliveries: u64,
    /// Records set aside in the dead-letter queue (`causeway dlq list`).
    pub dead_letters: u64,
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
            let mut status = status(conn.as_ref(), name)?;
            status.trigger = trigger(pipeline);
            statuses.push(status);
        }
        // Deliveries accepted for a pipeline since removed wait for it to
        // come back: say so, or nobody would know they are there.
        if let Some(conn) = &conn {
            let configured = |name: &str| config.pipelines.contains_key(name);
            for (name, _) in crate::webhook::inbox::stranded(conn, configured)? {
                let mut status = status(Some(conn), &name)?;
                status.trigger = "removed".into();
                status.state = "removed".into();
                status.reason = Some(format!(
                    "not in the configuration, yet {} webhook deliveries it accepted wait unprocessed: configure it again to process them",
                    status.pending_deliveries
                ));
                statuses.push(status);
            }
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
                    match s.failed_deliveries {
                        0 => s.pending_deliveries.to_string(),
                        failed => format!("{} ({failed} set aside)", s.pending_deliveries),
                    },
                    s.dead_letters.to_string(),
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
        let table = super::table::render(
            &[
                "NAME", "TRIGGER", "STATE", "INBOX", "DLQ", "LAST RUN", "LAG",
            ],
            &rows,
        );
        let out = super::table::with_notes(
            table,
            statuses.iter().filter_map(|s| {
                // When an open circuit lets the next run try: the table
                // has no room for it, and an operator waits on it.
                let probes = match (&s.circuit_until, s.state == "circuit-open") {
                    (Some(until), true) => {
                        format!(" (the circuit lets a run try again at {until})")
                    }
                    _ => String::new(),
                };
                // A run's error names its pipeline, which the note does.
                let reason = s.reason.as_deref()?;
                let reason = reason
                    .strip_prefix(&format!("pipeline {}: ", s.name))
                    .unwrap_or(reason);
                Some(format!("{}: {reason}{probes}", s.name))
            }),
        );
        super::print(&out)?;
        Ok(ExitCode::SUCCESS)
    }
}

/// What `pipeline`'s trigger column says.
fn trigger(pipeline: &crate::pipeline::config::PipelineConfig) -> String {
    let every = pipeline
        .every
        .map(|d| format!("every {}", humantime::format_duration(d.0)));
    let webhook = pipeline
        .webhook
        .as_ref()
        .map(|w| format!("webhook {}", w.path));
    let both: Vec<String> = every.into_iter().chain(webhook).collect();
    if both.is_empty() {
        "-".into()
    } else {
        both.join(" + ")
    }
}

/// `name`'s status as the database records it (`conn`: none yet), its
/// trigger left for the caller.
fn status(conn: Option<&rusqlite::Connection>, name: &str) -> anyhow::Result<PipelineStatus> {
    let Some(conn) = conn else {
        return Ok(PipelineStatus {
            name: name.to_string(),
            trigger: String::new(),
            state: "never-run".into(),
            paused: false,
            reason: None,
            circuit_until: None,
            pending_deliveries: 0,
            failed_deliveries: 0,
            dead_letters: 0,
            last_run: None,
            last_ok_at: None,
            lag_seconds: None,
        });
    };
    let row: Option<PipelineRow> = history::state(conn, name)?;
    let inbox = crate::webhook::inbox::counts(conn, name)?;
    let last_ok_at = history::last_ok_at(conn, name)?;
    let lag_seconds = last_ok_at
        .as_deref()
        .and_then(|at| humantime::parse_rfc3339(at).ok())
        .and_then(|at| SystemTime::now().duration_since(at).ok())
        .map(|d| d.as_secs());
    Ok(PipelineStatus {
        name: name.to_string(),
        trigger: String::new(),
        state: row
            .as_ref()
            .map_or_else(|| "never-run".into(), |r| r.state.clone()),
        paused: row.as_ref().is_some_and(|r| r.paused),
        reason: row.as_ref().and_then(|r| r.reason.clone()),
        circuit_until: row.as_ref().and_then(|r| r.circuit_until.clone()),
        pending_deliveries: inbox.pending,
        failed_deliveries: inbox.set_aside,
        dead_letters: crate::pipeline::dlq::count(conn, name)?,
        last_run: history::runs(conn, Some(name), 1)?.pop(),
        last_ok_at,
        lag_seconds,
    })
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
            super::known_pipeline(&config, name, !runs.is_empty())?;
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
                    // Not counted before schema 14.
                    r.skipped.map_or_else(|| "-".into(), |n| n.to_string()),
                    r.dropped.map_or_else(|| "-".into(), |n| n.to_string()),
                    // Not counted before schema 15.
                    r.unchanged.map_or_else(|| "-".into(), |n| n.to_string()),
                    r.outcome.clone(),
                ]
            })
            .collect();
        let table = super::table::render(
            &[
                "RUN",
                "PIPELINE",
                "TRIGGER",
                "STARTED",
                "DURATION",
                "READ",
                "WRITTEN",
                "REJECTED",
                "SKIPPED",
                "DROPPED",
                "UNCHANGED",
                "OUTCOME",
            ],
            &rows,
        );
        let out = super::table::with_notes(
            table,
            runs.iter()
                .filter_map(|r| Some(format!("#{}: {}", r.id, r.error.as_ref()?))),
        );
        super::print(&out)?;
        Ok(ExitCode::SUCCESS)
    }
}
