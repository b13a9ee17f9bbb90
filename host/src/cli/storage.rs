//! `causeway storage`: what a plugin keeps in its private storage, for an
//! operator (keys and sizes, never values).

use std::process::ExitCode;

use serde_json::json;

use crate::caps::storage::{self, Namespace};
use crate::db;

/// Show the keys a plugin keeps in storage and their sizes (never values).
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Examples:\n  causeway storage crm-source\n  causeway storage crm-source --pipeline crm-to-mailer --json"
)]
pub struct Opts {
    /// The plugin.
    pub plugin: String,
    /// The pipeline whose namespace to show (default: the plugin's own, outside pipelines).
    #[arg(long, value_name = "NAME")]
    pub pipeline: Option<String>,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

impl Opts {
    /// Runs the command.
    pub fn run(&self, cli: &super::Cli) -> anyhow::Result<ExitCode> {
        let config = cli.config()?;
        let namespace = Namespace {
            plugin: self.plugin.clone(),
            pipeline: self.pipeline.clone().unwrap_or_default(),
        };
        let keys = match db::open_read_only(&config.database_file())? {
            Some(conn) => storage::list(&conn, &namespace, "")?,
            None => Vec::new(),
        };
        // A removed plugin's keys still show; a name no plugin has, with
        // nothing stored under it (a typo), is said to be unknown.
        if keys.is_empty() {
            let statuses = super::plugins::statuses(&config)?;
            anyhow::ensure!(
                statuses.iter().any(|s| s.name == self.plugin),
                "no plugin named {:?} in {}, and nothing stored under that name{} (see `causeway plugins`)",
                self.plugin,
                config.plugins_dir.display(),
                super::guess(&self.plugin, statuses.iter().map(|s| s.name.as_str()))
            );
            if let Some(name) = &self.pipeline {
                super::known_pipeline(&config, name, false)?;
            }
        }
        if self.json {
            let rows: Vec<_> = keys
                .iter()
                .map(|(key, bytes)| json!({ "key": key, "bytes": bytes }))
                .collect();
            super::print_json(&rows)?;
            return Ok(ExitCode::SUCCESS);
        }
        let rows: Vec<Vec<String>> = keys
            .iter()
            .map(|(key, bytes)| vec![key.escape_debug().to_string(), bytes.to_string()])
            .collect();
        let total: u64 = keys
            .iter()
            .map(|(key, bytes)| key.len() as u64 + bytes)
            .sum();
        let mut out = super::table::render(&["KEY", "BYTES"], &rows);
        out.push_str(&format!("\n{} keys, {total} bytes with keys\n", keys.len()));
        super::print(&out)?;
        Ok(ExitCode::SUCCESS)
    }
}
