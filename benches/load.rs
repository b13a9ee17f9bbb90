//! Loading and instantiating: a fresh instance of `map-fullname` (what every
//! call pays first), and getting its compiled component by compiling with
//! Cranelift against loading it from the precompiled-artifact cache.
//!
//! `cargo bench -p causeway --bench load`; results in docs/performance.md.

#[path = "common.rs"]
mod common;
#[path = "../tests/support/mod.rs"]
mod support;

use std::hint::black_box;

use causeway::engine::cache::ArtifactCache;
use causeway::grants::Grants;
use causeway::plugin::digest;
use common::Bench;
use criterion::{Criterion, criterion_group, criterion_main};
use wasmtime::component::Component;

fn load(c: &mut Criterion) {
    let bench = Bench::new(None);
    let runtime = &bench.runtime;
    let bytes = std::fs::read(support::built("map-fullname")).expect("read map-fullname");
    let installed = bench.install("map-fullname", &Grants::default());
    let context = bench.context(&installed);

    c.bench_function(
        "instantiate: fresh store and instance of map-fullname",
        |b| {
            bench.iter_async(b, || async {
                installed
                    .plugin
                    .instantiate(&runtime.engine, &context)
                    .await
                    .expect("instantiate")
            })
        },
    );

    let mut group = c.benchmark_group("component");
    group.sample_size(10);
    group.bench_function("compile map-fullname with Cranelift", |b| {
        b.iter(|| black_box(Component::new(&runtime.engine, &bytes).expect("compile")))
    });
    let cache =
        ArtifactCache::open(&runtime.engine, &bench.dir.path().join("cache")).expect("cache");
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
}

criterion_group!(benches, load);
criterion_main!(benches);
