//! A transform or a sink, called with a batch: retried as the pipeline's
//! policy says, and the records it fails on alone found and set aside.

use std::time::Duration;

use crate::bindings::{Record, WriteOutcome};
use crate::caps::http::{Asked, AskedToWait};
use crate::db::DbError;
use crate::live::Snapshot;
use crate::operation::{Answer, Operation};
use crate::pipeline::config::{PipelineConfig, RetryConfig};
use crate::pipeline::history;
use crate::pipeline::retry::{self, GaveUp, Wait, backoff, jitter, pause, retry_spending_waits};
use crate::pipeline::stuck::{Counted, SET_ASIDE_AFTER};
use crate::pipeline::{dlq, isolate};
use crate::registry::Installed;
use crate::sandbox::CallError;

use super::{RunEnd, Runner, Stop, ended, some_keys, unexpected};

/// The kind of stage a [`StageCall`] calls with a batch.
#[derive(Debug, Clone, Copy)]
enum Called {
    Transform,
    Sink,
}

impl Called {
    /// The stage, as its dead letters name it.
    fn stage(self) -> dlq::Stage {
        match self {
            Called::Transform => dlq::Stage::Transform,
            Called::Sink => dlq::Stage::Sink,
        }
    }

    /// `transform` or `sink`, for messages.
    fn as_str(self) -> &'static str {
        self.stage().as_str()
    }
}

/// A transform or a sink of a pipeline, called.
struct StageCall<'a> {
    /// `pipeline NAME: transform PLUGIN` (or `write PLUGIN`), for messages.
    what: String,
    kind: Called,
    plugin: &'a str,
}

impl<'a> StageCall<'a> {
    fn new(pipeline: &str, kind: Called, plugin: &'a str) -> StageCall<'a> {
        let verb = match kind {
            Called::Transform => "transform",
            Called::Sink => "write",
        };
        StageCall {
            what: format!("pipeline {pipeline}: {verb} {plugin}"),
            kind,
            plugin,
        }
    }

    /// The call that hands it `records`.
    fn operation(&self, records: &[Record]) -> Operation {
        match self.kind {
            Called::Transform => Operation::Transform(records.to_vec()),
            Called::Sink => Operation::Write(records.to_vec()),
        }
    }

    /// What it does with a record, for messages.
    fn takes(&self) -> &'static str {
        match self.kind {
            Called::Transform => "maps",
            Called::Sink => "writes",
        }
    }

    /// `answer`, if it keeps the contract for the `given` records: a
    /// transform's records must each keep it (a stream, a key, JSON data)
    /// and carry a key it was given (which record each is for is how a
    /// pipeline supersedes its dead letters). One that breaks it fails the
    /// call, as a record can make it fail: the search finds the record.
    fn kept_to(
        &self,
        bound: &Bound<'_>,
        given: &[Record],
        answer: Answer,
    ) -> Result<Answer, GaveUp> {
        let (Called::Transform, Answer::Records(records)) = (self.kind, &answer) else {
            return Ok(answer);
        };
        match broken_answer(given, records) {
            None => Ok(answer),
            Some(message) => Err(GaveUp::Stopped(CallError::BrokenAnswer {
                plugin: bound.installed.plugin.info.label(),
                message,
            })),
        }
    }

    /// What it did with records, for messages.
    fn took(&self) -> &'static str {
        match self.kind {
            Called::Transform => "mapped",
            Called::Sink => "wrote",
        }
    }
}

/// A pipeline's stages, bound to the plugins of one snapshot.
pub(super) struct Stages<'a> {
    pub(super) source: Bound<'a>,
    pub(super) transforms: Vec<Bound<'a>>,
    pub(super) sinks: Vec<Bound<'a>>,
}

/// A stage's plugin, callable, and its configuration in this pipeline.
pub(super) struct Bound<'a> {
    pub(super) installed: &'a Installed,
    pub(super) config: serde_json::Value,
}

/// How a transform's answer `records` to `given` breaks the contract, if
/// it does: the first record that breaks it.
fn broken_answer(given: &[Record], records: &[Record]) -> Option<String> {
    let keys: std::collections::HashSet<&str> = given.iter().map(|r| r.key.as_str()).collect();
    records.iter().enumerate().find_map(|(i, record)| {
        let problems = crate::contract::record_problems(record);
        if let Some(problem) = problems.first() {
            return Some(match record.key.as_str() {
                "" => format!("its record {i} {problem}"),
                key => format!(
                    "its record {i} ({}) {problem}",
                    crate::contract::shown_key(key)
                ),
            });
        }
        (!keys.contains(record.key.as_str())).then(|| {
            format!(
                "its record {i} has the key {:?}, which none of the records it was given has",
                crate::contract::shown_key(&record.key)
            )
        })
    })
}

/// The stage's plugin, if it can run now.
pub(super) fn bind<'a>(
    snapshot: &'a Snapshot,
    plugin: &str,
    config: Option<&serde_json::Map<String, serde_json::Value>>,
) -> Result<Bound<'a>, RunEnd> {
    let installed = snapshot
        .registry
        .callable(plugin)
        .map_err(|e| RunEnd::Stopped(e.to_string()))?;
    Ok(Bound {
        installed,
        config: snapshot.config.stage_config(plugin, config),
    })
}

/// Waits the third party asked for this long or longer show in the
/// pipeline's state; shorter ones pass before anyone could read it.
const NOTE_WAITS_FROM: Duration = Duration::from_secs(1);

/// How often a run waiting to retry looks whether it was paused; waits
/// shorter than this are not looked into.
pub(super) const PAUSE_LOOKED_FOR_EVERY: Duration = Duration::from_secs(1);

/// What one write of a batch came to: each record's outcome, and how long
/// the API asked to wait before the `retry` ones are written again (a
/// rate limit's wait; an outage's, the least backoff).
struct Written {
    answered: Vec<(Record, WriteOutcome)>,
    asked: Asked,
}

impl Runner {
    /// Writes `records` to one sink until each is acknowledged or rejected;
    /// the rejected ones with their reasons.
    pub(super) async fn write(
        &self,
        pipeline: &PipelineConfig,
        sink_name: &str,
        sink: &Bound<'_>,
        records: &[Record],
        stop: &Stop,
    ) -> Result<Vec<(Record, String)>, RunEnd> {
        let stage = StageCall::new(&self.name, Called::Sink, sink_name);
        let what = &stage.what;
        let mut pending: Vec<Record> = records.to_vec();
        let mut rejected = Vec::new();
        let mut spent = Duration::ZERO;
        let mut attempt = 0;
        // Whether the sink took or refused any record of the batch yet.
        let mut took_some = false;
        loop {
            let Written { answered, asked } = self
                .write_once(pipeline, &stage, sink, pending, stop)
                .await?;
            let mut again = Vec::new();
            let mut last_reason = String::new();
            // After a 429 the first is the API's answer; those after it, a
            // sink's "not sent".
            let mut first_reason = None;
            let before = rejected.len();
            let mut written = Vec::new();
            for (record, outcome) in answered {
                match outcome {
                    WriteOutcome::Ok => written.push(record),
                    WriteOutcome::Rejected(reason) => rejected.push((record, reason)),
                    WriteOutcome::Retry(reason) => {
                        first_reason.get_or_insert_with(|| reason.clone());
                        last_reason = reason;
                        again.push(record);
                    }
                }
            }
            let took = !written.is_empty() || rejected.len() > before;
            took_some |= took;
            // An answer that took records is progress, not a failure: the
            // backoff and the budget start over, so a sink that takes part
            // of each batch (paced by a rate limit, a call's deadline) is
            // called again soon, and gets to the end of a long one.
            if took {
                spent = Duration::ZERO;
                attempt = 0;
            }
            let settled = self.stuck.settled(
                sink_name,
                written
                    .iter()
                    .chain(rejected[before..].iter().map(|(r, _)| r)),
            );
            self.remember(settled).await;
            if again.is_empty() {
                return Ok(rejected);
            }
            // Named, so a record the sink can never take is found.
            let keys = some_keys(&again);
            // The API said when to come back (a 429's Retry-After): wait
            // that long, without spending the budget, as for a rate limit.
            if let Some(limited) = asked.limited {
                let wait = retry::asked(limited).max(pipeline.retry.initial.0);
                tracing::warn!(
                    "{what}: {} records ({keys}) to retry in {wait:?}, as the API's Retry-After asked: {}",
                    again.len(),
                    first_reason.as_deref().unwrap_or_default()
                );
                let asked = Wait {
                    duration: wait,
                    asked: true,
                    unavailable: false,
                };
                // A wait asked for is said as asked; its cause is logged above.
                self.noting_wait(what, asked, ("", false, false), self.wait_out(asked, stop))
                    .await
                    .map_err(|gave_up| ended(what, gave_up))?;
                pending = again;
                continue;
            }
            // Records the sink asked to retry share the step's budget; an
            // API down for maintenance is given the time its 503 asked.
            let unavailable = asked.unavailable.map(retry::asked);
            let wait =
                backoff(&pipeline.retry, attempt, jitter()).max(unavailable.unwrap_or_default());
            if spent + wait > pipeline.retry.budget.0 {
                // The sink wrote the rest but none of these in its last
                // answer: once they have spent enough budgets in a row,
                // they are set aside instead of holding back the rest.
                let set_aside = took_some && !took && {
                    let (all, counted) = self.stuck.spent_budget(sink_name, &again);
                    self.remember(counted).await;
                    all
                };
                if set_aside {
                    tracing::warn!(
                        "{what}: {} records ({keys}) set aside as dead letters: the sink asked to retry them through {SET_ASIDE_AFTER} retry budgets in a row while it wrote the rest: {last_reason}",
                        again.len()
                    );
                    let reason = format!(
                        "set aside: the sink asked to retry it through {SET_ASIDE_AFTER} retry budgets in a row while it wrote the rest of its batch; last: {last_reason}"
                    );
                    rejected.extend(again.into_iter().map(|r| (r, reason.clone())));
                    return Ok(rejected);
                }
                if let Some(unavailable) = unavailable {
                    self.unavailable_for(unavailable);
                }
                return Err(RunEnd::Exhausted(format!(
                    "{what}: {} records ({keys}) still asked to be retried after {spent:?}: {last_reason}",
                    again.len()
                )));
            }
            let why = match unavailable {
                Some(asked) => {
                    format!(" (the API is unavailable: its 503's Retry-After asked {asked:?})")
                }
                None => String::new(),
            };
            tracing::warn!(
                "{what}: {} records ({keys}) to retry in {wait:?}{why}: {last_reason}",
                again.len()
            );
            let backing_off = Wait {
                duration: wait,
                asked: false,
                unavailable: unavailable == Some(wait),
            };
            let noted = format!(
                "{} records ({keys}) to retry{why}: {last_reason}",
                again.len()
            );
            self.noting_wait(
                what,
                backing_off,
                (&noted, false, false),
                self.wait_out(backing_off, stop),
            )
            .await
            .map_err(|gave_up| ended(what, gave_up))?;
            spent += wait;
            attempt += 1;
            pending = again;
        }
    }

    /// Maps `records` through one transform: what it answered, and the
    /// records it failed on alone while it mapped the rest, set aside with
    /// why ([`isolate`]).
    pub(super) async fn transform(
        &self,
        pipeline: &PipelineConfig,
        plugin: &str,
        transform: &Bound<'_>,
        records: Vec<Record>,
        stop: &Stop,
    ) -> Result<(Vec<Record>, Vec<(Record, String)>), RunEnd> {
        let stage = StageCall::new(&self.name, Called::Transform, plugin);
        self.isolating(
            pipeline,
            &stage,
            transform,
            records,
            stop,
            |_, answer| match answer {
                Answer::Records(records) => Ok(records),
                other => Err(unexpected(plugin, &other)),
            },
        )
        .await
    }

    /// Writes `records` to one sink once (retried as the policy says): each
    /// record with its outcome. Records the sink fails the whole batch on,
    /// alone, while it writes the rest ([`isolate`]), come back rejected
    /// (set aside).
    async fn write_once(
        &self,
        pipeline: &PipelineConfig,
        stage: &StageCall<'_>,
        sink: &Bound<'_>,
        records: Vec<Record>,
        stop: &Stop,
    ) -> Result<Written, RunEnd> {
        // The longest wait a 429 asked of any of the calls (one, or more
        // while a record at fault is looked for).
        let asked = AskedToWait::default();
        let (mut answered, aside) = self
            .isolating(
                pipeline,
                stage,
                sink,
                records,
                stop,
                |part, answer| match answer {
                    Answer::Outcomes {
                        outcomes,
                        asked: answered,
                    } => {
                        asked.ask(answered);
                        Ok(part.into_iter().zip(outcomes).collect())
                    }
                    other => Err(unexpected(stage.plugin, &other)),
                },
            )
            .await?;
        answered.extend(
            aside
                .into_iter()
                .map(|(record, reason)| (record, WriteOutcome::Rejected(reason))),
        );
        Ok(Written {
            answered,
            asked: asked.take(),
        })
    }

    /// Hands `records` to a transform or a sink: what `answer` makes of its
    /// answers, and the records it fails on alone while it takes the rest,
    /// set aside with why. A batch it fails in a way one record can cause
    /// is split until they are found ([`isolate`]); one it fails record by
    /// record too stops the pipeline, as any such failure does. A batch of
    /// one record is set aside only by a stage proven to work
    /// ([`isolate::Proven`]).
    async fn isolating<T>(
        &self,
        pipeline: &PipelineConfig,
        stage: &StageCall<'_>,
        bound: &Bound<'_>,
        records: Vec<Record>,
        stop: &Stop,
        answer: impl Fn(Vec<Record>, Answer) -> Result<Vec<T>, RunEnd>,
    ) -> Result<(Vec<T>, Vec<(Record, String)>), RunEnd> {
        let what = &stage.what;
        // The stage as this pipeline runs it: its build and configuration.
        let proven_as = isolate::Proven::key(&bound.installed.plugin.info.digest, &bound.config);
        let first = self
            .attempt(&pipeline.retry, what, bound, stop, || {
                stage.operation(&records)
            })
            .await
            .and_then(|answered| stage.kept_to(bound, &records, answered));
        let error = match first {
            Ok(answered) => {
                self.proven.took(&proven_as);
                return Ok((answer(records, answered)?, Vec::new()));
            }
            Err(GaveUp::Stopped(error)) if isolate::may_be_a_record(&error) => error,
            Err(gave_up) => return Err(ended(what, gave_up)),
        };
        let records = match <[Record; 1]>::try_from(records) {
            Ok([record]) => {
                if !self.proven.failed_alone(&proven_as) {
                    return Err(ended(what, GaveUp::Stopped(error)));
                }
                tracing::warn!(
                    "{what}: {error}; record {} set aside as a dead letter: alone in its batch, and the {} {} others before",
                    some_keys([&record]),
                    stage.kind.as_str(),
                    stage.took(),
                );
                let reason = format!(
                    "set aside: {} {} fails on this record, alone in its batch, though it {} others before: {error}",
                    stage.kind.as_str(),
                    stage.plugin,
                    stage.took(),
                );
                return Ok((Vec::new(), vec![(record, reason)]));
            }
            Err(records) => records,
        };
        tracing::warn!(
            "{what}: {error}; looking for the records of the {} it fails on",
            records.len()
        );
        let found = isolate::isolate(records, |part| {
            let (answer, proven_as) = (&answer, &proven_as);
            async move {
                match self
                    .attempt(&pipeline.retry, what, bound, stop, || {
                        stage.operation(&part)
                    })
                    .await
                    .and_then(|answered| stage.kept_to(bound, &part, answered))
                {
                    Ok(answered) => {
                        self.proven.took(proven_as);
                        answer(part, answered).map_err(isolate::Failure::End)
                    }
                    Err(GaveUp::Stopped(error)) if isolate::may_be_a_record(&error) => {
                        Err(isolate::Failure::Record(error.to_string()))
                    }
                    Err(gave_up) => Err(isolate::Failure::End(ended(what, gave_up))),
                }
            }
        })
        .await?;
        let found = match found {
            isolate::Search::Found(found) => found,
            isolate::Search::Plugin => {
                return Err(RunEnd::Stopped(format!(
                    "{what}: {error} (it fails its records alone too: the plugin's trouble, not a record's)"
                )));
            }
            isolate::Search::TooLong => {
                return Err(RunEnd::Stopped(format!(
                    "{what}: {error} (so many of its records fail alone that {} calls did not find them all: the plugin's trouble, or the batch's)",
                    isolate::MAX_CALLS
                )));
            }
        };
        let keys = some_keys(found.aside.iter().map(|(r, _)| r));
        tracing::warn!(
            "{what}: {} records ({keys}) set aside as dead letters: the {} fails on each alone while it {} the rest",
            found.aside.len(),
            stage.kind.as_str(),
            stage.takes(),
        );
        let aside = found
            .aside
            .into_iter()
            .map(|(record, why)| {
                let reason = format!(
                    "set aside: {} {} fails on this record alone while it {} the rest of its batch: {why}",
                    stage.kind.as_str(),
                    stage.plugin,
                    stage.takes()
                );
                (record, reason)
            })
            .collect();
        Ok((found.mapped, aside))
    }

    /// One call, retried as the retry policy says; why it gave up, if it
    /// did ([`ended`] makes that the run's end).
    async fn attempt(
        &self,
        config: &RetryConfig,
        what: &str,
        bound: &Bound<'_>,
        stop: &Stop,
        operation: impl Fn() -> Operation,
    ) -> Result<Answer, GaveUp> {
        self.attempt_spending(config, (what, false), bound, operation, |wait| {
            self.wait_out(wait, stop)
        })
        .await
    }

    /// [`Runner::attempt`], each wait before a retry spent in `spend`;
    /// `reads_only`: the call is the source's read, so a wait as its API
    /// asked holds the reads only.
    pub(super) async fn attempt_spending<S, SFut>(
        &self,
        config: &RetryConfig,
        (what, reads_only): (&str, bool),
        bound: &Bound<'_>,
        operation: impl Fn() -> Operation,
        spend: S,
    ) -> Result<Answer, GaveUp>
    where
        S: FnMut(Wait) -> SFut,
        SFut: std::future::Future<Output = Result<(), GaveUp>>,
    {
        let context = self.context(bound);
        let installed = &bound.installed;
        let mut spend = spend;
        // A backoff's note stays through the call it waited for (an API
        // that times out takes longer to fail than the wait): said until
        // the step succeeds or gives up.
        let backed_off = std::sync::atomic::AtomicBool::new(false);
        let tried = retry_spending_waits(
            config,
            what,
            || installed.call_warm(&self.runtime.engine, operation(), &context),
            |wait, why| {
                let spent = spend(wait);
                let backed_off = &backed_off;
                async move {
                    let kept = self
                        .noting_wait(what, wait, (&why, reads_only, true), spent)
                        .await?;
                    if kept {
                        backed_off.store(true, std::sync::atomic::Ordering::Relaxed);
                    }
                    Ok(())
                }
            },
        )
        .await;
        if backed_off.into_inner() && !matches!(tried, Err(GaveUp::Interrupted)) {
            let outer = self
                .waits
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .last()
                .cloned();
            self.note_waiting(outer).await;
        }
        // Given up on an API down for longer than the budget: the circuit
        // waits until it said it would be back.
        if let Err(GaveUp::Exhausted(CallError::Plugin { error, .. })) = &tried
            && let Some(unavailable) = error.unavailable_for
        {
            self.unavailable_for(unavailable);
        }
        tried
    }

    /// Spends `wait`, which follows `why`, in `spent`, saying so in the
    /// pipeline's state meanwhile when it is long enough to be seen there:
    /// `causeway pipelines` shows the run waiting, until when and why. One
    /// the third party asked for (a rate limit's, or as long as an
    /// unavailable API said) a host restarted meanwhile waits too (the
    /// whole pipeline, or the source's reads only when it is their wait);
    /// the pipeline's own backoff it does not. With `keep_backoff`, the
    /// note of a backoff is left for the caller to take back (answering
    /// true), so it stays through the call retried.
    async fn noting_wait(
        &self,
        what: &str,
        wait: Wait,
        (why, reads_only, keep_backoff): (&str, bool, bool),
        spent: impl std::future::Future<Output = Result<(), GaveUp>>,
    ) -> Result<bool, GaveUp> {
        if wait.duration < NOTE_WAITS_FROM {
            return spent.await.map(|()| false);
        }
        let backoff = !(wait.asked || wait.unavailable);
        let until = history::until_text(std::time::SystemTime::now() + wait.duration);
        let waiting = if !backoff {
            history::Waiting {
                reason: format!(
                    "{what}: waiting until {until} to try again, as the API asked (Retry-After)"
                ),
                until: Some(until),
                reads_only,
            }
        } else {
            history::Waiting {
                reason: format!(
                    "{what}: retrying at {until}, backing off (spending the retry budget): {why}"
                ),
                until: None,
                reads_only: false,
            }
        };
        let depth = {
            let mut waits = self.waits.lock().unwrap_or_else(|p| p.into_inner());
            waits.push(waiting.clone());
            waits.len()
        };
        self.note_waiting(Some(waiting)).await;
        let result = spent.await;
        let outer = {
            let mut waits = self.waits.lock().unwrap_or_else(|p| p.into_inner());
            waits.truncate(depth - 1);
            waits.last().cloned()
        };
        let kept = keep_backoff && backoff && result.is_ok();
        // The host stopping: the next one waits out the rest.
        if !kept && !matches!(result, Err(GaveUp::Interrupted)) {
            self.note_waiting(outer).await;
        }
        result.map(|()| kept)
    }

    /// Sleeps `wait` before a retry. A wait of a second or more (a backoff
    /// of up to `retry.max`, a `Retry-After` of up to 15 minutes) ends early
    /// when an operator pauses the pipeline meanwhile, as
    /// `Meanwhile(Paused)`: the pause would otherwise wait for it. The page
    /// is not committed, so a resume reads it again.
    async fn wait_out(&self, wait: Wait, stop: &Stop) -> Result<(), GaveUp> {
        if wait.duration < PAUSE_LOOKED_FOR_EVERY {
            return pause(wait.duration, stop).await;
        }
        let paused_before = self.paused().await;
        tokio::select! {
            waited = pause(wait.duration, stop) => waited,
            () = self.paused_since(paused_before) => Err(GaveUp::Meanwhile(RunEnd::Paused)),
        }
    }

    /// Returns once the pipeline is paused, looking every second; never
    /// when it was paused already (a run started paused, by `run-now`, is
    /// not stopped by the pause it started in).
    pub(super) async fn paused_since(&self, paused_before: bool) {
        if paused_before {
            return std::future::pending().await;
        }
        loop {
            tokio::time::sleep(PAUSE_LOOKED_FOR_EVERY).await;
            if self.paused().await {
                return;
            }
        }
    }

    /// Whether an operator has paused the pipeline (not known: no).
    pub(super) async fn paused(&self) -> bool {
        let name = self.name.clone();
        self.db
            .transact(move |conn| Ok::<_, DbError>(history::paused(conn, &name)?))
            .await
            .unwrap_or(false)
    }

    /// Records why the run waits, until when and whether only the reads
    /// wait, or that it no longer does.
    async fn note_waiting(&self, waiting: Option<history::Waiting>) {
        let name = self.name.clone();
        let noted = self
            .db
            .transact(move |conn| {
                Ok::<_, DbError>(history::note_waiting(conn, &name, waiting.as_ref())?)
            })
            .await;
        if let Err(e) = noted {
            tracing::warn!(pipeline = %self.name, "cannot record why the run waits: {e}");
        }
    }

    /// Saves a change to the counts of records a sink will not take. Not
    /// saved (logged), it holds in this process and a restart counts anew.
    async fn remember(&self, counted: Counted) {
        if counted.is_empty() {
            return;
        }
        let name = self.name.clone();
        let saved = self
            .db
            .transact(move |conn| Ok::<_, DbError>(counted.save(conn, &name)?))
            .await;
        if let Err(e) = saved {
            tracing::warn!(
                pipeline = %self.name,
                "the count of records a sink will not take is not saved: {e}; a restart counts them anew"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::runner::tests::keyed;

    #[test]
    fn a_transform_answer_must_keep_the_contract_and_the_keys_it_was_given() {
        let given: Vec<Record> = ["a", "b"].map(keyed).into();
        // Fewer, reordered, or several records of one key: all kept.
        assert_eq!(broken_answer(&given, &[keyed("b")]), None);
        assert_eq!(
            broken_answer(&given, &[keyed("b"), keyed("a"), keyed("a")]),
            None
        );
        assert_eq!(broken_answer(&given, &[]), None);
        let stranger = broken_answer(&given, &[keyed("a"), keyed("c")]);
        assert_eq!(
            stranger.as_deref(),
            Some("its record 1 has the key \"c\", which none of the records it was given has")
        );
        let mut array = keyed("b");
        array.data = "[1]".into();
        let broken = broken_answer(&given, &[keyed("a"), array]);
        assert_eq!(
            broken.as_deref(),
            Some("its record 1 (b) is an upsert whose data is not a JSON object")
        );
    }
}
