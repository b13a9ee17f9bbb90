//! `causeway grants`: for every plugin, what it requests, what grants.toml
//! grants it, and what it may therefore do, side by side — the one command
//! a security team reads; `grants approve` and `grants revoke` change the
//! file (keeping its comments) and record the change in the audit log.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use serde::Serialize;
use serde_json::json;

use crate::files::{self, Durability};
use crate::grants::edit::{self, ApproveInput, Edited};
use crate::grants::{Grants, Injection, PluginGrant};
use crate::host::Host;
use crate::manifest::Capabilities;
use crate::registry::{Installed, PluginState};
use crate::secrets::SecretRef;

/// Show every plugin's requested, granted and effective capabilities side
/// by side, with what it requests beyond its grants marked; approve or
/// revoke them.
#[derive(Debug, clap::Args)]
#[command(
    args_conflicts_with_subcommands = true,
    after_help = "Examples:\n  causeway grants\n  causeway grants --json | jq '.plugins[] | select(.not_granted != [])'\n  causeway grants approve crm-source --by alice --host crm.example.com --secret crm-token=env:CRM_TOKEN\n  causeway grants revoke crm-source http:crm.example.com --by bob"
)]
pub struct Opts {
    /// Approve or revoke instead of listing.
    #[command(subcommand)]
    pub action: Option<Action>,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Changes to grants.toml.
#[derive(Debug, clap::Subcommand)]
pub enum Action {
    /// Grant everything the installed plugin NAME requests (its held
    /// upgrade, if one waits), recording who approved, when, and the
    /// file's digest. A running host picks it up at once.
    Approve {
        /// The plugin.
        name: String,
        /// Who approves (default: $USER).
        #[arg(long, value_name = "WHO")]
        by: Option<String>,
        /// The host to grant where the plugin asks for one of your choosing
        /// (`host = "*"`); repeat for several.
        #[arg(long, value_name = "HOST")]
        host: Vec<String>,
        /// The scheme to grant where the plugin leaves it open (`https`
        /// unless you say `http`).
        #[arg(long, value_parser = ["https", "http"])]
        scheme: Option<String>,
        /// Where a requested credential's value is: NAME=env:VAR or
        /// NAME=file:PATH; repeat for each credential.
        #[arg(long, value_name = "NAME=REF")]
        secret: Vec<String>,
        /// How a credential is injected: NAME=bearer|basic|header:H|query:Q|json:F
        /// (default bearer).
        #[arg(long, value_name = "NAME=HOW")]
        inject: Vec<String>,
    },
    /// Take back what NAME was granted: all (default), http, http:HOST,
    /// credentials, credential:CRED or storage. The next call is refused.
    Revoke {
        /// The plugin.
        name: String,
        /// What to take back.
        #[arg(default_value = "all")]
        what: String,
        /// Who revokes (default: $USER).
        #[arg(long, value_name = "WHO")]
        by: Option<String>,
    },
}

/// One plugin version's view.
#[derive(Debug, Serialize)]
pub struct GrantView {
    /// The plugin.
    pub name: String,
    /// Its version, if installed.
    pub version: Option<String>,
    /// Its file's digest, if installed.
    pub digest: Option<String>,
    /// `active`, `pending-approval`, or `not-installed` (granted, no file).
    pub state: String,
    /// Whether this version serves (false for an upgrade held back).
    pub serving: bool,
    /// What its manifest requests.
    pub requested: Option<Capabilities>,
    /// What grants.toml grants its name.
    pub granted: Option<PluginGrant>,
    /// What it may do: requested ∩ granted.
    pub effective: serde_json::Value,
    /// What it requests that is not granted (an escalation to approve).
    pub not_granted: Vec<String>,
}

/// `fuel_counted`: whether this configuration's engine counts fuel.
fn view(
    installed: &Installed,
    grant: Option<&PluginGrant>,
    serving: bool,
    fuel_counted: bool,
) -> GrantView {
    let info = &installed.plugin.info;
    let policy = &installed.policy;
    GrantView {
        name: info.name.clone(),
        version: Some(info.version.clone()),
        digest: Some(info.digest.clone()),
        state: installed.state().name().to_string(),
        serving,
        requested: Some(info.manifest.capabilities.clone()),
        granted: grant.cloned(),
        effective: json!({
            "http": policy.http.rules,
            "credentials": policy.credentials.keys().collect::<Vec<_>>(),
            "storage": policy.storage,
            "http-limits": policy.http_limits,
            "limits": limits_view(&policy.limits, fuel_counted),
        }),
        not_granted: installed.not_granted.clone(),
    }
}

/// A plugin's effective per-call limits, keyed as `[limits]` is written;
/// with a fuel limit, whether the engine counts it (`fuel-counted`).
fn limits_view(limits: &crate::sandbox::Limits, fuel_counted: bool) -> serde_json::Value {
    let mut view = json!({
        "memory-mb": limits.memory_bytes / (1024 * 1024),
        "call-timeout": humantime::format_duration(limits.call_timeout).to_string(),
        "table-elements": limits.table_elements,
        "instances": limits.instances,
        "resources": limits.resources,
        "fuel": limits.fuel,
    });
    if limits.fuel.is_some() {
        view["fuel-counted"] = json!(fuel_counted);
    }
    view
}

impl Opts {
    /// Runs the command.
    pub async fn run(&self, cli: &super::Cli) -> anyhow::Result<ExitCode> {
        match &self.action {
            None => self.list(cli),
            Some(Action::Approve {
                name,
                by,
                host,
                scheme,
                secret,
                inject,
            }) => {
                let mut input = ApproveInput {
                    by: approver(by.as_deref())?,
                    at: crate::audit::now(),
                    hosts: host.clone(),
                    scheme: scheme.clone(),
                    ..ApproveInput::default()
                };
                for pair in secret {
                    let (credential, reference) = super::split_pair(pair, "--secret")?;
                    let reference = SecretRef::try_from(reference.to_string())
                        .map_err(|e| anyhow::anyhow!("--secret {credential}: {e}"))?;
                    input.secrets.insert(credential.to_string(), reference);
                }
                for pair in inject {
                    let (credential, how) = super::split_pair(pair, "--inject")?;
                    let how = Injection::try_from(how.to_string())
                        .map_err(|e| anyhow::anyhow!("--inject {credential}: {e}"))?;
                    input.injects.insert(credential.to_string(), how);
                }
                approve(cli, name, input)
            }
            Some(Action::Revoke { name, what, by }) => {
                let host = cli.host()?;
                let by = approver(by.as_deref())?;
                let text = read_grants(&host.grants.file)?;
                let edited = edit::revoke(
                    &text,
                    &host.grants.file,
                    name,
                    what,
                    &by,
                    &crate::audit::now(),
                )
                .map_err(anyhow::Error::msg)?;
                write_grants(&host, &edited)?;
                super::print(&format!(
                    "revoked from {name} by {by}:\n{}",
                    lines(&edited.changes)
                ))?;
                Ok(ExitCode::SUCCESS)
            }
        }
    }

    fn list(&self, cli: &super::Cli) -> anyhow::Result<ExitCode> {
        let host = cli.host()?;
        let registry = host.registry()?;
        let mut views: Vec<GrantView> = registry
            .plugins()
            .map(|i| {
                let grant = host.grants.get(&i.plugin.info.name);
                view(i, grant, true, host.config.engine.fuel)
            })
            .chain(registry.held().iter().map(|i| {
                let grant = host.grants.get(&i.plugin.info.name);
                view(i, grant, false, host.config.engine.fuel)
            }))
            .collect();
        for (name, _) in host.grants.names() {
            if registry.get(name).is_none() {
                views.push(GrantView {
                    name: name.to_string(),
                    version: None,
                    digest: None,
                    state: "not-installed".into(),
                    serving: false,
                    requested: None,
                    granted: host.grants.get(name).cloned(),
                    effective: json!(null),
                    not_granted: Vec::new(),
                });
            }
        }
        views.sort_by(|a, b| a.name.cmp(&b.name).then(b.serving.cmp(&a.serving)));
        if self.json {
            super::print_json(&json_view(&host, &views))?;
            return Ok(ExitCode::SUCCESS);
        }
        let mut head = format!("grants file: {}\n", host.grants.file.display());
        // What every plugin's requests go through, beside its own grants.
        if let Some(proxy) = &host.runtime.egress.proxy {
            head.push_str(&format!("outbound proxy: {}\n", proxy.describe()));
        }
        if let Some(file) = &host.config.ca_file {
            let n = host.runtime.egress.roots.len();
            head.push_str(&format!(
                "outbound HTTPS also trusts: {} ({n} certificate{})\n",
                file.display(),
                if n == 1 { "" } else { "s" }
            ));
        }
        head.push_str(&inbound(&host.config));
        super::print(&text(&views, &head))?;
        Ok(ExitCode::SUCCESS)
    }
}

/// Each webhook path (in order), its table, and the plugins and pipelines
/// it feeds. Pipelines sharing a path share its webhook table (the config
/// refuses them otherwise), not always their source.
type Inbound<'a> = std::collections::BTreeMap<
    &'a str,
    (
        &'a crate::pipeline::config::WebhookTrigger,
        Vec<(&'a str, &'a str)>,
    ),
>;

fn inbound_paths(config: &crate::config::Config) -> Inbound<'_> {
    let mut paths = Inbound::new();
    for (name, pipeline) in &config.pipelines {
        if let Some(webhook) = &pipeline.webhook {
            paths
                .entry(webhook.path.as_str())
                .or_insert((webhook, Vec::new()))
                .1
                .push((pipeline.source.plugin.as_str(), name.as_str()));
        }
    }
    paths
}

/// The listeners webhooks are served on.
fn listeners(config: &crate::config::Config) -> Vec<String> {
    let mut on = vec![format!("http://{}", config.listen)];
    if let Some(tls) = &config.tls {
        on.push(format!("https://{}", tls.listen));
    }
    on
}

/// What the host takes in from outside, beside what plugins send out: each
/// webhook path, how its deliveries are proven and from where, and the
/// plugin they are handed to.
fn inbound(config: &crate::config::Config) -> String {
    let paths = inbound_paths(config);
    if paths.is_empty() {
        return String::new();
    }
    let mut out = format!(
        "inbound webhooks, on {}:\n",
        listeners(config).join(" and ")
    );
    for (path, (webhook, fed)) in paths {
        let from = match &webhook.allow_from {
            Some(networks) => networks
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", "),
            None => "anywhere".to_string(),
        };
        let handed = match fed.as_slice() {
            [(plugin, _), rest @ ..] if rest.iter().all(|(p, _)| p == plugin) => {
                let pipelines: Vec<&str> = fed.iter().map(|(_, name)| *name).collect();
                format!(
                    "{plugin} (pipeline{} {})",
                    if pipelines.len() == 1 { "" } else { "s" },
                    pipelines.join(", ")
                )
            }
            _ => fed
                .iter()
                .map(|(plugin, name)| format!("{plugin} (pipeline {name})"))
                .collect::<Vec<_>>()
                .join(", "),
        };
        // The other secrets a path is proven with, by reference.
        let others = [
            ("previous", &webhook.previous_secret),
            ("verify token", &webhook.verify_token),
        ]
        .iter()
        .filter_map(|(what, reference)| Some(format!(", {what} {}", reference.as_ref()?)))
        .collect::<String>();
        out.push_str(&format!(
            "  {path}: scheme {} (secret {}{others}), from {from}, handed to {handed}\n",
            webhook.scheme.name(),
            webhook.secret,
        ));
    }
    out
}

/// `causeway grants --json`: the plugins' views, and what the text view
/// says above them (the grants file, the proxy and the CAs every request
/// goes through, what comes in), so a script sees all of it.
fn json_view(host: &crate::host::Host, plugins: &[GrantView]) -> serde_json::Value {
    let config = &host.config;
    let inbound: Vec<serde_json::Value> = inbound_paths(config)
        .into_iter()
        .map(|(path, (webhook, fed))| {
            json!({
                "path": path,
                "scheme": webhook.scheme.name(),
                "secret": webhook.secret.to_string(),
                "previous-secret": webhook.previous_secret.as_ref().map(ToString::to_string),
                "verify-token": webhook.verify_token.as_ref().map(ToString::to_string),
                "allow-from": webhook.allow_from.as_ref().map(|networks| {
                    networks.iter().map(ToString::to_string).collect::<Vec<_>>()
                }),
                "handed-to": fed
                    .iter()
                    .map(|(plugin, pipeline)| json!({ "plugin": plugin, "pipeline": pipeline }))
                    .collect::<Vec<_>>(),
            })
        })
        .collect();
    json!({
        "grants-file": host.grants.file,
        "proxy": config.proxy.as_ref().map(|proxy| json!({
            "url": proxy.url.as_str(),
            "direct": proxy.direct,
            "user": proxy.login.as_ref().map(|(user, _)| user),
            "password": proxy.login.as_ref().map(|(_, password)| password.to_string()),
        })),
        "ca-file": config.ca_file.as_ref().map(|file| json!({
            "file": file,
            "certificates": host.runtime.egress.roots.len(),
        })),
        "inbound": {
            "listeners": listeners(config),
            "webhooks": inbound,
        },
        "plugins": plugins,
    })
}

fn approve(cli: &super::Cli, name: &str, mut input: ApproveInput) -> anyhow::Result<ExitCode> {
    let host = cli.host()?;
    // The file in the folder is what waits for approval (a held upgrade
    // included); only its manifest is read, nothing is compiled.
    let dir = &host.config.plugins_dir;
    let found = crate::registry::find_named(dir, name, host.runtime.max_plugin_bytes)
        .with_context(|| format!("cannot read the plugins folder {}", dir.display()))?
        .with_context(|| {
            format!(
                "no plugin {name} in {}{}: see `causeway plugins`",
                dir.display(),
                super::names_like(dir, name, host.runtime.max_plugin_bytes)
            )
        })?;
    let manifest = &found.manifest;
    let label = format!("{name} {}", manifest.version);
    let named = input.secrets.keys().map(|n| ("--secret", n));
    for (flag, credential) in named.chain(input.injects.keys().map(|n| ("--inject", n))) {
        super::requested_credential(flag, credential, &label, manifest)?;
    }
    let digest = crate::plugin::digest(&found.bytes);
    input.digest = digest.clone();
    let text = read_grants(&host.grants.file)?;
    let edited =
        edit::approve(&text, &host.grants.file, manifest, &input).map_err(anyhow::Error::msg)?;
    if edited.changes.is_empty() {
        super::print(&format!(
            "{name} {} ({digest}) is already approved: nothing changed\n",
            manifest.version
        ))?;
        return Ok(ExitCode::SUCCESS);
    }
    write_grants(&host, &edited)?;
    let mut out = format!(
        "{name} {} approved by {}:\n{}",
        manifest.version,
        input.by,
        lines(&edited.changes)
    );
    // A credential sent the way its API does not read it fails every
    // request: the plugin's description of it is the operator's guide.
    let described: Vec<_> = manifest
        .capabilities
        .credentials
        .iter()
        .filter(|c| !c.description.is_empty())
        .collect();
    if !described.is_empty() {
        out.push_str(&format!(
            "How {name} describes its credentials (send one otherwise with --inject NAME=basic|header:H|query:Q|json:F):\n"
        ));
        for credential in described {
            // The plugin's text: on one line, so it cannot forge a line of
            // what was approved.
            out.push_str(&format!(
                "  {}: {}\n",
                credential.name,
                super::table::printable(&credential.description, false)
            ));
        }
    }
    super::print(&out)?;
    Ok(ExitCode::SUCCESS)
}

fn approver(by: Option<&str>) -> anyhow::Result<String> {
    by.map(str::to_string)
        .or_else(|| std::env::var("USER").ok())
        .or_else(|| std::env::var("LOGNAME").ok())
        .filter(|who| !who.trim().is_empty())
        .context("say who you are with --by WHO")
}

fn lines(changes: &[String]) -> String {
    changes.iter().map(|c| format!("  {c}\n")).collect()
}

fn read_grants(file: &Path) -> anyhow::Result<String> {
    if file
        .symlink_metadata()
        .is_err_and(|e| e.kind() == std::io::ErrorKind::NotFound)
    {
        return Ok(String::new());
    }
    Ok(crate::config::read_file(file)?)
}

/// Replaces grants.toml atomically (keeping its permissions), then records
/// the change in the audit log; a running host reloads the file by itself.
fn write_grants(host: &Host, edited: &Edited) -> anyhow::Result<()> {
    let file = &host.grants.file;
    // On disk, rename included, before the audit row says it changed.
    files::replace(
        file,
        &file.with_extension("toml.partial"),
        edited.text.as_bytes(),
        Durability::Rename,
    )
    .with_context(|| format!("cannot replace {}", file.display()))?;
    let grants = Grants::parse(&edited.text, file)?;
    let writer = host.open_database()?;
    writer
        .handle()
        .audited(crate::grants::changes::record(&grants));
    writer.close();
    Ok(())
}

/// The human view: `head`, then one block per plugin version.
fn text(views: &[GrantView], head: &str) -> String {
    let inline = |rules: &[crate::caps::http::HttpRule]| -> Vec<String> {
        rules.iter().map(|r| r.to_inline_toml()).collect()
    };
    let mut out = head.to_string();
    for v in views {
        out.push_str(&format!(
            "\n{} {} {}{}{}\n",
            v.name,
            v.version.as_deref().unwrap_or("-"),
            v.state,
            if v.serving || v.state == "not-installed" {
                ""
            } else {
                " (upgrade held back; the version above serves)"
            },
            v.digest
                .as_deref()
                .map(|d| format!("  {d}"))
                .unwrap_or_default(),
        ));
        let none = || vec!["-".to_string()];
        let requested_http = v
            .requested
            .as_ref()
            .map(|c| inline(&c.http))
            .filter(|r| !r.is_empty())
            .unwrap_or_else(none);
        let granted_http = v
            .granted
            .as_ref()
            .map(|g| inline(&g.http))
            .filter(|r| !r.is_empty())
            .unwrap_or_else(none);
        let effective_http: Vec<String> = v.effective["http"]
            .as_array()
            .map(|rules| {
                rules
                    .iter()
                    .filter_map(|r| serde_json::from_value(r.clone()).ok())
                    .map(|r: crate::caps::http::HttpRule| r.to_inline_toml())
                    .collect()
            })
            .filter(|r: &Vec<String>| !r.is_empty())
            .unwrap_or_else(none);
        for (label, lines) in [
            ("http requested", requested_http),
            ("http granted", granted_http),
            ("http effective", effective_http),
        ] {
            for (i, line) in lines.iter().enumerate() {
                out.push_str(&format!(
                    "  {:<16} {line}\n",
                    if i == 0 { label } else { "" }
                ));
            }
        }
        // How much it may send, and how fast: part of what it may do.
        if let Some(limits) = v.effective["http-limits"].as_object()
            && v.effective["http"]
                .as_array()
                .is_some_and(|r| !r.is_empty())
        {
            let line: Vec<String> = limits
                .iter()
                .map(|(key, value)| format!("{key} = {value}"))
                .collect();
            out.push_str(&format!("  {:<16} {}\n", "http limits", line.join(", ")));
        }
        let requested_credentials = v
            .requested
            .as_ref()
            .map(|c| c.credentials.as_slice())
            .unwrap_or_default();
        for requested in requested_credentials {
            let name = &requested.name;
            let binding = v.granted.as_ref().and_then(|g| g.credentials.get(name));
            out.push_str(&format!(
                "  {:<16} {name}: {}\n",
                "credential",
                match binding {
                    Some(b) => b.describe(),
                    None => "requested, not bound".into(),
                }
            ));
            // The plugin's own words: how its API takes the credential is
            // often there, and the grant's `inject` must match it.
            if !requested.description.is_empty() {
                out.push_str(&format!(
                    "  {:<16} {name}, as the plugin describes it: {}\n",
                    "",
                    super::table::printable(&requested.description, false)
                ));
            }
        }
        let storage_requested = v.requested.as_ref().is_some_and(|c| c.storage);
        let storage_granted = v.granted.as_ref().and_then(|g| g.storage.as_ref());
        if storage_requested || storage_granted.is_some() {
            out.push_str(&format!(
                "  {:<16} requested: {}, granted: {}\n",
                "storage",
                if storage_requested { "yes" } else { "no" },
                storage_granted
                    .map(|s| format!("{} bytes, {} keys", s.quota_bytes, s.quota_keys))
                    .unwrap_or_else(|| "no".into())
            ));
        }
        if let Some(limits) = v.effective["limits"].as_object() {
            // `fuel = null`: no bound but the deadline.
            let uncounted = limits.get("fuel-counted") == Some(&json!(false));
            let line: Vec<String> = limits
                .iter()
                .filter(|(key, value)| !value.is_null() && key.as_str() != "fuel-counted")
                .map(|(key, value)| match key.as_str() {
                    "fuel" if uncounted => format!(
                        "fuel = {value} (not counted: [engine] fuel is off, and each call fails until it is on)"
                    ),
                    _ => format!("{key} = {value}"),
                })
                .collect();
            out.push_str(&format!("  {:<16} {}\n", "limits", line.join(", ")));
        }
        if let Some(approval) = v.granted.as_ref().and_then(|g| g.approval.as_ref()) {
            // An approval names the build it was given for: an upgrade since
            // runs on it only while it asks for nothing more.
            let build = if v.digest.as_deref() == Some(approval.digest.as_str()) {
                "this build".to_string()
            } else {
                approval.digest.clone()
            };
            out.push_str(&format!(
                "  {:<16} by {} at {}, for {build}\n",
                "approved", approval.by, approval.at
            ));
        }
        if let Some(revocation) = v.granted.as_ref().and_then(|g| g.revocation.as_ref()) {
            out.push_str(&format!(
                "  {:<16} {} by {} at {}\n",
                "revoked", revocation.what, revocation.by, revocation.at
            ));
        }
        for missing in &v.not_granted {
            out.push_str(&format!("  ! not granted: {missing}\n"));
        }
        if v.state == PluginState::PendingApproval.name() && v.not_granted.is_empty() {
            out.push_str("  ! pending approval\n");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::inbound;

    #[test]
    fn what_comes_in_is_said_by_path_with_every_plugin_it_feeds() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("causeway.toml");
        let pipeline = |name: &str, source: &str, sink: &str| {
            format!(
                "[pipelines.{name}]\nwebhook = {{ path = \"/hooks/crm\", scheme = \"hubspot\", secret = \"env:HS\" }}\n\
                 source = {{ plugin = \"{source}\", stream = \"contacts\" }}\nsinks = [{{ plugin = \"{sink}\" }}]\n"
            )
        };
        let write = |text: String| {
            std::fs::write(&file, text).unwrap();
            inbound(&crate::config::Config::load(Some(&file)).unwrap())
        };
        assert_eq!(
            write(
                pipeline("to-mailer", "crm-source", "mailer-sink")
                    + &pipeline("to-calendar", "crm-source", "calendar-sink")
            ),
            "inbound webhooks, on http://127.0.0.1:8700:\n  /hooks/crm: scheme hubspot (secret env:HS), from anywhere, handed to crm-source (pipelines to-calendar, to-mailer)\n"
        );
        assert_eq!(
            write(
                pipeline("a", "crm-source", "mailer-sink")
                    + &pipeline("b", "other-source", "mailer-sink")
            ),
            "inbound webhooks, on http://127.0.0.1:8700:\n  /hooks/crm: scheme hubspot (secret env:HS), from anywhere, handed to crm-source (pipeline a), other-source (pipeline b)\n"
        );
        assert_eq!(write(String::new()), "", "no webhook, nothing said");
    }
}
