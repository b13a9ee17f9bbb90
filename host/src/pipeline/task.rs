//! One pipeline's task: it wakes on its schedule, an operator's
//! `run-now`, a webhook delivery or an edit; runs; and settles how the run
//! ended into its circuit breaker (open for the whole pipeline, or for the
//! source's reads alone so webhook deliveries go on; or stopped until
//! something changes) and the state `causeway pipelines` shows. A circuit,
//! or a wait an API asked for, recorded by the host before a restart is
//! held by this one for what is left of it.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::runner::DELIVERY_RUN_SPAN;
use super::{PipelineConfig, RunEnd, Runner, Shared, Stop, Wakers, history, retry, runner};
use crate::db::{DbError, WriterHandle};

/// How often a paused, stopped or open-circuited pipeline looks whether it
/// was resumed.
const HELD_RECHECK_EVERY: Duration = Duration::from_secs(1);

/// `reason`, saying that webhook deliveries go on if the pipeline has a
/// webhook trigger.
fn deliveries_go_on(config: &PipelineConfig, reason: String) -> String {
    match config.webhook {
        Some(_) => format!("{reason} (webhook deliveries go on meanwhile)"),
        None => reason,
    }
}

/// Holds the source's reads as `held` says, and records it.
async fn hold_reads(shared: &Shared, name: &str, held: ReadsHeld, driving: &mut Driving) {
    let (state, reason, at) = (held.state, held.reason.clone(), held.at.clone());
    let pipeline = name.to_string();
    record(&shared.db, name, move |conn| {
        history::set_reads_held(conn, &pipeline, state, Some(&reason), at.as_deref())
    })
    .await;
    driving.reads = Some(held);
}

/// Records the pipeline at rest after a run: `idle`, or the hold on its
/// reads (webhook deliveries handled meanwhile do not lift it). An
/// operator's `resume` recorded while the run went on (`idle`: the task
/// never records it while a hold holds) lifts the hold instead of being
/// written over.
async fn record_at_rest(
    db: &WriterHandle,
    name: &str,
    driving: &mut Driving,
    snapshot: &Arc<crate::live::Snapshot>,
) {
    let Some(reads) = driving.reads.as_ref().filter(|r| r.holds(snapshot)) else {
        record_state(db, name, "idle", None, None).await;
        return;
    };
    let (state, reason, at) = (reads.state, reads.reason.clone(), reads.at.clone());
    let pipeline = name.to_string();
    let kept = db
        .transact(move |conn| {
            let resumed = history::state(conn, &pipeline)?.is_some_and(|row| row.state == "idle");
            if !resumed {
                history::set_reads_held(conn, &pipeline, state, Some(&reason), at.as_deref())?;
            }
            Ok::<_, DbError>(!resumed)
        })
        .await;
    match kept {
        Ok(true) => {}
        Ok(false) => driving.reads = None,
        Err(e) => tracing::error!(pipeline = name, "cannot record the pipeline's state: {e}"),
    }
}

/// Until when a circuit opened now stays open: as an instant, and as the
/// operator reads it. The cooldown, or until the API said it would be back
/// (`back_at`: a 503's `Retry-After`) if that is later, so a maintenance
/// window is not probed every cooldown.
fn circuit_open(config: &PipelineConfig, back_at: Option<Instant>) -> (Instant, String) {
    let now = Instant::now();
    let cooldown = config.retry.circuit_cooldown.0;
    let open_for = back_at.map_or(cooldown, |at| {
        cooldown.max(at.saturating_duration_since(now))
    });
    let at = history::until_text(std::time::SystemTime::now() + open_for);
    (now + open_for, at)
}

/// Records a pipeline's state (holding the whole pipeline, if it holds).
async fn record_state(
    db: &WriterHandle,
    pipeline: &str,
    state: &'static str,
    reason: Option<String>,
    circuit_until: Option<String>,
) {
    let name = pipeline.to_string();
    record(db, pipeline, move |conn| {
        history::set_state(
            conn,
            &name,
            state,
            reason.as_deref(),
            circuit_until.as_deref(),
        )
    })
    .await;
}

/// Records what `write` writes of `pipeline`'s state; a failure is logged,
/// not fatal.
async fn record(
    db: &WriterHandle,
    pipeline: &str,
    write: impl FnOnce(&rusqlite::Connection) -> rusqlite::Result<()> + Send + 'static,
) {
    let result = db
        .transact(move |conn| Ok::<_, DbError>(write(conn)?))
        .await;
    if let Err(e) = result {
        tracing::error!(pipeline, "cannot record the pipeline's state: {e}");
    }
}

/// Holds a circuit that a host before this one recorded open and that is
/// not yet due to probe, as that host held it (the whole pipeline, or its
/// source's reads only): a restart does not knock before the API said it
/// would be back, nor before the cooldown ends. A run that host left
/// waiting as its API asked (`Retry-After`) is held the same way, recorded
/// as a circuit open until then.
async fn recall_circuit(shared: &Shared, name: &str, driving: &mut Driving) {
    let row = {
        let name = name.to_string();
        shared
            .db
            .transact(move |conn| Ok::<_, DbError>(history::state(conn, &name)?))
            .await
    };
    let snapshot = shared.live.snapshot();
    let (Ok(Some(row)), Some(config)) = (row, snapshot.config.pipelines.get(name)) else {
        return;
    };
    let Some((left, at)) = recalled(&row, config, std::time::SystemTime::now()) else {
        return;
    };
    let until = Instant::now() + left;
    let reason = if row.state == "circuit-open" {
        row.reason.unwrap_or_default()
    } else {
        // The wait as the host before recorded it (its stage, and
        // whether it saw the host stop).
        let waiting = row
            .reason
            .as_deref()
            .unwrap_or("a run waited as the API asked");
        let reason = format!("{waiting}; held since the host restarted: no call before {at}");
        let reason = if row.reads_only {
            deliveries_go_on(config, reason)
        } else {
            reason
        };
        let (pipeline, recorded, until, reads_only) =
            (name.to_string(), reason.clone(), at.clone(), row.reads_only);
        record(&shared.db, name, move |conn| {
            let set = match reads_only {
                true => history::set_reads_held,
                false => history::set_state,
            };
            set(
                conn,
                &pipeline,
                "circuit-open",
                Some(&recorded),
                Some(&until),
            )
        })
        .await;
        reason
    };
    if row.reads_only {
        tracing::info!(
            pipeline = name,
            "the source's reads are held until {at}, as before the restart: {reason}"
        );
        driving.reads = Some(ReadsHeld {
            hold: Hold::Until(until),
            state: "circuit-open",
            reason,
            at: Some(at),
        });
    } else {
        tracing::info!(
            pipeline = name,
            "the pipeline is held until {at}, as before the restart: {reason}"
        );
        driving.circuit_until = Some(until);
    }
}

/// What is left (from `now`) of the circuit recorded open in `row`, or of
/// the wait its run was in as an API asked, and when it ends as recorded:
/// never more than this host would open a circuit for, so a clock set
/// back, or an edited row, cannot park a pipeline.
fn recalled(
    row: &history::PipelineRow,
    config: &PipelineConfig,
    now: std::time::SystemTime,
) -> Option<(Duration, String)> {
    let at = match row.state.as_str() {
        "circuit-open" => row.circuit_until.as_ref()?,
        "stopped" => return None,
        _ => row.asked_until.as_ref()?,
    };
    let until = humantime::parse_rfc3339(at).ok()?;
    let left = until.duration_since(now).ok()?;
    let longest = config
        .retry
        .circuit_cooldown
        .0
        .max(retry::asked(Duration::MAX));
    Some((left.min(longest), at.clone()))
}

/// Why a pipeline's task woke up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wake {
    /// Its schedule (or the end of an open circuit's cooldown).
    Tick,
    /// An operator's run-now.
    RunNow,
    /// A webhook delivery arrived in the inbox.
    Inbox,
    /// Its schedule was edited (or it was removed).
    Rescheduled,
}

impl Wake {
    /// A delivery that wakes the task when a poll is due (at `next`) too
    /// is taken as the poll's wake: `select!` draws among ready branches at
    /// random, and under a steady stream of deliveries the poll could lose
    /// the draw many times over. The poll takes the deliveries with it.
    fn or_poll_due(self, next: Option<Instant>, now: Instant) -> Wake {
        match self {
            Wake::Inbox if next.is_some_and(|at| at <= now) => Wake::Tick,
            wake => wake,
        }
    }
}

/// What a pipeline's task remembers between wake-ups.
struct Driving {
    circuit_until: Option<Instant>,
    /// What holds the source's reads, and only them.
    reads: Option<ReadsHeld>,
    // The snapshot a stop happened on: a new one (an edit, an upgrade) is
    // worth another try.
    stopped_on: Option<Arc<crate::live::Snapshot>>,
}

/// The source's reads held, while webhook deliveries go on: its API kept
/// failing (a circuit, until its cooldown ends) or refused in a way waiting
/// cannot heal (a stop, until the configuration, grants or a plugin change,
/// or an operator resumes). With the state recorded for it.
struct ReadsHeld {
    hold: Hold,
    state: &'static str,
    reason: String,
    /// When the circuit probes, as the operator reads it.
    at: Option<String>,
}

enum Hold {
    Until(Instant),
    On(Arc<crate::live::Snapshot>),
}

impl ReadsHeld {
    /// Whether it still holds the reads of `snapshot`.
    fn holds(&self, snapshot: &Arc<crate::live::Snapshot>) -> bool {
        match &self.hold {
            Hold::Until(until) => Instant::now() < *until,
            Hold::On(stopped_on) => Arc::ptr_eq(stopped_on, snapshot),
        }
    }

    /// When to look again whether it still holds (a `resume` is written to
    /// the database by another process).
    fn recheck(&self) -> Instant {
        let soon = Instant::now() + HELD_RECHECK_EVERY;
        match self.hold {
            Hold::Until(until) => until.min(soon),
            Hold::On(_) => soon,
        }
    }
}

/// Drives one pipeline until the host stops or the pipeline is removed.
pub(super) async fn drive(shared: Arc<Shared>, name: String, wakers: Arc<Wakers>) {
    let (proven, stuck) = runner::recall(&shared.db, &name).await;
    let runner = Runner {
        name: name.clone(),
        live: shared.live.clone(),
        runtime: shared.runtime.clone(),
        secrets: shared.secrets.clone(),
        db: shared.db.clone(),
        stats: shared.stats.get(&name),
        stuck,
        proven,
        arrivals: wakers.inbox.clone(),
        ran_on: Default::default(),
        in_run: Default::default(),
        back_at: Default::default(),
        waits: Default::default(),
        offered: Default::default(),
    };
    // At start: deliveries a previous host stored but did not process, and
    // a first pull, unless a circuit it opened still holds.
    let mut next = Some(Instant::now());
    let mut driving = Driving {
        circuit_until: None,
        reads: None,
        stopped_on: None,
    };
    recall_circuit(&shared, &name, &mut driving).await;
    loop {
        let wake = tokio::select! {
            () = sleep_until(next) => Wake::Tick,
            () = wakers.run_now.notified() => Wake::RunNow,
            () = wakers.inbox.notified() => Wake::Inbox,
            () = wakers.rescheduled.notified() => Wake::Rescheduled,
            () = shared.stop.wait() => return,
        };
        let wake = wake.or_poll_due(next, Instant::now());
        if shared.stop.is_set() {
            return;
        }
        let snapshot = shared.live.snapshot();
        let Some(config) = snapshot.config.pipelines.get(&name) else {
            record_state(&shared.db, &name, "removed", None, None).await;
            return;
        };
        if wake != Wake::Inbox {
            next = config.every.map(|every| Instant::now() + every.0);
        }
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
                driving.stopped_on = None;
            }
            if row.circuit_until.is_none() {
                driving.circuit_until = None;
            }
            // An operator's `resume`: while the reads are held the task
            // records that hold at rest, never `idle`. A circuit or a stop
            // of the whole pipeline recorded over it leaves it held: the
            // deliveries it left pending record it again once they pass.
            if driving.reads.is_some() && row.state == "idle" {
                driving.reads = None;
            }
        }
        if wake != Wake::RunNow
            && (row.as_ref().is_some_and(|r| r.paused)
                || driving
                    .circuit_until
                    .is_some_and(|until| Instant::now() < until)
                || driving
                    .stopped_on
                    .as_ref()
                    .is_some_and(|s| Arc::ptr_eq(s, &snapshot)))
        {
            // Deliveries wait, durable, in the inbox. A `resume` is written
            // to the database by another process, and a webhook-only
            // pipeline has no schedule to notice it by: look again soon.
            let again = Instant::now() + HELD_RECHECK_EVERY;
            next = Some(next.map_or(again, |n| n.min(again)));
            continue;
        }
        // The new schedule counts from now; nothing runs for the edit.
        if wake == Wake::Rescheduled {
            continue;
        }
        // The source's API failing holds its reads, and only them.
        let reads_held = driving
            .reads
            .as_ref()
            .filter(|r| wake != Wake::RunNow && r.holds(&snapshot))
            .map(ReadsHeld::recheck);
        let poll = reads_held.is_none()
            && wake != Wake::Inbox
            && (config.every.is_some() || wake == Wake::RunNow);
        // Deliveries accepted are processed even once the webhook trigger
        // is gone from the configuration: the sender was told they were.
        if has_pending(&shared.db, &name).await {
            // Taking those that arrive meanwhile too, until a poll is due
            // (none when one follows now).
            let newer_until =
                (!poll).then(|| next.unwrap_or_else(|| Instant::now() + DELIVERY_RUN_SPAN));
            let end = run(&runner, runner::WEBHOOK, newer_until, &shared.stop).await;
            let ran_on = runner.ran_on().unwrap_or_else(|| snapshot.clone());
            if !settle(
                &shared,
                &name,
                &ran_on,
                config,
                (end, runner.back_at()),
                &mut driving,
                &mut next,
            )
            .await
            {
                continue;
            }
        }
        if let Some(recheck) = reads_held {
            next = Some(next.map_or(recheck, |n| n.min(recheck)));
        } else if poll {
            let trigger = if wake == Wake::RunNow {
                "run-now"
            } else {
                "schedule"
            };
            let end = run(&runner, trigger, None, &shared.stop).await;
            if end == RunEnd::Done {
                driving.reads = None;
            }
            let ran_on = runner.ran_on().unwrap_or_else(|| snapshot.clone());
            settle(
                &shared,
                &name,
                &ran_on,
                config,
                (end, runner.back_at()),
                &mut driving,
                &mut next,
            )
            .await;
        }
        if shared.stop.is_set() {
            return;
        }
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Whether webhook deliveries wait in `pipeline`'s inbox (not when the
/// inbox cannot be read: the run's own steps will say so).
pub(super) async fn has_pending(db: &WriterHandle, pipeline: &str) -> bool {
    let name = pipeline.to_string();
    db.transact(move |conn| Ok::<_, DbError>(crate::webhook::inbox::has_pending(conn, &name)?))
        .await
        .unwrap_or(false)
}

async fn run(runner: &Runner, trigger: &str, newer_until: Option<Instant>, stop: &Stop) -> RunEnd {
    match runner.run_taking_newer(trigger, stop, newer_until).await {
        Ok(end) => end,
        Err(e) => {
            tracing::error!(pipeline = %runner.name, "the run could not be recorded: {e}");
            RunEnd::Exhausted(e.to_string())
        }
    }
}

/// Records how a run ended (and when the API that failed it said it
/// would be back, if it did); whether the pipeline may go on now.
async fn settle(
    shared: &Shared,
    name: &str,
    snapshot: &Arc<crate::live::Snapshot>,
    config: &PipelineConfig,
    (end, back_at): (RunEnd, Option<Instant>),
    driving: &mut Driving,
    next: &mut Option<Instant>,
) -> bool {
    match end {
        RunEnd::Done => {
            driving.circuit_until = None;
            driving.stopped_on = None;
            record_at_rest(&shared.db, name, driving, snapshot).await;
            true
        }
        RunEnd::Interrupted => {
            // A wait the API asked for is kept, for the next host.
            let pipeline = name.to_string();
            record(&shared.db, name, move |conn| {
                history::host_stopped(conn, &pipeline)
            })
            .await;
            false
        }
        // The pause itself keeps the next runs from starting.
        RunEnd::Paused => {
            record_at_rest(&shared.db, name, driving, snapshot).await;
            false
        }
        RunEnd::Exhausted(reason) => {
            let (until, at) = circuit_open(config, back_at);
            driving.circuit_until = Some(until);
            *next = Some(until);
            tracing::warn!(pipeline = %name, "circuit open until {at}: {reason}");
            record_state(&shared.db, name, "circuit-open", Some(reason), Some(at)).await;
            false
        }
        RunEnd::SourceExhausted(reason) => {
            let (until, at) = circuit_open(config, back_at);
            *next = Some(until);
            tracing::warn!(pipeline = %name, "circuit open for reads until {at}: {reason}");
            let held = ReadsHeld {
                hold: Hold::Until(until),
                state: "circuit-open",
                reason: deliveries_go_on(config, reason),
                at: Some(at),
            };
            hold_reads(shared, name, held, driving).await;
            false
        }
        RunEnd::SourceStopped(reason) => {
            tracing::error!(pipeline = %name, "reads stopped: {reason}");
            let held = ReadsHeld {
                hold: Hold::On(snapshot.clone()),
                state: "stopped",
                reason: deliveries_go_on(config, reason),
                at: None,
            };
            hold_reads(shared, name, held, driving).await;
            false
        }
        RunEnd::Stopped(reason) => {
            driving.stopped_on = Some(snapshot.clone());
            tracing::error!(pipeline = %name, "stopped: {reason}");
            record_state(&shared.db, name, "stopped", Some(reason), None).await;
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_delivery_waking_the_task_when_a_poll_is_due_wakes_it_for_the_poll() {
        let now = Instant::now();
        let later = now + Duration::from_secs(1);
        let earlier = now.checked_sub(Duration::from_millis(1)).unwrap_or(now);
        assert_eq!(Wake::Inbox.or_poll_due(Some(now), now), Wake::Tick);
        assert_eq!(Wake::Inbox.or_poll_due(Some(earlier), now), Wake::Tick);
        assert_eq!(Wake::Inbox.or_poll_due(Some(later), now), Wake::Inbox);
        // No schedule (a webhook-only pipeline): no poll to be due.
        assert_eq!(Wake::Inbox.or_poll_due(None, now), Wake::Inbox);
        for other in [Wake::Tick, Wake::RunNow, Wake::Rescheduled] {
            assert_eq!(other.or_poll_due(Some(earlier), now), other);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_circuit_stays_open_until_an_unavailable_api_said_it_would_be_back() {
        let config: PipelineConfig = toml::from_str(
            "every = \"1m\"\nsource = { plugin = \"s\", stream = \"x\" }\nsinks = [{ plugin = \"k\" }]\n",
        )
        .unwrap();
        let cooldown = config.retry.circuit_cooldown.0;
        let now = Instant::now();
        assert_eq!(circuit_open(&config, None).0, now + cooldown);
        let back = now + Duration::from_secs(600);
        assert_eq!(circuit_open(&config, Some(back)).0, back);
        // Sooner than the cooldown: the cooldown.
        let soon = now + Duration::from_secs(1);
        assert_eq!(circuit_open(&config, Some(soon)).0, now + cooldown);
    }

    #[test]
    fn a_circuit_or_a_wait_recorded_holds_after_a_restart_for_what_is_left_of_it() {
        let config: PipelineConfig = toml::from_str(
            "every = \"1m\"\nsource = { plugin = \"s\", stream = \"x\" }\nsinks = [{ plugin = \"k\" }]\n",
        )
        .unwrap();
        let now = humantime::parse_rfc3339("2026-12-06T12:00:00Z").unwrap();
        let row = |state: &str, circuit: Option<&str>, asked: Option<&str>| history::PipelineRow {
            pipeline: "p".into(),
            paused: false,
            state: state.into(),
            reason: Some("the API failed".into()),
            circuit_until: circuit.map(str::to_string),
            reads_only: false,
            asked_until: asked.map(str::to_string),
            updated_at: "2026-12-06T11:59:00Z".into(),
        };
        let left = |row: history::PipelineRow| recalled(&row, &config, now).map(|(left, _)| left);
        let open = |until| left(row("circuit-open", Some(until), None));
        assert_eq!(open("2026-12-06T12:02:00Z"), Some(Duration::from_secs(120)));
        // Past: the probe is due now.
        assert_eq!(open("2026-12-06T11:59:59Z"), None);
        // Never longer than a circuit is opened for (15 minutes, or the
        // cooldown if longer).
        assert_eq!(
            open("2026-12-07T12:00:00Z"),
            Some(Duration::from_secs(15 * 60))
        );
        assert_eq!(open("not a time"), None);
        assert_eq!(left(row("circuit-open", None, None)), None);
        // A run waiting as asked: killed (still `running`), or stopped.
        let asked = Some("2026-12-06T12:01:00Z");
        let minute = Some(Duration::from_secs(60));
        assert_eq!(left(row("running", None, asked)), minute);
        assert_eq!(left(row("idle", None, asked)), minute);
        assert_eq!(left(row("idle", None, None)), None);
        let stopped = row("stopped", Some("2026-12-06T12:02:00Z"), asked);
        assert_eq!(left(stopped), None);
    }
}
