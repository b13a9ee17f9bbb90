//! `causeway demo`: the main job on embedded defaults. Today it installs the
//! example plugins into a plugins folder under the data directory, loads them
//! like any plugin, and runs `map-fullname` on sample contacts.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use serde_json::Value;

use crate::config::Config;
use crate::host::Host;
use crate::operation::Operation;

/// The example plugins, built by `build.rs` for wasm32-wasip2.
const EXAMPLES: &[(&str, &[u8])] = &[
    (
        "map-fullname.wasm",
        include_bytes!(concat!(
            env!("CAUSEWAY_BUILT_PLUGINS"),
            "/map_fullname.wasm"
        )),
    ),
    (
        "crm-source.wasm",
        include_bytes!(concat!(env!("CAUSEWAY_BUILT_PLUGINS"), "/crm_source.wasm")),
    ),
    (
        "mailer-sink.wasm",
        include_bytes!(concat!(env!("CAUSEWAY_BUILT_PLUGINS"), "/mailer_sink.wasm")),
    ),
];

/// Sample CRM contacts, as records.
const CONTACTS: &str = include_str!("../../../examples/contacts.json");

/// Install the example plugins into DATA_DIR/plugins and run the
/// `map-fullname` transform on sample contacts, printing what went in and
/// what came out.
#[derive(Debug, clap::Args)]
#[command(after_help = "Example:\n  cargo run --release -- demo")]
pub struct Opts {
    /// The data directory.
    #[arg(long, default_value = "causeway-data")]
    pub data_dir: PathBuf,
}

impl Opts {
    /// Runs the demo.
    pub async fn run(&self) -> anyhow::Result<ExitCode> {
        let plugins = self.data_dir.join("plugins");
        std::fs::create_dir_all(&plugins)
            .with_context(|| format!("cannot create the plugins folder {}", plugins.display()))?;
        for (file, bytes) in EXAMPLES {
            let path = plugins.join(file);
            // Write beside, then rename: a running host never sees half a file.
            let partial = plugins.join(format!(".{file}.partial"));
            std::fs::write(&partial, bytes)
                .with_context(|| format!("cannot write {}", partial.display()))?;
            std::fs::rename(&partial, &path)
                .with_context(|| format!("cannot install {}", path.display()))?;
        }
        let mut config = Config::load(None)?;
        config.data_dir = self.data_dir.clone();
        config.plugins_dir = plugins.clone();
        let host = Host::with_config(config)?;
        let registry = host.registry()?;
        let mut out = format!(
            "Installed the example plugins into {}:\n",
            plugins.display()
        );
        for status in registry.statuses() {
            out.push_str(&format!(
                "  {:<14} {:<8} {:<16} {}\n",
                status.name,
                status.version.as_deref().unwrap_or("-"),
                status
                    .worlds
                    .iter()
                    .map(|w| w.name())
                    .collect::<Vec<_>>()
                    .join("+"),
                status.state.name(),
            ));
        }
        out.push_str(
            "  (nothing is granted by default: the connectors wait for an operator's grants.toml; see `causeway check`)\n",
        );
        let installed = registry.callable("map-fullname")?;
        let plugin = &installed.plugin;
        let input: Value =
            serde_json::from_str(CONTACTS).context("the sample contacts are not JSON")?;
        out.push_str("\nCRM contacts in:\n");
        out.push_str(&serde_json::to_string_pretty(&input)?);
        let operation = Operation::parse(plugin, "transform", Some(input))?;
        let writer = host.open_database()?;
        let context = installed.call_context(
            &Value::Object(Default::default()),
            &writer.handle(),
            &host.secrets,
            "",
        );
        let output = plugin.call(&host.runtime.engine, operation, &context).await;
        writer.close();
        let output = output?;
        out.push_str(
            "\n\nmap-fullname out (firstName + lastName → fullName; no email → dropped):\n",
        );
        out.push_str(&serde_json::to_string_pretty(&output)?);
        out.push('\n');
        super::print(&out)?;
        Ok(ExitCode::SUCCESS)
    }
}
