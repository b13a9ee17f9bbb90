//! What the in-process benchmarks share: an engine, a database with its
//! audit chain and (optionally) a secrets file in a temporary folder, and
//! plugins loaded and given call contexts as the host does; and the paired
//! measurement of one side against another.

// Each benchmark uses part of this module.
#![allow(dead_code)]

use std::future::Future;
use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use causeway::bindings::{Op, Record};
use causeway::grants::Grants;
use causeway::plugin::Plugin;
use causeway::registry::Installed;
use causeway::sandbox::{CallContext, Limits};
use causeway::secrets::Secrets;

/// One benchmark's host parts.
pub struct Bench {
    /// Holds the database, the audit files and the secrets file.
    pub dir: tempfile::TempDir,
    /// The engine and linker.
    pub runtime: causeway::engine::Runtime,
    /// The database's writer (audit events land here).
    pub writer: causeway::db::Writer,
    /// The secrets the plugins' credentials resolve from.
    pub secrets: Arc<Secrets>,
    /// Drives the async calls (one worker for what they spawn).
    pub tokio: tokio::runtime::Runtime,
}

impl Bench {
    /// Fresh parts; `secrets` is the text of a secrets file, if any.
    pub fn new(secrets: Option<&str>) -> Bench {
        let dir = tempfile::tempdir().expect("a temporary folder");
        let runtime = causeway::engine::Runtime::new().expect("the engine");
        let chain = causeway::audit::Chain::open(&dir.path().join("k"), &dir.path().join("h"))
            .expect("the audit chain");
        let writer =
            causeway::db::Writer::start(&dir.path().join("db"), chain).expect("the database");
        let secrets = match secrets {
            None => Secrets::load(None),
            Some(text) => {
                use std::os::unix::fs::PermissionsExt;
                let file = dir.path().join("secrets.toml");
                std::fs::write(&file, text).expect("write the secrets");
                std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600))
                    .expect("chmod 600");
                Secrets::load(Some(&file))
            }
        }
        .expect("the secrets");
        let tokio = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("a runtime");
        Bench {
            dir,
            runtime,
            writer,
            secrets: Arc::new(secrets),
            tokio,
        }
    }

    /// The built plugin `crate_name`, compiled and evaluated against `grants`.
    pub fn install(&self, crate_name: &str, grants: &Grants) -> Installed {
        install(
            &self.runtime.engine,
            &self.runtime.linker,
            crate_name,
            grants,
        )
    }

    /// A call context for `installed` with an empty configuration.
    pub fn context(&self, installed: &Installed) -> CallContext {
        installed.call_context(
            &serde_json::json!({}),
            &self.writer.handle(),
            &self.secrets,
            "",
        )
    }

    /// Times `routine` as the host runs it: awaited inside the async
    /// runtime, as a pipeline stage or an API handler awaits a call. One
    /// `block_on` per sample, not per call: entering the runtime from
    /// outside is not part of a call (the http benchmark does the same).
    pub fn iter_async<T, F: Future<Output = T>>(
        &self,
        b: &mut criterion::Bencher,
        mut routine: impl FnMut() -> F,
    ) {
        b.iter_custom(|iters| {
            self.tokio.block_on(async {
                let started = Instant::now();
                for _ in 0..iters {
                    black_box(routine().await);
                }
                started.elapsed()
            })
        })
    }
}

/// The production engine with one setting changed, and a linker for it: a
/// yardstick for what that setting costs the guest's code
/// (docs/performance.md §1).
pub struct Yardstick {
    pub engine: wasmtime::Engine,
    pub linker: wasmtime::component::Linker<causeway::sandbox::StoreState>,
}

impl Yardstick {
    /// Without deadline checks (no epoch interruption: nothing could stop
    /// a guest that never returns). Not a way to run plugins.
    pub fn without_deadlines() -> Yardstick {
        let mut config = causeway::engine::config(&Default::default());
        config.epoch_interruption(false);
        Yardstick::of(config)
    }

    /// Counting fuel, as `[engine] fuel = true` makes it.
    pub fn counting_fuel() -> Yardstick {
        Yardstick::of(causeway::engine::config(
            &causeway::engine::EngineSettings {
                fuel: true,
                ..Default::default()
            },
        ))
    }

    fn of(config: wasmtime::Config) -> Yardstick {
        let engine = wasmtime::Engine::new(&config).expect("the yardstick's engine");
        let linker = causeway::caps::linker(&engine).expect("its linker");
        Yardstick { engine, linker }
    }

    /// The built plugin `crate_name`, compiled for this engine.
    pub fn install(&self, crate_name: &str, grants: &Grants) -> Installed {
        install(&self.engine, &self.linker, crate_name, grants)
    }
}

/// The built plugin `crate_name`, compiled for `engine` and evaluated
/// against `grants`.
fn install(
    engine: &wasmtime::Engine,
    linker: &wasmtime::component::Linker<causeway::sandbox::StoreState>,
    crate_name: &str,
    grants: &Grants,
) -> Installed {
    let path = super::support::built(crate_name);
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("read {crate_name}: {e}"));
    let plugin = Plugin::from_bytes(engine, linker, None, &path, &bytes, Default::default())
        .unwrap_or_else(|e| panic!("load {crate_name}: {e}"));
    Installed::new(plugin, grants, Limits::default(), &Default::default())
}

/// `n` CRM contacts as the host holds them, the input of the transform benchmarks.
pub fn contacts(n: usize) -> Vec<Record> {
    (0..n)
        .map(|i| Record {
            stream: "contacts".into(),
            key: format!("c-{i}"),
            op: Op::Upsert,
            data: serde_json::json!({
                "firstName": format!("Ada{i}"),
                "lastName": "Lovelace",
                "email": format!("ada{i}@example.com"),
                "company": "Analytical Engines",
            })
            .to_string(),
            source_timestamp: Some(1_700_000_000_000 + i as i64),
        })
        .collect()
}

/// The same records as the SDK types the plugin's code receives.
pub fn as_sdk(records: &[Record]) -> Vec<causeway_sdk::Record> {
    records
        .iter()
        .map(|r| causeway_sdk::Record {
            stream: r.stream.clone(),
            key: r.key.clone(),
            op: match r.op {
                Op::Upsert => causeway_sdk::Op::Upsert,
                Op::Delete => causeway_sdk::Op::Delete,
            },
            data: r.data.clone(),
            source_timestamp: r.source_timestamp,
        })
        .collect()
}

/// The quartiles and median of a paired measurement's per-round ratios.
pub struct Ratio {
    pub q1: f64,
    pub median: f64,
    pub q3: f64,
}

/// Whether the benchmark measures (`cargo bench`), rather than running each
/// row once to check it works (`cargo test --benches`).
pub fn measuring() -> bool {
    !std::env::args().any(|arg| arg == "--test")
}

/// Compares `candidate` with `base` in `rounds` rounds, each timing one
/// block of each back to back (the order alternating round by round): the
/// ratios candidate / base. Criterion measures its rows one after the
/// other, seconds apart, and on a shared VM the load drifts more in between
/// than a few percent; a round's two blocks see the same machine. Each
/// closure runs and times one block itself, so it can leave out its set-up.
pub fn paired(
    rounds: usize,
    mut base: impl FnMut() -> Duration,
    mut candidate: impl FnMut() -> Duration,
) -> Ratio {
    let mut ratios: Vec<f64> = (0..rounds)
        .map(|round| {
            let (b, c) = if round % 2 == 0 {
                let b = base();
                (b, candidate())
            } else {
                let c = candidate();
                (base(), c)
            };
            c.as_secs_f64() / b.as_secs_f64()
        })
        .collect();
    ratios.sort_by(f64::total_cmp);
    let at = |q: f64| ratios[((ratios.len() - 1) as f64 * q).round() as usize];
    Ratio {
        q1: at(0.25),
        median: at(0.5),
        q3: at(0.75),
    }
}

/// Prints a paired ratio under criterion's rows, in their layout.
pub fn print_ratio(id: &str, ratio: &Ratio) {
    println!(
        "{id}\n{:24}ratio:  [{:.3} {:.3} {:.3}]  (quartile, median, quartile)",
        "", ratio.q1, ratio.median, ratio.q3
    );
}
