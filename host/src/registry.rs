//! The installed plugins: every `.wasm` at the top level of the plugins
//! folder, loaded independently so one bad file never stops the others.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::engine::Runtime;
use serde::Serialize;

use crate::grants::{Grants, Policy};
use crate::plugin::{LoadError, Plugin, PluginInfo, Problem};
use crate::sandbox::Limits;

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
    /// A new file, or a new version of one, still compiling in the running
    /// host's background; the version it replaces (if any) keeps serving.
    Compiling,
}

impl PluginState {
    /// The state's name, as the CLI and the status API show it.
    pub fn name(self) -> &'static str {
        match self {
            PluginState::Active => "active",
            PluginState::PendingApproval => "pending-approval",
            PluginState::Failed => "failed",
            PluginState::Compiling => "compiling",
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
    /// Active, pending approval, failed, or (in a running host) compiling.
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
    /// Its log budget, shared by all its calls.
    pub log_limit: Arc<crate::caps::log::LogLimiter>,
    /// Its instances kept between the calls of a pipeline stage.
    pub warm: crate::warm::WarmPool,
}

impl Installed {
    /// Evaluates a loaded plugin against the grants; its requests leave as
    /// `egress` says.
    pub fn new(
        plugin: impl Into<Arc<Plugin>>,
        grants: &Grants,
        defaults: Limits,
        egress: &crate::caps::http::Egress,
    ) -> Installed {
        let plugin = plugin.into();
        let (policy, not_granted) = evaluate(&plugin, grants, defaults);
        Installed::with_policy(plugin, policy, not_granted, egress, None)
    }

    /// A plugin under a policy computed elsewhere (the conformance suite's),
    /// its requests leaving as `egress` says, its HTTP
    /// answered from or recorded into `tape` when one is given.
    pub fn with_policy(
        plugin: Arc<Plugin>,
        policy: Policy,
        not_granted: Vec<String>,
        egress: &crate::caps::http::Egress,
        tape: Option<Arc<crate::caps::http::Tape>>,
    ) -> Installed {
        let http = if policy.http.rules.is_empty() {
            None
        } else {
            crate::caps::http::HttpClient::for_policy(&policy, egress, tape)
                .inspect_err(|e| tracing::error!(plugin = %plugin.info.label(), "{e}"))
                .ok()
        };
        Installed {
            plugin,
            policy: Arc::new(policy),
            not_granted,
            http,
            log_limit: Arc::default(),
            warm: Default::default(),
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
            )
            .to_string(),
            audit: crate::audit::AuditLog::new(db.clone()).counting_in(self.plugin.stats.clone()),
            db: db.clone(),
            pipeline: pipeline.to_string(),
            run: None,
            secrets: secrets.clone(),
            http: self.http.clone(),
            log_limit: self.log_limit.clone(),
        }
    }

    /// Calls `operation` in one of this version's warm instances made for
    /// the same context, or a fresh one (see [`crate::warm`]): how pipeline
    /// stages call.
    pub async fn call_warm(
        &self,
        engine: &wasmtime::Engine,
        operation: crate::operation::Operation,
        context: &crate::sandbox::CallContext,
    ) -> Result<crate::operation::Answer, crate::sandbox::CallError> {
        self.warm
            .call(&self.plugin, engine, operation, context)
            .await
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
                "compiling" => PluginState::Compiling,
                _ => PluginState::Failed,
            },
            error: row.error,
            not_granted: row.not_granted.lines().map(str::to_string).collect(),
        }
    }
}

/// The plugins loaded from one folder: an immutable snapshot. A reload
/// builds the next one with [`Registry::rescan`], reusing what did not change.
pub struct Registry {
    dir: PathBuf,
    grants_file: PathBuf,
    /// Per name, the version that serves (or, pending approval, would).
    plugins: BTreeMap<String, Arc<Installed>>,
    /// Newer versions held back, pending approval, while an older one serves.
    held: Vec<Arc<Installed>>,
    /// Files that failed to load (an older version may still serve).
    failures: Vec<Arc<LoadError>>,
    /// Files still compiling in the background, as their status rows.
    compiling: Vec<PluginStatus>,
}

/// The `.wasm` entries at the top level of `dir`, sorted by name: files,
/// and symbolic links, which are followed (a deployment may switch
/// versions by replacing a link). Subfolders and other names are ignored;
/// anything else named `.wasm` (a FIFO, a device, a broken link) is listed,
/// to fail when read, naming what it is.
pub fn plugin_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        if path.extension().is_some_and(|e| e == "wasm") && !path.is_dir() {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

/// How [`Registry::rescan`] has a changed file compiled.
#[derive(Clone, Copy)]
pub enum Compile<'a> {
    /// At once, the rescan waiting for it: loading a folder at start, and the
    /// commands that list or check it.
    Now,
    /// In the background, for the running host's reloader: a file not yet
    /// compiled keeps what it had until its compile is done.
    Background(&'a crate::reload::compile::Background),
}

/// A plugin file found by the name in its manifest, read but not compiled.
#[derive(Debug)]
pub struct NamedFile {
    /// The file.
    pub path: PathBuf,
    /// Its contents.
    pub bytes: Vec<u8>,
    /// Its manifest.
    pub manifest: crate::manifest::Manifest,
}

/// The plugin file in `dir` whose manifest names `name`; only manifests are
/// read, nothing is compiled. Files over `max_bytes` are passed over unread,
/// as unreadable ones are.
pub fn find_named(dir: &Path, name: &str, max_bytes: u64) -> std::io::Result<Option<NamedFile>> {
    Ok(named_files(dir, max_bytes)?.find(|found| found.manifest.name == name))
}

/// The names the manifests of the plugin files in `dir` give (read, not
/// compiled), sorted: what a name a user gave could have meant.
pub fn plugin_names(dir: &Path, max_bytes: u64) -> std::io::Result<Vec<String>> {
    let mut names: Vec<String> = named_files(dir, max_bytes)?
        .map(|found| found.manifest.name)
        .collect();
    names.sort();
    Ok(names)
}

/// Each plugin file in `dir` with its manifest, in order of name; files
/// over `max_bytes`, unreadable ones and ones without a manifest are
/// passed over.
fn named_files(dir: &Path, max_bytes: u64) -> std::io::Result<impl Iterator<Item = NamedFile>> {
    Ok(plugin_files(dir)?.into_iter().filter_map(move |path| {
        let bytes = crate::plugin::read_file(&path, max_bytes).ok()?;
        let (manifest, _) = crate::manifest::Manifest::load(&path, &bytes).ok()?;
        Some(NamedFile {
            path,
            bytes,
            manifest,
        })
    }))
}

impl Registry {
    /// A registry of nothing, for `dir`.
    pub fn empty(dir: &Path, grants: &Grants) -> Registry {
        Registry {
            dir: dir.to_path_buf(),
            grants_file: grants.file.clone(),
            plugins: BTreeMap::new(),
            held: Vec::new(),
            compiling: Vec::new(),
            failures: Vec::new(),
        }
    }

    /// Loads every plugin file in `dir` and evaluates each against `grants`
    /// (with `defaults` as the base limits). A missing folder is an empty
    /// registry.
    pub fn load_dir(
        runtime: &Runtime,
        dir: &Path,
        grants: &Grants,
        defaults: Limits,
    ) -> std::io::Result<Registry> {
        match Registry::empty(dir, grants).rescan(
            runtime,
            grants,
            defaults,
            &BTreeSet::new(),
            Compile::Now,
        ) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Registry::empty(dir, grants)),
            loaded => loaded,
        }
    }

    /// The next registry: the folder as it is now, against `grants`.
    ///
    /// A file whose bytes (and manifest) did not change keeps its compiled
    /// plugin, and keeps its [`Installed`] (HTTP client and limits included)
    /// if its policy did not change either. Files in `unsettled` (still being
    /// written) keep whatever they had, and so do files `compile` has not
    /// compiled yet. An upgrade that fails to load, or that requests more
    /// than is granted, does not replace the version that served from the
    /// same file: that one keeps serving, and the new file shows as failed
    /// or pending approval beside it. A folder that cannot be read (or is
    /// gone) is an error.
    pub fn rescan(
        &self,
        runtime: &Runtime,
        grants: &Grants,
        defaults: Limits,
        unsettled: &BTreeSet<PathBuf>,
        compile: Compile<'_>,
    ) -> std::io::Result<Registry> {
        // A folder that is gone is an error, not an empty one: a running
        // host keeps its plugins through a deployment that replaces the
        // folder whole (files removed one by one unload theirs).
        let files = plugin_files(&self.dir)?;
        let previous: Vec<&Arc<Installed>> =
            self.plugins.values().chain(self.held.iter()).collect();
        let install = |plugin: &Arc<Plugin>| -> Arc<Installed> {
            let (policy, not_granted) = evaluate(plugin, grants, defaults);
            let same = previous.iter().find(|p| {
                Arc::ptr_eq(&p.plugin, plugin)
                    && *p.policy == policy
                    && p.not_granted == not_granted
            });
            match same {
                Some(installed) => Arc::clone(installed),
                None => Arc::new(Installed::with_policy(
                    plugin.clone(),
                    policy,
                    not_granted,
                    &runtime.egress,
                    None,
                )),
            }
        };
        let mut next = Registry::empty(&self.dir, grants);
        let mut candidates: Vec<Arc<Installed>> = Vec::new();
        for file in &files {
            let from_file = |p: &&&Arc<Installed>| p.plugin.info.path == *file;
            // What the file had: for one still being written or compiled.
            let keep = |candidates: &mut Vec<Arc<Installed>>, next: &mut Registry| {
                candidates.extend(
                    previous
                        .iter()
                        .filter(from_file)
                        .map(|p| install(&p.plugin)),
                );
                next.failures
                    .extend(self.failures.iter().filter(|f| f.file == *file).cloned());
            };
            if unsettled.contains(file) {
                keep(&mut candidates, &mut next);
                continue;
            }
            let bytes = match runtime.read_plugin(file) {
                Ok(bytes) => bytes,
                Err(error) => {
                    next.failures.push(Arc::new(error));
                    continue;
                }
            };
            let digest = crate::plugin::digest(&bytes);
            let unchanged = previous.iter().filter(from_file).find(|p| {
                p.plugin.info.digest == digest
                    && crate::manifest::Manifest::load(file, &bytes)
                        .is_ok_and(|(m, _)| m == p.plugin.info.manifest)
            });
            let plugin = match unchanged {
                Some(installed) => installed.plugin.clone(),
                None => {
                    let compiled = match compile {
                        Compile::Now => runtime
                            .compile_plugin(file, &bytes)
                            .map(Arc::new)
                            .map_err(Arc::new),
                        Compile::Background(background) => {
                            match background.get(file, &digest, &bytes) {
                                Some(compiled) => compiled,
                                None => {
                                    keep(&mut candidates, &mut next);
                                    next.compiling.push(compiling_status(file, &digest, &bytes));
                                    continue;
                                }
                            }
                        }
                    };
                    match compiled {
                        Ok(plugin) => plugin,
                        Err(e) => {
                            next.failures.push(e);
                            continue;
                        }
                    }
                }
            };
            candidates.push(install(&plugin));
        }
        if let Compile::Background(background) = compile {
            background.retain(&files);
        }
        // Two files naming one plugin: the file serving it keeps it, so a
        // copy dropped beside it (a backup, another version) swaps nothing
        // and fails instead; with neither serving, the first by name.
        candidates.sort_by_key(|candidate| {
            let info = &candidate.plugin.info;
            self.plugins
                .get(&info.name)
                .is_none_or(|serving| serving.plugin.info.path != info.path)
        });
        for candidate in candidates {
            let name = &candidate.plugin.info.name;
            let serving = self.plugins.get(name).filter(|old| {
                old.plugin.info.path == candidate.plugin.info.path
                    && !Arc::ptr_eq(&old.plugin, &candidate.plugin)
            });
            if let Some(old) = serving
                && candidate.state() == PluginState::PendingApproval
            {
                let old = install(&old.plugin);
                if old.state() == PluginState::Active {
                    next.held.push(candidate);
                    next.insert(old);
                    continue;
                }
            }
            next.insert(candidate);
        }
        // A file that failed to load: the version that served from it before
        // keeps serving.
        let failed: Vec<PathBuf> = next.failures.iter().map(|f| f.file.clone()).collect();
        for file in failed {
            if let Some(old) = self.plugins.values().find(|p| p.plugin.info.path == file)
                && !next.plugins.contains_key(&old.plugin.info.name)
            {
                next.insert(install(&old.plugin));
            }
        }
        self.tell_changes(&next);
        Ok(next)
    }

    /// Logs the files that newly fail to load, the upgrades newly held back,
    /// and the plugins `next` serves (or holds pending approval) that this
    /// registry did not: not every plugin and every failure again at every
    /// reload.
    fn tell_changes(&self, next: &Registry) {
        for failure in &next.failures {
            let told = failure.to_string();
            if self
                .failures
                .iter()
                .any(|f| f.file == failure.file && f.to_string() == told)
            {
                continue;
            }
            match next
                .plugins
                .values()
                .find(|p| p.plugin.info.path == failure.file)
            {
                Some(serving) => tracing::warn!(
                    plugin = %serving.plugin.info.label(),
                    "plugin not loaded: {told}; the version loaded before keeps serving"
                ),
                None => tracing::warn!("plugin not loaded: {told}"),
            }
        }
        for held in &next.held {
            if self.held.iter().any(|before| Arc::ptr_eq(before, held)) {
                continue;
            }
            let serving = next
                .plugins
                .get(&held.plugin.info.name)
                .map(|p| p.plugin.info.label())
                .unwrap_or_default();
            tracing::warn!(
                plugin = %held.plugin.info.label(),
                digest = %held.plugin.info.digest,
                "upgrade held back, pending approval: it requests what is not granted: {}; {serving} keeps serving",
                held.not_granted.join("; "),
            );
        }
        for (name, installed) in &next.plugins {
            if self
                .plugins
                .get(name)
                .is_some_and(|before| Arc::ptr_eq(before, installed))
            {
                continue;
            }
            let plugin = &installed.plugin;
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
        }
    }

    fn insert(&mut self, installed: Arc<Installed>) {
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
            self.failures.push(Arc::new(error));
            return;
        }
        self.plugins.insert(name, installed);
    }

    /// The folder this registry was loaded from.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The loaded plugin named `name`, whatever its state.
    pub fn get(&self, name: &str) -> Option<&Arc<Installed>> {
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

    /// The loaded plugins, by name: for each, the version that serves.
    pub fn plugins(&self) -> impl Iterator<Item = &Arc<Installed>> {
        self.plugins.values()
    }

    /// Newer versions held back, pending approval, while an older one serves.
    pub fn held(&self) -> &[Arc<Installed>] {
        &self.held
    }

    /// The files that failed to load.
    pub fn failures(&self) -> &[Arc<LoadError>] {
        &self.failures
    }

    /// One status row per plugin, per held-back upgrade and per failed
    /// file, by name.
    pub fn statuses(&self) -> Vec<PluginStatus> {
        let mut rows: Vec<PluginStatus> = self
            .plugins
            .values()
            .chain(self.held.iter())
            .map(|i| loaded_status(i))
            .collect();
        rows.extend(self.failures.iter().map(|f| failed_status(f)));
        rows.extend(self.compiling.iter().cloned());
        rows.sort_by(|a, b| a.name.cmp(&b.name).then(a.file.cmp(&b.file)));
        rows
    }
}

fn evaluate(plugin: &Plugin, grants: &Grants, defaults: Limits) -> (Policy, Vec<String>) {
    Policy::evaluate(
        &plugin.info.manifest,
        grants.get(&plugin.info.name),
        defaults,
    )
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

/// The file's name without `.wasm`: what names a row whose manifest is
/// not known.
fn file_stem(file: &Path) -> String {
    file.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// The row of `file` (`bytes`, `digest`) while it compiles, named as far as
/// its manifest can be read yet.
fn compiling_status(file: &Path, digest: &str, bytes: &[u8]) -> PluginStatus {
    let manifest = crate::manifest::Manifest::load(file, bytes)
        .ok()
        .map(|(m, _)| m);
    PluginStatus {
        name: manifest
            .as_ref()
            .map_or_else(|| file_stem(file), |m| m.name.clone()),
        version: manifest.map(|m| m.version),
        worlds: Vec::new(),
        digest: Some(digest.to_string()),
        file: file.to_path_buf(),
        state: PluginState::Compiling,
        error: None,
        not_granted: Vec::new(),
    }
}

fn failed_status(error: &LoadError) -> PluginStatus {
    PluginStatus {
        name: file_stem(&error.file),
        version: None,
        worlds: Vec::new(),
        digest: None,
        file: error.file.clone(),
        state: PluginState::Failed,
        error: Some(error.to_string()),
        not_granted: Vec::new(),
    }
}
