//! Plugin files compiled off the reloader's path. Compiling a large
//! component takes seconds (CPython's, 18 MB, about 6 s on two cores): a
//! rescan that waited for it would hold every other change behind it, a
//! grants edit revoking a capability included. Instead a changed file is
//! compiled on a thread of its own while the rescan treats it as still
//! being written (the version it replaces keeps serving), and the reloader
//! is told when it is done, to rescan again and take it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};

use tokio::sync::mpsc;

use crate::engine::Runtime;
use crate::plugin::{LoadError, Plugin, Problem};

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
    permits: Arc<Permits>,
    done: mpsc::UnboundedSender<PathBuf>,
}

/// The most compiles that run at once, however many cores: each may take
/// up to some 770 MB within the default compile limits (docs/security.md),
/// and one compile already spreads its functions over every core.
const MAX_COMPILES: usize = 4;

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // What these mutexes guard is whole at every store: a panic elsewhere
    // leaves it usable.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// How many compiles run at once: one per core, at least two, so that one
/// slow compile never holds all the others, and at most [`MAX_COMPILES`].
/// A folder filled at once compiles a few files at a time, not all of them
/// in memory together.
struct Permits {
    free: Mutex<usize>,
    freed: Condvar,
}

impl Permits {
    fn new() -> Permits {
        let cores = std::thread::available_parallelism().map_or(2, usize::from);
        Permits::with(cores.clamp(2, MAX_COMPILES))
    }

    fn with(permits: usize) -> Permits {
        Permits {
            free: Mutex::new(permits),
            freed: Condvar::new(),
        }
    }

    /// Waits for a free permit; it is given back when the guard drops.
    fn acquire(&self) -> Permit<'_> {
        let mut free = lock(&self.free);
        while *free == 0 {
            free = self
                .freed
                .wait(free)
                .unwrap_or_else(PoisonError::into_inner);
        }
        *free -= 1;
        Permit(self)
    }
}

struct Permit<'a>(&'a Permits);

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        *lock(&self.0.free) += 1;
        self.0.freed.notify_one();
    }
}

/// Runs `compile`, a panic in it (a compiler bug a file may find) turned
/// into that file's failure: otherwise its job would run for ever, the file
/// neither loaded nor shown as failed.
fn guarded(path: &Path, compile: impl FnOnce() -> Result<Plugin, LoadError>) -> Compiled {
    let compiled =
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(compile)).unwrap_or_else(|panic| {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            Err(LoadError {
                file: path.to_path_buf(),
                problem: Problem::Compile(format!("the compiler panicked: {what}")),
            })
        });
    compiled.map(Arc::new).map_err(Arc::new)
}

impl Background {
    /// Compiles with `runtime` (through its cache), reporting on `done`.
    pub fn new(runtime: Arc<Runtime>, done: mpsc::UnboundedSender<PathBuf>) -> Background {
        Background {
            runtime,
            jobs: Arc::default(),
            permits: Arc::new(Permits::new()),
            done,
        }
    }

    /// The outcome of compiling `bytes`, the contents of `file` with
    /// `digest`, if it is ready. If not, `None`, and a compile of them is
    /// running: started now unless it already was. A file whose contents or
    /// sidecar manifest changed since its last job gets a new one; the old
    /// one's outcome, when it comes, is dropped.
    pub fn get(&self, file: &Path, digest: &str, bytes: &[u8]) -> Option<Compiled> {
        // A sidecar manifest is part of what is compiled.
        // One that cannot be read fails the compile, with the reason.
        let sidecar = crate::manifest::read_sidecar(&file.with_extension("toml"))
            .ok()
            .flatten()
            .map(|text| crate::plugin::digest(&text))
            .unwrap_or_default();
        let version = format!("{digest} {sidecar}");
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
                    version: version.clone(),
                    outcome: None,
                },
            );
        }
        let (runtime, jobs, done) = (self.runtime.clone(), self.jobs.clone(), self.done.clone());
        let permits = self.permits.clone();
        let (path, bytes) = (file.to_path_buf(), bytes.to_vec());
        let started = std::thread::Builder::new()
            .name("causeway-compile".into())
            .spawn(move || {
                let _permit = permits.acquire();
                // Replaced or removed while it waited: nothing to compile.
                let current = lock(&jobs)
                    .get(&path)
                    .is_some_and(|job| job.version == version);
                if !current {
                    return;
                }
                let outcome = guarded(&path, || runtime.compile_plugin(&path, &bytes));
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
            // From the precompiled cache when it was compiled before.
            Ok(_) => tracing::info!("loading {} in the background", file.display()),
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_compile_beyond_the_permits_waits_for_one_to_be_given_back() {
        let permits = Arc::new(Permits::with(2));
        let first = permits.acquire();
        let _second = permits.acquire();
        let (acquired, waiting) = std::sync::mpsc::channel();
        let third = {
            let permits = permits.clone();
            std::thread::spawn(move || {
                let _permit = permits.acquire();
                let _ = acquired.send(());
            })
        };
        assert!(
            waiting.recv_timeout(Duration::from_millis(100)).is_err(),
            "a third permit was handed out while two were held"
        );
        drop(first);
        waiting
            .recv_timeout(Duration::from_secs(10))
            .expect("the freed permit goes to the waiting compile");
        third.join().unwrap();
        assert_eq!(*lock(&permits.free), 1);
    }

    #[test]
    fn a_compiler_panic_is_the_files_failure() {
        let path = Path::new("plugins/x.wasm");
        let failed = guarded(path, || panic!("an unforeseen {}", "case")).unwrap_err();
        assert_eq!(
            failed.to_string(),
            "plugins/x.wasm: does not compile: the compiler panicked: an unforeseen case"
        );
    }
}
