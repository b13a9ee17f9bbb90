//! The `causeway` binary: plumbing only; the logic lives in the library.

use std::io::IsTerminal;
use std::process::ExitCode;

use causeway::cli::{self, Cli, Command, LogFormat};
use clap::Parser;
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The long-running host tells the operator what it does; one-shot
    // commands speak only of problems, and those that list the plugins
    // and their problems (or have no business with them: a plugin's
    // storage) do not log them a second time.
    let default_level = match cli.command {
        Command::Run(_) => "info",
        Command::Check(_) | Command::Plugins(_) | Command::Grants(_) | Command::Storage(_) => {
            "warn,causeway::registry=error"
        }
        _ => "warn",
    };
    let filter =
        EnvFilter::try_from_env("CAUSEWAY_LOG").unwrap_or_else(|_| EnvFilter::new(default_level));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    match cli.log_format {
        LogFormat::Human => logs.init(),
        LogFormat::Json => logs.json().init(),
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(cli::run(cli)) {
        Ok(code) => code,
        Err(e) => {
            // A plugin's or a third party's words may be in it.
            let message = format!("{e:#}");
            eprintln!("error: {}", cli::table::printable(&message, true));
            ExitCode::FAILURE
        }
    }
}
