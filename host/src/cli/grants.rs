//! `causeway grants`: for every plugin, what it requests, what grants.toml
//! grants it, and what it may therefore do, side by side — the one command
//! a security team reads.

use std::process::ExitCode;

use serde::Serialize;
use serde_json::json;

use crate::grants::PluginGrant;
use crate::manifest::Capabilities;
use crate::registry::{Installed, PluginState};

/// Show every plugin's requested, granted and effective capabilities side
/// by side, with what it requests beyond its grants marked.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Examples:\n  causeway grants\n  causeway grants --json | jq '.[] | select(.not_granted != [])'"
)]
pub struct Opts {
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
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

fn view(installed: &Installed, grant: Option<&PluginGrant>, serving: bool) -> GrantView {
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
        }),
        not_granted: installed.not_granted.clone(),
    }
}

impl Opts {
    /// Runs the command.
    pub fn run(&self, cli: &super::Cli) -> anyhow::Result<ExitCode> {
        let host = cli.host()?;
        let registry = host.registry()?;
        let mut views: Vec<GrantView> = registry
            .plugins()
            .map(|i| view(i, host.grants.get(&i.plugin.info.name), true))
            .chain(
                registry
                    .held()
                    .iter()
                    .map(|i| view(i, host.grants.get(&i.plugin.info.name), false)),
            )
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
            super::print_json(&views)?;
            return Ok(ExitCode::SUCCESS);
        }
        super::print(&text(&views, &host.grants.file.display().to_string()))?;
        Ok(ExitCode::SUCCESS)
    }
}

/// The human view: one block per plugin version.
fn text(views: &[GrantView], grants_file: &str) -> String {
    let inline = |rules: &[crate::caps::http::HttpRule]| -> Vec<String> {
        rules.iter().map(|r| r.to_inline_toml()).collect()
    };
    let mut out = format!("grants file: {grants_file}\n");
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
        let requested_credentials: Vec<String> = v
            .requested
            .as_ref()
            .map(|c| c.credentials.iter().map(|c| c.name.clone()).collect())
            .unwrap_or_default();
        for name in &requested_credentials {
            let binding = v.granted.as_ref().and_then(|g| g.credentials.get(name));
            out.push_str(&format!(
                "  {:<16} {name}: {}\n",
                "credential",
                match binding {
                    Some(b) => format!(
                        "{} to {} ({})",
                        b.secret,
                        b.hosts.join(", "),
                        String::from(b.inject.clone())
                    ),
                    None => "requested, not bound".into(),
                }
            ));
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
        for missing in &v.not_granted {
            out.push_str(&format!("  ! not granted: {missing}\n"));
        }
        if v.state == PluginState::PendingApproval.name() && v.not_granted.is_empty() {
            out.push_str("  ! pending approval\n");
        }
    }
    out
}
