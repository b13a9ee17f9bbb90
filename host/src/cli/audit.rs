//! `causeway audit`: query, verify, export and prune the audit trail.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use serde_json::json;

use crate::audit::query::{self, Filter};
use crate::pipeline::history;

/// Every capability use, allowed or denied, and every change of the grants:
/// query it, verify its chain, export it for a SIEM, prune it.
#[derive(Debug, clap::Args)]
#[command(
    args_conflicts_with_subcommands = true,
    after_help = "Examples:\n  causeway audit --plugin crm-source --since 2h\n  causeway audit --capability http --denied\n  causeway audit --run crm-to-mailer#12\n  causeway audit --denied --json\n  causeway audit verify\n  causeway audit export --output audit.jsonl\n  causeway audit prune --older-than 90d"
)]
pub struct Opts {
    /// What to do besides listing.
    #[command(subcommand)]
    pub action: Option<Action>,
    /// Only this plugin's events (`causeway` for the host's own).
    #[arg(long, value_name = "NAME")]
    pub plugin: Option<String>,
    /// Only uses of this capability: `http`, `storage`, `config`, `log`, or
    /// one of the host's (`grants`, `pipeline`, `dlq`, `api`, …).
    #[arg(long, value_name = "NAME")]
    pub capability: Option<String>,
    /// Only uses made in this pipeline run (`PIPELINE#ID`, the id `causeway
    /// runs` lists).
    #[arg(long, value_name = "PIPELINE#ID")]
    pub run: Option<String>,
    /// Only events since TIME: RFC 3339 (2026-11-24T09:00:00Z) or a
    /// duration ago (15m, 2h, 7d).
    #[arg(long, value_name = "TIME")]
    pub since: Option<String>,
    /// Only denied uses.
    #[arg(long)]
    pub denied: bool,
    /// At most this many events, the latest.
    #[arg(long, default_value_t = 200)]
    pub limit: u64,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// The audit subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum Action {
    /// Check the chain against the key and the head file; name the first
    /// bad row. Exit status 1 when the chain is broken.
    Verify {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Write every event as JSON lines (seq and chain hash included).
    Export {
        /// Write here instead of stdout.
        #[arg(long, value_name = "FILE")]
        output: Option<PathBuf>,
        /// Only events since TIME (as for `causeway audit --since`).
        #[arg(long, value_name = "TIME")]
        since: Option<String>,
    },
    /// Remove events older than the retention now, recording the pruning
    /// in the log (a running host also prunes hourly by `[audit] retention`).
    Prune {
        /// Keep this much (default: `[audit] retention`; at least a day).
        #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
        older_than: Option<std::time::Duration>,
        /// Prune to less than a day all the same.
        #[arg(long)]
        force: bool,
    },
}

impl Opts {
    /// Runs the command.
    pub async fn run(&self, cli: &super::Cli) -> anyhow::Result<ExitCode> {
        match &self.action {
            None => self.list(cli),
            Some(Action::Verify { json }) => verify(cli, *json),
            Some(Action::Export { output, since }) => {
                export(cli, output.as_ref(), since.as_deref())
            }
            Some(Action::Prune { older_than, force }) => prune(cli, *older_than, *force).await,
        }
    }

    fn list(&self, cli: &super::Cli) -> anyhow::Result<ExitCode> {
        let config = cli.config()?;
        // A run is named as `causeway runs` lists it; a pipeline's name
        // alone would select nothing, without a word.
        let run = self
            .run
            .as_deref()
            .map(|run| {
                run.rsplit_once('#')
                    .and_then(|(pipeline, id)| Some((pipeline, id.parse::<i64>().ok()?)))
                    .with_context(|| {
                        format!(
                            "--run {run:?}: write PIPELINE#ID, a run as `causeway runs` lists it (crm-to-mailer#12)"
                        )
                    })
            })
            .transpose()?;
        let filter = Filter {
            plugin: self.plugin.clone(),
            capability: self.capability.clone(),
            run: self.run.clone(),
            since: self
                .since
                .as_deref()
                .map(query::parse_since)
                .transpose()
                .map_err(anyhow::Error::msg)?,
            denied: self.denied,
            limit: Some(self.limit),
        };
        let conn = super::read_database(&config)?;
        let rows = match &conn {
            Some(conn) => query::query(conn, &filter)?,
            None => Vec::new(),
        };
        // Nothing, for a name the log has never held: most often a typo.
        if rows.is_empty()
            && let Some(conn) = &conn
        {
            for (asked, column, flag) in [
                (&self.plugin, query::Distinct::Plugin, "--plugin"),
                (
                    &self.capability,
                    query::Distinct::Capability,
                    "--capability",
                ),
            ] {
                let Some(asked) = asked else { continue };
                let known = query::distinct(conn, column)?;
                if !known.contains(asked) {
                    let guess = crate::config::closest(asked, known.iter().map(String::as_str))
                        .map(|g| format!(" (did you mean {g:?}?)"))
                        .unwrap_or_default();
                    eprintln!(
                        "{}",
                        super::table::printable(
                            &format!(
                                "note: no row of the audit log has {flag} {asked:?}{guess}; it holds: {}",
                                known.join(", ")
                            ),
                            true
                        )
                    );
                }
            }
            if let Some((pipeline, id)) = run
                && !history::run_of(conn, pipeline, id)?
            {
                let mut known = history::pipelines_on_record(conn)?;
                known.extend(config.pipelines.keys().cloned());
                let note = if known.iter().any(|k| k == pipeline) {
                    format!(
                        "note: {pipeline} has no run {id} on record (see `causeway runs --pipeline {pipeline}`)"
                    )
                } else {
                    format!(
                        "note: no pipeline named {pipeline:?} has runs on record{}",
                        super::guess(pipeline, known.iter().map(String::as_str))
                    )
                };
                eprintln!("{}", super::table::printable(&note, true));
            }
        }
        if self.json {
            super::print_json(&rows)?;
            return Ok(ExitCode::SUCCESS);
        }
        let table: Vec<Vec<String>> = rows
            .iter()
            .map(|r| {
                let e = &r.event;
                vec![
                    r.seq.to_string(),
                    e.time.clone(),
                    // A grants change or an operator's act names no build.
                    match e.version.as_str() {
                        "-" => e.plugin.clone(),
                        version => format!("{}@{version}", e.plugin),
                    },
                    e.capability.clone(),
                    e.action.clone(),
                    e.target.clone(),
                    e.decision.name().to_string(),
                    e.run_id.clone().unwrap_or_else(|| "-".into()),
                    // Last: a grants change's detail runs long, and a
                    // column after it would be pushed off the screen.
                    e.detail.clone(),
                ]
            })
            .collect();
        super::print(&super::table::render(
            &[
                "SEQ",
                "TIME",
                "PLUGIN",
                "CAPABILITY",
                "ACTION",
                "TARGET",
                "DECISION",
                "RUN",
                "DETAIL",
            ],
            &table,
        ))?;
        Ok(ExitCode::SUCCESS)
    }
}

fn verify(cli: &super::Cli, json: bool) -> anyhow::Result<ExitCode> {
    let config = cli.config()?;
    let audit = &config.audit;
    anyhow::ensure!(
        audit.key_file.is_file(),
        "no audit key at {}: nothing was audited with this configuration, or the key was moved (set [audit] key-file)",
        audit.key_file.display()
    );
    let chain = audit.chain().map_err(anyhow::Error::msg)?;
    let conn = crate::db::open_read_only(&config.database_file())?
        .with_context(|| format!("no database at {}", config.database_file().display()))?;
    // Writers hold this lock from reading the chain's end to recording the
    // head: holding it too, the head and the rows read agree.
    let _lock = chain.lock();
    let outcome = chain.verify(&conn);
    drop(_lock);
    // Uses a killed process made and had not committed: not in the chain
    // yet, not lost either.
    let abandoned = crate::audit::journal::abandoned(&config.database_file(), &conn, &chain.seal());
    let journaled: usize = abandoned.iter().map(|a| a.events.len()).sum();
    // Lines no causeway sealed with this key: someone tried to slip uses
    // into the log (they are left out), or the key changed.
    let forged: Vec<String> = abandoned
        .iter()
        .filter(|a| a.unsealed > 0)
        .map(|a| format!("{} ({} lines)", a.path.display(), a.unsealed))
        .collect();
    let forged = (!forged.is_empty()).then(|| {
        format!(
            "{} without the seal of this audit key: {}; not written by causeway with this key, the next writer leaves them out",
            if forged.len() == 1 {
                "an audit journal holds lines"
            } else {
                "audit journals hold lines"
            },
            forged.join(", ")
        )
    });
    let outcome = match (outcome, forged) {
        (Ok(_), Some(message)) => Err(crate::audit::Broken { seq: 0, message }),
        (outcome, _) => outcome,
    };
    match outcome {
        Ok(report) => {
            if json {
                super::print_json(
                    &json!({ "ok": true, "report": report, "journaled": journaled }),
                )?;
            } else {
                let mut text = format!(
                    "audit log intact: {} rows checked ({}), head at {}",
                    report.rows,
                    report.span(),
                    report.head
                );
                if report.pruned_through > 0 {
                    text.push_str(&format!(", pruned through {}", report.pruned_through));
                }
                if report.after_head > 0 {
                    text.push_str(&format!(
                        ", {} rows after the head (written since it was recorded, or before an unclean stop)",
                        report.after_head
                    ));
                }
                if journaled > 0 {
                    text.push_str(&format!(
                        "; {journaled} more wait in the journal of a process that was killed before \
                         committing them, written when the host (or a command that records) starts next"
                    ));
                }
                super::print(&(text + "\n"))?;
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(broken) => {
            if json {
                super::print_json(&json!({
                    "ok": false,
                    "seq": broken.seq,
                    "message": broken.message,
                    "journaled": journaled,
                }))?;
            } else {
                eprintln!("causeway: {broken}");
            }
            Ok(ExitCode::from(1))
        }
    }
}

fn export(
    cli: &super::Cli,
    output: Option<&PathBuf>,
    since: Option<&str>,
) -> anyhow::Result<ExitCode> {
    let config = cli.config()?;
    let filter = Filter {
        since: since
            .map(query::parse_since)
            .transpose()
            .map_err(anyhow::Error::msg)?,
        ..Filter::default()
    };
    let rows = match super::read_database(&config)? {
        Some(conn) => query::query(&conn, &filter)?,
        None => Vec::new(),
    };
    let mut text = String::new();
    for row in &rows {
        text.push_str(&serde_json::to_string(row)?);
        text.push('\n');
    }
    match output {
        Some(path) => {
            let mut file = std::fs::File::create(path)
                .with_context(|| format!("cannot create {}", path.display()))?;
            file.write_all(text.as_bytes())
                .with_context(|| format!("cannot write {}", path.display()))?;
            eprintln!("{} events written to {}", rows.len(), path.display());
        }
        None => super::print(&text)?,
    }
    Ok(ExitCode::SUCCESS)
}

async fn prune(
    cli: &super::Cli,
    older_than: Option<std::time::Duration>,
    force: bool,
) -> anyhow::Result<ExitCode> {
    let host = cli.host()?;
    let keep = older_than.or(host.config.audit.retention).context(
        "no retention: pass --older-than DURATION or set [audit] retention in causeway.toml",
    )?;
    // As `[audit] retention`'s floor: "90m" (minutes) for "90M" (months)
    // would leave the security team an empty log.
    if !force {
        crate::config::range::no_shorter_than(
            "--older-than",
            keep,
            (crate::config::range::MIN_AUDIT_RETENTION, "a day"),
            "it would prune nearly all the audit log (\"90m\" is ninety minutes, \"90M\" ninety months); \
             add --force if that is what you mean",
        )
        .map_err(anyhow::Error::msg)?;
    }
    let before = crate::audit::ago(keep);
    let writer = host.open_database()?;
    writer.handle().prune_audit(before.clone());
    writer.close();
    super::print(&format!(
        "audit events before {before} pruned (see `causeway audit --plugin causeway`)\n"
    ))?;
    Ok(ExitCode::SUCCESS)
}
