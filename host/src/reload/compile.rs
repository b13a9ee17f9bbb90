//! Plugin files compiled off the reloader's path. Compiling a large
//! component takes seconds (CPython's, 18 MB, about 6 s on two cores): a
//! rescan that waited for it would hold every other change behind it, a
//! grants edit revoking a capability included. Instead a changed file is
//! compiled on a thread of its own while the rescan treats it as still
//! being written (the version it replaces keeps serving), and the reloader
//! is told when it is done, to rescan again and take it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio::sync::mpsc;

use crate::engine::Runtime;
use crate::plugin::{LoadError, Plugin};

/// A compile's outcome, kept for every rescan that asks for it.
pub type Compiled = Result<Arc<Plugin>, Arc<LoadError>>;

/// The compile of one file's contents: `None` while it runs.
struct Job {
    version: String,
    outcome: Option<Compiled>,
}

type Jobs = Arc<Mutex<BTreeMap<PathBuf, Job>>>;

/// Compiles plugin files in the background, one job per file, and sends a
/// file's path on `done` when its compile has finished.
pub struct Background {
    runtime: Arc<Runtime>,
    jobs: Jobs,
    done: mpsc::UnboundedSender<PathBuf>,
}

fn lock(jobs: &Jobs) -> MutexGuard<'_, BTreeMap<PathBuf, Job>> {
    // A job's state is whole at every store: a panic elsewhere leaves it usable.
    jobs.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Background {
    /// Compiles with `runtime` (through its cache), reporting on `done`.
    pub fn new(runtime: Arc<Runtime>, done: mpsc::UnboundedSender<PathBuf>) -> Background {
        Background {
            runtime,
            jobs: Arc::default(),
            done,
        }
    }

    /// The outcome of compiling `bytes`, the contents of `file` (`version`
    /// names them, and its sidecar manifest's), if it is ready. If not,
    /// `None`, and a compile of them is running: started now unless it
    /// already was. A file whose version changed since its last job gets a
    /// new one; the old one's outcome, when it comes, is dropped.
    pub fn get(&self, file: &Path, version: &str, bytes: Vec<u8>) -> Option<Compiled> {
        {
            let mut jobs = lock(&self.jobs);
            if let Some(job) = jobs.get(file)
                && job.version == version
            {
                return job.outcome.clone();
            }
            jobs.insert(
                file.to_path_buf(),
                Job {
                    version: version.to_string(),
                    outcome: None,
                },
            );
        }
        let (runtime, jobs, done) = (self.runtime.clone(), self.jobs.clone(), self.done.clone());
        let (path, version) = (file.to_path_buf(), version.to_string());
        let started = std::thread::Builder::new()
            .name("causeway-compile".into())
            .spawn(move || {
                let outcome = runtime
                    .compile_plugin(&path, &bytes)
                    .map(Arc::new)
                    .map_err(Arc::new);
                let mut jobs = lock(&jobs);
                if let Some(job) = jobs.get_mut(&path)
                    && job.version == version
                {
                    job.outcome = Some(outcome);
                    drop(jobs);
                    // The reloader gone, nobody is waiting: nothing to do.
                    let _ = done.send(path);
                }
            });
        match started {
            Ok(_) => tracing::info!("compiling {} in the background", file.display()),
            Err(e) => {
                lock(&self.jobs).remove(file);
                tracing::error!(
                    "cannot start a thread to compile {}: {e}: it is tried again at the next change in the plugins folder",
                    file.display()
                );
            }
        }
        None
    }

    /// Forgets the jobs (and the compiled plugins they hold) of files no
    /// longer in the folder.
    pub fn retain(&self, files: &[PathBuf]) {
        lock(&self.jobs).retain(|path, _| files.contains(path));
    }
}
