//! Warm instances (`causeway::warm`, `Installed::call_warm`): a pipeline stage's instance serves its
//! next call, each call with its own deadline; a failure drops it, and
//! another pipeline or configuration never gets it.

#[path = "../benches/common.rs"]
mod common;
use crate::support;

use std::time::Duration;

use causeway::bindings::{Op, Record};
use causeway::grants::Grants;
use causeway::operation::{Answer, Operation};
use causeway::sandbox::{CallContext, CallError};
use common::Bench;
use serde_json::{Value, json};

/// A host with test-hostile, whose calls may take one second.
fn hostile() -> (Bench, causeway::registry::Installed) {
    let bench = Bench::new(None);
    let grants = Grants::parse(
        "[plugins.test-hostile]\nlimits = { call-timeout = \"1s\" }\n",
        std::path::Path::new("grants.toml"),
    )
    .expect("grants");
    let installed = bench.install("test-hostile", &grants);
    (bench, installed)
}

/// One warm call of test-hostile in `mode`.
fn call(
    bench: &Bench,
    installed: &causeway::registry::Installed,
    context: &CallContext,
    mode: &str,
) -> Result<Vec<Record>, CallError> {
    call_on(&bench.runtime.engine, bench, installed, context, mode)
}

/// [`call`] on `engine`, which `installed` was compiled for.
fn call_on(
    engine: &wasmtime::Engine,
    bench: &Bench,
    installed: &causeway::registry::Installed,
    context: &CallContext,
    mode: &str,
) -> Result<Vec<Record>, CallError> {
    let batch = vec![Record {
        stream: "s".into(),
        key: "k".into(),
        op: Op::Upsert,
        data: json!({ "mode": mode }).to_string(),
        source_timestamp: None,
    }];
    let answer =
        bench
            .tokio
            .block_on(installed.call_warm(engine, Operation::Transform(batch), context))?;
    match answer {
        Answer::Records(records) => Ok(records),
        other => panic!("not records: {other:?}"),
    }
}

/// How many calls the instance that answered has served.
fn count(bench: &Bench, installed: &causeway::registry::Installed, context: &CallContext) -> u64 {
    let records = call(bench, installed, context, "count").expect("a benign call");
    let data: Value = serde_json::from_str(&records[0].data).expect("JSON");
    data["calls"].as_u64().expect("a count")
}

#[test]
fn an_instance_serves_the_next_calls_until_one_fails() {
    let (bench, installed) = hostile();
    let context = bench.context(&installed);
    assert_eq!(count(&bench, &installed, &context), 1);
    assert_eq!(count(&bench, &installed, &context), 2);
    assert_eq!(installed.warm.idle(), 1);

    // A trap drops the instance: the next call starts fresh.
    let error = call(&bench, &installed, &context, "panic").unwrap_err();
    assert_eq!(error.kind(), "trap", "{error}");
    assert_eq!(installed.warm.idle(), 0);
    assert_eq!(count(&bench, &installed, &context), 1);

    // So does running out of memory, and a timeout.
    for (mode, kind) in [("memory", "out-of-memory"), ("loop", "timeout")] {
        let error = call(&bench, &installed, &context, mode).unwrap_err();
        assert_eq!(error.kind(), kind, "{mode}: {error}");
        assert_eq!(count(&bench, &installed, &context), 1, "after {mode}");
    }
}

#[test]
fn another_pipeline_or_configuration_gets_its_own_instance() {
    let (bench, installed) = hostile();
    let context = bench.context(&installed);
    let other_pipeline =
        installed.call_context(&json!({}), &bench.writer.handle(), &bench.secrets, "other");
    let other_config = installed.call_context(
        &json!({ "x": 1 }),
        &bench.writer.handle(),
        &bench.secrets,
        "",
    );
    assert_eq!(count(&bench, &installed, &context), 1);
    assert_eq!(count(&bench, &installed, &other_pipeline), 1);
    assert_eq!(count(&bench, &installed, &other_config), 1);
    assert_eq!(count(&bench, &installed, &context), 2);
    assert_eq!(count(&bench, &installed, &other_pipeline), 2);
    assert_eq!(installed.warm.idle(), 3);
}

#[test]
fn each_call_of_a_warm_instance_gets_its_own_deadline() {
    let (bench, installed) = hostile();
    let context = bench.context(&installed);
    assert_eq!(count(&bench, &installed, &context), 1);
    // Longer than a call may take: had the first call's deadline stayed,
    // the second call would be interrupted at once.
    std::thread::sleep(Duration::from_millis(1200));
    assert_eq!(count(&bench, &installed, &context), 2);
    // And the deadline still holds.
    let error = call(&bench, &installed, &context, "loop").unwrap_err();
    assert_eq!(error.kind(), "timeout", "{error}");
}

#[test]
fn a_guest_chatty_on_stderr_still_answers_and_its_panics_are_still_reported() {
    let (bench, installed) = hostile();
    let context = bench.context(&installed);
    // 8 KiB of stderr a call, twice what the host keeps: writing past it
    // once failed the guest's write, and so the call.
    for _ in 0..3 {
        let chatty = call(&bench, &installed, &context, "stderr");
        assert!(chatty.is_ok(), "{chatty:?}");
    }
    assert_eq!(installed.warm.idle(), 1);
    // The warm instance reports its next panic; the report is the end of
    // that call's stderr, where the panic message is, not the chatter of
    // the calls before.
    let error = call(&bench, &installed, &context, "panic").unwrap_err();
    let report = error.to_string();
    assert!(report.contains("panics on purpose"), "{report}");
    assert!(!report.contains("debug line"), "{report}");
    let error = call(&bench, &installed, &context, "stderr-panic").unwrap_err();
    let report = error.to_string();
    assert!(report.contains("panics after its chatter"), "{report}");
    assert!(report.contains("debug line 127"), "{report}");
    assert!(!report.contains("debug line 000"), "{report}");
}

#[test]
fn each_call_of_a_warm_instance_gets_its_own_fuel() {
    let bench = Bench::new(None);
    let fueled = common::Yardstick::counting_fuel();
    let grants = Grants::parse(
        "[plugins.test-hostile]\nlimits = { fuel = 100000 }\n",
        std::path::Path::new("grants.toml"),
    )
    .expect("grants");
    let installed = fueled.install("test-hostile", &grants);
    let context = bench.context(&installed);
    let call = |mode: &str| call_on(&fueled.engine, &bench, &installed, &context, mode);
    // Hundreds of calls in one instance burn far more than one call's
    // fuel: each must start with its own.
    for n in 1..=500u64 {
        let records = call("count").unwrap_or_else(|e| panic!("call {n}: {e}"));
        let data: Value = serde_json::from_str(&records[0].data).expect("JSON");
        assert_eq!(data["calls"].as_u64(), Some(n), "one instance throughout");
    }
    // And a call's fuel still bounds it.
    let error = call("loop").unwrap_err();
    assert_eq!(error.kind(), "resource-limit", "{error}");
    assert!(
        error.to_string().contains("burned its fuel, 100000 units"),
        "{error}"
    );
}
