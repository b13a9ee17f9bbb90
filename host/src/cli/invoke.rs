//! `causeway invoke`: one call against one plugin, the plugin author's tool.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use serde_json::Value;

use crate::operation::Operation;
use crate::registry::Installed;

/// Call one operation of a plugin, by name from the plugins folder or by path:
/// JSON in, JSON out.
///
/// Operations: check, discover, read (input {"stream", "checkpoint"?}), write
/// and transform (input: an array of records {"stream", "key", "op"?, "data"}),
/// handle (input {"method"?, "path"?, "headers"?, "body"}).
///
/// The call runs exactly as in the host: the plugin's grants apply, a plugin
/// pending approval does not run, and capability uses are audited.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Examples:\n  causeway invoke map-fullname transform --input contacts.json\n  causeway invoke ./target/my_plugin.wasm discover\n  echo '{\"stream\":\"contacts\"}' | causeway invoke crm-source read --input - --config crm.json"
)]
pub struct Opts {
    /// A plugin name from the plugins folder, or a path to a `.wasm` file.
    pub plugin: String,
    /// The operation.
    pub operation: String,
    /// A JSON file with the operation's input, or `-` for stdin.
    #[arg(long)]
    pub input: Option<PathBuf>,
    /// Run as in this pipeline: its storage namespace (default: none).
    #[arg(long, value_name = "NAME")]
    pub pipeline: Option<String>,
    /// A JSON file with the plugin's configuration (default: its section of
    /// causeway.toml, or `{}`).
    #[arg(long)]
    pub config: Option<PathBuf>,
}

impl Opts {
    /// Runs the command.
    pub async fn run(&self, cli: &super::Cli) -> anyhow::Result<ExitCode> {
        let host = cli.host()?.with_artifact_cache();
        let file = super::plugin_path(
            &host.config.plugins_dir,
            &self.plugin,
            host.runtime.max_plugin_bytes,
        )?;
        let plugin = host.runtime.load_plugin(&file)?;
        let installed = Installed::new(
            plugin,
            &host.grants,
            host.config.limits,
            &host.runtime.egress,
        );
        let installed = installed.callable(&host.grants.file)?;
        let input = self.input.as_deref().map(read_json).transpose()?;
        let config = match &self.config {
            Some(path) => read_json(path)?,
            None => host.config.plugin_config(&installed.plugin.info.name),
        };
        anyhow::ensure!(
            config.is_object(),
            "{}: the configuration must be a JSON object",
            self.config.as_deref().unwrap_or(Path::new("-")).display()
        );
        let operation = Operation::parse(&installed.plugin, &self.operation, input)?;
        let writer = host.open_database()?;
        let pipeline = self.pipeline.as_deref().unwrap_or_default();
        let context = installed.call_context(&config, &writer.handle(), &host.secrets, pipeline);
        let answer = installed
            .plugin
            .call(&host.runtime.engine, operation, &context)
            .await;
        writer.close();
        super::print_json(&answer?)?;
        Ok(ExitCode::SUCCESS)
    }
}

fn read_json(path: &Path) -> anyhow::Result<Value> {
    let mut text = String::new();
    if path == Path::new("-") {
        std::io::stdin()
            .read_to_string(&mut text)
            .context("cannot read the input from stdin")?;
    } else {
        text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
    }
    serde_json::from_str(&text).with_context(|| format!("{} is not valid JSON", path.display()))
}
