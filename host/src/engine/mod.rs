//! The wasmtime engine every plugin is compiled for, the epoch ticker that
//! drives call deadlines, and the precompiled-artifact [`cache`].

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

pub mod cache;

/// How often the epoch advances: the granularity of call deadlines, and how
/// often a CPU-bound guest yields to the async runtime.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);

/// The most elements a plugin's table may be allowed (`table-elements`):
/// what a pool slot's tables hold.
pub const MAX_TABLE_ELEMENTS: usize = slot::TABLE_ELEMENTS;
/// The most core instances a plugin's call may be allowed (`instances`):
/// what a pool slot holds.
pub const MAX_CORE_INSTANCES: usize = slot::CORE_INSTANCES as usize;
/// The most instances `[engine] max-instances` may ask for: each pool slot
/// reserves 4 GiB of address space, and 10,000 of them take 40 of the 128
/// TiB a 64-bit Linux process has.
pub const MAX_INSTANCES: u32 = 10_000;
/// The most `[engine] max-plugin-mb` may allow: a plugin file is read whole
/// into memory and compiled, and 4 GiB is past any component we know of.
pub const MAX_PLUGIN_MB: u32 = 4096;
/// The most `[engine] max-functions` may allow: a core module holds at most
/// a million (the validator's limit), and a component a thousand modules,
/// but compiling takes about 5 KiB a function however small.
pub const MAX_FUNCTIONS: u32 = 10_000_000;
/// The most `[engine] max-function-kb` may allow: the validator refuses a
/// function body over 7,654,321 bytes.
pub const MAX_FUNCTION_KB: u32 = 7474;

/// How instances are allocated: `[engine]` in causeway.toml.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(
    deny_unknown_fields,
    rename_all = "kebab-case",
    default,
    expecting = "a table such as { pooling = true, max-instances = 100 }"
)]
pub struct EngineSettings {
    /// Whether instances come from the pooling allocator (memory and tables
    /// reserved up front, linear memory initialised copy-on-write, slots
    /// reused) or are allocated on demand.
    pub pooling: bool,
    /// How many plugin instances may be live at once (each call holds one):
    /// the pool's size. A call beyond it fails as busy and is retried.
    #[serde(deserialize_with = "max_instances")]
    pub max_instances: u32,
    /// The largest plugin file the host reads, in MiB. A file is read whole
    /// and compiled before anything else in the folder reloads: a bigger
    /// one is refused unread, naming its size and this setting.
    #[serde(deserialize_with = "max_plugin_mb")]
    pub max_plugin_mb: u32,
    /// The most functions a plugin's core modules may define together.
    /// Compiling takes memory by the function (about 5 KiB each, however
    /// small: a million empty ones took 5.5 GB): a plugin over it is
    /// refused before it is compiled.
    #[serde(deserialize_with = "max_functions")]
    pub max_functions: u32,
    /// The largest function body a plugin may have, in KiB. Compiling one
    /// takes memory by its size (about 330 bytes a byte at worst measured:
    /// 7 MB of one function, the most a module may hold, took 2.5 GB): a
    /// plugin with a larger one is refused before it is compiled.
    #[serde(deserialize_with = "max_function_kb")]
    pub max_function_kb: u32,
    /// Whether the engine counts fuel (about one unit per WebAssembly
    /// instruction), so a `fuel` limit can bound a call's work whatever
    /// the machine's speed. Counting slows guest code (docs/performance.md);
    /// off, a `fuel` limit is refused.
    pub fuel: bool,
}

/// `max-plugin-mb`, from 1 to [`MAX_PLUGIN_MB`], refused where it is written.
fn max_plugin_mb<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    crate::config::range::within(
        d,
        "max-plugin-mb",
        1..=MAX_PLUGIN_MB,
        "a plugin file is read whole into memory and compiled",
    )
}

/// `max-functions`, from 1 to [`MAX_FUNCTIONS`], refused where it is written.
fn max_functions<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    crate::config::range::within(
        d,
        "max-functions",
        1..=MAX_FUNCTIONS,
        "a component holds at most a thousand modules of a million functions",
    )
}

/// `max-function-kb`, from 1 to [`MAX_FUNCTION_KB`], refused where it is
/// written.
fn max_function_kb<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    crate::config::range::within(
        d,
        "max-function-kb",
        1..=MAX_FUNCTION_KB,
        "no valid function body is larger",
    )
}

impl EngineSettings {
    /// [`EngineSettings::max_plugin_mb`] in bytes.
    pub fn max_plugin_bytes(&self) -> u64 {
        u64::from(self.max_plugin_mb) << 20
    }

    /// What a plugin may hold to be compiled.
    pub fn compile_limits(&self) -> CompileLimits {
        CompileLimits {
            functions: u64::from(self.max_functions),
            function_bytes: u64::from(self.max_function_kb) << 10,
        }
    }
}

/// What a plugin may hold to be compiled (`[engine] max-functions` and
/// `max-function-kb`): checked on the file before the compiler sees it,
/// since compiling cannot be interrupted or bounded in memory, and a small
/// file can ask for gigabytes (docs/security.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CompileLimits {
    /// The most functions its core modules may define together.
    pub functions: u64,
    /// The largest function body, in bytes.
    pub function_bytes: u64,
}

impl Default for CompileLimits {
    fn default() -> Self {
        EngineSettings::default().compile_limits()
    }
}

/// `max-instances`, from 1 to [`MAX_INSTANCES`], refused where it is written.
fn max_instances<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    crate::config::range::within(
        d,
        "max-instances",
        1..=MAX_INSTANCES,
        "each instance slot reserves 4 GiB of address space",
    )
}

impl Default for EngineSettings {
    fn default() -> Self {
        EngineSettings {
            pooling: true,
            max_instances: 100,
            // CPython's component is 18 MB, a JavaScript one 12 MB.
            max_plugin_mb: 64,
            // CPython's defines 13,355 functions, the largest 427 KB; a
            // JavaScript one 12,711, the largest 172 KB.
            max_functions: 50_000,
            max_function_kb: 1024,
            fuel: false,
        }
    }
}

/// What one component may hold, and what the pool reserves per instance on
/// average. Measured on the largest guests we ship: CPython
/// (componentize-py) links 14 core instances, 2 tables of up to 5,672
/// elements and 1 memory; StarlingMonkey (componentize-js) 4 core instances,
/// 2 tables (7,690 elements), 1 memory; a Rust plugin ≤ 4, 2, 1. A component
/// beyond these is refused at load, naming the limit.
mod slot {
    /// Core instances one component may have.
    pub const CORE_INSTANCES: u32 = 32;
    /// Core instances reserved per pool instance (Python needs 14).
    pub const CORE_INSTANCES_AVERAGE: u32 = 16;
    /// Linear memories one component may define.
    pub const MEMORIES: u32 = 2;
    /// Tables one component may have.
    pub const TABLES: u32 = 4;
    /// Elements one table may have.
    pub const TABLE_ELEMENTS: usize = 50_000;
    /// The most linear memory one instance may reach: wasm32's whole 4 GiB,
    /// reserved (not committed) so every `memory-mb` a grant may give fits
    /// and bounds checks stay elided; the limiter enforces the plugin's own.
    pub const MEMORY_BYTES: usize = 4 << 30;
    /// Freed slots returned to the kernel in one pass (one `madvise` call
    /// for sixteen instead of one each: instantiation 25 → 14 µs). Keeping
    /// pages resident by memset instead measured slower; the scan below
    /// keeps only the dirty ones: docs/performance.md.
    pub const DECOMMIT_BATCH: usize = 16;
    /// Freed slots kept for the modules that used them (an instance of the
    /// same module reuses one cheaply) before another module's instance takes
    /// one over. wasmtime's default, 100, prefers never-used slots until 100
    /// wait: each keeps its dirty pages resident, and every upgrade of a
    /// plugin (a new module) took a new one, so a host's memory grew by
    /// about 0.5 MiB per upgrade until every slot had been used.
    pub const UNUSED_WARM: u32 = 8;
    /// Dirty linear-memory bytes a freed slot restores in place and keeps
    /// resident (with `PAGEMAP_SCAN` only): a small call's whole working
    /// set. A fresh batch-of-one call 50 → 24 µs; docs/performance.md.
    pub const MEMORY_KEEP_RESIDENT: usize = 1 << 20;
    /// The same for tables: their pages faulting back in on every
    /// instantiation were most of its page faults (instantiation 15–22 →
    /// 10–14 µs). 64 KiB covers the largest guests' tables (CPython's 5,672
    /// elements).
    pub const TABLE_KEEP_RESIDENT: usize = 64 << 10;
}

/// Builds the engine: component model, epoch interruption for deadlines,
/// fuel if `settings` count it, and the allocator they choose.
pub fn new_engine(settings: &EngineSettings) -> wasmtime::Result<Engine> {
    if settings.pooling {
        // A quarter of the slots at most wait idle for a pipeline stage.
        crate::warm::set_idle_budget(settings.max_instances.max(1) as usize / 4);
    }
    Engine::new(&config(settings))
}

/// The engine's configuration, for [`new_engine`] (and for benchmarks that
/// measure what one of its settings costs).
pub fn config(settings: &EngineSettings) -> Config {
    let mut config = Config::new();
    config.wasm_component_model(true);
    config.epoch_interruption(true);
    config.consume_fuel(settings.fuel);
    if settings.pooling {
        let n = settings.max_instances.max(1);
        // One memory per instance on average (each reserves 4 GiB of
        // address space, nothing more until used).
        let mut pool = PoolingAllocationConfig::new();
        pool.total_component_instances(n)
            .total_core_instances(n.saturating_mul(slot::CORE_INSTANCES_AVERAGE))
            .total_memories(n)
            .total_tables(n.saturating_mul(slot::TABLES))
            .total_stacks(n)
            .max_core_instances_per_component(slot::CORE_INSTANCES)
            .max_memories_per_component(slot::MEMORIES)
            .max_tables_per_component(slot::TABLES)
            .table_elements(slot::TABLE_ELEMENTS)
            .max_memory_size(slot::MEMORY_BYTES)
            .decommit_batch_size(slot::DECOMMIT_BATCH)
            .max_unused_warm_slots(slot::UNUSED_WARM);
        // Where the kernel can tell which pages a call dirtied (Linux 6.7+),
        // a freed slot restores just those and keeps them: the next
        // instance does not fault them in again. Elsewhere a memset of the
        // whole span would cost more than the faults, so slots are returned.
        if PoolingAllocationConfig::is_pagemap_scan_available() {
            pool.pagemap_scan(wasmtime::Enabled::Yes)
                .linear_memory_keep_resident(slot::MEMORY_KEEP_RESIDENT)
                .table_keep_resident(slot::TABLE_KEEP_RESIDENT);
        }
        config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    }
    config
}

/// Advances the engine's epoch every [`EPOCH_TICK`] until dropped.
pub struct EpochTicker {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl EpochTicker {
    /// Starts a ticker thread for `engine`. Without it no deadline would
    /// ever fire, so failing to start it is an error.
    pub fn start(engine: &Engine) -> std::io::Result<EpochTicker> {
        let stop = Arc::new(AtomicBool::new(false));
        let weak = engine.weak();
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("causeway-epoch".into())
            .spawn(move || {
                while !flag.load(Ordering::Relaxed) {
                    std::thread::sleep(EPOCH_TICK);
                    match weak.upgrade() {
                        Some(engine) => engine.increment_epoch(),
                        None => break,
                    }
                }
            })?;
        Ok(EpochTicker {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The engine, the linker every plugin is instantiated through, and the
/// ticker that drives deadlines: built once per process.
pub struct Runtime {
    /// The engine.
    pub engine: Engine,
    /// The linker with the fixed WASI set and the contract's capabilities.
    pub linker: wasmtime::component::Linker<crate::sandbox::StoreState>,
    /// Where compiled components are kept, for the long-running commands.
    pub cache: Option<cache::ArtifactCache>,
    /// The largest plugin file read (`[engine] max-plugin-mb`).
    pub max_plugin_bytes: u64,
    /// What a plugin may hold to be compiled.
    pub compile_limits: CompileLimits,
    /// How its plugins' requests leave the machine: certificates trusted
    /// beside the bundled roots (`ca-file`), the proxy (`[proxy]`).
    pub egress: crate::caps::http::Egress,
    _ticker: EpochTicker,
}

impl Runtime {
    /// Inspects, validates and links the plugin at `path`, compiled through
    /// this runtime's cache when it has one.
    pub fn load_plugin(
        &self,
        path: &std::path::Path,
    ) -> Result<crate::plugin::Plugin, crate::plugin::LoadError> {
        let bytes = self.read_plugin(path)?;
        self.compile_plugin(path, &bytes)
    }

    /// Inspects, validates and links the plugin file `path` already read
    /// (`bytes`), compiled through this runtime's cache when it has one.
    pub fn compile_plugin(
        &self,
        path: &std::path::Path,
        bytes: &[u8],
    ) -> Result<crate::plugin::Plugin, crate::plugin::LoadError> {
        crate::plugin::Plugin::from_bytes(
            &self.engine,
            &self.linker,
            self.cache.as_ref(),
            path,
            bytes,
            self.compile_limits,
        )
    }

    /// The contents of the plugin file at `path`, refused unread when it is
    /// larger than `[engine] max-plugin-mb` allows.
    pub fn read_plugin(&self, path: &std::path::Path) -> Result<Vec<u8>, crate::plugin::LoadError> {
        crate::plugin::read_file(path, self.max_plugin_bytes)
    }

    /// Builds the engine (with the default [`EngineSettings`]), the linker
    /// and starts the epoch ticker.
    pub fn new() -> wasmtime::Result<Runtime> {
        Runtime::with_settings(&EngineSettings::default())
    }

    /// [`Runtime::new`] with the allocator `settings` choose.
    pub fn with_settings(settings: &EngineSettings) -> wasmtime::Result<Runtime> {
        let engine = new_engine(settings)?;
        let linker = crate::caps::linker(&engine)?;
        let ticker = EpochTicker::start(&engine).map_err(|e| {
            wasmtime::Error::msg(format!("cannot start the epoch ticker thread: {e}"))
        })?;
        Ok(Runtime {
            engine,
            linker,
            cache: None,
            max_plugin_bytes: settings.max_plugin_bytes(),
            compile_limits: settings.compile_limits(),
            egress: Default::default(),
            _ticker: ticker,
        })
    }
}
