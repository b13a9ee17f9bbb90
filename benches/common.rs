//! What the in-process benchmarks share: an engine, a database with its
//! audit chain and (optionally) a secrets file in a temporary folder, and
//! plugins loaded and given call contexts as the host does.

// Each benchmark uses part of this module.
#![allow(dead_code)]

use std::future::Future;
use std::hint::black_box;
use std::sync::Arc;
use std::time::Instant;

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
        let plugin = Plugin::load(
            &self.runtime.engine,
            &self.runtime.linker,
            &super::support::built(crate_name),
        )
        .unwrap_or_else(|e| panic!("load {crate_name}: {e}"));
        Installed::new(plugin, grants, Limits::default())
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
