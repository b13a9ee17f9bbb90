//! `causeway check`: validates every file the host reads, and the installed
//! plugins against them, without starting anything.

use std::process::ExitCode;

use serde::Serialize;
use serde_json::json;

use crate::config::FileError;
use crate::db;
use crate::host::Host;
use crate::registry::{PluginState, PluginStatus};
use crate::schema;

/// Validate causeway.toml, grants.toml, the secrets and the database, and
/// load every installed plugin against them, without starting anything.
/// Exits non-zero when anything is wrong.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Examples:\n  causeway check\n  causeway --config-file /etc/causeway/causeway.toml check --json"
)]
pub struct Opts {
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

/// One thing `check` found.
#[derive(Debug, Clone, Serialize)]
pub struct Finding {
    /// `error` (the host would misbehave) or `warning` (it runs, but look).
    pub severity: &'static str,
    /// The file it is about.
    pub file: String,
    /// The line, when known.
    pub line: Option<usize>,
    /// What is wrong and what to do.
    pub message: String,
}

impl Finding {
    fn error(e: FileError) -> Finding {
        Finding {
            severity: "error",
            file: e.file,
            line: e.line,
            message: e.message,
        }
    }

    fn text(&self) -> String {
        match self.line {
            Some(line) => format!(
                "{}: {} line {line}: {}",
                self.severity, self.file, self.message
            ),
            None => format!("{}: {}: {}", self.severity, self.file, self.message),
        }
    }
}

impl Opts {
    /// Runs the command.
    pub fn run(&self, cli: &super::Cli) -> anyhow::Result<ExitCode> {
        let (findings, plugins) = match cli.config() {
            Err(e) => match e.downcast::<FileError>() {
                Ok(file_error) => (vec![Finding::error(file_error)], Vec::new()),
                Err(other) => return Err(other),
            },
            Ok(config) => match Host::with_config(config) {
                Err(crate::host::HostError::File(e)) => (vec![Finding::error(e)], Vec::new()),
                Err(e) => return Err(e.into()),
                Ok(host) => check_host(&host.with_artifact_cache())?,
            },
        };
        let errors = findings.iter().filter(|f| f.severity == "error").count();
        if self.json {
            super::print_json(
                &json!({ "ok": errors == 0, "findings": findings, "plugins": plugins }),
            )?;
        } else {
            // The plugins first, then every problem once (the findings
            // include each plugin's), then the verdict.
            let mut out = String::new();
            if !plugins.is_empty() {
                out.push_str(&super::plugins::grid(&plugins));
                out.push('\n');
            }
            for finding in &findings {
                out.push_str(&finding.text());
                out.push('\n');
            }
            out.push_str(&match errors {
                0 => "\ncheck: ok\n".to_string(),
                n => format!("\ncheck: {n} error(s)\n"),
            });
            super::print(&out)?;
        }
        Ok(if errors == 0 {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        })
    }
}

fn check_host(host: &Host) -> anyhow::Result<(Vec<Finding>, Vec<PluginStatus>)> {
    let mut findings = Vec::new();
    let database = host.config.database_file();
    match db::open_read_only(&database) {
        Err(e) => findings.push(Finding {
            severity: "error",
            file: database.display().to_string(),
            line: None,
            message: e.to_string(),
        }),
        // After an upgrade, before the host's first start: the reading
        // commands refuse it until then (read_database).
        Ok(Some(conn)) => {
            let version: i64 = conn.pragma_query_value(None, "user_version", |row| row.get(0))?;
            if version < db::SCHEMA_VERSION {
                findings.push(Finding {
                    severity: "warning",
                    file: database.display().to_string(),
                    line: None,
                    message: format!(
                        "the database has schema version {version}, older than this causeway's {}: `causeway run` migrates it when it starts; until then `dlq list`, `audit`, `runs` and `pipelines` refuse it",
                        db::SCHEMA_VERSION
                    ),
                });
            }
        }
        Ok(None) => {}
    }
    // A token file the host could not read would stop it at start.
    let token = host.config.data_dir.join(crate::server::token::FILE);
    if token.exists()
        && let Err(message) = crate::server::OperatorToken::load(&host.config.data_dir)
    {
        findings.push(Finding {
            severity: "error",
            file: token.display().to_string(),
            line: None,
            message,
        });
    }
    if let Some(message) = crate::host::data_dir_exposure(&host.config.data_dir) {
        findings.push(Finding {
            severity: "warning",
            file: host.config.data_dir.display().to_string(),
            line: None,
            message,
        });
    }
    let registry = host.registry()?;
    let statuses = registry.statuses();
    for status in &statuses {
        match status.state {
            PluginState::Failed => {
                let file = status.file.display().to_string();
                // The load error names its file; the finding names it once.
                let error = status.error.as_deref().unwrap_or_default();
                let message = error
                    .strip_prefix(file.as_str())
                    .and_then(|rest| rest.strip_prefix(": "))
                    .unwrap_or(error)
                    .to_string();
                findings.push(Finding {
                    severity: "error",
                    file,
                    line: None,
                    message,
                })
            }
            PluginState::PendingApproval => findings.push(Finding {
                severity: "warning",
                file: status.file.display().to_string(),
                line: None,
                message: format!(
                    "plugin {} is pending approval: it requests what {} does not grant: {}",
                    status.name,
                    host.grants.file.display(),
                    status.not_granted.join("; ")
                ),
            }),
            // Compiling is the running host's state: `check` compiles.
            PluginState::Active | PluginState::Compiling => {}
        }
    }
    let grants_file = host.grants.file.display().to_string();
    let grants_text = crate::config::read_file(&host.grants.file).unwrap_or_default();
    // The plugins in the folder, whatever their state: what a name that
    // is not one was most likely meant to be.
    let statuses = registry.statuses();
    let likely = |name: &str| super::guess(name, statuses.iter().map(|s| s.name.as_str()));
    for (name, line) in host.grants.names() {
        if registry.get(name).is_none() {
            findings.push(Finding {
                severity: "error",
                file: grants_file.clone(),
                line: Some(line),
                message: format!(
                    "plugins.{name}: grants a plugin that is not installed in {} (a typo, or a plugin removed){}",
                    host.config.plugins_dir.display(),
                    likely(name)
                ),
            });
        }
        if let Some(grant) = host.grants.get(name) {
            for (credential, binding) in &grant.credentials {
                // The secret resolves (and, for an assertion, is a key to
                // sign with); so does an OAuth refresh token.
                let secret = host.secrets.resolve(&binding.secret).and_then(|secret| {
                    binding
                        .oauth2
                        .as_ref()
                        .map_or(Ok(()), |oauth| oauth.check_secret(&secret))
                });
                let refresh = binding
                    .oauth2
                    .as_ref()
                    .and_then(|o| o.refresh_token.as_ref())
                    .map(|r| host.secrets.resolve(r).map(|_| ()));
                for (key, usable) in [("", Some(secret)), (".oauth2.refresh-token", refresh)] {
                    if let Some(Err(message)) = usable {
                        let at = crate::grants::credential_line(&grants_text, name, credential);
                        findings.push(Finding {
                            severity: "error",
                            file: grants_file.clone(),
                            line: Some(at.unwrap_or(line)),
                            message: format!(
                                "plugins.{name}.credentials.{credential}{key}: {message}"
                            ),
                        });
                    }
                }
            }
        }
    }
    for (name, message) in host.grants.uncounted_fuel(host.config.engine.fuel) {
        let table = format!("plugins.{name}");
        findings.push(Finding {
            severity: "error",
            file: grants_file.clone(),
            line: crate::config::key_line(&grants_text, &table, "limits", 0),
            message,
        });
    }
    let config_file = host
        .config
        .file
        .as_ref()
        .map(|f| f.display().to_string())
        .unwrap_or_else(|| "causeway.toml".to_string());
    // The file as written, for the lines of its tables (the embedded
    // defaults have none).
    let config_text = host
        .config
        .file
        .as_ref()
        .and_then(|f| crate::config::read_file(f).ok())
        .unwrap_or_default();
    let line_of = |table: &str| crate::config::section_line(&config_text, table);
    let fuel_limited =
        host.config.limits.fuel.is_some() || host.grants.fuel_limits().next().is_some();
    if host.config.engine.fuel && !fuel_limited {
        findings.push(Finding {
            severity: "warning",
            file: config_file.clone(),
            line: crate::config::key_line(&config_text, "engine", "fuel", 0),
            message: "engine.fuel = true, and no fuel limit is set ([limits] or a grant's): every call pays for counting fuel, and nothing is bounded by it".to_string(),
        });
    }
    for name in host.config.plugins.keys() {
        if registry.get(name).is_none() {
            findings.push(Finding {
                severity: "warning",
                file: config_file.clone(),
                line: line_of(&format!("plugins.{name}")),
                message: format!("plugins.{name}: configures a plugin that is not installed"),
            });
        }
    }
    findings.extend(check_tls(host, &config_file, line_of("tls")));
    findings.extend(check_pipelines(host, &registry, &config_file, &config_text));
    findings.extend(stranded_deliveries(host, &config_file));
    let infos = registry.plugins().map(|installed| &*installed.plugin.info);
    for (line, message) in schema::plugin_config_problems(&host.config, &config_text, infos) {
        findings.push(Finding {
            severity: "error",
            file: config_file.clone(),
            line,
            message,
        });
    }
    Ok((findings, statuses))
}

/// Pipelines gone from the configuration whose accepted webhook deliveries
/// still wait: processed only once the pipeline is back. A database that
/// cannot be read says nothing here (its own finding says why).
fn stranded_deliveries(host: &Host, config_file: &str) -> Vec<Finding> {
    let Ok(Some(conn)) = super::read_database(&host.config) else {
        return Vec::new();
    };
    let configured = |name: &str| host.config.pipelines.contains_key(name);
    let stranded = crate::webhook::inbox::stranded(&conn, configured).unwrap_or_default();
    stranded
        .into_iter()
        .map(|(name, waiting)| Finding {
            severity: "warning",
            file: config_file.to_string(),
            line: None,
            message: format!(
                "pipelines.{name} is not configured, yet {waiting} webhook deliveries it accepted wait: they are processed once it is configured again"
            ),
        })
        .collect()
}

/// A stage to check: where it is (its key in the pipeline's table, and
/// its index there), its plugin, and the world its place needs.
type Stage<'a> = (
    (&'static str, Option<usize>),
    &'a str,
    crate::contract::World,
);

/// The webhook listener's certificate (`[tls]`): one that cannot be served
/// stops the host at start; one close to its expiry, or a key every account
/// reads, is warned of. `line` is the table's.
fn check_tls(host: &Host, config_file: &str, line: Option<usize>) -> Vec<Finding> {
    let Some(tls) = &host.config.tls else {
        return Vec::new();
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let (loaded, expiring) = match crate::server::tls::Certificate::load(&tls.cert, &tls.key) {
        Ok(certificate) => (None, certificate.expiry_warning(now)),
        Err(e) => (Some(e), None),
    };
    [
        loaded.map(|e| ("error", e)),
        expiring.map(|e| ("warning", e)),
        crate::server::tls::key_exposure(&tls.key).map(|e| ("warning", e)),
    ]
    .into_iter()
    .flatten()
    .map(|(severity, message)| Finding {
        severity,
        file: config_file.to_string(),
        line,
        message,
    })
    .collect()
}

/// The shortest webhook token or login `check` lets pass without a word:
/// 32 hex digits are 128 bits.
const MIN_WEBHOOK_SECRET: usize = 32;

/// Each pipeline's stages: installed, and implementing the world their
/// place needs (a stage's own configuration is checked with the plugins':
/// [`schema::plugin_config_problems`]).
fn check_pipelines(
    host: &Host,
    registry: &crate::registry::Registry,
    config_file: &str,
    config_text: &str,
) -> Vec<Finding> {
    use crate::contract::World;
    let mut findings = Vec::new();
    let statuses = registry.statuses();
    let likely = |name: &str| super::guess(name, statuses.iter().map(|s| s.name.as_str()));
    for (name, pipeline) in &host.config.pipelines {
        let table = format!("pipelines.{name}");
        let line_of = |key: &str, n: usize| crate::config::key_line(config_text, &table, key, n);
        // A secret the host cannot use answers every delivery 500
        // (`misconfigured`): senders retry, but nothing flows until fixed.
        if let Some(trigger) = &pipeline.webhook {
            let key = crate::webhook::verify::key(&host.secrets, trigger.scheme, &trigger.secret);
            match &key {
                Err(message) => findings.push(Finding {
                    severity: "error",
                    file: config_file.to_string(),
                    line: line_of("webhook", 0),
                    message: format!(
                        "pipelines.{name}.webhook: {message}; every delivery would be refused as misconfigured"
                    ),
                }),
                // A token or a login is guessed online, one request a try:
                // one short enough to guess is said (its length only).
                Ok(key)
                    if trigger.method().sends_secret()
                        && key.len() < MIN_WEBHOOK_SECRET =>
                {
                    findings.push(Finding {
                        severity: "warning",
                        file: config_file.to_string(),
                        line: line_of("webhook", 0),
                        message: format!(
                            "pipelines.{name}.webhook: secret {} is {} characters: anyone who can reach the path may guess it, a request a try; give the sender at least {MIN_WEBHOOK_SECRET} random ones (openssl rand -hex 16)",
                            trigger.secret,
                            key.len()
                        ),
                    });
                }
                Ok(_) => {}
            }
            // The new secret works without it, but the rotation it is
            // there for does not: deliveries still signed the old way fail.
            let previous = trigger.previous_secret.as_ref().map(|reference| {
                crate::webhook::verify::key(&host.secrets, trigger.scheme, reference)
            });
            match (previous, &key) {
                (Some(Err(message)), _) => findings.push(Finding {
                    severity: "error",
                    file: config_file.to_string(),
                    line: line_of("webhook", 0),
                    message: format!(
                        "pipelines.{name}.webhook.previous-secret: {message}; deliveries the sender still proves with it would be refused"
                    ),
                }),
                // Two references to one value: nothing was rotated, or the
                // old value was written over before the sender moved.
                (Some(Ok(previous)), Ok(key)) if previous == *key => findings.push(Finding {
                    severity: "warning",
                    file: config_file.to_string(),
                    line: line_of("webhook", 0),
                    message: format!(
                        "pipelines.{name}.webhook: previous-secret {} holds the same value as secret {}: keep the old value under the old reference until the sender uses the new one",
                        trigger.previous_secret.as_ref().map(ToString::to_string).unwrap_or_default(),
                        trigger.secret
                    ),
                }),
                _ => {}
            }
            // Without it Meta's subscription check is refused, and Meta
            // sends nothing until it passes.
            if let Some(Err(message)) = trigger
                .verify_token
                .as_ref()
                .map(|reference| host.secrets.resolve(reference))
            {
                findings.push(Finding {
                    severity: "error",
                    file: config_file.to_string(),
                    line: line_of("webhook", 0),
                    message: format!(
                        "pipelines.{name}.webhook.verify-token: {message}; Meta's subscription check would be refused, and Meta sends nothing until it passes"
                    ),
                });
            }
            // On loopback without TLS, senders come through a proxy on the
            // machine: every peer is the proxy's address.
            if let Some(networks) = &trigger.allow_from
                && host.config.tls.is_none()
                && host.config.listen.ip().is_loopback()
                && !networks.iter().any(|n| n.contains(host.config.listen.ip()))
            {
                findings.push(Finding {
                    severity: "warning",
                    file: config_file.to_string(),
                    line: line_of("webhook", 0),
                    message: format!(
                        "pipelines.{name}.webhook: allow-from names no loopback address, and the host listens on {} only: deliveries can reach it only through a proxy on this machine, whose address every one of them would come from, so each would be refused; filter senders at the proxy, or serve them with [tls]",
                        host.config.listen
                    ),
                });
            }
            // A token or a login crosses the network as it is: in clear
            // on a listener others reach without TLS.
            let in_clear = host.config.tls.is_none() && !host.config.listen.ip().is_loopback();
            if in_clear && trigger.method().sends_secret() {
                findings.push(Finding {
                    severity: "warning",
                    file: config_file.to_string(),
                    line: line_of("webhook", 0),
                    message: format!(
                        "pipelines.{name}.webhook: scheme \"{}\" has senders send the secret itself, and listen = \"{}\" takes it in plain HTTP: anyone on the way can read it and send as them; add [tls], or listen on loopback behind a proxy that terminates TLS",
                        trigger.scheme.name(),
                        host.config.listen
                    ),
                });
            } else if in_clear && !trigger.method().signs_body() {
                findings.push(Finding {
                    severity: "warning",
                    file: config_file.to_string(),
                    line: line_of("webhook", 0),
                    message: format!(
                        "pipelines.{name}.webhook: scheme \"{}\" signs who sent a delivery, not what it says, and listen = \"{}\" takes it in plain HTTP: anyone on the way can change an event and keep the signature; add [tls], or listen on loopback behind a proxy that terminates TLS",
                        trigger.scheme.name(),
                        host.config.listen
                    ),
                });
            }
        }
        let mut stages: Vec<Stage<'_>> = vec![(
            ("source", None),
            pipeline.source.plugin.as_str(),
            World::Source,
        )];
        if pipeline.webhook.is_some() {
            stages.push((
                ("source", None),
                pipeline.source.plugin.as_str(),
                World::Webhook,
            ));
        }
        for (i, t) in pipeline.transforms.iter().enumerate() {
            stages.push((("transforms", Some(i)), t.plugin.as_str(), World::Transform));
        }
        for (i, k) in pipeline.sinks.iter().enumerate() {
            stages.push((("sinks", Some(i)), k.plugin.as_str(), World::Sink));
        }
        for ((key, index), plugin, world) in stages {
            let at = match index {
                Some(i) => format!("{key}[{i}]"),
                None => key.to_string(),
            };
            let line = line_of(key, index.unwrap_or(0));
            let finding = |message: String| Finding {
                severity: "error",
                file: config_file.to_string(),
                line,
                message,
            };
            let Some(installed) = registry.get(plugin) else {
                // Once, though a webhook pipeline's source is two stages.
                if world != World::Webhook {
                    findings.push(finding(format!(
                        "pipelines.{name}.{at}: plugin {plugin:?} is not installed in {}{}",
                        host.config.plugins_dir.display(),
                        likely(plugin)
                    )));
                }
                continue;
            };
            let info = &installed.plugin.info;
            if !info.worlds.contains(&world) {
                findings.push(finding(format!(
                    "pipelines.{name}.{at}: plugin {} does not implement {world} (it implements: {})",
                    info.label(),
                    info.worlds.iter().map(|w| w.name()).collect::<Vec<_>>().join(", ")
                )));
            }
        }
    }
    findings
}
