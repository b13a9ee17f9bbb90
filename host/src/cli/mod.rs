//! The `causeway` command line: one module per subcommand, each an `Opts`
//! (its doc comment is the help text) and a `run`. This is the binary's edge,
//! so errors are `anyhow` here.

pub mod audit;
pub mod backup;
pub mod check;
pub mod demo;
pub mod dlq;
pub mod grants;
pub mod inspect;
pub mod invoke;
pub mod new;
pub mod pipeline;
pub mod pipelines;
pub mod plugins;
pub mod run;
pub mod storage;
pub mod table;
pub mod test;
pub mod token;

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

use crate::config::Config;
use crate::engine::Runtime;
use crate::host::Host;

/// Causeway connects third-party systems through sandboxed WebAssembly plugins.
#[derive(Debug, Parser)]
#[command(name = "causeway", version)]
pub struct Cli {
    /// The operator's configuration (default: ./causeway.toml if it exists,
    /// else embedded defaults).
    #[arg(long, global = true, env = "CAUSEWAY_CONFIG", value_name = "FILE")]
    pub config_file: Option<PathBuf>,
    /// The plugins folder, overriding the configuration's: every `.wasm` at
    /// its top level is a plugin.
    #[arg(long, global = true, env = "CAUSEWAY_PLUGINS", value_name = "DIR")]
    pub plugins: Option<PathBuf>,
    /// How log lines on stderr are written.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Human)]
    pub log_format: LogFormat,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// One readable line per event.
    Human,
    /// One JSON object per event.
    Json,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the host: load the plugins, serve the status API, until stopped.
    Run(run::Opts),
    /// Validate the configuration, the grants and the installed plugins.
    Check(check::Opts),
    /// List the installed plugins: name, version, worlds, digest, state, error.
    Plugins(plugins::Opts),
    /// Every plugin's requested, granted and effective capabilities.
    Grants(grants::Opts),
    /// The audit trail: query, verify, export, prune.
    Audit(audit::Opts),
    /// Show the keys a plugin keeps in storage, and their sizes.
    Storage(storage::Opts),
    /// Show what a plugin file is and asks for, without running it.
    Inspect(inspect::Opts),
    /// Call one operation of a plugin: JSON in, JSON out.
    Invoke(invoke::Opts),
    /// Create a plugin crate: a connector or a transform, ready to build and test.
    New(new::Opts),
    /// Check a plugin against the contract, HTTP answered from recorded fixtures.
    Test(test::Opts),
    /// The whole story on one machine: a fake CRM, mailer and calendar,
    /// the example plugins, and pipelines moving contacts between them.
    Demo(demo::Opts),
    /// List the pipelines: trigger, state, last run, lag.
    Pipelines(pipelines::Opts),
    /// Pause, resume, run now, or reset one pipeline.
    Pipeline(pipeline::Opts),
    /// List pipeline runs: counts, duration, outcome.
    Runs(pipelines::RunsOpts),
    /// The dead-letter queue: list, replay and drop the records a sink rejected or a stage set aside.
    Dlq(dlq::Opts),
    /// Back up the database and its audit head, while the host runs or not.
    Backup(backup::BackupOpts),
    /// Restore a backup, with no host running.
    Restore(backup::RestoreOpts),
    /// The operator API's token: rotate it.
    Token(token::Opts),
}

/// Runs the parsed command line.
pub async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match &cli.command {
        Command::Run(opts) => opts.run(&cli).await,
        Command::Check(opts) => opts.run(&cli),
        Command::Plugins(opts) => opts.run(&cli),
        Command::Storage(opts) => opts.run(&cli),
        Command::Grants(opts) => opts.run(&cli).await,
        Command::Audit(opts) => opts.run(&cli).await,
        Command::Inspect(opts) => opts.run(&cli),
        Command::Invoke(opts) => opts.run(&cli).await,
        Command::Test(opts) => opts.run(&cli).await,
        Command::New(opts) => opts.run(),
        Command::Demo(opts) => opts.run().await,
        Command::Pipelines(opts) => opts.run(&cli),
        Command::Runs(opts) => opts.run(&cli),
        Command::Pipeline(opts) => opts.run(&cli).await,
        Command::Dlq(opts) => opts.run(&cli).await,
        Command::Backup(opts) => opts.run(&cli),
        Command::Restore(opts) => opts.run(&cli),
        Command::Token(opts) => opts.run(&cli),
    }
}

impl Cli {
    /// The configuration these options name, with its files loaded.
    pub fn host(&self) -> anyhow::Result<Host> {
        Ok(Host::load(
            self.config_file.as_deref(),
            self.plugins.as_deref(),
        )?)
    }

    /// The configuration these options name, files not yet checked.
    pub fn config(&self) -> anyhow::Result<Config> {
        let mut config = Config::load(self.config_file.as_deref())?;
        if let Some(dir) = &self.plugins {
            config.plugins_in(dir.clone());
        }
        Ok(config)
    }
}

/// Records what a command did in the audit log, as the host's own row.
fn record(config: &Config, event: crate::audit::AuditEvent) -> anyhow::Result<()> {
    let chain = config.audit.chain().map_err(anyhow::Error::msg)?;
    let writer = crate::db::Writer::start(&config.database_file(), chain)?;
    writer.handle().audit(event);
    writer.close();
    Ok(())
}

/// The database for reading, if it exists. One with an older schema is an
/// error, not an empty answer: it holds what an older causeway recorded
/// (a dead letter, an audit row), which this one's queries cannot read
/// until it is migrated, and a read-only command must not migrate it under
/// the older host that may be running on it.
fn read_database(config: &Config) -> anyhow::Result<Option<rusqlite::Connection>> {
    let path = config.database_file();
    let Some(conn) = crate::db::open_read_only(&path)? else {
        return Ok(None);
    };
    let version: i64 = conn.pragma_query_value(None, "user_version", |row| row.get(0))?;
    anyhow::ensure!(
        version >= crate::db::SCHEMA_VERSION,
        "cannot read the database {}: it has schema version {version}, older than this causeway's {}; `causeway run` migrates it when it starts (stop the older host first), or read it with the causeway that wrote it",
        path.display(),
        crate::db::SCHEMA_VERSION
    );
    Ok(Some(conn))
}

/// ` (did you mean "X"?)` when one of `known` is close to `asked` (a
/// typo), else nothing: for the messages that say a name is unknown.
fn guess<'a>(asked: &str, known: impl IntoIterator<Item = &'a str>) -> String {
    crate::config::closest(asked, known.into_iter().filter(|k| *k != asked))
        .map(|k| format!(" (did you mean {k:?}?)"))
        .unwrap_or_default()
}

/// `flag` names credential `name`: an error with the likely name unless
/// `plugin` (its manifest `manifest`) requests it. Most often a typo,
/// which would otherwise be passed over.
fn requested_credential(
    flag: &str,
    name: &str,
    plugin: &str,
    manifest: &crate::manifest::Manifest,
) -> anyhow::Result<()> {
    let requested = || {
        manifest
            .capabilities
            .credentials
            .iter()
            .map(|c| c.name.as_str())
    };
    anyhow::ensure!(
        requested().any(|c| c == name),
        "{flag} {name}: {plugin} requests no credential of that name{}",
        guess(name, requested())
    );
    Ok(())
}

/// `--pipeline name` found nothing: fine for a pipeline the configuration
/// has (or had, when `found` something), an error with the likely name for
/// one it never had (a typo), not an empty answer.
fn known_pipeline(config: &Config, name: &str, found: bool) -> anyhow::Result<()> {
    anyhow::ensure!(
        found || config.pipelines.contains_key(name),
        "no pipeline named {name:?} in the configuration, and nothing recorded for one{} (see `causeway pipelines`)",
        guess(name, config.pipelines.keys().map(String::as_str))
    );
    Ok(())
}

/// A `NAME=VALUE` argument of `flag`, both sides non-empty.
fn split_pair<'a>(pair: &'a str, flag: &str) -> anyhow::Result<(&'a str, &'a str)> {
    pair.split_once('=')
        .filter(|(name, value)| !name.is_empty() && !value.is_empty())
        .with_context(|| format!("{flag} {pair:?}: write NAME=VALUE"))
}

/// The file of the plugin a user named: a path (it ends in `.wasm` or holds a
/// separator) or a plugin name from the plugins folder `dir`.
/// Files over `max_bytes` are passed over.
fn plugin_path(dir: &Path, named: &str, max_bytes: u64) -> anyhow::Result<PathBuf> {
    if named.ends_with(".wasm") || named.contains(std::path::MAIN_SEPARATOR) {
        let path = PathBuf::from(named);
        // One that is there but no regular file (a FIFO, a folder) is
        // named for what it is when it is read.
        anyhow::ensure!(path.metadata().is_ok(), "{named}: no such plugin file");
        return Ok(path);
    }
    if let Some(found) = crate::registry::find_named(dir, named, max_bytes)
        .with_context(|| format!("cannot read the plugins folder {}", dir.display()))?
    {
        return Ok(found.path);
    }
    anyhow::bail!(
        "no plugin named {named:?} in {}{} (see `causeway plugins`)",
        dir.display(),
        names_like(dir, named, max_bytes)
    )
}

/// [`guess`] among the names the plugin files in `dir` give.
fn names_like(dir: &Path, named: &str, max_bytes: u64) -> String {
    let names = crate::registry::plugin_names(dir, max_bytes).unwrap_or_default();
    guess(named, names.iter().map(String::as_str))
}

/// Builds the runtime for commands that need no host: the engine as
/// causeway.toml's `[engine]` sets it (its largest plugin file included).
fn runtime(config: &Config) -> anyhow::Result<Runtime> {
    Runtime::with_settings(&config.engine)
        .map_err(|e| anyhow::anyhow!("cannot start the WebAssembly engine: {e:#}"))
}

/// Writes `text` to stdout; a closed pipe (`causeway plugins | head`) is not an error.
/// Control characters other than line breaks are shown escaped
/// ([`table::printable`]): what is printed may be a third party's text.
pub fn print(text: &str) -> anyhow::Result<()> {
    let text = table::printable(text, true);
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => Ok(other?),
    }
}

/// Writes `value` as pretty JSON and a newline to stdout.
pub fn print_json(value: &impl serde::Serialize) -> anyhow::Result<()> {
    print(&(serde_json::to_string_pretty(value)? + "\n"))
}
