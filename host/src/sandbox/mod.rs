//! The sandbox one plugin call runs in: a `Store` with its own memory,
//! table, instance and host-resource limits, deadline and WASI context, and
//! the errors a call can end with.
//!
//! A call gets a fresh store, or a pipeline stage's warm one (see
//! [`crate::warm`]) readied by [`StoreState::begin_call`]; once a call traps
//! or is cancelled its instance is dead and dropped, so one failure never
//! poisons the next call.

mod stderr;

use std::sync::Arc;
use std::time::{Duration, Instant};

use wasmtime::component::ResourceTable;
use wasmtime::{
    Engine, ResourceLimiter, Store, StoreLimits, StoreLimitsBuilder, Trap, UpdateDeadline,
};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

use crate::audit::AuditLog;
use crate::caps::http::{AskedToWait, Door, HttpClient, Outbound, WasiHttpDoor};
use crate::db::WriterHandle;
use crate::grants::Policy;
use crate::plugin::PluginInfo;
use crate::secrets::Secrets;
use stderr::StderrTail;

/// How much of a guest's stderr is kept for error reports: the last bytes a
/// call wrote, where a panic message is.
const STDERR_CAPACITY: usize = 4 * 1024;

/// Per-call resource limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Limits {
    /// The most linear memory one instance may grow to, in bytes.
    pub memory_bytes: usize,
    /// The wall-clock time one call may take, host calls included.
    pub call_timeout: Duration,
    /// The most elements one table may grow to.
    pub table_elements: usize,
    /// The most core instances one call's store may create (a component
    /// instantiates several: CPython 14, most others ≤ 4).
    pub instances: usize,
    /// The most host resources (WASI streams, pollables, HTTP handles) one
    /// store may hold at once: each costs host memory the guest's own
    /// memory limit does not count.
    pub resources: usize,
    /// The fuel one call may burn (about one unit per WebAssembly
    /// instruction), on an engine that counts it; `None`: no bound but the
    /// deadline.
    pub fuel: Option<u64>,
}

impl Limits {
    /// The most bytes one transfer from a plugin to the host may make the
    /// host allocate: an answer, or one host call's arguments (wasmtime's
    /// hostcall fuel: string bytes plus list elements at their host size).
    /// A plugin's strings may all point at one buffer of its memory, and
    /// each would be copied. Twice its memory limit covers any batch of
    /// records without such sharing (a record takes twice its guest size on
    /// the host), so a plugin claims host memory in proportion to its grant,
    /// not wasmtime's fixed 128 MiB.
    pub fn transfer_bytes(&self) -> usize {
        self.memory_bytes.saturating_mul(2)
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            memory_bytes: 64 * 1024 * 1024,
            call_timeout: Duration::from_secs(30),
            table_elements: 50_000,
            instances: 32,
            resources: 10_000,
            fuel: None,
        }
    }
}

/// A growth the limiter refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refused {
    /// Linear memory, to this many bytes.
    Memory(usize),
    /// A table, to this many elements.
    Table(usize),
}

/// A `ResourceLimiter` that remembers a refused growth, so an
/// out-of-memory abort is reported as such and not as a bare trap.
pub struct MemoryLimiter {
    inner: StoreLimits,
    refused: Option<Refused>,
}

impl MemoryLimiter {
    fn new(limits: &Limits) -> MemoryLimiter {
        MemoryLimiter {
            inner: StoreLimitsBuilder::new()
                .memory_size(limits.memory_bytes)
                .table_elements(limits.table_elements)
                .instances(limits.instances)
                .build(),
            refused: None,
        }
    }
}

impl ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let allowed = self.inner.memory_growing(current, desired, maximum)?;
        if !allowed {
            self.refused = Some(Refused::Memory(desired));
        }
        Ok(allowed)
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let allowed = self.inner.table_growing(current, desired, maximum)?;
        if !allowed {
            self.refused = Some(Refused::Table(desired));
        }
        Ok(allowed)
    }

    fn instances(&self) -> usize {
        self.inner.instances()
    }

    fn tables(&self) -> usize {
        self.inner.tables()
    }

    fn memories(&self) -> usize {
        self.inner.memories()
    }
}

/// The data of one plugin call's store: its WASI context and what the
/// capability implementations need to know about the caller.
pub struct StoreState {
    wasi: WasiCtx,
    table: ResourceTable,
    http_ctx: WasiHttpCtx,
    http_door: WasiHttpDoor,
    limiter: MemoryLimiter,
    stderr: StderrTail,
    /// Who is calling: every capability names the plugin in logs and audit.
    pub plugin: Arc<PluginInfo>,
    /// What the plugin may do: every capability checks this and nothing else.
    pub policy: Arc<Policy>,
    /// Where capability uses are recorded.
    pub audit: AuditLog,
    /// The database's writer, for storage.
    pub db: WriterHandle,
    /// The pipeline the call runs in; empty outside pipelines.
    pub pipeline: String,
    /// The secrets, for credentials the host injects.
    pub secrets: Arc<Secrets>,
    /// The plugin version's outbound client, if it may use HTTP.
    pub http: Option<Arc<HttpClient>>,
    /// The plugin version's log budget.
    pub log_limit: Arc<crate::caps::log::LogLimiter>,
    /// What this call has logged, for its one `log` audit row.
    pub logged: crate::caps::log::Logged,
    /// The plugin's configuration as a JSON object.
    pub config_json: String,
    /// When the call must end.
    pub deadline: Instant,
    /// When outbound requests must end ([`requests_until`]): a little
    /// before the call, so the plugin can still answer for what it did.
    pub requests_until: Instant,
    /// The longest wait a rate-limit answer (429, or 403 with Retry-After) asked of this call (both HTTP doors).
    pub asked_to_wait: AskedToWait,
}

impl WasiView for StoreState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

/// wasi:http, for guests whose HTTP client speaks it: served through the
/// same checks as the `http` capability (see [`crate::caps::http`]).
impl WasiHttpView for StoreState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http_ctx,
            table: &mut self.table,
            hooks: &mut self.http_door,
        }
    }
}

/// What a call runs with besides the plugin itself.
#[derive(Clone)]
pub struct CallContext {
    /// The plugin version's effective policy (its limits included).
    pub policy: Arc<Policy>,
    /// The plugin's configuration, a JSON object as text (as the `config`
    /// capability hands it over and warm instances are matched by).
    pub config: String,
    /// Where capability uses are recorded.
    pub audit: AuditLog,
    /// The database's writer, for storage.
    pub db: WriterHandle,
    /// The pipeline the call runs in; empty outside pipelines.
    pub pipeline: String,
    /// The pipeline run it belongs to (`PIPELINE#ID`), which its audit
    /// rows name.
    pub run: Option<Arc<str>>,
    /// The secrets, for credentials the host injects.
    pub secrets: Arc<Secrets>,
    /// The plugin version's outbound client, if it may use HTTP.
    pub http: Option<Arc<HttpClient>>,
    /// The plugin version's log budget.
    pub log_limit: Arc<crate::caps::log::LogLimiter>,
}

/// Builds a fresh store for one call of `plugin`.
pub fn new_store(
    engine: &Engine,
    plugin: Arc<PluginInfo>,
    context: &CallContext,
) -> Store<StoreState> {
    let limits = &context.policy.limits;
    let stderr = StderrTail::new(STDERR_CAPACITY);
    // The fixed WASI set: no preopened directory, an empty environment, no
    // arguments, stdin closed, stdout discarded, every socket refused.
    let wasi = WasiCtx::builder()
        .stderr(stderr.clone())
        .allow_tcp(false)
        .allow_udp(false)
        .allow_ip_name_lookup(false)
        .socket_addr_check(|_, _| Box::pin(async { false }))
        .build();
    let deadline = Instant::now() + limits.call_timeout;
    let requests_until = requests_until(deadline, limits.call_timeout);
    // One log for the call and its wasi:http door: they share its denials.
    let audit = context.audit.for_call();
    audit.begin_call(context.run.as_ref());
    let asked_to_wait = AskedToWait::default();
    let http_door = WasiHttpDoor::new(Outbound {
        plugin: plugin.clone(),
        policy: context.policy.clone(),
        audit: audit.clone(),
        secrets: context.secrets.clone(),
        client: context.http.clone(),
        deadline: requests_until,
        door: Door::WasiHttp,
        asked_to_wait: asked_to_wait.clone(),
    });
    let mut table = ResourceTable::new();
    table.set_max_capacity(limits.resources);
    let state = StoreState {
        wasi,
        table,
        http_ctx: WasiHttpCtx::new(),
        http_door,
        limiter: MemoryLimiter::new(limits),
        stderr,
        plugin,
        policy: context.policy.clone(),
        audit,
        db: context.db.clone(),
        pipeline: context.pipeline.clone(),
        secrets: context.secrets.clone(),
        http: context.http.clone(),
        log_limit: context.log_limit.clone(),
        logged: crate::caps::log::Logged::default(),
        config_json: context.config.clone(),
        deadline,
        requests_until,
        asked_to_wait,
    };
    let mut store = Store::new(engine, state);
    store.limiter(|state| &mut state.limiter);
    store.set_hostcall_fuel(limits.transfer_bytes());
    // Each epoch tick a running guest yields to the async runtime (so it never
    // starves other tasks) until its deadline passes or it has been denied
    // too often, then it is interrupted.
    store.set_epoch_deadline(1);
    store.epoch_deadline_callback(|store| {
        if let Some(denied) = store.data().audit.over_budget() {
            Err(wasmtime::Error::msg(format!(
                "stopped after {denied} denied capability uses"
            )))
        } else if Instant::now() >= store.data().deadline {
            Err(Trap::Interrupt.into())
        } else {
            Ok(UpdateDeadline::Yield(1))
        }
    });
    store
}

impl StoreState {
    /// Whether a growth was refused during this call: even if the guest
    /// coped, its instance is not kept for another call.
    pub fn refused_growth(&self) -> bool {
        self.limiter.refused.is_some()
    }

    /// Readies a warm store for its next call: a new deadline (for the
    /// guest and for host calls), no refused growth, stderr from here on,
    /// and the pipeline run its audit rows name.
    pub fn begin_call(&mut self, limits: &Limits, run: Option<&Arc<str>>) {
        self.deadline = Instant::now() + limits.call_timeout;
        self.requests_until = requests_until(self.deadline, limits.call_timeout);
        self.http_door.set_deadline(self.requests_until);
        self.audit.begin_call(run);
        self.limiter.refused = None;
        self.stderr.clear();
    }
}

/// When a call's outbound requests must end, for a call ending at
/// `deadline` after `call_timeout`: a tenth of the call (at most a second)
/// before it. A request still in flight at the call's deadline would leave
/// the plugin no time to answer, and the call would fail whole, its work
/// done again (a sink writing a request per record to a slow API would
/// never get past the records it writes in one call); cut a little
/// earlier, it fails as a timeout the plugin can answer.
pub fn requests_until(deadline: Instant, call_timeout: Duration) -> Instant {
    deadline - (call_timeout / 10).min(Duration::from_secs(1))
}

/// Gives a call its fuel: `limits.fuel`, or all there is on an engine
/// that counts fuel when no limit is set (a store starts with none). A
/// limit the engine cannot count fails the call rather than go unenforced.
pub fn fill_fuel(store: &mut Store<StoreState>, limits: &Limits) -> Result<(), CallError> {
    // Read from the engine's settings: asking the store would build an
    // error on every call of a host that does not count fuel.
    let counted = store.engine().get_consume_fuel();
    let units = match (limits.fuel, counted) {
        (None, false) => return Ok(()),
        (None, true) => u64::MAX,
        (Some(units), true) => units,
        (Some(units), false) => {
            return Err(CallError::Invalid(format!(
                "plugin {} has a limit of fuel = {units}, and this host does not count fuel: set [engine] fuel = true in causeway.toml and restart the host, or remove the limit",
                store.data().plugin.label()
            )));
        }
    };
    store
        .set_fuel(units)
        .map_err(|e| CallError::Invalid(format!("the call's fuel could not be set: {e}")))
}

/// How a plugin call failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CallError {
    /// The call ran past its deadline and was interrupted.
    #[error("plugin {plugin} timed out after {timeout:?}")]
    Timeout {
        /// `name@version`.
        plugin: String,
        /// The limit it ran into.
        timeout: Duration,
    },
    /// The guest tried to grow its memory beyond the limit.
    #[error(
        "plugin {plugin} ran out of memory: it asked for {requested} bytes, the limit is {limit}"
    )]
    OutOfMemory {
        /// `name@version`.
        plugin: String,
        /// The size it asked to grow to.
        requested: usize,
        /// The limit.
        limit: usize,
    },
    /// The plugin needs more than its limits allow besides memory: a table
    /// grown past `table-elements`, more core instances than `instances`.
    #[error("plugin {plugin} exceeded a resource limit: {message}")]
    ResourceLimit {
        /// `name@version`.
        plugin: String,
        /// What it asked for, the limit, and the grant that raises it.
        message: String,
    },
    /// The call burned its `fuel` limit. A kind of its own in the code
    /// (one record may be the cause, as for memory), `resource-limit` to
    /// operators.
    #[error("plugin {plugin} exceeded a resource limit: {message}")]
    OutOfFuel {
        /// `name@version`.
        plugin: String,
        /// The limit, and the grant that raises it.
        message: String,
    },
    /// Every instance slot of the host is in use: retry shortly.
    #[error(
        "plugin {plugin} was not started: the host is at its instance limit ({reason}); retry shortly, or raise [engine] max-instances"
    )]
    Busy {
        /// `name@version`.
        plugin: String,
        /// Which of the pool's limits was reached.
        reason: String,
    },
    /// The guest trapped (a panic, an `unreachable`, a bad memory access).
    #[error("plugin {plugin} crashed: {message}")]
    Trap {
        /// `name@version`.
        plugin: String,
        /// The trap, the guest's last stderr (a panic message) and a backtrace.
        message: String,
    },
    /// The plugin answered with an error of the contract.
    #[error("plugin {plugin} returned an error: {error}")]
    Plugin {
        /// `name@version`.
        plugin: String,
        /// The error: its kind, message and, when rate-limited, delay.
        error: crate::operation::PluginFailure,
    },
    /// The call cannot be made (unknown operation, bad input, no such export).
    #[error("{0}")]
    Invalid(String),
    /// The plugin answered, but against the contract (a pipeline's transform
    /// answering a record without a key, or a key it was not given).
    #[error("plugin {plugin} answered against the contract: {message}")]
    BrokenAnswer {
        /// `name@version`.
        plugin: String,
        /// What is wrong with the answer.
        message: String,
    },
}

impl CallError {
    /// A machine-readable kind, stable across versions.
    pub fn kind(&self) -> &'static str {
        match self {
            CallError::Timeout { .. } => "timeout",
            CallError::OutOfMemory { .. } => "out-of-memory",
            CallError::ResourceLimit { .. } | CallError::OutOfFuel { .. } => "resource-limit",
            CallError::Busy { .. } => "busy",
            CallError::Trap { .. } => "trap",
            CallError::Plugin { .. } => "plugin-error",
            CallError::Invalid(_) => "invalid-call",
            CallError::BrokenAnswer { .. } => "broken-answer",
        }
    }

    /// The call was stopped (or ended) after more denied capability uses
    /// than [`crate::audit::MAX_DENIALS_PER_CALL`].
    pub fn denied_too_often(plugin: &PluginInfo, denied: u32) -> CallError {
        CallError::ResourceLimit {
            plugin: plugin.label(),
            message: format!(
                "it was denied {denied} capability uses in one call, over the limit of {}: the call was stopped (the denials: causeway audit --plugin {} --denied)",
                crate::audit::MAX_DENIALS_PER_CALL,
                plugin.name
            ),
        }
    }

    /// Classifies a failed call of the plugin whose store is `store`.
    pub fn from_trap(
        store: &Store<StoreState>,
        limits: &Limits,
        error: wasmtime::Error,
    ) -> CallError {
        let state = store.data();
        let plugin = state.plugin.label();
        let raise = |what: &str| {
            format!(
                "raise it for this plugin in grants.toml ([plugins.{}] limits = {{ {what} = … }}) if it is expected",
                state.plugin.name
            )
        };
        match state.limiter.refused {
            Some(Refused::Memory(requested)) => {
                return CallError::OutOfMemory {
                    plugin,
                    requested,
                    limit: limits.memory_bytes,
                };
            }
            Some(Refused::Table(requested)) => {
                return CallError::ResourceLimit {
                    plugin,
                    message: format!(
                        "a table asked for {requested} elements, the limit is {}; {}",
                        limits.table_elements,
                        raise("table-elements")
                    ),
                };
            }
            None => {}
        }
        if let Some(busy) = error.downcast_ref::<wasmtime::PoolConcurrencyLimitError>() {
            return CallError::Busy {
                plugin,
                reason: busy.to_string(),
            };
        }
        // wasmtime refuses an instantiation beyond the store's counts with
        // this message and no error type of its own.
        let text = format!("{error:#}");
        if text.contains("resource limit exceeded: instance count") {
            return CallError::ResourceLimit {
                plugin,
                message: format!(
                    "it needs more than {} core instances; {}",
                    limits.instances,
                    raise("instances")
                ),
            };
        }
        if matches!(
            error.downcast_ref::<wasmtime::component::ResourceTableError>(),
            Some(wasmtime::component::ResourceTableError::Full)
        ) {
            return CallError::ResourceLimit {
                plugin,
                message: format!(
                    "it holds more than {} host resources at once (WASI streams, pollables, HTTP handles it has not dropped); {}",
                    limits.resources,
                    raise("resources")
                ),
            };
        }
        // wasmtime's hostcall fuel, spent: its error type is private.
        if text.contains("fuel allocated for hostcalls has been exhausted") {
            return CallError::ResourceLimit {
                plugin,
                message: format!(
                    "it handed the host more than {} bytes in one answer or host call (twice its memory limit): its strings or lists overlap in its memory, as only a hand-written export makes them, or its answers are larger than its memory; {}",
                    limits.transfer_bytes(),
                    raise("memory-mb")
                ),
            };
        }
        if let (Some(Trap::OutOfFuel), Some(units)) = (error.downcast_ref::<Trap>(), limits.fuel) {
            return CallError::OutOfFuel {
                plugin,
                message: format!(
                    "it burned its fuel, {units} units (about one per WebAssembly instruction), before the call ended; {}",
                    raise("fuel")
                ),
            };
        }
        if matches!(error.downcast_ref::<Trap>(), Some(Trap::Interrupt)) {
            return CallError::Timeout {
                plugin,
                timeout: limits.call_timeout,
            };
        }
        let stderr = String::from_utf8_lossy(&state.stderr.contents())
            .trim()
            .to_string();
        // The backtrace's function names come from the plugin's name
        // section, which may hold a name of megabytes: the message goes
        // into run histories and logs.
        let mut message =
            crate::audit::capped(format!("{error:?}"), crate::operation::MAX_MESSAGE_BYTES);
        if !stderr.is_empty() {
            message = format!("{stderr}\n{message}");
        }
        CallError::Trap { plugin, message }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_end_a_tenth_of_the_call_before_it_at_most_a_second() {
        let end = Instant::now() + Duration::from_secs(60);
        for (call, before) in [(1000, 100), (5000, 500), (30_000, 1000), (50, 5)] {
            let call = Duration::from_millis(call);
            assert_eq!(
                end - requests_until(end, call),
                Duration::from_millis(before),
                "{call:?}"
            );
        }
    }

    #[test]
    fn a_refused_growth_is_remembered_as_memory_or_table() {
        let limits = Limits {
            memory_bytes: 1 << 16,
            table_elements: 10,
            ..Limits::default()
        };
        let mut limiter = MemoryLimiter::new(&limits);
        assert!(limiter.table_growing(0, 10, None).unwrap());
        assert_eq!(limiter.refused, None);
        assert!(!limiter.table_growing(10, 11, None).unwrap());
        assert_eq!(limiter.refused, Some(Refused::Table(11)));
        assert!(!limiter.memory_growing(0, 1 << 17, None).unwrap());
        assert_eq!(limiter.refused, Some(Refused::Memory(1 << 17)));
        assert_eq!(limiter.instances(), limits.instances);
    }
}
