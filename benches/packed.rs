//! An experiment for the contract decision in docs/performance.md §1: what
//! `map-fullname`'s mapping costs when its batch crosses the boundary as one
//! buffer instead of a `list<record>` of strings. `plugins/test/packed` runs
//! map-fullname's own contact code behind that contract (its WIT is its own,
//! `causeway-experiment:packed`; the host does not load it as a plugin).
//! Here it runs in a warm instance in the production sandbox (the engine,
//! linker and store every plugin gets), the host encoding the batch from
//! its records and decoding the answer into records, against
//! `map_fullname::map_batch` compiled natively on the same records. Beside
//! them, the mapping alone: the experiment's own `map` on a batch already in
//! the guest (`map-kept`, no boundary but the call) against the same `map`
//! compiled natively: what the sandbox costs this code, with no contract in
//! between.
//!
//! `cargo bench -p causeway --bench packed`; results in docs/performance.md.

#[path = "common.rs"]
mod common;
#[path = "../tests/support/mod.rs"]
mod support;

use std::hint::black_box;

use causeway::bindings::{Op, Record};
use causeway::grants::Grants;
use causeway::sandbox::Limits;
use common::{Bench, as_sdk, contacts};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use test_packed::codec::{self, Reader, Writer};

mod experiment {
    wasmtime::component::bindgen!({
        world: "packed-transform",
        path: "../plugins/test/packed/wit",
        exports: { default: async },
    });
}

/// The batch as the host would send it: one buffer.
fn encode(batch: &[Record]) -> Vec<u8> {
    let bytes = batch
        .iter()
        .map(|r| r.stream.len() + r.key.len() + r.data.len() + 22)
        .sum();
    let mut out = Writer::with_capacity(bytes);
    for r in batch {
        out.push(codec::View {
            stream: &r.stream,
            key: &r.key,
            delete: r.op == Op::Delete,
            source_timestamp: r.source_timestamp,
            data: &r.data,
        });
    }
    out.finish()
}

/// The answer as the host would hold it: records.
fn decode(buf: &[u8]) -> Vec<Record> {
    let mut reader = Reader::new(buf).expect("an encoded batch");
    let mut out = Vec::new();
    while let Some(r) = reader.next_record().expect("an encoded record") {
        out.push(Record {
            stream: r.stream.to_owned(),
            key: r.key.to_owned(),
            op: if r.delete { Op::Delete } else { Op::Upsert },
            data: r.data.to_owned(),
            source_timestamp: r.source_timestamp,
        });
    }
    out
}

fn packed(c: &mut Criterion) {
    let bench = Bench::new(None);
    // Any installed plugin lends the production store its identity and limits.
    let echo = bench.install("test-echo", &Grants::default());
    let context = bench.context(&echo);
    let component = wasmtime::component::Component::from_file(
        &bench.runtime.engine,
        support::built("test-packed"),
    )
    .expect("compile test-packed");
    let mut store =
        causeway::sandbox::new_store(&bench.runtime.engine, echo.plugin.info.clone(), &context);
    let instance = bench
        .tokio
        .block_on(experiment::PackedTransform::instantiate_async(
            &mut store,
            &component,
            &bench.runtime.linker,
        ))
        .expect("instantiate test-packed");
    let store = tokio::sync::Mutex::new(store);
    let limits = Limits::default();
    let call = |batch: &[Record]| {
        let (store, instance, limits) = (&store, &instance, &limits);
        let buf = encode(batch);
        async move {
            let mut store = store.lock().await;
            // As a warm instance readies its store for each call.
            store.data_mut().begin_call(limits);
            let answer = instance
                .causeway_experiment_packed_transform()
                .call_transform(&mut *store, &buf)
                .await
                .expect("the call")
                .expect("the mapping");
            decode(&answer)
        }
    };

    let mut group = c.benchmark_group("packed");
    for size in [1usize, 100, 1000] {
        let input = contacts(size);
        let sdk_input = as_sdk(&input);
        // Both sides produce the same records.
        let native = map_fullname::map_batch(sdk_input.clone(), "subscribers").expect("native");
        let wasm = bench.tokio.block_on(call(&input));
        assert_eq!(native.len(), wasm.len());
        assert!(native.iter().zip(&wasm).all(|(n, w)| n.stream == w.stream
            && n.key == w.key
            && n.data == w.data
            && n.source_timestamp == w.source_timestamp));

        group.throughput(Throughput::Elements(size as u64));
        group.bench_with_input(BenchmarkId::new("native", size), &sdk_input, |b, batch| {
            b.iter(|| black_box(map_fullname::map_batch(batch.clone(), "subscribers")))
        });
        group.bench_with_input(BenchmarkId::new("one-buffer", size), &input, |b, batch| {
            bench.iter_async(b, || call(batch))
        });

        let encoded = encode(&input);
        let kept = bench.tokio.block_on(async {
            let mut store = store.lock().await;
            store.data_mut().begin_call(&limits);
            let exports = instance.causeway_experiment_packed_transform();
            exports
                .call_keep(&mut *store, &encoded)
                .await
                .expect("keep");
            exports.call_map_kept(&mut *store).await.expect("map-kept")
        });
        assert_eq!(kept, Ok(native.len() as u32));
        assert_eq!(
            decode(&test_packed::map(&encoded).expect("native map")),
            wasm
        );
        group.bench_with_input(
            BenchmarkId::new("mapping-native", size),
            &encoded,
            |b, batch| b.iter(|| black_box(test_packed::map(batch))),
        );
        group.bench_function(BenchmarkId::new("mapping-wasm", size), |b| {
            bench.iter_async(b, || async {
                let mut store = store.lock().await;
                store.data_mut().begin_call(&limits);
                instance
                    .causeway_experiment_packed_transform()
                    .call_map_kept(&mut *store)
                    .await
            })
        });
    }
    group.finish();
}

criterion_group!(benches, packed);
criterion_main!(benches);
