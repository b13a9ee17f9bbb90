//! `causeway token rotate`: a new operator API token, taken by a running
//! host with its next request.

use std::process::ExitCode;

use crate::audit::{AuditEvent, Decision};
use crate::server::OperatorToken;

/// The operator API's token (`DATA_DIR/operator.token`).
#[derive(Debug, clap::Args)]
pub struct Opts {
    /// What to do with it.
    #[command(subcommand)]
    pub action: Action,
}

/// What `causeway token` does.
#[derive(Debug, clap::Subcommand)]
pub enum Action {
    /// Replace the token with a new random one, whether a host runs or not.
    ///
    /// A running host refuses the old token from its next request on, with
    /// no restart; clients (a metrics scraper, scripts) must read the new
    /// one from the file. The token itself is never printed or audited.
    #[command(after_help = "Examples:\n  causeway token rotate")]
    Rotate,
}

impl Opts {
    /// Runs the command.
    pub fn run(&self, cli: &super::Cli) -> anyhow::Result<ExitCode> {
        let Action::Rotate = self.action;
        let config = cli.config()?;
        let token = OperatorToken::rotate(&config.data_dir).map_err(anyhow::Error::msg)?;
        let file = token.path().display().to_string();
        super::record(
            &config,
            AuditEvent::host(
                "api",
                "token-rotate",
                &file,
                Decision::Allowed,
                "a new operator token; the one before is refused from now on".to_string(),
            ),
        )?;
        super::print(&format!(
            "rotated the operator token in {file}: a running host refuses the one before \
             from its next request on; give clients (a metrics scraper) the new one from the file\n"
        ))?;
        Ok(ExitCode::SUCCESS)
    }
}
