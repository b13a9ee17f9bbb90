//! Pipelines: records flow from a source through transforms into sinks, on
//! a schedule, without loss.
//!
//! [`config`] is the `[pipelines.NAME]` section; [`runner`] runs one
//! pipeline page by page; [`retry`] is the backoff policy; [`dlq`] the
//! dead-letter queue; [`stuck`] and [`isolate`] find the records a sink or a
//! transform will never take, for the dead-letter queue; [`versions`] and
//! [`unchanged`] what a pipeline let through and wrote, to skip what is
//! late or written already; [`history`] each pipeline's state and runs;
//! `retention` forgets what is past its age.
//! This module
//! drives them: one task per pipeline (`task`), which runs on its schedule
//! (or when asked), handles webhook deliveries as they land in the inbox,
//! skips while paused, opens a circuit after a run that spent its
//! retry budget (and probes once the cooldown is over), and stops with a
//! visible reason on an error waiting cannot heal; a supervisor starts a
//! task for each pipeline configured, and again for one whose task failed.

pub mod config;
pub mod dlq;
pub mod history;
pub mod isolate;
mod retention;
pub mod retry;
pub mod runner;
pub mod stuck;
mod task;
pub mod unchanged;
pub mod versions;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

pub use config::PipelineConfig;
pub use runner::{RunEnd, Runner, Stop};

use crate::db::{DbError, WriterHandle};
use crate::engine::Runtime;
use crate::live::Live;
use crate::secrets::Secrets;

/// How often the supervisor looks for pipelines added to the configuration.
const SUPERVISE_EVERY: Duration = Duration::from_millis(500);

/// How often the supervisor forgets what is past its retention.
const EXPIRE_EVERY: Duration = Duration::from_secs(3600);

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
    stop_lever: tokio::sync::watch::Sender<bool>,
    stop: Stop,
    tasks: Mutex<BTreeMap<String, Task>>,
    stats: crate::metrics::PipelineStatsSet,
}

/// How to wake a pipeline's task.
#[derive(Default)]
struct Wakers {
    run_now: Notify,
    /// A delivery was accepted; shared with the pipeline's runner, whose
    /// source read, waiting to be retried, handles deliveries meanwhile.
    inbox: Arc<Notify>,
    /// Its schedule was edited, or it was removed from the configuration.
    rescheduled: Notify,
}

/// A pipeline's task, and how to wake it.
type Task = (Arc<Wakers>, tokio::task::JoinHandle<()>);

impl Pipelines {
    /// Starts driving every pipeline of the current configuration, and any
    /// added later.
    pub fn start(
        live: Arc<Live>,
        runtime: Arc<Runtime>,
        secrets: Arc<Secrets>,
        db: WriterHandle,
    ) -> Pipelines {
        let (stop_lever, stop) = Stop::new();
        let shared = Arc::new(Shared {
            live,
            runtime,
            secrets,
            db,
            stop_lever,
            stop,
            tasks: Mutex::new(BTreeMap::new()),
            stats: Default::default(),
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
        let _ = self.shared.stop_lever.send(true);
        self.supervisor.abort();
        let tasks: Vec<_> =
            std::mem::take(&mut *self.shared.tasks.lock().unwrap_or_else(|p| p.into_inner()))
                .into_values()
                .map(|(wakers, task)| {
                    wakers.run_now.notify_one();
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
            Some((wakers, _)) => {
                wakers.run_now.notify_one();
                true
            }
            None => false,
        }
    }

    /// What the pipelines did since the host started (`/metrics`).
    pub fn stats(&self) -> &crate::metrics::PipelineStatsSet {
        &self.0.stats
    }

    /// Tells `pipeline` a webhook delivery is waiting in its inbox.
    pub fn delivered(&self, pipeline: &str) {
        let tasks = self.0.tasks.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((wakers, _)) = tasks.get(pipeline) {
            wakers.inbox.notify_one();
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
    let mut expired: Option<Instant> = None;
    let mut scheduled: BTreeMap<String, Option<Duration>> = BTreeMap::new();
    loop {
        if shared.stop.is_set() {
            return;
        }
        reap(&shared).await;
        if expired.is_none_or(|at| at.elapsed() >= EXPIRE_EVERY) {
            expired = Some(Instant::now());
            retention::expire(&shared).await;
        }
        let schedules: BTreeMap<String, Option<Duration>> = shared
            .live
            .snapshot()
            .config
            .pipelines
            .iter()
            .map(|(name, p)| (name.clone(), p.every.map(|e| e.0)))
            .collect();
        {
            let mut tasks = shared.tasks.lock().unwrap_or_else(|p| p.into_inner());
            // A task sleeps until its next scheduled run: an edited
            // schedule, or the pipeline's removal, must wake it.
            for (name, (wakers, _)) in tasks.iter() {
                if schedules.get(name) != scheduled.get(name) {
                    wakers.rescheduled.notify_one();
                }
            }
            for name in schedules.keys() {
                if tasks.contains_key(name) {
                    continue;
                }
                let wakers = Arc::new(Wakers::default());
                let task = tokio::spawn(task::drive(shared.clone(), name.clone(), wakers.clone()));
                tasks.insert(name.clone(), (wakers, task));
            }
        }
        scheduled = schedules;
        tokio::time::sleep(SUPERVISE_EVERY).await;
    }
}

/// Takes the pipeline tasks that ended out of the table, to be started
/// again. One that panicked (a bug of the host's, never a plugin's doing:
/// those are call errors) is logged, and the run it was in is marked
/// `interrupted` now rather than left `running` until the next start.
async fn reap(shared: &Shared) {
    let ended: Vec<(String, tokio::task::JoinHandle<()>)> = {
        let mut tasks = shared.tasks.lock().unwrap_or_else(|p| p.into_inner());
        let names: Vec<String> = tasks
            .iter()
            .filter(|(_, (_, task))| task.is_finished())
            .map(|(name, _)| name.clone())
            .collect();
        names
            .into_iter()
            .filter_map(|name| tasks.remove(&name).map(|(_, task)| (name, task)))
            .collect()
    };
    for (name, task) in ended {
        let Some(why) = panicked(task.await) else {
            continue;
        };
        let why = format!("the pipeline's task failed ({why}); it was started again");
        tracing::error!(pipeline = %name, "{why}");
        let result = shared
            .db
            .transact(move |conn| {
                Ok::<_, DbError>(history::interrupt_unfinished_of(conn, &name, &why)?)
            })
            .await;
        if let Err(e) = result {
            tracing::error!("cannot mark the interrupted run: {e}");
        }
    }
}

/// What a task that ended with `result` panicked with, if it did.
fn panicked(result: Result<(), tokio::task::JoinError>) -> Option<String> {
    let payload = result.err()?.try_into_panic().ok()?;
    Some(
        payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic".into()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_task_that_panicked_says_with_what_and_one_that_returned_says_nothing() {
        let boom = tokio::spawn(async { panic!("boom") });
        assert_eq!(panicked(boom.await).as_deref(), Some("boom"));
        let formatted = tokio::spawn(async { panic!("{} went wrong", "it") });
        assert_eq!(panicked(formatted.await).as_deref(), Some("it went wrong"));
        assert_eq!(panicked(tokio::spawn(async {}).await), None);
        let aborted = tokio::spawn(std::future::pending::<()>());
        aborted.abort();
        assert_eq!(panicked(aborted.await), None, "an abort is no panic");
    }
}
