//! `causeway plugins`: the installed plugins and their states.

use std::path::Path;
use std::process::ExitCode;

use crate::registry::Registry;

/// List the installed plugins: name, version, worlds, digest, state and, for a
/// file that failed to load, why.
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:\n  causeway plugins\n  causeway plugins --json | jq '.[].state'")]
pub struct Opts {
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

impl Opts {
    /// Runs the command against the plugins folder `dir`.
    pub fn run(&self, dir: &Path) -> anyhow::Result<ExitCode> {
        let runtime = super::runtime()?;
        let registry = Registry::load_dir(&runtime.engine, &runtime.linker, dir).map_err(|e| {
            anyhow::anyhow!("cannot read the plugins folder {}: {e}", dir.display())
        })?;
        let statuses = registry.statuses();
        if self.json {
            super::print_json(&statuses)?;
            return Ok(ExitCode::SUCCESS);
        }
        if statuses.is_empty() {
            super::print(&format!("no plugins in {}\n", dir.display()))?;
            return Ok(ExitCode::SUCCESS);
        }
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
        let mut out =
            super::table::render(&["NAME", "VERSION", "WORLDS", "STATE", "DIGEST"], &rows);
        for s in statuses.iter().filter(|s| s.error.is_some()) {
            out.push_str(&format!(
                "\nerror: {}",
                s.error.as_deref().unwrap_or_default()
            ));
        }
        if out.ends_with(|c| c != '\n') {
            out.push('\n');
        }
        super::print(&out)?;
        Ok(ExitCode::SUCCESS)
    }
}

/// `sha256:` and the first 12 hex digits: enough to tell versions apart.
fn short_digest(digest: &str) -> String {
    digest.chars().take("sha256:".len() + 12).collect()
}
