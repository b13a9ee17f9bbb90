//! The host as an operator configured it: `causeway.toml`, `grants.toml`, the
//! secrets, and the WebAssembly runtime. Every command that loads plugins
//! starts here, so they all see the same files the same way.

use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use crate::config::{Config, FileError};
use crate::db::{self, DbError};
use crate::engine::Runtime;
use crate::grants::Grants;
use crate::registry::Registry;
use crate::secrets::Secrets;

/// Why the host cannot start.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    /// A file is invalid.
    #[error(transparent)]
    File(#[from] FileError),
    /// The database is unusable.
    #[error(transparent)]
    Db(#[from] DbError),
    /// The engine could not be built.
    #[error("cannot start the WebAssembly engine: {0}")]
    Engine(String),
    /// The audit chain's key or head cannot be opened.
    #[error("cannot open the audit trail: {0}")]
    AuditChain(String),
    /// Another process is running a host (or a pipeline) on the data folder.
    #[error(
        "the data folder {dir} is in use by another causeway process{by}: stop it first, or give this one a folder of its own (`data-dir` in causeway.toml; `--data-dir` for the demo)"
    )]
    DataDirInUse {
        /// The data folder.
        dir: String,
        /// ` (pid N)`, when the holder wrote it down.
        by: String,
    },
    /// The data folder's lock file cannot be made.
    #[error("cannot claim the data folder {dir}: {error}")]
    DataDir {
        /// The data folder.
        dir: String,
        /// The error.
        error: std::io::Error,
    },
    /// The plugins folder cannot be read.
    #[error("cannot read the plugins folder {path}: {error}")]
    PluginsDir {
        /// The folder.
        path: String,
        /// The error.
        error: std::io::Error,
    },
}

/// What is wrong with the data folder `dir`'s permissions, if anything: it
/// holds the database (stored records, plugins' storage, the audit log) and
/// the operator token, which other accounts must not read. The host makes
/// it owner-only; one made by hand may not be.
pub fn data_dir_exposure(dir: &Path) -> Option<String> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir).ok()?.permissions().mode() & 0o777;
        (mode & 0o077 != 0).then(|| {
            format!(
                "the data folder {} is open to other accounts (mode {mode:o}): it holds the database and the operator token; run chmod 700 {}",
                dir.display(),
                dir.display()
            )
        })
    }
    #[cfg(not(unix))]
    {
        let _ = dir;
        None
    }
}

/// The lock file in the data folder held by the process running a host.
pub const CLAIM_FILE: &str = "host.lock";

/// This process's claim on the data folder ([`Claim::take`]),
/// released when dropped or when the process ends, however it ends.
#[derive(Debug)]
pub struct Claim {
    _file: Option<std::fs::File>,
}

impl Claim {
    /// Claims the data folder `dir` for this process, for as long as the claim
    /// lives: two hosts on one folder would both run every pipeline and
    /// both answer for the same plugins. The lock is the kernel's, so a
    /// killed host leaves none behind. Where the file system cannot lock,
    /// the host goes on unclaimed, with a warning.
    pub fn take(dir: &Path) -> Result<Claim, HostError> {
        let failed = |error| HostError::DataDir {
            dir: dir.display().to_string(),
            error,
        };
        crate::files::create_private_dir(dir).map_err(failed)?;
        let path = dir.join(CLAIM_FILE);
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&path)
            .map_err(failed)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                let holder = std::fs::read_to_string(&path).unwrap_or_default();
                let by = match holder.trim().parse::<u32>() {
                    Ok(pid) => format!(" (pid {pid})"),
                    Err(_) => String::new(),
                };
                return Err(HostError::DataDirInUse {
                    dir: dir.display().to_string(),
                    by,
                });
            }
            Err(std::fs::TryLockError::Error(e)) => {
                tracing::warn!(
                    "cannot lock {}: going on without making sure no other host uses {}: {e}",
                    path.display(),
                    dir.display()
                );
                return Ok(Claim { _file: None });
            }
        }
        // The holder's pid, for the message a second process gets.
        let _ = file
            .set_len(0)
            .and_then(|()| writeln!(file, "{}", std::process::id()));
        Ok(Claim { _file: Some(file) })
    }
}

/// The configured host.
pub struct Host {
    /// `causeway.toml`, defaults applied.
    pub config: Config,
    /// `grants.toml`.
    pub grants: Grants,
    /// The secrets the host can resolve.
    pub secrets: Arc<Secrets>,
    /// The engine and linker, shared with the reloader.
    pub runtime: Arc<Runtime>,
}

impl Host {
    /// Loads the configuration (`config_file`, or `./causeway.toml`, or the
    /// defaults), with `plugins_dir` overriding its plugins folder.
    pub fn load(config_file: Option<&Path>, plugins_dir: Option<&Path>) -> Result<Host, HostError> {
        let mut config = Config::load(config_file)?;
        if let Some(dir) = plugins_dir {
            config.plugins_in(dir.to_path_buf());
        }
        Host::with_config(config)
    }

    /// The host for an already loaded configuration.
    pub fn with_config(config: Config) -> Result<Host, HostError> {
        let grants = Grants::load(&config.grants_file)?;
        let secrets = Arc::new(Secrets::load(config.secrets_file.as_deref())?);
        let mut runtime = Runtime::with_settings(&config.engine)
            .map_err(|e| HostError::Engine(format!("{e:#}")))?;
        let config_file = || {
            config
                .file
                .as_deref()
                .map_or_else(|| "causeway.toml".into(), |f| f.display().to_string())
        };
        if let Some(file) = &config.ca_file {
            runtime.egress.roots = crate::caps::http::ExtraRoots::load(file).map_err(|e| {
                FileError::at(
                    file.display().to_string(),
                    None,
                    format!("{e} (ca-file in {})", config_file()),
                )
            })?;
            tracing::info!(
                "outbound HTTPS trusts the {} certificates of {} beside the bundled roots",
                runtime.egress.roots.len(),
                file.display()
            );
        }
        if let Some(proxy) = &config.proxy {
            let route = crate::caps::http::ProxyRoute::resolve(proxy, secrets.clone())
                .map_err(|e| FileError::at(config_file(), None, e))?;
            tracing::info!(
                "outbound requests go through the proxy {}",
                route.describe()
            );
            runtime.egress.proxy = Some(Arc::new(route));
        }
        let runtime = Arc::new(runtime);
        Ok(Host {
            config,
            grants,
            secrets,
            runtime,
        })
    }

    /// Keeps compiled plugins in the cache folder (`cache-dir`, default `DATA_DIR/cache`; see
    /// [`ArtifactCache`](crate::engine::cache::ArtifactCache)), for the
    /// commands that load plugins again and again. A cache that cannot be
    /// opened is logged, and plugins are compiled every time.
    pub fn with_artifact_cache(mut self) -> Host {
        let dir = self.config.cache_dir.clone();
        if let Some(runtime) = Arc::get_mut(&mut self.runtime) {
            match crate::engine::cache::ArtifactCache::open(&runtime.engine, &dir) {
                Ok(cache) => {
                    runtime.cache = Some(cache.with_max_bytes(self.config.cache_max_bytes));
                }
                Err(e) => tracing::warn!("no precompiled cache: {e}"),
            }
        }
        self
    }

    /// Loads every plugin in the plugins folder against the grants.
    pub fn registry(&self) -> Result<Registry, HostError> {
        Registry::load_dir(
            &self.runtime,
            &self.config.plugins_dir,
            &self.grants,
            self.config.limits,
        )
        .map_err(|error| self.unreadable(error))
    }

    /// The plugins folder could not be read.
    fn unreadable(&self, error: std::io::Error) -> HostError {
        HostError::PluginsDir {
            path: self.config.plugins_dir.display().to_string(),
            error,
        }
    }

    /// [`Host::registry`] on a thread of its own, for a caller that must
    /// stay responsive meanwhile: a compile cannot be interrupted, but a
    /// caller that stops waiting leaves it behind, to end with the compile
    /// or with the process (a stop at start need not wait for it).
    pub async fn registry_apart(&self) -> Result<Registry, HostError> {
        let runtime = self.runtime.clone();
        let dir = self.config.plugins_dir.clone();
        let grants = self.grants.clone();
        let limits = self.config.limits;
        let (done, loaded) = tokio::sync::oneshot::channel();
        std::thread::Builder::new()
            .name("causeway-load".into())
            .spawn(move || {
                let _ = done.send(Registry::load_dir(&runtime, &dir, &grants, limits));
            })
            .map_err(|e| self.unreadable(e))?;
        loaded
            .await
            .unwrap_or_else(|_| Err(std::io::Error::other("loading it failed (a panic)")))
            .map_err(|e| self.unreadable(e))
    }

    /// Starts the database's single writer.
    pub fn open_database(&self) -> Result<db::Writer, HostError> {
        let chain = self.config.audit.chain().map_err(HostError::AuditChain)?;
        Ok(db::Writer::start(&self.config.database_file(), chain)?)
    }
}
