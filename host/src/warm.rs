//! Warm instances: a plugin version's instances kept between the calls of
//! one pipeline stage, so a page or a webhook delivery does not pay for a new
//! instance and a cold guest each time.
//!
//! An instance is reused only by the same plugin version (the pool belongs to
//! its [`Installed`](crate::registry::Installed)), in the same pipeline with
//! the same configuration (its key), and only after a call that ended
//! normally: with an answer or the plugin's own error value. A trap, a
//! timeout, a broken contract or a refused growth drops it, so one failure
//! never poisons the next call; so does a hot reload (a new version has a
//! new pool). After [`MAX_CALLS`] calls an instance is retired, bounding
//! whatever a guest accumulates. Idle instances hold pool slots, so the
//! whole process keeps at most a quarter of the slots idle. Calls from the API (`invoke`) and the
//! conformance suite keep a fresh instance each.

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use wasmtime::{Engine, Store};

use crate::operation::{Answer, Live, Operation};
use crate::plugin::Plugin;
use crate::sandbox::{self, CallContext, CallError, StoreState};

/// Calls one instance serves before it is retired.
pub const MAX_CALLS: u32 = 1000;

/// Idle instances one plugin version keeps.
const MAX_IDLE: usize = 4;

/// Idle instances the whole process may keep: each holds a slot of the
/// instance pool, and idle ones must never take the slots calls need (a
/// pool of one slot would otherwise be held by one stage's idle instance
/// while the next stage waits for it). Set from the engine settings.
static IDLE_BUDGET: AtomicUsize = AtomicUsize::new(16);

/// Idle instances kept now, across every plugin version.
static IDLE: AtomicUsize = AtomicUsize::new(0);

/// Lets idle instances hold at most `slots` of the instance pool.
pub fn set_idle_budget(slots: usize) {
    IDLE_BUDGET.store(slots, Ordering::Relaxed);
}

/// One unit of [`IDLE_BUDGET`], given back when dropped.
struct IdleSlot;

impl IdleSlot {
    fn claim() -> Option<IdleSlot> {
        IDLE.fetch_update(Ordering::AcqRel, Ordering::Acquire, |idle| {
            (idle < IDLE_BUDGET.load(Ordering::Relaxed)).then_some(idle + 1)
        })
        .ok()
        .map(|_| IdleSlot)
    }
}

impl Drop for IdleSlot {
    fn drop(&mut self) {
        IDLE.fetch_sub(1, Ordering::AcqRel);
    }
}

/// An instance between two calls.
struct Warm {
    /// The pipeline and configuration (JSON text) it was made for.
    key: (String, String),
    store: Store<StoreState>,
    live: Live,
    calls: u32,
    _slot: IdleSlot,
}

/// The idle instances of one plugin version.
#[derive(Default)]
pub struct WarmPool {
    idle: Mutex<Vec<Warm>>,
}

impl std::fmt::Debug for WarmPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WarmPool").finish_non_exhaustive()
    }
}

impl WarmPool {
    /// How many instances wait for a call.
    pub fn idle(&self) -> usize {
        self.idle.lock().map(|idle| idle.len()).unwrap_or(0)
    }

    fn take(&self, pipeline: &str, config: &str) -> Option<Warm> {
        let mut idle = self.idle.lock().ok()?;
        let at = idle
            .iter()
            .rposition(|w| w.key.0 == pipeline && w.key.1 == config)?;
        Some(idle.swap_remove(at))
    }

    fn put(&self, key: (String, String), store: Store<StoreState>, live: Live, calls: u32) {
        if let Ok(mut idle) = self.idle.lock()
            && idle.len() < MAX_IDLE
            && let Some(slot) = IdleSlot::claim()
        {
            idle.push(Warm {
                key,
                store,
                live,
                calls,
                _slot: slot,
            });
        }
    }

    /// Calls `operation` of `plugin` (the pool's owner: instances never move
    /// between versions) in a warm instance made for the same context if one
    /// is idle, else in a fresh one; the instance is kept for the next call
    /// if this one ended normally.
    pub(crate) async fn call(
        &self,
        plugin: &Plugin,
        engine: &Engine,
        operation: Operation,
        context: &CallContext,
    ) -> Result<Answer, CallError> {
        let limits = &context.policy.limits;
        let (key, mut store, live, calls) = match self.take(&context.pipeline, &context.config) {
            Some(mut warm) => {
                warm.store
                    .data_mut()
                    .begin_call(limits, context.run.as_ref());
                (warm.key, warm.store, Some(warm.live), warm.calls)
            }
            None => (
                (context.pipeline.clone(), context.config.clone()),
                sandbox::new_store(engine, plugin.info.clone(), context),
                None,
                0,
            ),
        };
        let (answer, reusable) = plugin.call_in(&mut store, live, operation, limits).await;
        if let Some(live) = reusable
            && calls + 1 < MAX_CALLS
            && !store.data().refused_growth()
        {
            self.put(key, store, live, calls + 1);
        }
        answer
    }
}
