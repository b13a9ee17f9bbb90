//! `causeway inspect`: what a plugin file is and what it asks for, read
//! without running any of its code.

use std::path::PathBuf;
use std::process::ExitCode;

use serde_json::json;

use crate::plugin;

/// Show a plugin file's manifest, worlds (from its exports), requested
/// capabilities, imports and exports, and whether the host would load it.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Examples:\n  causeway inspect plugins/crm-source.wasm\n  causeway inspect crm-source --json"
)]
pub struct Opts {
    /// A `.wasm` file, or a plugin name from the plugins folder.
    pub file: PathBuf,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

impl Opts {
    /// Runs the command.
    pub fn run(&self, cli: &super::Cli) -> anyhow::Result<ExitCode> {
        let config = cli.config()?;
        let runtime = super::runtime(&config)?;
        // By name too, as `invoke` and `test` take it.
        let file = super::plugin_path(
            &config.plugins_dir,
            &self.file.to_string_lossy(),
            runtime.max_plugin_bytes,
        )?;
        let inspection = plugin::inspect(
            &runtime.engine,
            &file,
            runtime.max_plugin_bytes,
            runtime.compile_limits,
        )?;
        let problem = inspection
            .validate()
            .err()
            .map(|e| format!("{}: {e}", file.display()));
        let info = &inspection.info;
        if self.json {
            super::print_json(&json!({
                "file": info.path,
                "name": info.name,
                "version": info.version,
                "digest": info.digest,
                "manifest": info.manifest,
                "manifest_origin": info.manifest_origin,
                "worlds": info.worlds,
                "imports": info.imports,
                "exports": info.exports,
                "valid": problem.is_none(),
                "error": problem,
            }))?;
        } else {
            let m = &info.manifest;
            let mut out = format!(
                "{} {}\n  {}\nfile:      {}\ndigest:    {}\ncontract:  causeway:plugin@{}\nmanifest:  {}\nworlds:    {}\n",
                info.name,
                info.version,
                // The plugin's text: on one line, so it cannot forge the
                // lines below it.
                super::table::printable(&m.description, false),
                info.path.display(),
                info.digest,
                m.contract,
                info.manifest_origin.name(),
                info.worlds
                    .iter()
                    .map(|w| w.name())
                    .collect::<Vec<_>>()
                    .join(", "),
            );
            out.push_str("requests:\n");
            let caps = &m.capabilities;
            if caps.http.is_empty() && caps.credentials.is_empty() && !caps.storage {
                out.push_str("  nothing beyond config and log\n");
            }
            for rule in &caps.http {
                out.push_str(&format!(
                    "  http {} {}://{}{}{}\n",
                    rule.methods.join(","),
                    rule.scheme,
                    rule.host,
                    rule.port.map(|p| format!(":{p}")).unwrap_or_default(),
                    rule.path_prefix
                ));
            }
            for credential in &caps.credentials {
                out.push_str(&format!(
                    "  credential {} ({})\n",
                    credential.name,
                    super::table::printable(&credential.description, false)
                ));
            }
            if caps.storage {
                out.push_str("  storage\n");
            }
            if let Some(schema) = &m.config_schema {
                out.push_str(&format!(
                    "config schema:\n  {}\n",
                    serde_json::to_string(schema)?
                ));
            }
            out.push_str("imports:\n");
            for import in &info.imports {
                out.push_str(&format!("  {import}\n"));
            }
            out.push_str("exports:\n");
            for export in &info.exports {
                out.push_str(&format!("  {export}\n"));
            }
            super::print(&out)?;
        }
        match problem {
            Some(problem) => {
                // As main.rs prints an error: a plugin's text may be in it.
                eprintln!("error: {}", super::table::printable(&problem, true));
                Ok(ExitCode::FAILURE)
            }
            None => Ok(ExitCode::SUCCESS),
        }
    }
}
