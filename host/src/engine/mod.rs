//! The wasmtime engine every plugin is compiled for, the epoch ticker that
//! drives call deadlines, and the precompiled-artifact [`cache`].

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use wasmtime::{Config, Engine};

pub mod cache;

/// How often the epoch advances: the granularity of call deadlines, and how
/// often a CPU-bound guest yields to the async runtime.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Builds the engine: component model, epoch interruption for deadlines.
pub fn new_engine() -> wasmtime::Result<Engine> {
    let mut config = Config::new();
    config.wasm_component_model(true);
    config.epoch_interruption(true);
    Engine::new(&config)
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
    _ticker: EpochTicker,
}

impl Runtime {
    /// Inspects, validates and links the plugin at `path`, compiled through
    /// this runtime's cache when it has one.
    pub fn load_plugin(
        &self,
        path: &std::path::Path,
    ) -> Result<crate::plugin::Plugin, crate::plugin::LoadError> {
        let bytes = std::fs::read(path).map_err(|e| crate::plugin::LoadError {
            file: path.to_path_buf(),
            problem: e.into(),
        })?;
        crate::plugin::Plugin::from_bytes(
            &self.engine,
            &self.linker,
            self.cache.as_ref(),
            path,
            &bytes,
        )
    }

    /// Builds the engine, the linker and starts the epoch ticker.
    pub fn new() -> wasmtime::Result<Runtime> {
        let engine = new_engine()?;
        let linker = crate::caps::linker(&engine)?;
        let ticker = EpochTicker::start(&engine).map_err(|e| {
            wasmtime::Error::msg(format!("cannot start the epoch ticker thread: {e}"))
        })?;
        Ok(Runtime {
            engine,
            linker,
            cache: None,
            _ticker: ticker,
        })
    }
}
