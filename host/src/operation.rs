//! One call into a plugin, by operation name with JSON input and output: the
//! form `causeway invoke` and tests use.
//!
//! Records in JSON are `{"stream", "key", "op": "upsert"|"delete", "data":
//! <any JSON>, "source_timestamp"?}`; `data` is carried across the boundary as
//! JSON text, as the contract says.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use wasmtime::component::Instance;
use wasmtime::{Engine, Store};

use crate::bindings::{
    IncomingRequest, Op, PluginError, Record, WriteOutcome, sink, source, transform, webhook,
};
use crate::caps::http::Asked;
use crate::contract::{self, World};
use crate::plugin::Plugin;
use crate::sandbox::{self, CallContext, CallError, Limits, StoreState};

/// Extra time the host allows past a call's deadline before it abandons a
/// call stuck in a host function (epochs interrupt only guest code).
const ABANDON_GRACE: Duration = Duration::from_secs(1);

/// The longest message the host keeps of a plugin's error, or of a sink's
/// reason for a record's outcome: they go into logs, the run history and
/// dead letters (one per record), so a plugin must not make one megabytes
/// long. The SDK's own messages quote 200 characters of an API's answer.
pub const MAX_MESSAGE_BYTES: usize = 4096;

/// The operations a plugin can be called with.
#[derive(Debug, Clone)]
pub enum Operation {
    /// `check` of the source (if it is one) or the sink.
    Check(World),
    /// `discover` of a source.
    Discover,
    /// `read` of a source.
    Read {
        /// The stream.
        stream: String,
        /// Where to start.
        checkpoint: Option<String>,
    },
    /// `write` of a sink.
    Write(Vec<Record>),
    /// `handle` of a webhook.
    Handle(IncomingRequest),
    /// `transform` of a transform.
    Transform(Vec<Record>),
}

/// A record as JSON.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a record: an object such as {\"stream\": \"contacts\", \"key\": \"c-1\", \"data\": {...}}"
)]
pub struct RecordJson {
    /// The stream.
    pub stream: String,
    /// The key.
    pub key: String,
    /// `upsert` (the default) or `delete`.
    #[serde(default = "upsert")]
    pub op: String,
    /// The data, as any JSON value.
    #[serde(default)]
    pub data: Value,
    /// Milliseconds since the epoch, if known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_timestamp: Option<i64>,
}

fn upsert() -> String {
    "upsert".to_string()
}

#[derive(Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "an object such as {\"stream\": \"contacts\", \"checkpoint\": null}"
)]
struct ReadInput {
    stream: String,
    #[serde(default)]
    checkpoint: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RequestInput {
    #[serde(default = "post")]
    method: String,
    #[serde(default = "root")]
    path: String,
    #[serde(default)]
    query: String,
    #[serde(default)]
    headers: Vec<(String, String)>,
    #[serde(default)]
    body: String,
}

fn post() -> String {
    "POST".to_string()
}

fn root() -> String {
    "/".to_string()
}

impl RecordJson {
    /// The record as the contract carries it.
    pub fn into_record(self) -> Result<Record, String> {
        let op = match self.op.as_str() {
            "upsert" => Op::Upsert,
            "delete" => Op::Delete,
            other => {
                return Err(format!(
                    "record {}: op {other:?} is not upsert or delete",
                    self.key
                ));
            }
        };
        let data = if self.data.is_null() && op == Op::Delete {
            "{}".to_string()
        } else {
            self.data.to_string()
        };
        Ok(Record {
            stream: self.stream,
            key: self.key,
            op,
            data,
            source_timestamp: self.source_timestamp,
        })
    }

    /// The record as JSON; data that is not valid JSON is kept as a string.
    pub fn from_record(record: Record) -> RecordJson {
        let data = serde_json::from_str(&record.data).unwrap_or(Value::String(record.data));
        RecordJson {
            stream: record.stream,
            key: record.key,
            op: match record.op {
                Op::Upsert => "upsert",
                Op::Delete => "delete",
            }
            .to_string(),
            data,
            source_timestamp: record.source_timestamp,
        }
    }
}

/// An incoming webhook request from its JSON form: `{"method"? (POST),
/// "path"? (/), "query"?, "headers"?: [[name, value]], "body"}`, the body as
/// text. Names are normalised as the server hands them over: the method
/// upper-case, header names lower-case.
pub fn request_from(input: Value) -> Result<IncomingRequest, String> {
    let req: RequestInput = serde_json::from_value(input).map_err(|e| {
        format!(
            "a request must be {{\"method\"?, \"path\"?, \"query\"?, \"headers\"?: [[name, value]], \"body\"}}: {e}"
        )
    })?;
    Ok(IncomingRequest {
        method: req.method.to_ascii_uppercase(),
        path: req.path,
        query: req.query,
        headers: req
            .headers
            .into_iter()
            .map(|(n, v)| (n.to_ascii_lowercase(), v))
            .collect(),
        body: req.body.into_bytes(),
    })
}

/// Records from their JSON form (an array of `RecordJson`).
pub fn records_from(input: Value) -> Result<Vec<Record>, String> {
    let rows: Vec<RecordJson> = serde_json::from_value(input)
        .map_err(|e| format!("input must be a JSON array of records: {e}"))?;
    rows.into_iter().map(RecordJson::into_record).collect()
}

fn records_to(records: Vec<Record>) -> Value {
    json!(
        records
            .into_iter()
            .map(RecordJson::from_record)
            .collect::<Vec<_>>()
    )
}

impl Operation {
    /// The operation `name` with its JSON `input`, for `plugin`.
    pub fn parse(
        plugin: &Plugin,
        name: &str,
        input: Option<Value>,
    ) -> Result<Operation, CallError> {
        let invalid = CallError::Invalid;
        let input = || {
            input
                .clone()
                .ok_or_else(|| {
                    // Said for both ways a call comes: `causeway invoke` and the API.
                    invalid(format!(
                        "operation {name} needs an input (--input FILE to causeway invoke, \"input\" in an API request)"
                    ))
                })
        };
        let worlds = &plugin.info.worlds;
        let op = match name {
            "check" if worlds.contains(&World::Source) => Operation::Check(World::Source),
            "check" | "sink.check" => Operation::Check(World::Sink),
            "source.check" => Operation::Check(World::Source),
            "discover" => Operation::Discover,
            "read" => {
                let read: ReadInput = serde_json::from_value(input()?).map_err(|e| {
                    invalid(format!(
                        "read input must be {{\"stream\", \"checkpoint\"?}}: {e}"
                    ))
                })?;
                Operation::Read {
                    stream: read.stream,
                    checkpoint: read.checkpoint,
                }
            }
            "write" => Operation::Write(records_from(input()?).map_err(invalid)?),
            "transform" => Operation::Transform(records_from(input()?).map_err(invalid)?),
            "handle" => Operation::Handle(request_from(input()?).map_err(invalid)?),
            other => {
                return Err(invalid(format!(
                    "unknown operation {other:?}: use check, discover, read, write, handle or transform"
                )));
            }
        };
        let world = op.world();
        if !worlds.contains(&world) {
            return Err(invalid(format!(
                "plugin {} does not implement {world} (it implements: {})",
                plugin.info.label(),
                worlds
                    .iter()
                    .map(|w| w.name())
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        Ok(op)
    }

    /// The export's name within its world (`check`, `read`, ...).
    pub fn name(&self) -> &'static str {
        match self {
            Operation::Check(_) => "check",
            Operation::Discover => "discover",
            Operation::Read { .. } => "read",
            Operation::Write(_) => "write",
            Operation::Handle(_) => "handle",
            Operation::Transform(_) => "transform",
        }
    }

    /// The world this operation belongs to.
    pub fn world(&self) -> World {
        match self {
            Operation::Check(world) => *world,
            Operation::Discover | Operation::Read { .. } => World::Source,
            Operation::Write(_) => World::Sink,
            Operation::Handle(_) => World::Webhook,
            Operation::Transform(_) => World::Transform,
        }
    }
}

/// What kind of contract error a plugin answered, as the host acts on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// Misconfigured: fatal until an operator fixes it.
    Config,
    /// The third party refused the credentials: fatal until fixed.
    Auth,
    /// Slow down: retry after the delay, if given.
    RateLimited,
    /// Try again later, with backoff.
    Transient,
    /// Will never work as asked.
    Fatal,
}

/// A contract error a plugin answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginFailure {
    /// What kind.
    pub kind: FailureKind,
    /// The plugin's message.
    pub message: String,
    /// For `rate-limited` and `transient`: how long the third party asked
    /// to wait, by the plugin's own delay or else by the `Retry-After` of a
    /// 429 the plugin's requests got during the call.
    pub retry_after: Option<Duration>,
    /// For `transient`, when no rate limit asked a wait: the longest
    /// `Retry-After` of a 503 the call got (maintenance). The least the
    /// pipeline backs off, still within its retry budget.
    pub unavailable_for: Option<Duration>,
}

impl FailureKind {
    /// The kind's name, as the contract spells it.
    pub fn name(self) -> &'static str {
        match self {
            FailureKind::Config => "config",
            FailureKind::Auth => "auth",
            FailureKind::RateLimited => "rate-limited",
            FailureKind::Transient => "transient",
            FailureKind::Fatal => "fatal",
        }
    }
}

impl std::fmt::Display for PluginFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = self.kind.name();
        match (self.retry_after, self.unavailable_for) {
            (Some(after), _) => write!(
                f,
                "{kind} (retry after {} ms): {}",
                after.as_millis(),
                self.message
            ),
            (None, Some(after)) => write!(
                f,
                "{kind} (unavailable for {} ms, its Retry-After said): {}",
                after.as_millis(),
                self.message
            ),
            (None, None) => write!(f, "{kind}: {}", self.message),
        }
    }
}

impl PluginFailure {
    /// The plugin's error value as the host acts on it. What the call's
    /// answers `asked`: the longest `Retry-After` of its 429s is the delay
    /// of a `transient` error, and of a `rate-limited` one that names none;
    /// that of its 503s, the least backoff of a `transient` one no rate
    /// limit answered.
    fn of(error: PluginError, asked: Asked) -> PluginFailure {
        let (kind, message, retry_after) = match error {
            PluginError::Config(m) => (FailureKind::Config, m, None),
            PluginError::Auth(m) => (FailureKind::Auth, m, None),
            PluginError::RateLimited(r) => (
                FailureKind::RateLimited,
                r.message,
                r.retry_after_ms
                    .map(Duration::from_millis)
                    .or(asked.limited),
            ),
            PluginError::Transient(m) => (FailureKind::Transient, m, asked.limited),
            PluginError::Fatal(m) => (FailureKind::Fatal, m, None),
        };
        let message = crate::audit::capped(message, MAX_MESSAGE_BYTES);
        let unavailable_for = match kind {
            FailureKind::Transient if retry_after.is_none() => asked.unavailable,
            _ => None,
        };
        PluginFailure {
            kind,
            message,
            retry_after,
            unavailable_for,
        }
    }
}

/// What a call answered, typed.
#[derive(Debug)]
pub enum Answer {
    /// `check` passed.
    Checked,
    /// `discover`: the streams.
    Streams(Vec<crate::bindings::StreamInfo>),
    /// `read`: one page.
    Page(crate::bindings::Page),
    /// `transform` or `handle`: records.
    Records(Vec<Record>),
    /// `write`: one outcome per record, in order.
    Outcomes {
        /// The outcomes.
        outcomes: Vec<WriteOutcome>,
        /// What the answers to the sink's requests asked: the longest
        /// `Retry-After` of their 429s, how long to wait before writing its
        /// `retry` records again (and of their 503s, the least backoff).
        asked: Asked,
    },
}

impl Answer {
    /// The answer as JSON; `keys` are the written records' keys (for
    /// `write`, whose outcomes are shown beside them).
    pub fn into_json(self, keys: &[String]) -> Value {
        match self {
            Answer::Checked => json!({ "ok": true }),
            Answer::Streams(streams) => json!(
                streams
                    .into_iter()
                    .map(|s| json!({
                        "name": s.name,
                        "description": s.description,
                        "incremental": s.incremental,
                        "json_schema": s.json_schema,
                    }))
                    .collect::<Vec<_>>()
            ),
            Answer::Page(page) => json!({
                "records": records_to(page.records),
                "checkpoint": page.checkpoint,
                "has_more": page.has_more,
            }),
            Answer::Records(records) => records_to(records),
            Answer::Outcomes { outcomes, .. } => json!(
                keys.iter()
                    .zip(outcomes)
                    .map(|(key, outcome)| match outcome {
                        WriteOutcome::Ok => json!({ "key": key, "outcome": "ok" }),
                        WriteOutcome::Retry(reason) => {
                            json!({ "key": key, "outcome": "retry", "reason": reason })
                        }
                        WriteOutcome::Rejected(reason) => {
                            json!({ "key": key, "outcome": "rejected", "reason": reason })
                        }
                    })
                    .collect::<Vec<_>>()
            ),
        }
    }
}

/// Each outcome's reason cut to [`MAX_MESSAGE_BYTES`].
fn cap_reasons(outcomes: &mut [WriteOutcome]) {
    for outcome in outcomes {
        if let WriteOutcome::Retry(reason) | WriteOutcome::Rejected(reason) = outcome
            && reason.len() > MAX_MESSAGE_BYTES
        {
            *reason = crate::audit::capped(std::mem::take(reason), MAX_MESSAGE_BYTES);
        }
    }
}

fn missing_export(plugin: &Plugin, world: World) -> CallError {
    CallError::Invalid(format!(
        "plugin {} does not implement {world}",
        plugin.info.label()
    ))
}

impl Plugin {
    /// Calls `operation` in a fresh instance, with the context's policy,
    /// limits and configuration. The answer is JSON.
    pub async fn call(
        &self,
        engine: &Engine,
        operation: Operation,
        context: &CallContext,
    ) -> Result<Value, CallError> {
        let keys: Vec<String> = match &operation {
            Operation::Write(batch) => batch.iter().map(|r| r.key.clone()).collect(),
            _ => Vec::new(),
        };
        Ok(self
            .call_typed(engine, operation, context)
            .await?
            .into_json(&keys))
    }

    /// [`Plugin::call`], answering the contract's types.
    pub async fn call_typed(
        &self,
        engine: &Engine,
        operation: Operation,
        context: &CallContext,
    ) -> Result<Answer, CallError> {
        let mut store = sandbox::new_store(engine, self.info.clone(), context);
        self.call_in(&mut store, None, operation, &context.policy.limits)
            .await
            .0
    }

    /// Runs `operation` in `store`: in `live` (a warm instance) if given,
    /// else in a new one. With the answer comes the instance when it may
    /// serve another call: the call ended with an answer or the plugin's own
    /// error value, not a trap, a timeout or a broken contract.
    pub(crate) async fn call_in(
        &self,
        store: &mut Store<StoreState>,
        live: Option<Live>,
        operation: Operation,
        limits: &Limits,
    ) -> (Result<Answer, CallError>, Option<Live>) {
        let started = std::time::Instant::now();
        let name = operation.name();
        let (answer, live) = self.call_unmeasured(store, live, operation, limits).await;
        let outcome = match &answer {
            Ok(_) => "ok",
            Err(CallError::Plugin { error, .. }) => error.kind.name(),
            Err(e) => e.kind(),
        };
        self.stats.record_call(name, outcome, started.elapsed());
        (answer, live)
    }

    /// [`Plugin::call_in`] without counting the call.
    async fn call_unmeasured(
        &self,
        store: &mut Store<StoreState>,
        live: Option<Live>,
        operation: Operation,
        limits: &Limits,
    ) -> (Result<Answer, CallError>, Option<Live>) {
        if let Err(unmetered) = sandbox::fill_fuel(store, limits) {
            return (Err(unmetered), None);
        }
        let call = async {
            let mut live = match live {
                Some(live) => live,
                None => Live::new(self.pre.instantiate_async(&mut *store).await?),
            };
            let answer = self.dispatch(&mut *store, &mut live, operation).await?;
            wasmtime::Result::Ok((answer, live))
        };
        // Boxed: the call's state (2 KiB of nested wasmtime futures) is then
        // allocated once instead of copied at every level that moves it.
        let call = Box::pin(call);
        let outcome = tokio::time::timeout(limits.call_timeout + ABANDON_GRACE, call).await;
        // What it logged is one row, however the call ended; so are the
        // allowed uses of each capability past the call's budget.
        store.data_mut().audit_logged();
        let state = store.data();
        state.audit.record_uncounted(&state.plugin);
        let asked = store.data().asked_to_wait.take();
        // Stopped at an epoch tick, or ended before one came: either way
        // the call fails, and its instance goes.
        let state = store.data();
        if let Some(denied) = state.audit.over_budget() {
            state.audit.record_stopped(&state.plugin, denied);
            return (
                Err(CallError::denied_too_often(&state.plugin, denied)),
                None,
            );
        }
        match outcome {
            Err(_elapsed) => (
                Err(CallError::Timeout {
                    plugin: self.info.label(),
                    timeout: limits.call_timeout,
                }),
                None,
            ),
            Ok(Err(trap)) => (Err(CallError::from_trap(store, limits, trap)), None),
            Ok(Ok((Err(invalid), _))) => (Err(invalid), None),
            Ok(Ok((Ok(Err(error)), live))) => (
                Err(CallError::Plugin {
                    plugin: self.info.label(),
                    error: PluginFailure::of(error, asked),
                }),
                Some(live),
            ),
            Ok(Ok((Ok(Ok(mut answer)), live))) => {
                if let Answer::Outcomes {
                    outcomes,
                    asked: answers_asked,
                } = &mut answer
                {
                    *answers_asked = asked;
                    cap_reasons(outcomes);
                }
                (Ok(answer), Some(live))
            }
        }
    }

    /// Calls the export `operation` names.
    async fn dispatch(
        &self,
        store: &mut Store<StoreState>,
        live: &mut Live,
        operation: Operation,
    ) -> wasmtime::Result<Result<Result<Answer, PluginError>, CallError>> {
        let instance = live.instance;
        let answer = match operation {
            Operation::Check(World::Source) | Operation::Discover | Operation::Read { .. } => {
                let Some(indices) = &self.exports.source else {
                    return Ok(Err(missing_export(self, World::Source)));
                };
                let guest = looked_up(&mut live.source, || indices.load(&mut *store, &instance))?;
                match operation {
                    Operation::Discover => {
                        guest.call_discover(&mut *store).await?.map(Answer::Streams)
                    }
                    Operation::Read { stream, checkpoint } => {
                        let page = guest
                            .call_read(&mut *store, &stream, checkpoint.as_deref())
                            .await?;
                        if let Some(message) = page.as_ref().ok().and_then(contract::page_problem) {
                            return Ok(Err(CallError::BrokenAnswer {
                                plugin: self.info.label(),
                                message,
                            }));
                        }
                        page.map(Answer::Page)
                    }
                    _ => guest
                        .call_check(&mut *store)
                        .await?
                        .map(|()| Answer::Checked),
                }
            }
            Operation::Check(_) | Operation::Write(_) => {
                let Some(indices) = &self.exports.sink else {
                    return Ok(Err(missing_export(self, World::Sink)));
                };
                let guest = looked_up(&mut live.sink, || indices.load(&mut *store, &instance))?;
                match operation {
                    Operation::Write(batch) => {
                        let answer = guest.call_write(&mut *store, &batch).await?;
                        match answer {
                            Ok(outcomes) if outcomes.len() != batch.len() => {
                                return Ok(Err(CallError::Invalid(format!(
                                    "plugin {} answered {} outcomes for {} records",
                                    self.info.label(),
                                    outcomes.len(),
                                    batch.len()
                                ))));
                            }
                            other => other.map(|outcomes| Answer::Outcomes {
                                outcomes,
                                asked: Asked::default(),
                            }),
                        }
                    }
                    _ => guest
                        .call_check(&mut *store)
                        .await?
                        .map(|()| Answer::Checked),
                }
            }
            Operation::Handle(request) => {
                let Some(indices) = &self.exports.webhook else {
                    return Ok(Err(missing_export(self, World::Webhook)));
                };
                let guest = looked_up(&mut live.webhook, || indices.load(&mut *store, &instance))?;
                guest
                    .call_handle(&mut *store, &request)
                    .await?
                    .map(Answer::Records)
            }
            Operation::Transform(batch) => {
                let Some(indices) = &self.exports.transform else {
                    return Ok(Err(missing_export(self, World::Transform)));
                };
                let guest =
                    looked_up(&mut live.transform, || indices.load(&mut *store, &instance))?;
                guest
                    .call_transform(&mut *store, &batch)
                    .await?
                    .map(Answer::Records)
            }
        };
        wasmtime::Result::Ok(Ok(answer))
    }
}

/// An instance and the exports already looked up in it: a warm instance
/// finds its functions (by name, type-checked) once, not on every call.
pub(crate) struct Live {
    instance: Instance,
    source: Option<source::Guest>,
    sink: Option<sink::Guest>,
    webhook: Option<webhook::Guest>,
    transform: Option<transform::Guest>,
}

impl Live {
    fn new(instance: Instance) -> Live {
        Live {
            instance,
            source: None,
            sink: None,
            webhook: None,
            transform: None,
        }
    }
}

/// The functions in `slot`, looked up by `load` the first time.
fn looked_up<G: Clone>(
    slot: &mut Option<G>,
    load: impl FnOnce() -> wasmtime::Result<G>,
) -> wasmtime::Result<G> {
    if let Some(guest) = slot {
        return Ok(guest.clone());
    }
    let guest = load()?;
    *slot = Some(guest.clone());
    Ok(guest)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bindings::RateLimit;

    #[test]
    fn a_plugins_long_message_or_reason_is_cut_to_a_few_kib() {
        let long = "é".repeat(MAX_MESSAGE_BYTES);
        let failure = PluginFailure::of(PluginError::Fatal(long.clone()), Asked::default());
        assert!(failure.message.len() < MAX_MESSAGE_BYTES + 32);
        assert!(
            failure.message.ends_with(&format!(
                "… ({} more bytes)",
                long.len() - MAX_MESSAGE_BYTES
            )),
            "{}",
            &failure.message[MAX_MESSAGE_BYTES - 8..]
        );
        let mut outcomes = vec![
            WriteOutcome::Ok,
            WriteOutcome::Retry(long.clone()),
            WriteOutcome::Rejected("short".into()),
            WriteOutcome::Rejected(long),
        ];
        cap_reasons(&mut outcomes);
        let lengths: Vec<usize> = outcomes
            .iter()
            .map(|o| match o {
                WriteOutcome::Ok => 0,
                WriteOutcome::Retry(r) | WriteOutcome::Rejected(r) => r.len(),
            })
            .collect();
        assert_eq!(lengths[2], 5);
        assert!(
            lengths[1] < MAX_MESSAGE_BYTES + 32 && lengths[3] == lengths[1],
            "{lengths:?}"
        );
    }

    #[test]
    fn a_429s_retry_after_is_the_delay_of_an_error_that_names_none() {
        let asked = Asked {
            limited: Some(Duration::from_secs(3)),
            unavailable: None,
        };
        let limited = |ms| {
            PluginError::RateLimited(RateLimit {
                retry_after_ms: ms,
                message: "slow down".into(),
            })
        };
        let delay = |error, asked| PluginFailure::of(error, asked).retry_after;
        assert_eq!(delay(limited(None), asked), asked.limited);
        assert_eq!(
            delay(PluginError::Transient("5xx".into()), asked),
            asked.limited
        );
        // The plugin's own delay comes first.
        assert_eq!(
            delay(limited(Some(500)), asked),
            Some(Duration::from_millis(500))
        );
        // Errors waiting cannot heal have none; nor has a call no 429 answered.
        assert_eq!(delay(PluginError::Auth("401".into()), asked), None);
        assert_eq!(delay(PluginError::Fatal("no".into()), asked), None);
        let none = Asked::default();
        assert_eq!(delay(PluginError::Transient("5xx".into()), none), None);
        let failure = PluginFailure::of(PluginError::Transient("429".into()), asked);
        assert_eq!(failure.to_string(), "transient (retry after 3000 ms): 429");
    }

    #[test]
    fn a_503s_retry_after_is_the_least_backoff_of_a_transient_error() {
        let asked = Asked {
            limited: None,
            unavailable: Some(Duration::from_secs(120)),
        };
        let failure = PluginFailure::of(PluginError::Transient("503".into()), asked);
        assert_eq!(failure.retry_after, None, "an outage's wait is not asked");
        assert_eq!(failure.unavailable_for, Some(Duration::from_secs(120)));
        assert_eq!(
            failure.to_string(),
            "transient (unavailable for 120000 ms, its Retry-After said): 503"
        );
        // A rate limit the same call met comes first; other kinds wait for
        // nothing.
        let both = Asked {
            limited: Some(Duration::from_secs(3)),
            ..asked
        };
        let failure = PluginFailure::of(PluginError::Transient("429".into()), both);
        assert_eq!(failure.unavailable_for, None);
        let failure = PluginFailure::of(PluginError::Fatal("no".into()), asked);
        assert_eq!(failure.unavailable_for, None);
    }
}
