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
//! between. Each wasm row runs twice: in the production engine and in one
//! without deadline checks (`-no-deadlines`, a yardstick, not a way to run
//! plugins), to tell what those checks cost from what the rest of the
//! sandbox does. Last, the ratios at 1000 records paired round by round
//! (`common::paired`).
//!
//! `cargo bench -p causeway --bench packed`; results in docs/performance.md.

#[path = "common.rs"]
mod common;
#[path = "../tests/support/mod.rs"]
mod support;

use std::hint::black_box;
use std::time::{Duration, Instant};

use causeway::bindings::{Op, Record};
use causeway::grants::Grants;
use causeway::registry::Installed;
use causeway::sandbox::{CallContext, Limits, StoreState};
use common::{Bench, as_sdk, contacts};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use experiment::PackedTransform;
use test_packed::codec::{self, Reader, Writer};
use wasmtime::Engine;
use wasmtime::component::{Component, Linker};

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

/// `test-packed` in a warm instance in the production sandbox of `engine`.
struct Guest {
    store: tokio::sync::Mutex<wasmtime::Store<StoreState>>,
    instance: PackedTransform,
    limits: Limits,
}

impl Guest {
    fn new(
        bench: &Bench,
        engine: &Engine,
        linker: &Linker<StoreState>,
        identity: &Installed,
        context: &CallContext,
    ) -> Guest {
        let component = Component::from_file(engine, support::built("test-packed"))
            .expect("compile test-packed");
        let mut store = causeway::sandbox::new_store(engine, identity.plugin.info.clone(), context);
        let instance = bench
            .tokio
            .block_on(PackedTransform::instantiate_async(
                &mut store, &component, linker,
            ))
            .expect("instantiate test-packed");
        Guest {
            store: tokio::sync::Mutex::new(store),
            instance,
            limits: Limits::default(),
        }
    }

    /// What a host would do with this contract: encode the batch, call, and
    /// decode the answer into records.
    async fn transform(&self, batch: &[Record]) -> Vec<Record> {
        let buf = encode(batch);
        let mut store = self.store.lock().await;
        // As a warm instance readies its store for each call.
        store.data_mut().begin_call(&self.limits, None);
        let answer = self
            .instance
            .causeway_experiment_packed_transform()
            .call_transform(&mut *store, &buf)
            .await
            .expect("the call")
            .expect("the mapping");
        decode(&answer)
    }

    /// Hands the guest an encoded batch for `map_kept`.
    async fn keep(&self, encoded: &[u8]) {
        let mut store = self.store.lock().await;
        store.data_mut().begin_call(&self.limits, None);
        self.instance
            .causeway_experiment_packed_transform()
            .call_keep(&mut *store, encoded)
            .await
            .expect("keep");
    }

    /// The mapping alone, on the kept batch: how many records came out.
    async fn map_kept(&self) -> Result<u32, String> {
        let mut store = self.store.lock().await;
        store.data_mut().begin_call(&self.limits, None);
        self.instance
            .causeway_experiment_packed_transform()
            .call_map_kept(&mut *store)
            .await
            .expect("map-kept")
    }
}

fn packed(c: &mut Criterion) {
    let bench = Bench::new(None);
    // Any installed plugin lends the production store its identity and limits.
    let echo = bench.install("test-echo", &Grants::default());
    let context = bench.context(&echo);
    let checked = Guest::new(
        &bench,
        &bench.runtime.engine,
        &bench.runtime.linker,
        &echo,
        &context,
    );
    let unchecked_engine = common::Yardstick::without_deadlines();
    let unchecked = Guest::new(
        &bench,
        &unchecked_engine.engine,
        &unchecked_engine.linker,
        &echo,
        &context,
    );
    let guests = [("", &checked), ("-no-deadlines", &unchecked)];

    let mut group = c.benchmark_group("packed");
    for size in [1usize, 100, 1000] {
        let input = contacts(size);
        let sdk_input = as_sdk(&input);
        let encoded = encode(&input);
        // Every side produces the same records.
        let native = map_fullname::map_batch(sdk_input.clone(), "subscribers").expect("native");
        let mapped_natively = decode(&test_packed::map(&encoded).expect("native map"));
        assert_eq!(native.len(), mapped_natively.len());
        assert!(
            native
                .iter()
                .zip(&mapped_natively)
                .all(|(n, w)| n.stream == w.stream
                    && n.key == w.key
                    && n.data == w.data
                    && n.source_timestamp == w.source_timestamp)
        );
        for (_, guest) in guests {
            assert_eq!(
                bench.tokio.block_on(guest.transform(&input)),
                mapped_natively
            );
            bench.tokio.block_on(guest.keep(&encoded));
            assert_eq!(
                bench.tokio.block_on(guest.map_kept()),
                Ok(native.len() as u32)
            );
        }

        group.throughput(Throughput::Elements(size as u64));
        group.bench_with_input(BenchmarkId::new("native", size), &sdk_input, |b, batch| {
            b.iter(|| black_box(map_fullname::map_batch(batch.clone(), "subscribers")))
        });
        for (suffix, guest) in guests {
            group.bench_with_input(
                BenchmarkId::new(format!("one-buffer{suffix}"), size),
                &input,
                |b, batch| bench.iter_async(b, || guest.transform(batch)),
            );
        }
        group.bench_with_input(
            BenchmarkId::new("mapping-native", size),
            &encoded,
            |b, batch| b.iter(|| black_box(test_packed::map(batch))),
        );
        for (suffix, guest) in guests {
            // Each guest keeps this size's batch until the next size's.
            group.bench_function(
                BenchmarkId::new(format!("mapping-wasm{suffix}"), size),
                |b| bench.iter_async(b, || guest.map_kept()),
            );
        }
    }
    group.finish();

    if !common::measuring() {
        return;
    }
    // At 1000 records, each wasm side against its native counterpart, paired.
    let input = contacts(1000);
    let sdk_input = as_sdk(&input);
    let encoded = encode(&input);
    let block = 50;
    let label = |row: &str, base: &str| {
        format!(
            "packed/{row} ÷ {base}, batches of 1000, paired ({PAIRED_ROUNDS} rounds of {block} calls)"
        )
    };
    for (suffix, guest) in guests {
        bench.tokio.block_on(guest.keep(&encoded));
        let ratio = common::paired(
            PAIRED_ROUNDS,
            || {
                time(block, || {
                    map_fullname::map_batch(sdk_input.clone(), "subscribers")
                })
            },
            || time_async(&bench, block, || guest.transform(&input)),
        );
        common::print_ratio(&label(&format!("one-buffer{suffix}"), "native"), &ratio);
        let ratio = common::paired(
            PAIRED_ROUNDS,
            || time(block, || test_packed::map(&encoded)),
            || time_async(&bench, block, || guest.map_kept()),
        );
        common::print_ratio(
            &label(&format!("mapping-wasm{suffix}"), "mapping-native"),
            &ratio,
        );
    }
}

/// How long `n` calls of `call` take.
fn time<T>(n: usize, mut call: impl FnMut() -> T) -> Duration {
    let started = Instant::now();
    for _ in 0..n {
        black_box(call());
    }
    started.elapsed()
}

/// How long `n` calls of `call` take, awaited inside the runtime.
fn time_async<F: Future>(bench: &Bench, n: usize, mut call: impl FnMut() -> F) -> Duration {
    bench.tokio.block_on(async {
        let started = Instant::now();
        for _ in 0..n {
            black_box(call().await);
        }
        started.elapsed()
    })
}

/// Rounds of the paired measurements.
const PAIRED_ROUNDS: usize = 30;

criterion_group!(benches, packed);
criterion_main!(benches);
