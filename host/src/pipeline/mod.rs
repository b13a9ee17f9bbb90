//! Pipelines: records flow from a source through transforms into sinks, on
//! a schedule, without loss.
//!
//! [`config`] is the `[pipelines.NAME]` section; [`runner`] runs one
//! pipeline page by page; [`retry`] is the backoff policy; [`dlq`] the
//! dead-letter queue; [`history`] each pipeline's state and runs. This module
//! drives them: one task per pipeline, which runs on its schedule (or when
//! asked), skips while paused, opens a circuit after a run that spent its
//! retry budget (and probes once the cooldown is over), and stops with a
//! visible reason on an error waiting cannot heal.

pub mod config;
pub mod dlq;
pub mod history;
pub mod retry;
pub mod runner;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

pub use config::PipelineConfig;
pub use runner::{RunEnd, Runner};

use crate::db::{DbError, WriterHandle};
use crate::engine::Runtime;
use crate::live::Live;
use crate::secrets::Secrets;

/// How often the supervisor looks for pipelines added to the configuration.
const SUPERVISE_EVERY: Duration = Duration::from_millis(500);

/// The pipelines a running host drives.
pub struct Pipelines {
    shared: Arc<Shared>,
    supervisor: tokio::task::JoinHandle<()>,
}

struct Shared {
    live: Arc<Live>,
    runtime: Arc<Runtime>,
    secrets: Arc<Secrets>,
    db: WriterHandle,
    stop: AtomicBool,
    stopping: Notify,
    tasks: Mutex<BTreeMap<String, Task>>,
}

/// A pipeline's task, and how to wake it for a run now.
type Task = (Arc<Notify>, tokio::task::JoinHandle<()>);

impl Pipelines {
    /// Starts driving every pipeline of the current configuration, and any
    /// added later.
    pub fn start(
        live: Arc<Live>,
        runtime: Arc<Runtime>,
        secrets: Arc<Secrets>,
        db: WriterHandle,
    ) -> Pipelines {
        let shared = Arc::new(Shared {
            live,
            runtime,
            secrets,
            db,
            stop: AtomicBool::new(false),
            stopping: Notify::new(),
            tasks: Mutex::new(BTreeMap::new()),
        });
        let supervisor = tokio::spawn(supervise(shared.clone()));
        Pipelines { shared, supervisor }
    }

    /// A handle to ask pipelines to run now.
    pub fn control(&self) -> Control {
        Control(self.shared.clone())
    }

    /// Stops every pipeline between pages and waits for them, at most
    /// `bound`.
    pub async fn stop(self, bound: Duration) {
        self.shared.stop.store(true, Ordering::SeqCst);
        self.shared.stopping.notify_waiters();
        self.supervisor.abort();
        let tasks: Vec<_> =
            std::mem::take(&mut *self.shared.tasks.lock().unwrap_or_else(|p| p.into_inner()))
                .into_values()
                .map(|(wake, task)| {
                    wake.notify_one();
                    task
                })
                .collect();
        let all = async {
            for task in tasks {
                let _ = task.await;
            }
        };
        if tokio::time::timeout(bound, all).await.is_err() {
            tracing::warn!("pipelines still running after {bound:?}: stopping without them");
        }
    }
}

/// Asks a running host's pipelines to run now.
#[derive(Clone)]
pub struct Control(Arc<Shared>);

impl Control {
    /// Asks `pipeline` to run now (even if paused or stopped); false if the
    /// host drives no such pipeline.
    pub fn run_now(&self, pipeline: &str) -> bool {
        let tasks = self.0.tasks.lock().unwrap_or_else(|p| p.into_inner());
        match tasks.get(pipeline) {
            Some((wake, _)) => {
                wake.notify_one();
                true
            }
            None => false,
        }
    }
}

async fn supervise(shared: Arc<Shared>) {
    if let Err(e) = shared
        .db
        .transact(|conn| Ok::<_, DbError>(history::interrupt_unfinished(conn)?))
        .await
    {
        tracing::error!("cannot mark interrupted runs: {e}");
    }
    loop {
        if shared.stop.load(Ordering::SeqCst) {
            return;
        }
        let names: Vec<String> = shared
            .live
            .snapshot()
            .config
            .pipelines
            .keys()
            .cloned()
            .collect();
        {
            let mut tasks = shared.tasks.lock().unwrap_or_else(|p| p.into_inner());
            tasks.retain(|_, (_, task)| !task.is_finished());
            for name in names {
                if tasks.contains_key(&name) {
                    continue;
                }
                let wake = Arc::new(Notify::new());
                let task = tokio::spawn(drive(shared.clone(), name.clone(), wake.clone()));
                tasks.insert(name, (wake, task));
            }
        }
        tokio::time::sleep(SUPERVISE_EVERY).await;
    }
}

/// Records a pipeline's state; a failure is logged, not fatal.
async fn record_state(
    db: &WriterHandle,
    pipeline: &str,
    state: &'static str,
    reason: Option<String>,
    circuit_until: Option<String>,
) {
    let name = pipeline.to_string();
    let result = db
        .transact(move |conn| {
            Ok::<_, DbError>(history::set_state(
                conn,
                &name,
                state,
                reason.as_deref(),
                circuit_until.as_deref(),
            )?)
        })
        .await;
    if let Err(e) = result {
        tracing::error!(pipeline, "cannot record the pipeline's state: {e}");
    }
}

/// Drives one pipeline until the host stops or the pipeline is removed.
async fn drive(shared: Arc<Shared>, name: String, wake: Arc<Notify>) {
    let runner = Runner {
        name: name.clone(),
        live: shared.live.clone(),
        runtime: shared.runtime.clone(),
        secrets: shared.secrets.clone(),
        db: shared.db.clone(),
    };
    let mut next = Instant::now();
    let mut circuit_until: Option<Instant> = None;
    // The snapshot a stop happened on: a new one (an edit, an upgrade) is
    // worth another try.
    let mut stopped_on: Option<Arc<crate::live::Snapshot>> = None;
    loop {
        let asked = tokio::select! {
            () = tokio::time::sleep_until(next) => false,
            () = wake.notified() => true,
            () = shared.stopping.notified() => return,
        };
        if shared.stop.load(Ordering::SeqCst) {
            return;
        }
        let snapshot = shared.live.snapshot();
        let Some(config) = snapshot.config.pipelines.get(&name) else {
            record_state(&shared.db, &name, "removed", None, None).await;
            return;
        };
        let every = config.every.map(|d| d.0).unwrap_or(Duration::from_secs(60));
        let cooldown = config.retry.circuit_cooldown.0;
        next = Instant::now() + every;
        // The recorded state is also the operator's lever: `resume` clears
        // a stop or an open circuit there.
        let row = {
            let name = name.clone();
            shared
                .db
                .transact(move |conn| Ok::<_, DbError>(history::state(conn, &name)?))
                .await
                .ok()
                .flatten()
        };
        if let Some(row) = &row {
            if row.state != "stopped" {
                stopped_on = None;
            }
            if row.circuit_until.is_none() {
                circuit_until = None;
            }
        }
        if !asked
            && (row.as_ref().is_some_and(|r| r.paused)
                || circuit_until.is_some_and(|until| Instant::now() < until)
                || stopped_on
                    .as_ref()
                    .is_some_and(|s| Arc::ptr_eq(s, &snapshot)))
        {
            continue;
        }
        let end = match runner
            .run(if asked { "run-now" } else { "schedule" }, &shared.stop)
            .await
        {
            Ok(end) => end,
            Err(e) => {
                tracing::error!(pipeline = %name, "the run could not be recorded: {e}");
                RunEnd::Exhausted(e.to_string())
            }
        };
        match end {
            RunEnd::Done => {
                circuit_until = None;
                stopped_on = None;
                record_state(&shared.db, &name, "idle", None, None).await;
            }
            RunEnd::Interrupted => {
                record_state(
                    &shared.db,
                    &name,
                    "idle",
                    Some("the host stopped".into()),
                    None,
                )
                .await;
                return;
            }
            RunEnd::Exhausted(reason) => {
                let until = Instant::now() + cooldown;
                circuit_until = Some(until);
                next = until;
                let at = humantime::format_rfc3339_seconds(std::time::SystemTime::now() + cooldown);
                tracing::warn!(pipeline = %name, "circuit open until {at}: {reason}");
                record_state(
                    &shared.db,
                    &name,
                    "circuit-open",
                    Some(reason),
                    Some(at.to_string()),
                )
                .await;
            }
            RunEnd::Stopped(reason) => {
                stopped_on = Some(snapshot.clone());
                tracing::error!(pipeline = %name, "stopped: {reason}");
                record_state(&shared.db, &name, "stopped", Some(reason), None).await;
            }
        }
    }
}
