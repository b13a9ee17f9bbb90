//! What the running host serves from: the configuration, the grants and the
//! plugins, as one immutable snapshot swapped whole by the reloader.
//!
//! A call takes the current snapshot when it starts and keeps it until it
//! ends, so a call in flight finishes on the version it started with, while
//! new calls get the new one; an old version is dropped once the last call
//! holding it returns.

use std::sync::{Arc, RwLock};

use crate::config::Config;
use crate::grants::Grants;
use crate::registry::Registry;

/// One consistent view: configuration, grants, and the plugins evaluated
/// against those grants.
pub struct Snapshot {
    /// `causeway.toml`.
    pub config: Config,
    /// `grants.toml`.
    pub grants: Grants,
    /// The installed plugins.
    pub registry: Registry,
}

/// The current snapshot, swapped atomically.
pub struct Live {
    current: RwLock<Arc<Snapshot>>,
}

impl Live {
    /// Starts from `snapshot`.
    pub fn new(snapshot: Snapshot) -> Live {
        Live {
            current: RwLock::new(Arc::new(snapshot)),
        }
    }

    /// The snapshot new work should use; hold it for the whole call.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        // A poisoned lock still holds a whole snapshot: swaps replace it in
        // one assignment.
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Makes `snapshot` the one new work uses.
    pub fn swap(&self, snapshot: Snapshot) {
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(snapshot);
    }
}
