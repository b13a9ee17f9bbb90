//! Transform throughput: `map-fullname` through the host (the production
//! sandbox, typed bindings; a fresh instance per call as the API makes, and a
//! warm one as a pipeline stage reuses) against the same
//! `map_batch` compiled natively, on identical input: records as the host
//! holds them, JSON text inside. Batches of 1, 100 and 1000. Beside them,
//! the boundary alone: the same records through a transform that answers
//! its batch unchanged (`test-echo`, warm), lowered into the guest and
//! lifted back, no mapping in between; and the warm call on an engine
//! without deadline checks (`wasm-warm-no-deadlines`, a yardstick, not a way
//! to run plugins): what the checks cost; in the paired ratios, the warm
//! call on an engine counting fuel (`wasm-warm-fuel`, `[engine] fuel =
//! true`): what counting costs. Last, the ratios to native paired
//! round by round (`common::paired`), which the machine's drift between
//! criterion's rows does not move.
//!
//! `cargo bench -p causeway --bench transform` (`-- paired`: the ratios
//! alone); results in docs/performance.md.

#[path = "common.rs"]
mod common;
#[path = "../tests/support/mod.rs"]
mod support;

use std::hint::black_box;
use std::time::Instant;

use causeway::grants::Grants;
use causeway::operation::{Answer, Operation};
use causeway::registry::Installed;
use causeway::sandbox::CallContext;
use common::{Bench, as_sdk, contacts};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use wasmtime::Engine;

fn transform(c: &mut Criterion) {
    let bench = Bench::new(None);
    let installed = bench.install("map-fullname", &Grants::default());
    let context = bench.context(&installed);
    let echo = bench.install("test-echo", &Grants::default());
    let echo_context = bench.context(&echo);
    // The same plugin on an engine without deadline checks: what they cost.
    let unchecked = common::Yardstick::without_deadlines();
    let unchecked_installed = unchecked.install("map-fullname", &Grants::default());
    let unchecked_context = bench.context(&unchecked_installed);
    // And on an engine counting fuel (`[engine] fuel = true`): what that costs.
    let fueled = common::Yardstick::counting_fuel();
    let fueled_installed = fueled.install("map-fullname", &Grants::default());
    let fueled_context = bench.context(&fueled_installed);
    let (runtime, tokio) = (&bench.runtime, &bench.tokio);

    let mut group = c.benchmark_group("transform");
    for size in [1usize, 100, 1000] {
        let input = contacts(size);
        let sdk_input = as_sdk(&input);
        // Every side produces the same records.
        let native = map_fullname::map_batch(sdk_input.clone(), "subscribers").expect("native");
        let mapped = |engine: &Engine, installed: &Installed, context: &CallContext| match tokio
            .block_on(installed.plugin.call_typed(
                engine,
                Operation::Transform(input.clone()),
                context,
            ))
            .expect("wasm")
        {
            Answer::Records(records) => records,
            _ => panic!("not records"),
        };
        let wasm = mapped(&runtime.engine, &installed, &context);
        assert_eq!(
            mapped(&unchecked.engine, &unchecked_installed, &unchecked_context),
            wasm
        );
        assert_eq!(
            mapped(&fueled.engine, &fueled_installed, &fueled_context),
            wasm
        );
        assert_eq!(native.len(), wasm.len());
        assert!(
            native
                .iter()
                .zip(&wasm)
                .all(|(n, w)| n.data == w.data && n.key == w.key)
        );

        group.throughput(Throughput::Elements(size as u64));
        group.bench_with_input(BenchmarkId::new("native", size), &sdk_input, |b, batch| {
            b.iter(|| black_box(map_fullname::map_batch(batch.clone(), "subscribers")))
        });
        group.bench_with_input(BenchmarkId::new("wasm", size), &input, |b, batch| {
            bench.iter_async(b, || {
                installed.plugin.call_typed(
                    &runtime.engine,
                    Operation::Transform(batch.clone()),
                    &context,
                )
            })
        });
        group.bench_with_input(BenchmarkId::new("wasm-warm", size), &input, |b, batch| {
            bench.iter_async(b, || {
                installed.call_warm(
                    &runtime.engine,
                    Operation::Transform(batch.clone()),
                    &context,
                )
            })
        });
        group.bench_with_input(
            BenchmarkId::new("wasm-warm-no-deadlines", size),
            &input,
            |b, batch| {
                bench.iter_async(b, || {
                    unchecked_installed.call_warm(
                        &unchecked.engine,
                        Operation::Transform(batch.clone()),
                        &unchecked_context,
                    )
                })
            },
        );
        group.bench_with_input(BenchmarkId::new("boundary", size), &input, |b, batch| {
            bench.iter_async(b, || async {
                let answer = echo
                    .call_warm(
                        &runtime.engine,
                        Operation::Transform(batch.clone()),
                        &echo_context,
                    )
                    .await;
                assert!(matches!(&answer, Ok(Answer::Records(r)) if r.len() == batch.len()));
                answer
            })
        });
    }
    group.finish();

    // The ratio the batch-1000 target is about (and batch 1's, for scale),
    // paired (common::paired): each round times a block of native calls and
    // a block of warm wasm calls (or of the boundary alone) back to back, on
    // the same records.
    if !common::measuring() {
        return;
    }
    for (size, block) in [(1usize, 20_000usize), (1000, 50)] {
        let input = contacts(size);
        let sdk_input = as_sdk(&input);
        let native = || {
            let started = Instant::now();
            for _ in 0..block {
                black_box(
                    map_fullname::map_batch(sdk_input.clone(), "subscribers").expect("native"),
                );
            }
            started.elapsed()
        };
        let warm = |engine: &Engine, installed: &Installed, context: &CallContext| {
            tokio.block_on(async {
                let started = Instant::now();
                for _ in 0..block {
                    let answer = installed
                        .call_warm(engine, Operation::Transform(input.clone()), context)
                        .await;
                    assert!(matches!(&answer, Ok(Answer::Records(r)) if r.len() == size));
                }
                started.elapsed()
            })
        };
        for (row, engine, plugin, context) in [
            ("wasm-warm", &runtime.engine, &installed, &context),
            (
                "wasm-warm-no-deadlines",
                &unchecked.engine,
                &unchecked_installed,
                &unchecked_context,
            ),
            (
                "wasm-warm-fuel",
                &fueled.engine,
                &fueled_installed,
                &fueled_context,
            ),
            ("boundary", &runtime.engine, &echo, &echo_context),
        ] {
            let ratio = common::paired(PAIRED_ROUNDS, native, || warm(engine, plugin, context));
            common::print_ratio(
                &format!(
                    "transform/{row} ÷ native, batches of {size}, paired ({PAIRED_ROUNDS} rounds of {block} calls)"
                ),
                &ratio,
            );
        }
    }
}

/// Rounds of the paired measurements.
const PAIRED_ROUNDS: usize = 30;

criterion_group!(benches, transform);
criterion_main!(benches);
