//! The installed plugins: every `.wasm` at the top level of the plugins
//! folder, loaded independently so one bad file never stops the others.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Serialize;
use wasmtime::Engine;
use wasmtime::component::Linker;

use crate::grants::{Grants, Policy};
use crate::plugin::{LoadError, Plugin, PluginInfo, Problem};
use crate::sandbox::{Limits, StoreState};

/// The state of an installed plugin file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum PluginState {
    /// Loaded, fully granted, callable.
    Active,
    /// Loaded, but it requests something not granted: it does not run.
    PendingApproval,
    /// Not loadable; the error says why.
    Failed,
}

impl PluginState {
    /// The state's name, as the CLI and the status API show it.
    pub fn name(self) -> &'static str {
        match self {
            PluginState::Active => "active",
            PluginState::PendingApproval => "pending-approval",
            PluginState::Failed => "failed",
        }
    }
}

/// One row of `causeway plugins`: a plugin, or a file that failed to load.
#[derive(Debug, Clone, Serialize)]
pub struct PluginStatus {
    /// The plugin name, or the file stem when the manifest could not be read.
    pub name: String,
    /// The version, when known.
    pub version: Option<String>,
    /// The worlds, from the exports.
    pub worlds: Vec<crate::contract::World>,
    /// The file's digest, when it was read.
    pub digest: Option<String>,
    /// The file.
    pub file: PathBuf,
    /// Active, pending approval, or failed.
    pub state: PluginState,
    /// Why it is not active, as one line.
    pub error: Option<String>,
    /// What it requests that is not granted (pending approval).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub not_granted: Vec<String>,
}

/// A loaded plugin version and what it may do.
pub struct Installed {
    /// The plugin.
    pub plugin: Arc<Plugin>,
    /// Its effective policy: requested ∩ granted.
    pub policy: Arc<Policy>,
    /// What it requests that is not granted; empty when it may run.
    pub not_granted: Vec<String>,
    /// Its outbound client, when its policy allows any HTTP.
    pub http: Option<Arc<crate::caps::http::HttpClient>>,
}

impl Installed {
    /// Evaluates a loaded plugin against the grants.
    pub fn new(plugin: Plugin, grants: &Grants, defaults: Limits) -> Installed {
        let (policy, not_granted) = Policy::evaluate(
            &plugin.info.manifest,
            grants.get(&plugin.info.name),
            defaults,
        );
        let http = if policy.http.rules.is_empty() {
            None
        } else {
            crate::caps::http::HttpClient::for_policy(&policy.http, &policy.http_limits)
                .inspect_err(|e| tracing::error!(plugin = %plugin.info.label(), "{e}"))
                .ok()
        };
        Installed {
            plugin: Arc::new(plugin),
            policy: Arc::new(policy),
            not_granted,
            http,
        }
    }

    /// This plugin, if it may run.
    pub fn callable(&self, grants_file: &Path) -> Result<&Installed, NotCallable> {
        if self.state() == PluginState::PendingApproval {
            return Err(NotCallable::PendingApproval {
                label: self.plugin.info.label(),
                grants: grants_file.display().to_string(),
                missing: self.not_granted.join("; "),
            });
        }
        Ok(self)
    }

    /// The context a call of this plugin runs with: its policy, `config`
    /// without the fields its schema marks secret, and its storage namespace
    /// for `pipeline` (empty outside pipelines).
    pub fn call_context(
        &self,
        config: &serde_json::Value,
        db: &crate::db::WriterHandle,
        secrets: &Arc<crate::secrets::Secrets>,
        pipeline: &str,
    ) -> crate::sandbox::CallContext {
        crate::sandbox::CallContext {
            policy: self.policy.clone(),
            config: crate::schema::without_secrets(
                self.plugin.info.manifest.config_schema.as_ref(),
                config,
            ),
            audit: crate::audit::AuditLog::new(db.clone()),
            db: db.clone(),
            pipeline: pipeline.to_string(),
            secrets: secrets.clone(),
            http: self.http.clone(),
        }
    }

    /// Active, or pending approval.
    pub fn state(&self) -> PluginState {
        if self.not_granted.is_empty() {
            PluginState::Active
        } else {
            PluginState::PendingApproval
        }
    }
}

/// Why a plugin cannot be called.
#[derive(Debug, thiserror::Error)]
pub enum NotCallable {
    /// No file provides it.
    #[error("no plugin named {name:?} in {dir} (see `causeway plugins`)")]
    Unknown {
        /// The name asked for.
        name: String,
        /// The plugins folder.
        dir: String,
    },
    /// It requests something not granted.
    #[error(
        "plugin {label} is pending approval and does not run: it requests what {grants} does not grant: {missing}"
    )]
    PendingApproval {
        /// `name@version`.
        label: String,
        /// The grants file.
        grants: String,
        /// What is missing.
        missing: String,
    },
}

impl PluginStatus {
    /// The row the running host records in the database.
    pub fn to_row(&self) -> crate::db::PluginRow {
        crate::db::PluginRow {
            file: self.file.display().to_string(),
            name: self.name.clone(),
            version: self.version.clone(),
            digest: self.digest.clone(),
            worlds: self
                .worlds
                .iter()
                .map(|w| w.name())
                .collect::<Vec<_>>()
                .join(","),
            state: self.state.name().to_string(),
            error: self.error.clone(),
            not_granted: self.not_granted.join("\n"),
        }
    }

    /// A status read back from the database.
    pub fn from_row(row: crate::db::PluginRow) -> PluginStatus {
        PluginStatus {
            name: row.name,
            version: row.version,
            worlds: crate::contract::World::ALL
                .into_iter()
                .filter(|w| row.worlds.split(',').any(|n| n == w.name()))
                .collect(),
            digest: row.digest,
            file: PathBuf::from(row.file),
            state: match row.state.as_str() {
                "active" => PluginState::Active,
                "pending-approval" => PluginState::PendingApproval,
                _ => PluginState::Failed,
            },
            error: row.error,
            not_granted: row.not_granted.lines().map(str::to_string).collect(),
        }
    }
}

/// The plugins loaded from one folder.
pub struct Registry {
    dir: PathBuf,
    grants_file: PathBuf,
    plugins: BTreeMap<String, Installed>,
    failures: Vec<LoadError>,
}

/// The `.wasm` files at the top level of `dir`, sorted by name. Subfolders
/// and other files are ignored.
pub fn plugin_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        if entry.file_type()?.is_file() && path.extension().is_some_and(|e| e == "wasm") {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

impl Registry {
    /// Loads every plugin file in `dir` and evaluates each against `grants`
    /// (with `defaults` as the base limits). A missing folder is an empty
    /// registry.
    pub fn load_dir(
        engine: &Engine,
        linker: &Linker<StoreState>,
        dir: &Path,
        grants: &Grants,
        defaults: Limits,
    ) -> std::io::Result<Registry> {
        let files = match plugin_files(dir) {
            Ok(files) => files,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(e),
        };
        let mut registry = Registry {
            dir: dir.to_path_buf(),
            grants_file: grants.file.clone(),
            plugins: BTreeMap::new(),
            failures: Vec::new(),
        };
        for file in files {
            match Plugin::load(engine, linker, &file) {
                Ok(plugin) => registry.insert(Installed::new(plugin, grants, defaults)),
                Err(e) => {
                    tracing::warn!("plugin not loaded: {e}");
                    registry.failures.push(e);
                }
            }
        }
        Ok(registry)
    }

    fn insert(&mut self, installed: Installed) {
        let plugin = &installed.plugin;
        let name = plugin.info.name.clone();
        if let Some(existing) = self.plugins.get(&name) {
            let error = LoadError {
                file: plugin.info.path.clone(),
                problem: Problem::DuplicateName {
                    name,
                    other: existing.plugin.info.path.display().to_string(),
                },
            };
            tracing::warn!("plugin not loaded: {error}");
            self.failures.push(error);
            return;
        }
        match installed.state() {
            PluginState::PendingApproval => tracing::warn!(
                plugin = %plugin.info.label(),
                digest = %plugin.info.digest,
                "plugin pending approval: it requests what is not granted: {}",
                installed.not_granted.join("; ")
            ),
            _ => {
                tracing::info!(plugin = %plugin.info.label(), digest = %plugin.info.digest, "plugin loaded")
            }
        }
        self.plugins.insert(name, installed);
    }

    /// The folder this registry was loaded from.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The loaded plugin named `name`, whatever its state.
    pub fn get(&self, name: &str) -> Option<&Installed> {
        self.plugins.get(name)
    }

    /// The plugin named `name`, if it may run.
    pub fn callable(&self, name: &str) -> Result<&Installed, NotCallable> {
        self.plugins
            .get(name)
            .ok_or_else(|| NotCallable::Unknown {
                name: name.to_string(),
                dir: self.dir.display().to_string(),
            })?
            .callable(&self.grants_file)
    }

    /// The loaded plugins, by name.
    pub fn plugins(&self) -> impl Iterator<Item = &Installed> {
        self.plugins.values()
    }

    /// The files that failed to load.
    pub fn failures(&self) -> &[LoadError] {
        &self.failures
    }

    /// One status row per plugin and per failed file, by name.
    pub fn statuses(&self) -> Vec<PluginStatus> {
        let mut rows: Vec<PluginStatus> = self.plugins.values().map(loaded_status).collect();
        rows.extend(self.failures.iter().map(failed_status));
        rows.sort_by(|a, b| a.name.cmp(&b.name).then(a.file.cmp(&b.file)));
        rows
    }
}

fn loaded_status(installed: &Installed) -> PluginStatus {
    let info: &PluginInfo = &installed.plugin.info;
    let state = installed.state();
    PluginStatus {
        name: info.name.clone(),
        version: Some(info.version.clone()),
        worlds: info.worlds.clone(),
        digest: Some(info.digest.clone()),
        file: info.path.clone(),
        state,
        error: (state == PluginState::PendingApproval).then(|| {
            format!(
                "{}: pending approval: requests what is not granted: {}",
                info.path.display(),
                installed.not_granted.join("; ")
            )
        }),
        not_granted: installed.not_granted.clone(),
    }
}

fn failed_status(error: &LoadError) -> PluginStatus {
    PluginStatus {
        name: error
            .file
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default(),
        version: None,
        worlds: Vec::new(),
        digest: None,
        file: error.file.clone(),
        state: PluginState::Failed,
        error: Some(error.to_string()),
        not_granted: Vec::new(),
    }
}
