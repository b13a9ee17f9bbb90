//! Hostile plugins against the real host: each misbehaviour fails with its
//! own error kind within its bound, the host stays up, a well-behaved plugin
//! keeps answering, and the hostile plugin answers its next, benign call.

use crate::support;

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::{RunningHost, Scratch, try_http, wait_until};

fn start() -> (Scratch, RunningHost) {
    start_with(r#"memory-mb = 32, call-timeout = "1s""#, "")
}

/// A host running the hostile plugin with `limits` in its grant and
/// `causeway.toml` holding `config`.
fn start_with(limits: &str, config: &str) -> (Scratch, RunningHost) {
    let scratch = Scratch::new();
    scratch.install("test-hostile", "hostile.wasm");
    scratch.install("map-fullname", "map-fullname.wasm");
    scratch.grants(&format!(
        "[plugins.test-hostile]\nlimits = {{ {limits} }}\n"
    ));
    std::fs::write(scratch.path().join("causeway.toml"), config).unwrap();
    let host = RunningHost::start(scratch.causeway().args(["run", "--listen", "127.0.0.1:0"]));
    (scratch, host)
}

/// One call of the hostile plugin: status, body as JSON, and how long it took.
fn provoke(host: &RunningHost, mode: &str) -> (u16, Value, Duration) {
    provoke_with(host, json!({ "mode": mode }))
}

/// Starts a looping call on its own thread. The probes a test sends
/// meanwhile may hold the slot when the loop asks for it: it asks again
/// until it holds the slot itself.
fn spawn_loop(
    host: &std::sync::Arc<RunningHost>,
) -> std::thread::JoinHandle<(u16, Value, Duration)> {
    let host = host.clone();
    std::thread::spawn(move || {
        wait_until(
            "the looping call holding the slot",
            Duration::from_secs(30),
            || {
                let answer = provoke(&host, "loop");
                (answer.0 != 503).then_some(answer)
            },
        )
    })
}

/// [`provoke`] with the whole record's `data`.
fn provoke_with(host: &RunningHost, data: Value) -> (u16, Value, Duration) {
    let body = json!({
        "operation": "transform",
        "input": [{"stream": "s", "key": "k", "data": data}],
    })
    .to_string();
    let started = Instant::now();
    let (status, answer) = host
        .try_api("POST", "/api/plugins/test-hostile/invoke", Some(&body))
        .unwrap();
    (
        status,
        serde_json::from_str(&answer).unwrap_or(Value::String(answer)),
        started.elapsed(),
    )
}

fn benign_answers(host: &RunningHost) {
    let (status, answer, _) = provoke(host, "none");
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer[0]["data"]["mode"], "none");
}

fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap()
        .split_whitespace()
        .collect();
    // utime and stime: fields 14 and 15 of stat, 12 and 13 after the name.
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

/// One call of the well-behaved map-fullname; asserts it answered, within
/// a bound however busy its neighbour is.
fn neighbour_answers_promptly(host: &RunningHost) {
    let body = json!({
        "operation": "transform",
        "input": [{"stream": "c", "key": "1", "data": {"firstName": "Ada", "lastName": "L", "email": "a@x"}}],
    })
    .to_string();
    let started = Instant::now();
    let (status, answer) = host
        .try_api("POST", "/api/plugins/map-fullname/invoke", Some(&body))
        .unwrap();
    assert_eq!(status, 200, "{answer}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "a neighbour waited {:?}",
        started.elapsed()
    );
}

#[test]
fn each_hostile_plugin_fails_with_its_own_kind_within_its_bound() {
    let (_scratch, host) = start();
    let host = std::sync::Arc::new(host);
    for (mode, status, kind) in [
        ("loop", 504, "timeout"),
        ("host-calls", 504, "timeout"),
        ("memory", 500, "out-of-memory"),
        ("huge-output", 500, "out-of-memory"),
        ("panic", 500, "trap"),
        ("stack", 500, "trap"),
        ("resources", 500, "resource-limit"),
    ] {
        let hostile = {
            let host = host.clone();
            std::thread::spawn(move || provoke(&host, mode))
        };
        // Called while the hostile call runs: it is not held up by it.
        neighbour_answers_promptly(&host);
        let (got, answer, took) = hostile.join().unwrap();
        assert_eq!(
            (got, answer["error"].as_str()),
            (status, Some(kind)),
            "{mode}: {answer}"
        );
        assert!(took < Duration::from_secs(5), "{mode} took {took:?}");
        assert!(
            answer["message"]
                .as_str()
                .unwrap()
                .contains("test-hostile@0.1.0"),
            "{mode}: the error names the plugin and version: {answer}"
        );
        benign_answers(&host);
    }
    let (_, answer, _) = provoke(&host, "panic");
    let message = answer["message"].as_str().unwrap();
    assert!(message.contains("panics on purpose"), "{answer}");
    // A wasm backtrace down to the export that was called, frames named.
    assert!(message.contains("wasm backtrace"), "{answer}");
    assert!(
        message.contains("test_hostile.wasm!causeway:plugin/transform@0.1.0#transform"),
        "{answer}"
    );
    let (status, body) = try_http(&host.addr, "GET", "/healthz", None).unwrap();
    assert_eq!((status, body.as_str()), (200, r#"{"status":"ok"}"#));
}

#[test]
fn a_plugins_error_message_is_kept_to_a_few_kib_however_long_it_writes_it() {
    let (_scratch, host) = start();
    let (status, answer, _) = provoke(&host, "huge-error");
    assert_eq!((status, &answer["error"]), (502, &json!("plugin-error")));
    let message = answer["message"].as_str().unwrap();
    // 4 MiB written, 4 KiB kept, and the rest counted.
    assert!(message.len() < 5000, "{} bytes kept", message.len());
    assert!(message.contains("test-hostile@0.1.0"), "{message}");
    assert!(
        message.ends_with(&format!("… ({} more bytes)", (4 << 20) - 4096)),
        "{}",
        &message[message.len() - 40..]
    );
    benign_answers(&host);
}

#[test]
fn a_looping_plugin_stops_costing_cpu_after_its_bound_and_others_keep_answering() {
    let (_scratch, host) = start();
    let host = std::sync::Arc::new(host);
    let looping = spawn_loop(&host);
    // While it spins, the well-behaved plugin answers promptly.
    for _ in 0..5 {
        neighbour_answers_promptly(&host);
    }
    let (status, _, _) = looping.join().unwrap();
    assert_eq!(status, 504);
    // After the bound, the host is idle again: its CPU time stops growing.
    let before = cpu_ticks(host.pid());
    std::thread::sleep(Duration::from_secs(1));
    let spent = cpu_ticks(host.pid()) - before;
    assert!(
        spent < 30,
        "the host spent {spent} ticks in a second after the loop ended"
    );
}

#[test]
fn log_spam_is_cut_and_wasi_gives_nothing_beyond_the_fixed_set() {
    let (scratch, host) = start();
    let (status, answer, _) = provoke(&host, "log-spam");
    assert_eq!(status, 200, "{answer}");
    host.wait_for_log("spam line", 5);
    let spam = host.logs().matches("spam line").count();
    assert!(spam <= 1000, "{spam} spam lines reached the host's log");
    // The call's lines are one audit row, saying what the rate turned away.
    let data = scratch.path().join("causeway-data");
    let row = wait_until("the call's log row", Duration::from_secs(10), || {
        support::config_and_log_rows(&data)
            .into_iter()
            .find(|r| r.0 == "test-hostile" && r.1 == "log")
    });
    assert_eq!((row.2.as_str(), row.4.as_str()), ("write", "allowed"));
    let lines: usize = row.5.split(' ').next().unwrap().parse().unwrap();
    assert!((1..=1000).contains(&lines), "{row:?}");
    assert!(
        row.5.contains("more not written: over 50 lines per second"),
        "{row:?}"
    );

    let (status, answer, _) = provoke(&host, "wasi");
    assert_eq!(status, 200, "{answer}");
    let probe = &answer[0]["data"];
    for key in ["fs", "etc", "tcp", "udp", "dns"] {
        assert!(
            probe[key].as_str().unwrap().starts_with("refused"),
            "{key}: {probe}"
        );
    }
    assert_eq!(probe["env_vars"], 0, "{probe}");
    // Each reach for the network is a denied use on the record.
    let rows = wait_until(
        "the socket attempts audited",
        Duration::from_secs(10),
        || {
            let rows: Vec<_> = support::audit_rows(&data)
                .into_iter()
                .filter(|r| r.0 == "test-hostile" && r.1 == "wasi-sockets")
                .map(|r| (r.2, r.3, r.4))
                .collect();
            (rows.len() >= 3).then_some(rows)
        },
    );
    let denied =
        |action: &str, target: &str| (action.to_string(), target.to_string(), "denied".to_string());
    assert_eq!(
        rows,
        [
            denied("create-tcp-socket", "ipv4"),
            denied("create-udp-socket", "ipv4"),
            denied("resolve-addresses", "metadata.google.internal"),
        ]
    );
    // The next line written after the flood says how much was dropped.
    benign_answers(&host);
    let (status, _, _) = provoke(&host, "log-spam");
    assert_eq!(status, 200);
    host.wait_for_log("log lines dropped", 5);
}

#[test]
fn a_plugins_log_line_is_one_line_of_the_hosts_log_whatever_it_holds() {
    let (_scratch, host) = start();
    let (status, answer, _) = provoke(&host, "log-forge");
    assert_eq!(status, 200, "{answer}");
    host.wait_for_log("benign", 5);
    let logs = host.logs();
    let line = logs.lines().find(|l| l.contains("benign")).unwrap();
    assert!(
        line.contains(r"benign\n2026-01-01T00:00:00.000000Z  INFO causeway::registry: plugin loaded plugin=forged@6.6.6\rthen\u{1b}[2K")
            && line.contains("INFO plugin: benign"),
        "{line}"
    );
    assert!(
        !logs.lines().any(|l| l.starts_with("2026-01-01")),
        "a forged line: {logs}"
    );
}

#[test]
fn a_call_beyond_the_hosts_instance_slots_fails_as_busy_and_later_ones_run() {
    // One slot: while the looping call holds it, nothing else can start.
    let (_scratch, host) = start_with(r#"call-timeout = "5s""#, "[engine]\nmax-instances = 1\n");
    let host = std::sync::Arc::new(host);
    let looping = spawn_loop(&host);
    let answer = wait_until("a call refused as busy", Duration::from_secs(4), || {
        let (status, answer, _) = provoke(&host, "none");
        (status == 503).then_some(answer)
    });
    assert_eq!(answer["error"], "busy", "{answer}");
    assert!(
        answer["message"]
            .as_str()
            .unwrap()
            .contains("max-instances"),
        "{answer}"
    );
    let (status, _, _) = looping.join().unwrap();
    assert_eq!(status, 504);
    // The slot came back with the looping call's store.
    benign_answers(&host);
}

#[test]
fn a_plugin_needing_more_instances_than_its_grant_allows_fails_naming_the_limit() {
    let (_scratch, host) = start_with("instances = 1", "");
    let answer = provoke(&host, "none");
    assert_resource_limit(answer, &["test-hostile@0.1.0", "instances = "]);
    // Other plugins keep their own, default, limits.
    neighbour_answers_promptly(&host);
}

#[test]
fn host_resources_a_plugin_holds_are_bounded_by_its_grant() {
    let (_scratch, host) = start_with("resources = 100", "");
    // Within the limit, the handles it keeps are its own business.
    let (status, answer, _) = provoke_with(&host, json!({ "mode": "resources", "count": 50 }));
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer[0]["data"]["made"], 50);
    // Beyond it, the call fails naming the limit and where to raise it.
    let answer = provoke_with(&host, json!({ "mode": "resources", "count": 150 }));
    assert_resource_limit(answer, &["more than 100 host resources", "resources = "]);
    benign_answers(&host);
}

#[test]
fn an_answer_whose_strings_share_one_buffer_costs_the_host_no_more_than_the_plugins_grant() {
    // test-alias answers 100,000 records whose data all point at one 4 MiB
    // buffer: 9 MB of its memory, 400 GB if the host copied every string.
    let scratch = Scratch::new();
    scratch.install("test-alias", "alias.wasm");
    scratch.install("map-fullname", "map-fullname.wasm");
    scratch.grants("[plugins.test-alias]\nlimits = { memory-mb = 16 }\n");
    let host = RunningHost::start(scratch.causeway().args(["run", "--listen", "127.0.0.1:0"]));
    // The peak so far (start-up compiles) would hide the call's own.
    std::fs::write(format!("/proc/{}/clear_refs", host.pid()), "5").unwrap();
    let before = status_kib(host.pid(), "VmRSS:");
    let body = json!({
        "operation": "transform",
        "input": [{"stream": "s", "key": "100000x4096", "data": {}}],
    })
    .to_string();
    let (status, answer) = host
        .try_api("POST", "/api/plugins/test-alias/invoke", Some(&body))
        .unwrap();
    let answer: Value = serde_json::from_str(&answer).unwrap_or(Value::String(answer));
    assert_resource_limit(
        (status, answer, Duration::ZERO),
        &[
            "test-alias@0.1.0",
            "more than 33554432 bytes",
            "memory-mb = ",
        ],
    );
    // Twice its 16 MiB, not wasmtime's default 128 MiB, was copied before
    // the answer was refused.
    let grew = status_kib(host.pid(), "VmHWM:").saturating_sub(before);
    assert!(grew < 64 * 1024, "the host's peak grew by {grew} KiB");
    neighbour_answers_promptly(&host);
}

/// A `/proc/PID/status` field in KiB (`VmRSS:`, `VmHWM:`).
fn status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|line| line.strip_prefix(field))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}

/// `answer` is a 500 of kind `resource-limit` whose message says each of `says`.
fn assert_resource_limit((status, answer, _): (u16, Value, Duration), says: &[&str]) {
    assert_eq!(
        (status, answer["error"].as_str()),
        (500, Some("resource-limit")),
        "{answer}"
    );
    let message = answer["message"].as_str().unwrap_or_default();
    for needle in says {
        assert!(message.contains(needle), "{needle:?} missing: {answer}");
    }
}

#[test]
fn a_plugin_burning_its_fuel_stops_as_a_resource_limit_and_answers_its_next_call() {
    // A deadline far off: only the fuel can stop the loop in this test.
    let (_scratch, host) = start_with(
        r#"call-timeout = "60s", fuel = 50000000"#,
        "[engine]\nfuel = true\n",
    );
    benign_answers(&host);
    let answer = provoke(&host, "loop");
    assert_resource_limit(
        answer,
        &[
            "test-hostile@0.1.0",
            "burned its fuel, 50000000 units",
            "fuel = ",
        ],
    );
    // The next call gets its fuel anew, and so does a plugin with no limit.
    benign_answers(&host);
    neighbour_answers_promptly(&host);
}

#[test]
fn check_warns_of_fuel_counted_with_no_limit_to_bound() {
    let scratch = Scratch::new();
    scratch.install("map-fullname", "map-fullname.wasm");
    std::fs::write(
        scratch.path().join("causeway.toml"),
        "[engine]\nfuel = true\n",
    )
    .unwrap();
    let out = support::run(scratch.causeway().arg("check"));
    assert!(out.success, "a warning, not an error: {}", out.stdout);
    assert!(
        out.stdout
            .contains("causeway.toml line 2: engine.fuel = true, and no fuel limit is set"),
        "{}",
        out.stdout
    );
    scratch.grants("[plugins.map-fullname]\nlimits = { fuel = 1000000000 }\n");
    let out = support::run(scratch.causeway().arg("check"));
    assert!(!out.stdout.contains("no fuel limit"), "{}", out.stdout);
}

#[test]
fn a_fuel_limit_on_a_host_that_does_not_count_fuel_is_refused_not_ignored() {
    let (scratch, host) = start_with("fuel = 1000", "");
    host.wait_for_log(
        "plugins.test-hostile.limits.fuel = 1000: the engine counts fuel only with [engine] fuel = true",
        10,
    );
    let (status, answer, _) = provoke(&host, "none");
    assert_eq!(status, 422, "{answer}");
    let message = answer["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("this host does not count fuel: set [engine] fuel = true"),
        "{answer}"
    );
    // `check` says so, at the grant's line.
    let out = support::run(scratch.causeway().arg("check"));
    assert!(!out.success);
    assert!(
        out.stdout.contains("grants.toml line 2: ") && out.stdout.contains("plugins.test-hostile.limits.fuel = 1000: the engine counts fuel only with [engine] fuel = true"),
        "{}",
        out.stdout
    );
    // `grants` shows the limit as one not enforced.
    let out = support::run(scratch.causeway().arg("grants"));
    assert!(
        out.stdout
            .contains("fuel = 1000 (not counted: [engine] fuel is off"),
        "{}",
        out.stdout
    );
    let json = support::run_json(scratch.causeway().args(["grants", "--json"]));
    let hostile = json["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "test-hostile")
        .unwrap();
    assert_eq!(hostile["effective"]["limits"]["fuel"], 1000, "{hostile:#}");
    assert_eq!(
        hostile["effective"]["limits"]["fuel-counted"], false,
        "{hostile:#}"
    );
    // And in causeway.toml's own [limits], the file is refused.
    std::fs::write(scratch.path().join("causeway.toml"), "[limits]\nfuel = 5\n").unwrap();
    let out = support::run(scratch.causeway().arg("check"));
    assert!(!out.success);
    let all = format!("{}{}", out.stdout, out.stderr);
    assert!(
        all.contains("causeway.toml line 2: ")
            && all.contains("limits.fuel = 5: the engine counts fuel only"),
        "{all}"
    );
}

#[test]
fn a_plugin_looping_on_an_allowed_call_records_a_thousand_rows_and_then_a_count() {
    // Reading its configuration in a loop until its deadline: allowed each
    // time, and hundreds of thousands of times a second.
    let scratch = Scratch::new();
    scratch.install("test-hostile", "hostile.wasm");
    scratch.grants("[plugins.test-hostile]\nlimits = { call-timeout = \"1s\" }\n");
    let input = scratch.path().join("in.json");
    std::fs::write(
        &input,
        json!([{ "stream": "s", "key": "k", "data": { "mode": "host-calls" } }]).to_string(),
    )
    .unwrap();
    let out = support::run(
        scratch
            .causeway()
            .args(["invoke", "test-hostile", "transform", "--input"])
            .arg(&input),
    );
    assert!(out.stderr.contains("timed out after 1s"), "{}", out.stderr);
    let rows = support::config_and_log_rows(&scratch.path().join("causeway-data"));
    let config: Vec<_> = rows.iter().filter(|r| r.1 == "config").collect();
    assert_eq!(config.len(), 1001, "a thousand reads, then their count");
    let count = config[1000];
    assert_eq!((count.2.as_str(), count.4.as_str()), ("more", "allowed"));
    assert!(
        count
            .5
            .contains("more config uses in this call, past the 1000"),
        "{count:?}"
    );
}
