//! Loading and instantiating: a fresh instance of `map-fullname` (what every
//! call pays first), and getting its compiled component by compiling with
//! Cranelift against loading it from the precompiled-artifact cache.
//!
//! `cargo bench -p causeway --bench load`; results in docs/performance.md.

#[path = "../tests/support/mod.rs"]
mod support;

use std::hint::black_box;
use std::sync::Arc;

use causeway::engine::cache::ArtifactCache;
use causeway::grants::Grants;
use causeway::plugin::{Plugin, digest};
use causeway::registry::Installed;
use causeway::sandbox::Limits;
use criterion::{Criterion, criterion_group, criterion_main};
use wasmtime::component::Component;

fn load(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("a temporary folder");
    let runtime = causeway::engine::Runtime::new().expect("the engine");
    let path = support::built("map-fullname");
    let bytes = std::fs::read(&path).expect("read map-fullname");
    let plugin = Plugin::load(&runtime.engine, &runtime.linker, &path).expect("load");
    let installed = Installed::new(plugin, &Grants::default(), Limits::default());
    let chain = causeway::audit::Chain::open(&dir.path().join("k"), &dir.path().join("h"))
        .expect("the audit chain");
    let writer = causeway::db::Writer::start(&dir.path().join("db"), chain).expect("the database");
    let secrets = Arc::new(causeway::secrets::Secrets::load(None).expect("no secrets"));
    let context = installed.call_context(&serde_json::json!({}), &writer.handle(), &secrets, "");
    let tokio = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");

    c.bench_function(
        "instantiate: fresh store and instance of map-fullname",
        |b| {
            b.iter(|| {
                black_box(
                    tokio
                        .block_on(installed.plugin.instantiate(&runtime.engine, &context))
                        .expect("instantiate"),
                )
            })
        },
    );

    let mut group = c.benchmark_group("component");
    group.sample_size(10);
    group.bench_function("compile map-fullname with Cranelift", |b| {
        b.iter(|| black_box(Component::new(&runtime.engine, &bytes).expect("compile")))
    });
    let cache = ArtifactCache::open(&runtime.engine, &dir.path().join("cache")).expect("cache");
    let digest = digest(&bytes);
    cache
        .component(&runtime.engine, &digest, &bytes, "map-fullname")
        .expect("store in the cache");
    group.bench_function("load map-fullname from the precompiled cache", |b| {
        b.iter(|| {
            let (component, origin) = cache
                .component(&runtime.engine, &digest, &bytes, "map-fullname")
                .expect("load");
            assert_eq!(origin, causeway::engine::cache::Origin::Cached);
            black_box(component)
        })
    });
    group.finish();
    writer.close();
}

criterion_group!(benches, load);
criterion_main!(benches);
