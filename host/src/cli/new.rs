//! `causeway new`: scaffold a plugin crate.

use std::path::PathBuf;
use std::process::ExitCode;

use crate::scaffold::{self, Kind, Sdk};

/// Create a plugin crate that builds, loads and passes `causeway test` as it
/// is: the plugin, its manifest, unit tests, fixtures and a README saying
/// what to do next. The SDK and the WIT contract are vendored into it.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Examples:\n  causeway new connector acme-crm\n  causeway new transform tidy-contacts --dir plugins/tidy"
)]
pub struct Opts {
    /// A connector (source + sink over an HTTP API) or a transform.
    #[arg(value_enum)]
    pub kind: Kind,
    /// The plugin's name: lower-case letters, digits and '-'.
    pub name: String,
    /// The folder to create (default: ./NAME).
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// Depend on the causeway-sdk crate at this path instead of vendoring it.
    #[arg(long, value_name = "DIR")]
    pub sdk: Option<PathBuf>,
}

impl Opts {
    /// Runs the command.
    pub fn run(&self) -> anyhow::Result<ExitCode> {
        let dir = self
            .dir
            .clone()
            .unwrap_or_else(|| PathBuf::from(&self.name));
        let sdk = match &self.sdk {
            Some(path) => Sdk::Path(std::path::absolute(path)?),
            None => Sdk::Vendored,
        };
        let files = scaffold::create(self.kind, &self.name, &dir, &sdk)?;
        let wasm = format!("{}.wasm", self.name.replace('-', "_"));
        super::print(&format!(
            "created {} ({} files)\n\nnext:\n  cd {}\n  cargo test\n  cargo build --release --target wasm32-wasip2\n  causeway test target/wasm32-wasip2/release/{wasm} --fixtures fixtures\n\nthe README says the rest.\n",
            dir.display(),
            files.len(),
            dir.display()
        ))?;
        Ok(ExitCode::SUCCESS)
    }
}
