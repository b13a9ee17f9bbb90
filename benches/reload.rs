//! Hot reload latency: a new version of a plugin renamed into the plugins
//! folder of a running host → the first call answered by it. The real
//! binary, the real watcher, two builds of `test-version` alternating.
//!
//! `cargo bench --bench reload`; results in docs/performance.md.

#[path = "../tests/support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use support::{Api, RunningHost, Scratch};

const A: &str = support::TEST_VERSION_BUILD;
const B: &str = "build-bbbb";
const FILE: &str = "test-version.wasm";

fn answered_by(api: &Api) -> Option<String> {
    let body = r#"{"operation":"transform","input":[{"stream":"s","key":"k","data":{}}]}"#;
    let (status, answer) = api
        .try_call("POST", "/api/plugins/test-version/invoke", Some(body))
        .ok()?;
    // Refused is not "not swapped in yet": waiting would hide it.
    assert!(status != 401 && status != 403, "{status}: {answer}");
    if status != 200 {
        return None;
    }
    let answer: serde_json::Value = serde_json::from_str(&answer).ok()?;
    answer[0]["data"]["build"].as_str().map(str::to_string)
}

fn reload(c: &mut Criterion) {
    let scratch = Scratch::new();
    std::fs::write(scratch.plugins().join(FILE), support::test_version(A)).expect("install");
    let host = RunningHost::start(scratch.causeway().args(["run", "--listen", "127.0.0.1:0"]));
    let mut turn: u32 = 0;
    // A never-seen build each time: the watcher, a compile, the swap, a call.
    c.bench_function("reload: atomic rename to new version answering", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                turn += 1;
                let marker = format!("b-{turn:08}");
                total += swap_in(&scratch, &host, &marker, &support::test_version(&marker));
            }
            total
        })
    });
    // Two builds alternating: after the first round both come from the
    // precompiled cache, as a rollback does.
    let builds = [(B, support::test_version(B)), (A, support::test_version(A))];
    c.bench_function("reload: rename to a version seen before (cached)", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let (marker, bytes) = &builds[turn as usize % 2];
                turn += 1;
                total += swap_in(&scratch, &host, marker, bytes);
            }
            total
        })
    });
}

/// Renames `bytes` into place and waits for `marker` to answer: the time
/// from the rename to that answer.
fn swap_in(scratch: &Scratch, host: &RunningHost, marker: &str, bytes: &[u8]) -> Duration {
    let partial = scratch.plugins().join(format!(".{FILE}.partial"));
    std::fs::write(&partial, bytes).expect("write");
    // The operator API wants the token (read once, outside the timing).
    let api = host.api_client();
    let started = Instant::now();
    std::fs::rename(&partial, scratch.plugins().join(FILE)).expect("rename");
    let deadline = started + Duration::from_secs(30);
    while answered_by(&api).as_deref() != Some(marker) {
        assert!(Instant::now() < deadline, "the new version never answered");
    }
    started.elapsed()
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20).measurement_time(Duration::from_secs(20));
    targets = reload
}
criterion_main!(benches);
