//! `causeway pipeline ACTION NAME`: an operator's levers on one pipeline.

use std::process::ExitCode;

use anyhow::Context;

use crate::audit::{AuditEvent, Decision};
use crate::db;
use crate::host::Claim;
use crate::pipeline::{RunEnd, Runner, Stop, history};
use crate::server::OperatorToken;

/// Pause, resume, run now, or reset one pipeline.
///
/// pause: scheduled runs stop, and a run in progress after its current page;
/// it survives restarts. resume: runs again, and clears a stop or an open circuit.
/// run-now: one run at once (by the running host if there is one, else in
/// this process). reset: forget the checkpoint, so the next run reads the
/// source from the start and writes all it reads, unchanged or not
/// (refused while a run is in progress). redeliver:
/// queue again the webhook deliveries set aside because the source plugin
/// could not make sense of them (after fixing it).
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Examples:\n  causeway pipeline pause contacts-to-mailer\n  causeway pipeline run-now contacts-to-mailer"
)]
pub struct Opts {
    /// What to do.
    #[arg(value_enum)]
    pub action: Action,
    /// The pipeline.
    pub name: String,
}

/// A lever.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Action {
    /// Stop scheduled runs.
    Pause,
    /// Start scheduled runs again; clear a stop or an open circuit.
    Resume,
    /// Run once, now.
    RunNow,
    /// Forget the checkpoint: read the source from the start.
    Reset,
    /// Queue again the webhook deliveries set aside.
    Redeliver,
}

impl Opts {
    /// Runs the command.
    pub async fn run(&self, cli: &super::Cli) -> anyhow::Result<ExitCode> {
        let config = cli.config()?;
        anyhow::ensure!(
            config.pipelines.contains_key(&self.name),
            "no pipeline named {:?} in {}{} (see `causeway pipelines`)",
            self.name,
            config
                .file
                .as_deref()
                .map(|f| f.display().to_string())
                .unwrap_or_else(|| "the configuration".into()),
            super::guess(&self.name, config.pipelines.keys().map(String::as_str))
        );
        let database = config.database_file();
        let conn = db::open(&database)?;
        let name = &self.name;
        match self.action {
            Action::Pause => {
                let pipeline = name.clone();
                lever(&config, &conn, "pause", name, move |conn| {
                    history::set_paused(conn, &pipeline, true)?;
                    Ok(((), "paused by an operator".into()))
                })?;
                super::print(&format!(
                    "{name}: paused (a run in progress stops after its current page)\n"
                ))?;
            }
            Action::Resume => {
                let pipeline = name.clone();
                lever(&config, &conn, "resume", name, move |conn| {
                    history::resume(conn, &pipeline)?;
                    Ok(((), "resumed by an operator".into()))
                })?;
                super::print(&format!("{name}: resumed\n"))?;
            }
            Action::Reset => {
                let running = history::state(&conn, name)?.is_some_and(|r| r.state == "running");
                anyhow::ensure!(
                    !(running && db::running_host(&conn).is_some()),
                    "{name} is running: pause it, wait for the run to end, then reset"
                );
                let pipeline = name.clone();
                lever(&config, &conn, "reset", name, move |conn| {
                    history::reset(conn, &pipeline)?;
                    let detail = "checkpoint, versions and what the sinks were given forgotten by an operator: the next run reads the source from the start and writes all it reads";
                    Ok(((), detail.into()))
                })?;
                super::print(&format!(
                    "{name}: checkpoint forgotten; the next run reads from the start\n"
                ))?;
            }
            Action::Redeliver => {
                let pipeline = name.clone();
                let queued = lever(&config, &conn, "redeliver", name, move |conn| {
                    let queued = crate::webhook::inbox::redeliver(conn, &pipeline)?;
                    Ok((
                        queued,
                        format!(
                            "{queued} webhook deliveries set aside queued again by an operator"
                        ),
                    ))
                })?;
                if queued > 0
                    && let Some(listen) = db::running_host(&conn)
                {
                    // Its task may sleep until a delivery or a tick: wake it.
                    run_now_on(&listen, name, &config.data_dir).await?;
                    super::print(&format!(
                        "{name}: {queued} webhook deliveries queued again; the running host handles them now\n"
                    ))?;
                } else {
                    super::print(&format!(
                        "{name}: {queued} webhook deliveries queued again; they are handled at the pipeline's next run\n"
                    ))?;
                }
            }
            Action::RunNow => match db::running_host(&conn) {
                Some(listen) => {
                    run_now_on(&listen, name, &config.data_dir).await?;
                    super::print(&format!(
                        "{name}: the running host started a run (see `causeway runs`)\n"
                    ))?;
                }
                None => {
                    drop(conn);
                    return self.run_here(cli).await;
                }
            },
        }
        Ok(ExitCode::SUCCESS)
    }

    /// One run in this process, when no host runs.
    async fn run_here(&self, cli: &super::Cli) -> anyhow::Result<ExitCode> {
        let host = cli.host()?;
        // A host started since the check above, or another run-now, would
        // run the pipeline beside this one.
        let _claim = Claim::take(&host.config.data_dir)?;
        let registry = host.registry()?;
        let writer = host.open_database()?;
        let runner = Runner::in_process(&host, &self.name, registry, writer.handle()).await;
        let end = runner.run("run-now", &Stop::never()).await?;
        writer.close();
        match end {
            RunEnd::Done => {
                super::print(&format!("{}: run ok (see `causeway runs`)\n", self.name))?;
                Ok(ExitCode::SUCCESS)
            }
            RunEnd::Interrupted => Ok(ExitCode::FAILURE),
            RunEnd::Paused => {
                super::print(&format!(
                    "{}: paused while it ran: the run stopped between pages, or while it waited to retry (see `causeway runs`)\n",
                    self.name
                ))?;
                Ok(ExitCode::FAILURE)
            }
            RunEnd::Exhausted(reason)
            | RunEnd::SourceExhausted(reason)
            | RunEnd::Stopped(reason)
            | RunEnd::SourceStopped(reason) => {
                anyhow::bail!("{}: the run failed: {reason}", self.name)
            }
        }
    }
}

/// Asks the host listening on `listen` to run `name` now.
async fn run_now_on(listen: &str, name: &str, data_dir: &std::path::Path) -> anyhow::Result<()> {
    let url = format!("http://{listen}/api/pipelines/{name}/run-now");
    let token = OperatorToken::load(data_dir).map_err(anyhow::Error::msg)?;
    let response = reqwest::Client::builder()
        .no_proxy()
        .build()?
        .post(&url)
        .header(reqwest::header::AUTHORIZATION, token.bearer())
        .send()
        .await
        .with_context(|| format!("cannot reach the running host at {listen}"))?;
    anyhow::ensure!(
        response.status().is_success(),
        "the running host answered {}: {}",
        response.status(),
        response.text().await.unwrap_or_default()
    );
    Ok(())
}

/// Makes an operator's `change` to pipeline `name` in one transaction with
/// its audit row (`causeway audit --plugin causeway`: capability
/// `pipeline`, the lever as the action, and the change's own words as the
/// detail); the change's answer, once committed (`conn` reads its row
/// back).
fn lever<T: Send + 'static>(
    config: &crate::config::Config,
    conn: &rusqlite::Connection,
    action: &'static str,
    name: &str,
    change: impl FnOnce(&rusqlite::Connection) -> rusqlite::Result<(T, String)> + Send + 'static,
) -> anyhow::Result<T> {
    let database = config.database_file();
    let chain = config.audit.chain().map_err(anyhow::Error::msg)?;
    let writer = db::Writer::start(&database, chain)?;
    let (told, answer) = std::sync::mpsc::channel();
    let target = format!("pipeline {name}");
    writer.handle().audited(Box::new(move |conn| {
        let (value, detail) = change(conn)?;
        let event = AuditEvent::host("pipeline", action, &target, Decision::Allowed, detail);
        let _ = told.send((value, event.time.clone(), target));
        Ok(vec![event])
    }));
    writer.close();
    let not_done = || {
        anyhow::anyhow!(
            "{name}: the {action} was not made: the database write failed (see the log above)"
        )
    };
    let (value, time, target) = answer.recv().map_err(|_| not_done())?;
    // The job ran; whether its transaction (the change with its row)
    // committed, the audit log says (found by the plugin and time index).
    let recorded: bool = conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM audit WHERE plugin = ?1 AND time = ?2
         AND capability = 'pipeline' AND action = ?3 AND target = ?4)",
        rusqlite::params![crate::audit::HOST, time, action, target],
        |row| row.get(0),
    )?;
    anyhow::ensure!(recorded, not_done());
    Ok(value)
}
