//! `causeway plugins`: the installed plugins and their states.

use std::process::ExitCode;

use crate::db;
use crate::host::Host;
use crate::registry::PluginStatus;

/// List the installed plugins: name, version, worlds, digest, state and, for a
/// plugin that is not active, why.
///
/// While a host runs on this data directory, this shows the states it
/// recorded (the same truth as its /api/plugins); otherwise it loads the
/// plugins folder against the grants itself.
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:\n  causeway plugins\n  causeway plugins --json | jq '.[].state'")]
pub struct Opts {
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

impl Opts {
    /// Runs the command.
    pub fn run(&self, cli: &super::Cli) -> anyhow::Result<ExitCode> {
        let config = cli.config()?;
        let statuses = statuses(&config)?;
        if self.json {
            super::print_json(&statuses)?;
            return Ok(ExitCode::SUCCESS);
        }
        if statuses.is_empty() {
            super::print(&format!("no plugins in {}\n", config.plugins_dir.display()))?;
            return Ok(ExitCode::SUCCESS);
        }
        super::print(&table(&statuses))?;
        Ok(ExitCode::SUCCESS)
    }
}

/// The installed plugins' states: a running host's, as it recorded them in
/// the database, or else the plugins folder loaded against the grants here.
pub fn statuses(config: &crate::config::Config) -> anyhow::Result<Vec<PluginStatus>> {
    Ok(match db::running_host_states(&config.database_file())? {
        Some(rows) => rows.into_iter().map(PluginStatus::from_row).collect(),
        None => Host::with_config(config.clone())?
            .with_artifact_cache()
            .registry()?
            .statuses(),
    })
}

/// The human table, with one `error:` line per plugin that is not active:
/// one line, `\n` escaped (the error names the file, a name chosen by
/// whoever dropped it there, and may quote the plugin).
pub fn table(statuses: &[PluginStatus]) -> String {
    let mut out = grid(statuses);
    for s in statuses.iter().filter(|s| s.error.is_some()) {
        out.push_str(&format!(
            "\nerror: {}",
            super::table::printable(s.error.as_deref().unwrap_or_default(), false)
        ));
    }
    if !out.ends_with('\n') {
        out.push('\n');
    }
    out
}

/// The table alone: a row per plugin.
pub fn grid(statuses: &[PluginStatus]) -> String {
    let rows: Vec<Vec<String>> = statuses
        .iter()
        .map(|s| {
            vec![
                s.name.clone(),
                s.version.clone().unwrap_or_else(|| "-".into()),
                if s.worlds.is_empty() {
                    "-".into()
                } else {
                    s.worlds
                        .iter()
                        .map(|w| w.name())
                        .collect::<Vec<_>>()
                        .join(",")
                },
                s.state.name().to_string(),
                s.digest
                    .as_deref()
                    .map(short_digest)
                    .unwrap_or_else(|| "-".into()),
            ]
        })
        .collect();
    super::table::render(&["NAME", "VERSION", "WORLDS", "STATE", "DIGEST"], &rows)
}

/// `sha256:` and the first 12 hex digits: enough to tell versions apart.
fn short_digest(digest: &str) -> String {
    digest.chars().take("sha256:".len() + 12).collect()
}
