//! Hot reload: the running host watches the plugins folder, `grants.toml`
//! and `causeway.toml`, and swaps in a new [`Snapshot`] when they change;
//! and the secrets file, whose values it takes in place
//! ([`Secrets::reload`]).
//!
//! - A file renamed into place, or removed, is handled at once; a file
//!   written in place is taken once it has not changed for the settle window
//!   (`reload-settle`), so a slow copy is never loaded half-written.
//! - Compiling happens on a thread of its own ([`compile`]), off the serving
//!   path and off the reloader's: a large component compiling for seconds
//!   holds back neither a grants edit nor another plugin's upgrade. The
//!   file counts as still being written until its compile is done; then
//!   the folder is rescanned. The swap is one pointer store ([`Live::swap`]).
//!   Calls in flight keep the snapshot they started with.
//! - A plugin file that fails to load, or an upgrade that requests more than
//!   is granted, leaves the version that served before serving (see
//!   [`Registry::rescan`](crate::registry::Registry::rescan)).
//! - The plugins folder's place is watched too: a folder replaced whole (a
//!   new one renamed in, a symbolic link switched) or made again is watched
//!   anew and read whole; while none is there, the plugins loaded keep
//!   serving.
//! - `grants.toml`, `causeway.toml`, the secrets file and the plugin files
//!   are watched by name in their folders, and by what they are: a file
//!   reached through a link its folder switches (a Kubernetes volume's
//!   `..data`) is taken again when it is another file.
//! - SIGHUP reads them all again, as if each had changed.
//! - An invalid `grants.toml`, `causeway.toml` or secrets file is refused,
//!   logged, and the last good one kept. The listen address, the data
//!   directory, the plugins folder, the secrets file's place, the artifact
//!   cache and `[engine]` are fixed for the life of the process.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use notify::{EventKind, RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::config::Config;
use crate::db::WriterHandle;
use crate::engine::Runtime;
use crate::grants::Grants;
use crate::live::{Live, Snapshot};
use crate::registry::Compile;
use crate::secrets::Secrets;

pub mod compile;

/// A watched file whose change is waiting for its moment.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Changed {
    /// A file in the plugins folder (a `.wasm`, or a sidecar manifest).
    Plugin(OsString),
    /// `grants.toml`.
    Grants,
    /// `causeway.toml`.
    Config,
    /// The secrets file.
    Secrets,
    /// The plugins folder itself: removed, made again, or replaced by
    /// another renamed into its place (a deployment of a whole folder).
    Folder,
}

/// The running reloader: dropping it stops the watching.
pub struct Reloader {
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Reloader {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// What the reloader watches, resolved once at start.
struct Watched {
    plugins_dir: PathBuf,
    plugins_canonical: PathBuf,
    /// The folder the plugins folder is in, and its name there: watched so
    /// that a folder replaced or made again is watched anew (a watch
    /// follows the folder it was put on, wherever it goes).
    plugins_entry: (PathBuf, Option<OsString>),
    grants: (PathBuf, Option<OsString>),
    config: Option<(PathBuf, Option<OsString>)>,
    secrets: Option<(PathBuf, Option<OsString>)>,
    /// What each of those three files, and each plugin file, was when last
    /// seen (through any symbolic link): how a change made by switching a
    /// link in their folder, not by touching them, is seen (a Kubernetes
    /// volume swaps its `..data` link, and `grants.toml` is a link through
    /// it).
    seen: BTreeMap<Changed, Option<Identity>>,
}

/// A file as `stat` sees it through links: which file, and its state.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Identity {
    device: u64,
    inode: u64,
    modified: Option<std::time::SystemTime>,
    len: u64,
}

impl Identity {
    fn of(path: &Path) -> Option<Identity> {
        use std::os::unix::fs::MetadataExt;
        let meta = std::fs::metadata(path).ok()?;
        Some(Identity {
            device: meta.dev(),
            inode: meta.ino(),
            modified: meta.modified().ok(),
            len: meta.len(),
        })
    }
}

impl Watched {
    /// What a changed path is, if it is anything watched.
    fn classify(&self, path: &Path) -> Option<Changed> {
        let parent = path.parent()?;
        let name = path.file_name()?;
        if (parent == self.plugins_entry.0 && Some(name) == self.plugins_entry.1.as_deref())
            || path == self.plugins_canonical
        {
            return Some(Changed::Folder);
        }
        if let Some((dir, file)) = &self.config
            && parent == dir
            && Some(name) == file.as_deref()
        {
            return Some(Changed::Config);
        }
        if parent == self.grants.0 && Some(name) == self.grants.1.as_deref() {
            return Some(Changed::Grants);
        }
        if let Some((dir, file)) = &self.secrets
            && parent == dir
            && Some(name) == file.as_deref()
        {
            return Some(Changed::Secrets);
        }
        (parent == self.plugins_canonical && is_plugin_file(name))
            .then(|| Changed::Plugin(name.to_os_string()))
    }

    /// The files watched by name in `dir`, each with what its change is:
    /// of `grants.toml`, `causeway.toml` and the secrets file, those there;
    /// in the plugins folder, its plugin files and sidecars.
    fn files_in(&self, dir: &Path) -> Vec<(Changed, PathBuf)> {
        let path =
            |(dir, name): &(PathBuf, Option<OsString>)| name.as_ref().map(|name| dir.join(name));
        let mut files: Vec<(Changed, PathBuf)> = [
            (Changed::Grants, path(&self.grants)),
            (Changed::Config, self.config.as_ref().and_then(path)),
            (Changed::Secrets, self.secrets.as_ref().and_then(path)),
        ]
        .into_iter()
        .filter_map(|(changed, path)| Some((changed, path?)))
        .filter(|(_, path)| path.parent() == Some(dir))
        .collect();
        if dir == self.plugins_canonical
            && let Ok(entries) = std::fs::read_dir(dir)
        {
            files.extend(entries.flatten().filter_map(|entry| {
                let name = entry.file_name();
                is_plugin_file(&name).then(|| (Changed::Plugin(name), entry.path()))
            }));
        }
        files
    }

    /// Notes what every file watched by name is now.
    fn saw_all(&mut self) {
        let mut dirs = vec![self.grants.0.clone(), self.plugins_canonical.clone()];
        dirs.extend(
            self.config
                .iter()
                .chain(&self.secrets)
                .map(|(dir, _)| dir.clone()),
        );
        self.seen = dirs
            .iter()
            .flat_map(|dir| self.files_in(dir))
            .map(|(changed, path)| (changed, Identity::of(&path)))
            .collect();
    }

    /// Notes what the file at `path`, whose change is `changed`, is now: a
    /// change already taken is not taken again.
    fn saw(&mut self, changed: &Changed, path: &Path) {
        if !matches!(changed, Changed::Folder) {
            self.seen.insert(changed.clone(), Identity::of(path));
        }
    }

    /// The files watched by name in `dir` that are not what they were when
    /// last seen (a link on the way to them switched), now noted as seen.
    fn switched_in(&mut self, dir: &Path) -> Vec<Changed> {
        let in_dir = self.files_in(dir);
        let mut switched = Vec::new();
        for (changed, path) in in_dir {
            let now = Identity::of(&path);
            if self.seen.get(&changed) != Some(&now) {
                self.seen.insert(changed.clone(), now);
                switched.push(changed);
            }
        }
        switched
    }

    /// The files a reload read again, by name, for its log line: an
    /// operator sees which edit or upgrade a reload was for.
    fn describe(&self, ready: &BTreeSet<Changed>) -> String {
        let name = |file: Option<&(PathBuf, Option<OsString>)>, otherwise: &str| {
            file.and_then(|(_, name)| name.as_ref()).map_or_else(
                || otherwise.to_string(),
                |n| n.to_string_lossy().into_owned(),
            )
        };
        ready
            .iter()
            .map(|changed| match changed {
                Changed::Plugin(file) => file.to_string_lossy().into_owned(),
                Changed::Grants => name(Some(&self.grants), "the grants file"),
                Changed::Config => name(self.config.as_ref(), "the configuration file"),
                Changed::Secrets => name(self.secrets.as_ref(), "the secrets file"),
                Changed::Folder => "the plugins folder".to_string(),
            })
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Whether `name` is a plugin file's or a sidecar manifest's.
fn is_plugin_file(name: &std::ffi::OsStr) -> bool {
    Path::new(name)
        .extension()
        .is_some_and(|e| e == "wasm" || e == "toml")
}

/// A file's folder, canonical (so event paths compare equal), and its name.
fn split(file: &Path) -> (PathBuf, Option<OsString>) {
    let dir = file
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    (
        std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf()),
        file.file_name().map(OsString::from),
    )
}

impl Reloader {
    /// Starts watching for the host whose current state is `live` and whose
    /// secrets are `secrets`; every swap records the new plugin states
    /// through `db`.
    pub fn start(
        live: Arc<Live>,
        secrets: Arc<Secrets>,
        runtime: Arc<Runtime>,
        db: WriterHandle,
    ) -> notify::Result<Reloader> {
        let snapshot = live.snapshot();
        let config = &snapshot.config;
        std::fs::create_dir_all(&config.plugins_dir).map_err(notify::Error::io)?;
        let mut watched = Watched {
            plugins_dir: config.plugins_dir.clone(),
            plugins_canonical: std::fs::canonicalize(&config.plugins_dir)
                .map_err(notify::Error::io)?,
            plugins_entry: split(&config.plugins_dir),
            grants: split(&config.grants_file),
            config: config.file.as_deref().map(split),
            secrets: secrets.file().map(split),
            seen: BTreeMap::new(),
        };
        watched.saw_all();
        let (events, receiver) = mpsc::unbounded_channel();
        let mut watcher = notify::recommended_watcher(move |event| {
            let _ = events.send(event);
        })?;
        watcher.watch(&watched.plugins_canonical, RecursiveMode::NonRecursive)?;
        let mut unwatched = BTreeSet::new();
        if watched.plugins_entry.1.is_some() {
            unwatched.insert(watched.plugins_entry.0.clone());
        }
        unwatched.insert(watched.grants.0.clone());
        for (dir, _) in watched.config.iter().chain(&watched.secrets) {
            unwatched.insert(dir.clone());
        }
        unwatched.remove(&watched.plugins_canonical);
        let (compiled, compiled_files) = mpsc::unbounded_channel();
        let mut state = State {
            live,
            secrets,
            compiler: Arc::new(compile::Background::new(runtime.clone(), compiled)),
            runtime,
            db,
            watched,
            watcher,
            unwatched,
            deferred: BTreeSet::new(),
            config_problems: BTreeSet::new(),
            settle: config.reload_settle,
        };
        state.watch_the_rest();
        state.say_config_problems();
        let hangup = hangup();
        let task = tokio::spawn(state.run(receiver, compiled_files, hangup));
        Ok(Reloader { task })
    }
}

/// SIGHUP, where there is such a thing: an operator's (or a service
/// manager's) "read everything again", for file systems whose changes never
/// reach the watcher, and a reload rather than the default stop.
#[cfg(unix)]
pub(crate) type Hangup = Option<tokio::signal::unix::Signal>;
#[cfg(not(unix))]
pub(crate) type Hangup = Option<std::convert::Infallible>;

#[cfg(unix)]
pub(crate) fn hangup() -> Hangup {
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(signal) => Some(signal),
        Err(e) => {
            tracing::warn!("cannot listen for SIGHUP: {e}");
            None
        }
    }
}

#[cfg(not(unix))]
pub(crate) fn hangup() -> Hangup {
    None
}

/// The next SIGHUP; never, without one.
pub(crate) async fn hung_up(signal: &mut Hangup) {
    #[cfg(unix)]
    if let Some(signal) = signal
        && signal.recv().await.is_some()
    {
        return;
    }
    #[cfg(not(unix))]
    let _ = signal;
    std::future::pending().await
}

struct State {
    live: Arc<Live>,
    secrets: Arc<Secrets>,
    compiler: Arc<compile::Background>,
    runtime: Arc<Runtime>,
    db: WriterHandle,
    watched: Watched,
    // Dropped with the task: then the events stop.
    watcher: RecommendedWatcher,
    /// The folders of `grants.toml`, `causeway.toml` and the secrets file
    /// not watched yet.
    unwatched: BTreeSet<PathBuf>,
    /// Edits of `grants.toml` and `causeway.toml` read while the plugins
    /// folder could not be: taken with the next reload.
    deferred: BTreeSet<Changed>,
    /// The ways the plugins' configurations break their config schemas,
    /// as last said ([`State::say_config_problems`]).
    config_problems: BTreeSet<String>,
    settle: Duration,
}

impl State {
    /// Watches the folders of `grants.toml`, `causeway.toml` and the secrets
    /// file not watched yet. A grants file's folder may not exist at start:
    /// its file is then read at the next SIGHUP (or restart), which watches
    /// it from then on.
    fn watch_the_rest(&mut self) {
        for dir in std::mem::take(&mut self.unwatched) {
            // A folder made since the start has a canonical name only now:
            // the events will carry it.
            let canonical = std::fs::canonicalize(&dir).unwrap_or_else(|_| dir.clone());
            if let Err(e) = self.watcher.watch(&canonical, RecursiveMode::NonRecursive) {
                tracing::warn!("cannot watch {}: {e}", dir.display());
                self.unwatched.insert(dir);
                continue;
            }
            let watched = &mut self.watched;
            for known in std::iter::once(&mut watched.grants.0)
                .chain(std::iter::once(&mut watched.plugins_entry.0))
                .chain(watched.config.as_mut().map(|(dir, _)| dir))
                .chain(watched.secrets.as_mut().map(|(dir, _)| dir))
            {
                if *known == dir {
                    known.clone_from(&canonical);
                }
            }
        }
    }

    /// Logs each way the plugins' configurations break their config
    /// schemas (as `causeway check` reports them, at their line) that it
    /// has not said since the configuration or the plugin last changed: a
    /// plugin handed a configuration its schema refuses fails its calls in
    /// its own words, without the file and line.
    fn say_config_problems(&mut self) {
        let snapshot = self.live.snapshot();
        let config = &snapshot.config;
        let Some(file) = &config.file else {
            return;
        };
        // As it was read: a file that is not one (a FIFO) is not waited on.
        let text = crate::config::read_file(file).unwrap_or_default();
        let infos = snapshot
            .registry
            .plugins()
            .map(|installed| &*installed.plugin.info);
        let now: BTreeSet<String> = crate::schema::plugin_config_problems(config, &text, infos)
            .into_iter()
            .map(|(line, message)| match line {
                Some(line) => format!("{} line {line}: {message}", file.display()),
                None => format!("{}: {message}", file.display()),
            })
            .collect();
        for problem in now.difference(&self.config_problems) {
            tracing::warn!("{problem}");
        }
        self.config_problems = now;
    }

    /// Watches the plugins folder anew: the one at its path now, if any
    /// (the watch put on the one before went with it, or with it removed).
    /// Without one, the plugins loaded keep serving, and the rescan says
    /// so; one made again is seen in the folder it is in.
    fn watch_plugins_again(&mut self) {
        let _ = self.watcher.unwatch(&self.watched.plugins_canonical);
        let Ok(canonical) = std::fs::canonicalize(&self.watched.plugins_dir) else {
            return;
        };
        match self.watcher.watch(&canonical, RecursiveMode::NonRecursive) {
            Ok(()) => {
                tracing::info!(
                    "the plugins folder {} was replaced or made again: watching the one there now",
                    self.watched.plugins_dir.display()
                );
                self.watched.plugins_canonical = canonical;
                self.watched.saw_all();
            }
            Err(e) => tracing::warn!(
                "cannot watch the plugins folder {}: {e}; send SIGHUP to read it again",
                self.watched.plugins_dir.display()
            ),
        }
    }

    async fn run(
        mut self,
        mut events: mpsc::UnboundedReceiver<notify::Result<notify::Event>>,
        mut compiled: mpsc::UnboundedReceiver<PathBuf>,
        mut hangup: Hangup,
    ) {
        let mut pending: BTreeMap<Changed, Instant> = BTreeMap::new();
        loop {
            let next = pending.values().min().copied();
            tokio::select! {
                event = events.recv() => {
                    let Some(event) = event else { return };
                    // With the events already queued behind it: a rename
                    // comes as two (its new name, then both names), and
                    // each alone would read everything again.
                    let queued = std::iter::from_fn(|| events.try_recv().ok());
                    for event in std::iter::once(event).chain(queued) {
                        match event {
                            Err(e) => tracing::warn!("watching the plugins folder: {e}"),
                            Ok(event) => self.note(&event, &mut pending),
                        }
                    }
                }
                // Everything again, now: the two files, and the folder
                // (every rescan reads the whole folder).
                () = hung_up(&mut hangup) => {
                    tracing::info!(
                        "SIGHUP: reading causeway.toml, grants.toml, the secrets file and the plugins folder again"
                    );
                    self.watch_the_rest();
                    let now = Instant::now();
                    pending.insert(Changed::Config, now);
                    pending.insert(Changed::Grants, now);
                    pending.insert(Changed::Secrets, now);
                }
                // A compile finished: its file is ready to be taken now,
                // unless it is being written again (then it waits for that).
                Some(file) = compiled.recv() => {
                    if let Some(name) = file.file_name() {
                        pending
                            .entry(Changed::Plugin(name.to_os_string()))
                            .or_insert_with(Instant::now);
                    }
                }
                () = sleep_until(next) => {}
            }
            let now = Instant::now();
            let ready: BTreeSet<Changed> = pending
                .iter()
                .filter(|(_, at)| **at <= now)
                .map(|(c, _)| c.clone())
                .collect();
            if ready.is_empty() {
                continue;
            }
            pending.retain(|c, _| !ready.contains(c));
            if ready.contains(&Changed::Folder) {
                self.watch_plugins_again();
            }
            let unsettled: BTreeSet<PathBuf> = pending
                .keys()
                .filter_map(|c| match c {
                    Changed::Plugin(name) => Some(self.watched.plugins_dir.join(name)),
                    _ => None,
                })
                .collect();
            self.apply(&ready, unsettled).await;
            self.say_config_problems();
        }
    }

    /// Records when a change should be acted on: at once for a rename or a
    /// removal, after the settle window for a write in place.
    fn note(&mut self, event: &notify::Event, pending: &mut BTreeMap<Changed, Instant>) {
        use notify::event::ModifyKind;
        let delay = match event.kind {
            EventKind::Modify(ModifyKind::Name(_)) | EventKind::Remove(_) => Duration::ZERO,
            EventKind::Create(_) | EventKind::Modify(_) | EventKind::Any => self.settle,
            // Opening or closing a file changes nothing.
            EventKind::Access(_) | EventKind::Other => return,
        };
        for path in &event.paths {
            // Another entry of a watched file's folder (its `..data` link
            // switched, say): the file counts as changed if it is not what
            // it was.
            let changed = match self.watched.classify(path) {
                Some(changed) => {
                    self.watched.saw(&changed, path);
                    vec![changed]
                }
                None => path
                    .parent()
                    .map(|dir| self.watched.switched_in(dir))
                    .unwrap_or_default(),
            };
            for changed in changed {
                let at = Instant::now() + delay;
                // A write after a rename restarts the window; nothing
                // shortens one already running except a rename.
                let entry = pending.entry(changed).or_insert(at);
                *entry = if delay.is_zero() {
                    at
                } else {
                    (*entry).max(at)
                };
            }
        }
    }

    /// Takes the secrets file's values again; a change is audited, by key
    /// name.
    fn reload_secrets(&self) {
        let Some(file) = self.secrets.file() else {
            return;
        };
        match self.secrets.reload() {
            Ok(changes) if changes.is_empty() => {}
            Ok(changes) => {
                tracing::info!("secrets file reloaded: {changes}");
                self.db.audit(crate::audit::AuditEvent::host(
                    "secrets",
                    "reload",
                    &file.display().to_string(),
                    crate::audit::Decision::Allowed,
                    changes.to_string(),
                ));
            }
            Err(e) => tracing::error!("{e}: keeping the last good secrets"),
        }
    }

    /// Builds the next snapshot from what changed, and swaps it in.
    async fn apply(&mut self, ready: &BTreeSet<Changed>, unsettled: BTreeSet<PathBuf>) {
        let deferred = std::mem::take(&mut self.deferred);
        let ready = &ready.union(&deferred).cloned().collect::<BTreeSet<_>>();
        // First: new grants may name a credential the same edit added.
        if ready.contains(&Changed::Secrets) {
            self.reload_secrets();
        }
        let current = self.live.snapshot();
        // Those kept as they were: not "reloaded".
        let mut refused = BTreeSet::new();
        let mut config = current.config.clone();
        if ready.contains(&Changed::Config)
            && let Some(file) = &current.config.file
        {
            match Config::load(Some(file)) {
                Ok(new) => {
                    let (kept, not_yet) = keep_fixed(&current.config, new);
                    for key in not_yet {
                        tracing::warn!("{key} changed: it takes effect when the host restarts");
                    }
                    config = kept;
                }
                Err(e) => {
                    tracing::error!("{e}: keeping the last good configuration");
                    refused.insert(Changed::Config);
                }
            }
        }
        let mut grants = current.grants.clone();
        if ready.contains(&Changed::Grants) || config.grants_file != current.config.grants_file {
            match Grants::load(&config.grants_file) {
                Ok(new) => {
                    // Deny by default: no file grants nothing. Said, since a
                    // deployment that deletes before it writes revokes
                    // everything meanwhile.
                    if !config.grants_file.exists() && current.grants.names().next().is_some() {
                        tracing::warn!(
                            "{} is gone: nothing is granted now, and every plugin's calls that need a grant are denied; write it again to grant them",
                            config.grants_file.display()
                        );
                    }
                    self.db.audited(crate::grants::changes::record(&new));
                    for (_, message) in new.uncounted_fuel(current.config.engine.fuel) {
                        tracing::error!("{}: {message}", config.grants_file.display());
                    }
                    grants = new;
                }
                Err(e) => {
                    tracing::error!("{e}: keeping the last good grants");
                    refused.insert(Changed::Grants);
                }
            }
        }
        let runtime = self.runtime.clone();
        let compiler = self.compiler.clone();
        let limits = config.limits;
        let (grants, registry) = {
            let current = current.clone();
            match tokio::task::spawn_blocking(move || {
                let registry = current.registry.rescan(
                    &runtime,
                    &grants,
                    limits,
                    &unsettled,
                    Compile::Background(&compiler),
                );
                (grants, registry)
            })
            .await
            {
                Ok((grants, Ok(registry))) => (grants, registry),
                Ok((_, Err(e))) => {
                    tracing::error!(
                        "cannot read the plugins folder {}: {e}: keeping the plugins loaded (a folder made again there is watched)",
                        config.plugins_dir.display()
                    );
                    // The registry is made against them: they wait for it.
                    self.deferred = ready
                        .iter()
                        .filter(|c| matches!(c, Changed::Config | Changed::Grants))
                        .cloned()
                        .collect();
                    if !self.deferred.is_empty() {
                        tracing::warn!(
                            "{} read: it applies once the plugins folder can be read",
                            self.watched.describe(&self.deferred)
                        );
                    }
                    return;
                }
                Err(e) => {
                    tracing::error!("reloading failed: {e}: keeping the plugins loaded");
                    return;
                }
            }
        };
        let rows = registry.statuses().iter().map(|s| s.to_row()).collect();
        self.live.swap(Snapshot {
            config,
            grants,
            registry,
        });
        self.db.plugin_states(rows);
        let taken: BTreeSet<Changed> = ready.difference(&refused).cloned().collect();
        if !taken.is_empty() {
            tracing::info!("reloaded: {}", self.watched.describe(&taken));
        }
    }
}

/// `new`, with what cannot change while the host runs kept from `current`;
/// and the keys of those the file changed, to be told they wait for a
/// restart (not those the command line set: the file's value is hidden).
fn keep_fixed(current: &Config, mut new: Config) -> (Config, Vec<&'static str>) {
    let mut not_yet = Vec::new();
    if new.listen != current.listen && !current.command_line.listen {
        not_yet.push("listen");
    }
    if new.data_dir != current.data_dir {
        not_yet.push("data-dir");
    }
    if new.plugins_dir != current.plugins_dir && !current.command_line.plugins_dir {
        not_yet.push("plugins-dir");
    }
    // The engine, its pool and its artifact cache are built once, at start.
    if new.engine != current.engine {
        not_yet.push("[engine]");
    }
    if new.cache_dir != current.cache_dir || new.cache_max_bytes != current.cache_max_bytes {
        not_yet.push("cache-dir or cache-max-mb");
    }
    // Its values are reloaded in place; its place is where they are read.
    if new.secrets_file != current.secrets_file {
        not_yet.push("secrets-file");
    }
    // Read once, into every plugin's HTTP client.
    if new.ca_file != current.ca_file {
        not_yet.push("ca-file");
    }
    if new.proxy != current.proxy {
        not_yet.push("[proxy]");
    }
    // The listener is bound at start; its files' contents are read again
    // as they change (server::tls), not the paths to them.
    if new.tls != current.tls {
        not_yet.push("[tls]");
    }
    new.listen = current.listen;
    new.data_dir = current.data_dir.clone();
    new.plugins_dir = current.plugins_dir.clone();
    new.reload_settle = current.reload_settle;
    new.engine = current.engine;
    new.cache_dir = current.cache_dir.clone();
    new.cache_max_bytes = current.cache_max_bytes;
    new.secrets_file = current.secrets_file.clone();
    new.ca_file = current.ca_file.clone();
    new.proxy = current.proxy.clone();
    new.tls = current.tls.clone();
    new.command_line = current.command_line;
    (new, not_yet)
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_is_built_at_start_is_kept_and_the_rest_of_an_edit_taken() {
        let current = Config::load(None).unwrap();
        let mut edited = current.clone();
        edited.listen = "127.0.0.1:1".parse().unwrap();
        edited.data_dir = "elsewhere".into();
        edited.plugins_dir = "other-plugins".into();
        edited.reload_settle = Duration::from_secs(9);
        edited.engine.max_plugin_mb = 1;
        edited.engine.max_instances = 5;
        edited.cache_dir = "other-cache".into();
        edited.cache_max_bytes = 1;
        edited.ca_file = Some("corp-ca.pem".into());
        edited.proxy = Some(
            toml::from_str::<crate::caps::http::ProxyConfig>("url = \"http://proxy:3128\"")
                .unwrap(),
        );
        edited.tls = Some(crate::config::TlsListen {
            listen: "0.0.0.0:8443".parse().unwrap(),
            cert: "fullchain.pem".into(),
            key: "privkey.pem".into(),
        });
        edited.limits.call_timeout = Duration::from_secs(1);
        let (kept, not_yet) = keep_fixed(&current, edited);
        let mut expected = current.clone();
        expected.limits.call_timeout = Duration::from_secs(1);
        assert_eq!(kept, expected);
        assert_eq!(
            not_yet,
            [
                "listen",
                "data-dir",
                "plugins-dir",
                "[engine]",
                "cache-dir or cache-max-mb",
                "ca-file",
                "[proxy]",
                "[tls]"
            ]
        );
    }

    #[test]
    fn what_the_command_line_overrode_is_not_taken_for_an_edit() {
        let file_said = Config::load(None).unwrap();
        // `causeway run --listen ... --plugins ...`
        let mut current = file_said.clone();
        current.listen_on("127.0.0.1:0".parse().unwrap());
        current.plugins_in("elsewhere".into());
        let mut edited = file_said.clone();
        edited.limits.call_timeout = Duration::from_secs(1);
        let (kept, not_yet) = keep_fixed(&current, edited.clone());
        assert!(not_yet.is_empty(), "{not_yet:?}");
        assert_eq!(
            (kept.listen, kept.plugins_dir.clone(), kept.command_line),
            (
                current.listen,
                current.plugins_dir.clone(),
                current.command_line
            )
        );
        assert_eq!(kept.limits.call_timeout, Duration::from_secs(1));
        // The file's own listen edited: hidden by the command line's, no
        // news; its data-dir edited: told.
        edited.listen = "127.0.0.1:1".parse().unwrap();
        edited.data_dir = "elsewhere-data".into();
        let (kept, not_yet) = keep_fixed(&current, edited);
        assert_eq!(not_yet, ["data-dir"]);
        assert_eq!(kept.listen, current.listen);
    }
}
