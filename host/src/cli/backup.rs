//! `causeway backup DIR` and `causeway restore DIR`: the data folder's
//! state, copied while a host runs, and put back while none does.

use std::path::PathBuf;
use std::process::ExitCode;

use serde_json::json;

use crate::audit::{AuditEvent, Decision};
use crate::backup::{self, DATABASE, HEAD};
use crate::config::Config;
use crate::host::Claim;

/// Back up the database and its audit head into a new folder, while the
/// host runs or not.
///
/// The folder gets causeway.db (plugin states, checkpoints, the webhook
/// inbox, dead letters, plugins' storage, the audit log) and audit.head,
/// taken together so the copy's audit log verifies. The audit key is not
/// copied: keep a copy of it elsewhere. Exits 1 if the copy's audit log
/// does not verify (the copy is kept: it holds the rest all the same).
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:\n  causeway backup /backups/causeway-2026-12-05")]
pub struct BackupOpts {
    /// The folder to write (made owner-only); it must not hold a backup yet.
    pub dir: PathBuf,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

impl BackupOpts {
    /// Runs the command.
    pub fn run(&self, cli: &super::Cli) -> anyhow::Result<ExitCode> {
        let config = cli.config()?;
        let made = backup::make(&config.database_file(), &config.audit, &self.dir)?;
        let (verdict, intact) = match &made.audit {
            Some(Ok(report)) => (format!("audit log intact: {}", report.span()), true),
            Some(Err(broken)) => (format!("the copy's {broken}"), false),
            None => ("no audit key, so no audit log to check".to_string(), true),
        };
        record(
            &config,
            "backup",
            &self.dir,
            format!("{} bytes; {verdict}", made.bytes),
        )?;
        if self.json {
            super::print_json(&json!({
                "dir": self.dir,
                "bytes": made.bytes,
                "audit": match &made.audit {
                    Some(Ok(report)) => json!({ "ok": true, "report": report }),
                    Some(Err(broken)) => json!({ "ok": false, "seq": broken.seq, "message": broken.message }),
                    None => serde_json::Value::Null,
                },
            }))?;
        } else {
            super::print(&format!(
                "backed up {} into {} ({DATABASE}, {HEAD}; {} bytes); {verdict}\n\
                 The audit key is not in it: keep a copy of {} elsewhere.\n",
                config.database_file().display(),
                self.dir.display(),
                made.bytes,
                config.audit.key_file.display()
            ))?;
        }
        Ok(if intact {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(1)
        })
    }
}

/// Restore a backup made by `causeway backup`, with no host running.
///
/// The backup's audit log is first checked with the audit key; if it does
/// not verify, nothing is changed. The current database and audit head are
/// moved aside (`causeway.db.replaced-TIME`), not deleted.
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:\n  causeway restore /backups/causeway-2026-12-05")]
pub struct RestoreOpts {
    /// The backup folder.
    pub dir: PathBuf,
}

impl RestoreOpts {
    /// Runs the command.
    pub fn run(&self, cli: &super::Cli) -> anyhow::Result<ExitCode> {
        let config = cli.config()?;
        // A running host has the database open and would write on.
        let _claim = Claim::take(&config.data_dir)?;
        let database = config.database_file();
        let restored = backup::restore(&self.dir, &database, &config.audit)?;
        let aside: Vec<String> = restored
            .set_aside
            .iter()
            .map(|p| p.display().to_string())
            .collect();
        let aside = if aside.is_empty() {
            "nothing was there before".to_string()
        } else {
            format!("what was there is kept as {}", aside.join(" and "))
        };
        record(
            &config,
            "restore",
            &self.dir,
            format!("audit log {}; {aside}", restored.audit.span()),
        )?;
        super::print(&format!(
            "restored {} as {}: its audit log verifies ({}); {aside}\n",
            self.dir.display(),
            database.display(),
            restored.audit.span(),
        ))?;
        Ok(ExitCode::SUCCESS)
    }
}

/// Records the backup or restore in the audit log (the live one: a
/// restore's row is the first the restored chain goes on with).
fn record(
    config: &Config,
    action: &str,
    dir: &std::path::Path,
    detail: String,
) -> anyhow::Result<()> {
    let target = dir
        .canonicalize()
        .or_else(|_| std::path::absolute(dir))
        .unwrap_or_else(|_| dir.to_path_buf());
    super::record(
        config,
        AuditEvent::host(
            "database",
            action,
            &target.display().to_string(),
            Decision::Allowed,
            detail,
        ),
    )
}
