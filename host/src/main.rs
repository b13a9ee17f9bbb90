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
    // The folder watcher's own bookkeeping (a watch it drops twice when a
    // watched folder is removed) is no news; its errors reach the host,
    // which says them.
    let default_level = match cli.command {
        Command::Run(_) => "info,notify=error",
        Command::Check(_) | Command::Plugins(_) | Command::Grants(_) | Command::Storage(_) => {
            "warn,causeway::registry=error"
        }
        _ => "warn,notify=error",
    };
    let filter =
        EnvFilter::try_from_env("CAUSEWAY_LOG").unwrap_or_else(|_| EnvFilter::new(default_level));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    match cli.log_format {
        LogFormat::Human => logs.fmt_fields(one_line_fields()).init(),
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

/// The human log's fields, as tracing-subscriber writes them (the message,
/// then `name=value`), with every control character escaped: a line break
/// and a carriage return too, which it leaves as they are. A plugin's log
/// line, a file's name in the plugins folder, an API's error message are
/// not the host's to print raw: each event is one line, and no text can
/// write a line of the log that looks like the host's own (`--log-format
/// json` escapes them as JSON does).
fn one_line_fields() -> impl for<'w> tracing_subscriber::fmt::FormatFields<'w> {
    use tracing_subscriber::field::MakeExt;
    tracing_subscriber::fmt::format::debug_fn(|writer, field, value| {
        let text = match field.name() {
            "message" => format!("{value:?}"),
            name => format!("{name}={value:?}"),
        };
        writer.write_str(&cli::table::printable(&text, false))
    })
    .delimited(" ")
}
