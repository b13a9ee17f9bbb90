//! The installed plugins: every `.wasm` at the top level of the plugins
//! folder, loaded independently so one bad file never stops the others.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Serialize;
use wasmtime::Engine;
use wasmtime::component::Linker;

use crate::plugin::{LoadError, Plugin, PluginInfo, Problem};
use crate::sandbox::StoreState;

/// The state of an installed plugin file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum PluginState {
    /// Loaded and callable.
    Active,
    /// Not loadable; the error says why.
    Failed,
}

impl PluginState {
    /// The state's name, as the CLI and the status API show it.
    pub fn name(self) -> &'static str {
        match self {
            PluginState::Active => "active",
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
    /// Active or failed.
    pub state: PluginState,
    /// Why it failed, as one line.
    pub error: Option<String>,
}

/// The plugins loaded from one folder.
pub struct Registry {
    dir: PathBuf,
    plugins: BTreeMap<String, Arc<Plugin>>,
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
    /// Loads every plugin file in `dir`. A missing folder is an empty registry.
    pub fn load_dir(
        engine: &Engine,
        linker: &Linker<StoreState>,
        dir: &Path,
    ) -> std::io::Result<Registry> {
        let files = match plugin_files(dir) {
            Ok(files) => files,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(e),
        };
        let mut registry = Registry {
            dir: dir.to_path_buf(),
            plugins: BTreeMap::new(),
            failures: Vec::new(),
        };
        for file in files {
            match Plugin::load(engine, linker, &file) {
                Ok(plugin) => registry.insert(plugin),
                Err(e) => {
                    tracing::warn!("plugin not loaded: {e}");
                    registry.failures.push(e);
                }
            }
        }
        Ok(registry)
    }

    fn insert(&mut self, plugin: Plugin) {
        let name = plugin.info.name.clone();
        if let Some(existing) = self.plugins.get(&name) {
            let error = LoadError {
                file: plugin.info.path.clone(),
                problem: Problem::DuplicateName {
                    name,
                    other: existing.info.path.display().to_string(),
                },
            };
            tracing::warn!("plugin not loaded: {error}");
            self.failures.push(error);
            return;
        }
        tracing::info!(plugin = %plugin.info.label(), digest = %plugin.info.digest, "plugin loaded");
        self.plugins.insert(name, Arc::new(plugin));
    }

    /// The folder this registry was loaded from.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The active plugin named `name`.
    pub fn get(&self, name: &str) -> Option<&Arc<Plugin>> {
        self.plugins.get(name)
    }

    /// The active plugins, by name.
    pub fn plugins(&self) -> impl Iterator<Item = &Arc<Plugin>> {
        self.plugins.values()
    }

    /// The files that failed to load.
    pub fn failures(&self) -> &[LoadError] {
        &self.failures
    }

    /// One status row per plugin and per failed file, by name.
    pub fn statuses(&self) -> Vec<PluginStatus> {
        let mut rows: Vec<PluginStatus> = self
            .plugins
            .values()
            .map(|p| active_status(&p.info))
            .collect();
        rows.extend(self.failures.iter().map(failed_status));
        rows.sort_by(|a, b| a.name.cmp(&b.name).then(a.file.cmp(&b.file)));
        rows
    }
}

fn active_status(info: &PluginInfo) -> PluginStatus {
    PluginStatus {
        name: info.name.clone(),
        version: Some(info.version.clone()),
        worlds: info.worlds.clone(),
        digest: Some(info.digest.clone()),
        file: info.path.clone(),
        state: PluginState::Active,
        error: None,
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
    }
}
