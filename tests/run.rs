//! `causeway run`: the long-running host, its status API, its stop, its
//! database and its audit log.

use crate::support;

use serde_json::{Value, json};
use support::{RunningHost, Scratch, audit_rows, http, run, wait_until};

/// A file's permission bits.
#[cfg(unix)]
fn mode(path: &std::path::Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode()
}

fn start(scratch: &Scratch) -> RunningHost {
    RunningHost::start(scratch.causeway().args(["run", "--listen", "127.0.0.1:0"]))
}

#[test]
fn run_with_no_config_file_serves_healthz_and_api_plugins() {
    let scratch = Scratch::new();
    scratch.install("map-fullname", "map-fullname.wasm");
    scratch.install("crm-source", "crm-source.wasm");
    // No causeway.toml, no grants.toml, no --plugins: embedded defaults.
    let mut host = RunningHost::start(support::causeway().current_dir(scratch.path()).args([
        "run",
        "--listen",
        "127.0.0.1:0",
    ]));
    let (status, body) = http(&host.addr, "GET", "/healthz", None);
    assert_eq!((status, body.as_str()), (200, r#"{"status":"ok"}"#));
    let (status, body) = host.api("GET", "/api/plugins", None);
    assert_eq!(status, 200);
    let plugins: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(plugins[0]["name"], "crm-source");
    assert_eq!(plugins[0]["state"], "pending-approval");
    assert_eq!(plugins[1]["name"], "map-fullname");
    assert_eq!(plugins[1]["state"], "active");
    // The database is in the default data directory, and `causeway plugins`
    // reads the same truth from it while the host runs.
    assert!(scratch.path().join("causeway-data/causeway.db").is_file());
    let rows = support::run_json(
        support::causeway()
            .current_dir(scratch.path())
            .args(["plugins", "--json"]),
    );
    assert_eq!(rows, plugins);
    host.terminate();
    assert!(host.wait_exit(30), "{}", host.logs());
}

#[test]
fn the_operator_api_wants_the_token_the_host_keeps_in_its_data_folder() {
    let scratch = Scratch::new();
    scratch.install("map-fullname", "map-fullname.wasm");
    let mut host = start(&scratch);
    let token_file = scratch.path().join("causeway-data/operator.token");
    #[cfg(unix)]
    {
        assert_eq!(
            mode(&token_file) & 0o777,
            0o600,
            "the token is the owner's alone"
        );
        let data = scratch.path().join("causeway-data");
        assert_eq!(
            mode(&data) & 0o777,
            0o700,
            "so is the data folder the host made"
        );
    }
    let token = std::fs::read_to_string(&token_file).unwrap();
    assert_eq!(token.len(), 64, "{token}");
    assert_eq!(http(&host.addr, "GET", "/healthz", None).0, 200);
    for (method, path) in [
        ("GET", "/api/plugins"),
        ("GET", "/metrics"),
        ("POST", "/api/plugins/map-fullname/invoke"),
        ("POST", "/api/pipelines/any/run-now"),
    ] {
        let (status, body) = http(&host.addr, method, path, Some("{}"));
        assert_eq!(status, 401, "{method} {path} without the token: {body}");
        assert!(
            body.contains(&token_file.canonicalize().unwrap().display().to_string()),
            "the refusal says where the token is: {body}"
        );
        let (status, _) = support::try_http_with(
            &host.addr,
            method,
            path,
            &[("authorization", "Bearer 0123")],
            b"{}",
        )
        .unwrap();
        assert_eq!(status, 401, "{method} {path} with a wrong token");
    }
    let (status, body) = host.api("GET", "/api/plugins", None);
    assert_eq!(status, 200, "{body}");
    // A restart keeps the token: a scraper's copy stays good.
    host.terminate();
    assert!(host.wait_exit(30), "{}", host.logs());
    let mut host = start(&scratch);
    assert_eq!(std::fs::read_to_string(&token_file).unwrap(), token);
    host.terminate();
    assert!(host.wait_exit(30), "{}", host.logs());
    assert!(!host.logs().contains(&token), "the token reached the log");
    // The refusals are audited, as the host's own rows; never the token.
    let out = run(scratch.causeway().args(["audit", "--denied", "--json"]));
    assert!(out.success, "{}", out.stderr);
    assert!(
        !out.stdout.contains(&token),
        "the token reached the audit log"
    );
    let rows: Vec<Value> = serde_json::from_str(&out.stdout).unwrap();
    let refused: Vec<&Value> = rows
        .iter()
        .filter(|r| r["action"] == "unauthorized")
        .collect();
    assert_eq!(refused.len(), 8, "{rows:#?}");
    assert!(
        refused.iter().any(|r| r["target"] == "GET /metrics"
            && r["detail"] == "refused 127.0.0.1: no operator token"),
        "{refused:#?}"
    );
}

/// A leaked token is revoked without a restart: `causeway token rotate`
/// replaces the file, and the running host refuses the old token with the
/// next request.
#[test]
fn a_rotated_token_is_refused_at_once_and_the_new_one_admitted_without_a_restart() {
    let scratch = Scratch::new();
    scratch.install("map-fullname", "map-fullname.wasm");
    let mut host = start(&scratch);
    let token_file = scratch.path().join("causeway-data/operator.token");
    let old_token = std::fs::read_to_string(&token_file).unwrap();
    let old = host.api_client();
    assert_eq!(old.call("GET", "/api/plugins", None).0, 200);
    let out = run(scratch.causeway().args(["token", "rotate"]));
    assert!(out.success, "{}", out.stderr);
    let new_token = std::fs::read_to_string(&token_file).unwrap();
    assert_eq!(new_token.len(), 64, "{new_token}");
    assert_ne!(new_token, old_token);
    assert!(
        out.stdout.contains("rotated the operator token")
            && out
                .stdout
                .contains(&token_file.canonicalize().unwrap().display().to_string())
            && !out.stdout.contains(&new_token),
        "{}",
        out.stdout
    );
    #[cfg(unix)]
    assert_eq!(
        mode(&token_file) & 0o777,
        0o600,
        "the new token is the owner's alone"
    );
    let (status, body) = old.call("GET", "/metrics", None);
    assert_eq!(status, 401, "the old token still admitted: {body}");
    let (status, body) = host.api("GET", "/api/plugins", None);
    assert_eq!(status, 200, "the new token refused: {body}");
    host.wait_for_log("operator token in", 10);
    host.terminate();
    assert!(host.wait_exit(30), "{}", host.logs());
    for token in [&old_token, &new_token] {
        assert!(
            !host.logs().contains(token.as_str()),
            "a token reached the log"
        );
    }
    let out = run(scratch.causeway().args(["audit", "--json"]));
    assert!(out.success, "{}", out.stderr);
    let rows: Vec<Value> = serde_json::from_str(&out.stdout).unwrap();
    let rotations: Vec<&Value> = rows
        .iter()
        .filter(|r| r["capability"] == "api" && r["action"] == "token-rotate")
        .collect();
    assert_eq!(rotations.len(), 1, "{rows:#?}");
    assert_eq!(rotations[0]["decision"], "allowed");
    assert!(
        !out.stdout.contains(&old_token) && !out.stdout.contains(&new_token),
        "a token reached the audit log"
    );
}

/// The listen address may be public (webhooks): a client that opens a
/// connection and trickles its request holds it for a bounded time only.
#[test]
fn a_client_that_never_finishes_its_headers_is_cut_off_while_others_are_served() {
    use std::io::{Read, Write};
    let scratch = Scratch::new();
    let mut host = start(&scratch);
    let mut slow = std::net::TcpStream::connect(&host.addr).unwrap();
    slow.set_read_timeout(Some(std::time::Duration::from_secs(60)))
        .unwrap();
    slow.write_all(b"POST /hooks/crm HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    let started = std::time::Instant::now();
    assert_eq!(http(&host.addr, "GET", "/healthz", None).0, 200);
    let _ = slow.read_to_end(&mut Vec::new());
    let held = started.elapsed();
    assert!(
        held < std::time::Duration::from_secs(30),
        "held for {held:?} (the header timeout is 10 s)"
    );
    host.terminate();
    assert!(host.wait_exit(30), "{}", host.logs());
}

#[test]
fn a_pending_plugin_cannot_be_invoked_through_the_api() {
    let scratch = Scratch::new();
    scratch.install("crm-source", "crm-source.wasm");
    let host = start(&scratch);
    let (status, body) = host.api(
        "POST",
        "/api/plugins/crm-source/invoke",
        Some(r#"{"operation": "discover"}"#),
    );
    assert_eq!(status, 409, "{body}");
    assert!(body.contains("pending-approval"), "{body}");
    let (status, _) = host.api(
        "POST",
        "/api/plugins/nope/invoke",
        Some(r#"{"operation": "check"}"#),
    );
    assert_eq!(status, 404);
}

#[test]
fn a_request_the_api_cannot_read_gets_the_same_json_error_shape() {
    let scratch = Scratch::new();
    scratch.install("map-fullname", "map-fullname.wasm");
    let host = start(&scratch);
    let path = "/api/plugins/map-fullname/invoke";
    let json_error = |status: u16, body: &str, expected: u16| {
        assert_eq!(status, expected, "{body}");
        let answer: serde_json::Value =
            serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"));
        assert_eq!(answer["error"], "invalid-request", "{body}");
        assert!(answer["message"].as_str().is_some_and(|m| !m.is_empty()));
    };
    let (status, body) = host.api("POST", path, Some("{"));
    json_error(status, &body, 400);
    let (status, body) = host.api("POST", path, Some(r#"{"input": []}"#));
    json_error(status, &body, 422);
    // An operation without its input is told what to send, here.
    let (status, body) = host.api("POST", path, Some(r#"{"operation": "transform"}"#));
    assert_eq!(status, 422, "{body}");
    assert!(body.contains(r#"\"input\" in an API request"#), "{body}");
    // No content type: a client that forgot it is told so, as JSON too.
    let token = std::fs::read_to_string(host.data_dir.join("operator.token")).unwrap();
    let bearer = format!("Bearer {}", token.trim());
    let (status, body) = support::try_http_with(
        &host.addr,
        "POST",
        path,
        &[("authorization", bearer.as_str())],
        br#"{"operation": "check"}"#,
    )
    .unwrap();
    json_error(status, &body, 415);
    // A known path with a method it does not take.
    let (status, body) = host.api("GET", path, None);
    assert_eq!(status, 405, "{body}");
    let answer: serde_json::Value =
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"));
    assert_eq!(answer["error"], "method-not-allowed", "{body}");
}

#[test]
fn sigterm_with_a_call_in_flight_lets_it_finish_and_exits_0() {
    let scratch = Scratch::new();
    scratch.install("test-slow", "slow.wasm");
    std::fs::write(
        scratch.path().join("causeway.toml"),
        "[plugins.test-slow.config]\nspin_ms = 1500\n",
    )
    .unwrap();
    let mut host = start(&scratch);
    let api = host.api_client();
    let call = std::thread::spawn(move || {
        api.call(
            "POST",
            "/api/plugins/test-slow/invoke",
            Some(
                r#"{"operation": "transform", "input": [{"stream": "s", "key": "k1", "data": {"a": 1}}]}"#,
            ),
        )
    });
    host.wait_for_log("slow call started", 30);
    host.terminate();
    let (status, body) = call.join().expect("the call thread");
    assert_eq!(status, 200, "{body}\n{}", host.logs());
    let answer: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        answer,
        json!([{"stream": "s", "key": "k1", "op": "upsert", "data": {"a": 1}}])
    );
    assert!(host.wait_exit(30), "{}", host.logs());
    assert!(
        host.logs().contains("draining calls in flight"),
        "{}",
        host.logs()
    );
}

#[test]
fn a_second_host_on_the_same_data_folder_is_refused_and_the_first_keeps_serving() {
    let scratch = Scratch::new();
    scratch.install("map-fullname", "map-fullname.wasm");
    let mut host = start(&scratch);
    let in_use = format!("is in use by another causeway process (pid {})", host.pid());
    // Within a deadline: a second host that started would never end.
    let second = support::run_within(
        scratch.causeway().args(["run", "--listen", "127.0.0.1:0"]),
        20,
    );
    assert!(!second.success);
    assert!(
        second.stderr.contains("causeway-data is in use") && second.stderr.contains(&in_use),
        "{}",
        second.stderr
    );
    // The demo is refused before it writes anything into the folder.
    let demo = support::run_within(
        scratch
            .causeway()
            .args(["demo", "--data-dir", "causeway-data", "--contacts", "1"]),
        60,
    );
    assert!(!demo.success);
    assert!(demo.stderr.contains(&in_use), "{}", demo.stderr);
    assert!(!scratch.path().join("causeway-data/plugins").exists());
    assert_eq!(http(&host.addr, "GET", "/healthz", None).0, 200);

    // Killed, the first leaves no claim behind: the next host starts.
    host.kill();
    let mut next = start(&scratch);
    assert_eq!(http(&next.addr, "GET", "/healthz", None).0, 200);
    next.terminate();
    assert!(next.wait_exit(30), "{}", next.logs());
}

#[test]
fn sigterm_the_moment_the_host_says_it_listens_still_stops_it_cleanly() {
    let scratch = Scratch::new();
    scratch.install("map-fullname", "map-fullname.wasm");
    for round in 0..5 {
        let mut host = start(&scratch);
        host.terminate();
        assert!(host.wait_exit(30), "round {round}: {}", host.logs());
        assert!(
            host.logs().contains("stopped"),
            "round {round}: {}",
            host.logs()
        );
    }
}

/// A compile cannot be interrupted, but a stop need not wait for it: a
/// host told to stop while CPython's component (18 MB, seconds to compile)
/// loads ends at once, cleanly, and leaves the compile behind.
#[test]
fn a_stop_while_the_plugins_compile_ends_the_host_without_waiting_for_them() {
    use std::io::BufRead;
    let scratch = Scratch::new();
    for ext in ["wasm", "toml"] {
        let file = format!("map-fullname-py.{ext}");
        std::fs::copy(
            support::guest_plugins().join(&file),
            scratch.plugins().join(&file),
        )
        .unwrap();
    }
    let mut child = scratch
        .causeway()
        .args(["run", "--listen", "127.0.0.1:0"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let (lines, logged) = std::sync::mpsc::channel();
    let stderr = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            let _ = lines.send(line);
        }
    });
    let mut log = Vec::new();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !log
        .iter()
        .any(|l: &String| l.contains("loading the plugins"))
    {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match logged.recv_timeout(left) {
            Ok(line) => log.push(line),
            Err(_) => panic!("the host never said it loads the plugins: {log:#?}"),
        }
    }
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let out = support::wait_within(child, 20);
    reader.join().unwrap();
    log.extend(logged.try_iter());
    let log = log.join("\n");
    assert!(out.success, "{log}");
    assert!(
        log.contains("stopped before the plugins had loaded"),
        "{log}"
    );
    // Had the stop waited for the compile, the plugin would have loaded.
    assert!(!log.contains("plugin loaded"), "{log}");
    assert!(out.stdout.is_empty(), "it listened: {:?}", out.stdout);
}

#[test]
fn a_database_from_a_newer_causeway_is_refused() {
    let scratch = Scratch::new();
    let data = scratch.path().join("causeway-data");
    std::fs::create_dir(&data).unwrap();
    rusqlite::Connection::open(data.join("causeway.db"))
        .unwrap()
        .pragma_update(None, "user_version", 999)
        .unwrap();
    let out = run(scratch.causeway().args(["run", "--listen", "127.0.0.1:0"]));
    assert!(!out.success);
    assert!(
        out.stderr
            .contains("schema version 999, newer than this causeway supports"),
        "{}",
        out.stderr
    );
    let out = run(scratch.causeway().arg("check"));
    assert!(!out.success);
    assert!(out.stdout.contains("schema version 999"), "{}", out.stdout);
}

/// A database an older causeway wrote (before an upgrade's first `run`
/// migrates it) holds what it recorded: the commands that read it say so,
/// rather than answer as if nothing had happened, and leave it unmigrated.
#[test]
fn a_database_from_an_older_causeway_is_not_read_as_empty() {
    let scratch = Scratch::new();
    let data = scratch.path().join("causeway-data");
    std::fs::create_dir(&data).unwrap();
    rusqlite::Connection::open(data.join("causeway.db"))
        .unwrap()
        .pragma_update(None, "user_version", 1)
        .unwrap();
    for command in [&["dlq", "list"][..], &["audit"], &["runs"], &["pipelines"]] {
        let out = run(scratch.causeway().args(command));
        assert!(!out.success, "{command:?}: {}", out.stdout);
        assert!(
            out.stderr
                .contains("schema version 1, older than this causeway's")
                && out.stderr.contains("`causeway run` migrates it"),
            "{command:?}: {}",
            out.stderr
        );
    }
    // `check` says so, and that the host migrates it: a warning, not a
    // failure.
    let out = run(scratch.causeway().arg("check"));
    assert!(out.success, "{}{}", out.stdout, out.stderr);
    assert!(
        out.stdout
            .contains("schema version 1, older than this causeway's")
            && out
                .stdout
                .contains("`causeway run` migrates it when it starts"),
        "{}",
        out.stdout
    );
    let version: i64 = rusqlite::Connection::open(data.join("causeway.db"))
        .unwrap()
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .unwrap();
    assert_eq!(version, 1);
}

/// Every capability call leaves an audit row, allowed or denied, written
/// through the one writer and flushed before the command exits.
#[test]
fn capability_calls_leave_audit_rows() {
    let scratch = Scratch::new();
    scratch.install("crm-source", "crm-source.wasm");
    scratch.grants(support::EXAMPLE_GRANTS);
    let read = scratch.path().join("read.json");
    std::fs::write(&read, r#"{"stream": "contacts"}"#).unwrap();
    for base_url in ["https://evil.example.net", "https://crm.example.com"] {
        let config = scratch.path().join("config.json");
        std::fs::write(&config, json!({ "base_url": base_url }).to_string()).unwrap();
        let out = run(scratch
            .causeway()
            .env("CRM_TOKEN", "tok")
            .args(["invoke", "crm-source", "read", "--input"])
            .arg(&read)
            .arg("--config")
            .arg(&config));
        assert!(!out.success, "no request can complete yet: {}", out.stdout);
    }
    let rows = audit_rows(&scratch.path().join("causeway-data"));
    assert_eq!(rows.len(), 2, "{rows:#?}");
    let (plugin, capability, action, target, decision, detail) = &rows[0];
    assert_eq!(
        (plugin.as_str(), capability.as_str(), action.as_str()),
        ("crm-source", "http", "GET")
    );
    assert_eq!(
        target,
        "https://evil.example.net/v1/contacts?updated_after=…&after_id=…&limit=…"
    );
    assert_eq!(decision, "denied");
    assert!(detail.contains("no grant allows it"), "{detail}");
    assert!(
        rows[1]
            .3
            .starts_with("https://crm.example.com/v1/contacts?"),
        "{}",
        rows[1].3
    );
    assert_eq!(rows[1].4, "allowed");
    // Each call's read of its configuration is a use too.
    let reads = support::config_and_log_rows(&scratch.path().join("causeway-data"));
    let config: Vec<_> = reads.iter().filter(|r| r.1 == "config").collect();
    assert_eq!(config.len(), 2, "{reads:#?}");
    for (plugin, _, action, target, decision, detail) in config {
        assert_eq!(
            (plugin.as_str(), action.as_str(), target.as_str()),
            ("crm-source", "get", "its configuration")
        );
        assert_eq!(decision, "allowed");
        assert!(detail.ends_with(" bytes"), "{detail}");
    }
    // A security team picks one capability's rows out of the rest.
    for (capability, decision) in [("config", "allowed"), ("http", "denied")] {
        let picked = support::run_json(scratch.causeway().args([
            "audit",
            "--capability",
            capability,
            "--json",
        ]));
        let picked = picked.as_array().unwrap();
        assert_eq!(picked.len(), 2, "{picked:#?}");
        assert!(
            picked.iter().all(|r| r["capability"] == capability),
            "{picked:#?}"
        );
        assert_eq!(picked[0]["decision"], decision, "{picked:#?}");
    }
}

/// Calls through the running host are audited too, and the rows are on disk
/// once it has stopped cleanly.
#[test]
fn the_audit_is_flushed_on_a_clean_stop() {
    let scratch = support::crm_source_pointed_elsewhere();
    let mut host = start(&scratch);
    for _ in 0..3 {
        let (status, body) = host.api(
            "POST",
            "/api/plugins/crm-source/invoke",
            Some(r#"{"operation": "read", "input": {"stream": "contacts"}}"#),
        );
        assert_eq!(status, 502, "{body}");
        assert!(body.contains("no grant allows it"), "{body}");
    }
    host.terminate();
    assert!(host.wait_exit(30), "{}", host.logs());
    let rows = audit_rows(&scratch.path().join("causeway-data"));
    assert_eq!(rows.len(), 3, "{rows:#?}");
    assert!(
        rows.iter()
            .all(|r| r.4 == "denied" && r.3.starts_with("https://elsewhere.example"))
    );
}

/// The audit journals beside the database in `data`.
fn journals(data: &std::path::Path) -> Vec<String> {
    std::fs::read_dir(data)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.contains(".audit-pending."))
        .collect()
}

/// Makes `uses` reads of crm-source, pointed at a host it may not reach:
/// each a refused request, an audited use.
fn refused_reads(host: &RunningHost, uses: usize) {
    for _ in 0..uses {
        let (status, body) = host.api(
            "POST",
            "/api/plugins/crm-source/invoke",
            Some(r#"{"operation": "read", "input": {"stream": "contacts"}}"#),
        );
        assert_eq!(status, 502, "{body}");
    }
}

/// The plugins' uses in the audit log in `data`, once there are `uses`.
fn every_use_logged(
    data: &std::path::Path,
    uses: usize,
) -> Vec<(String, String, String, String, String, String)> {
    wait_until(
        "every use in the audit log",
        std::time::Duration::from_secs(20),
        || {
            let rows = audit_rows(data);
            (rows.len() >= uses).then_some(rows)
        },
    )
}

/// Uses a host made just before it was killed (SIGKILL), which its writer
/// had not committed yet (it commits them 5 to 50 ms later), are not lost:
/// the next host writes them from the killed one's journal.
#[test]
fn capability_uses_a_killed_host_had_not_committed_are_written_by_the_next() {
    let scratch = support::crm_source_pointed_elsewhere();
    let data = scratch.path().join("causeway-data");
    let mut host = start(&scratch);
    assert_eq!(journals(&data).len(), 1, "the running host's journal");
    let uses = 20;
    refused_reads(&host, uses);
    host.kill();
    let left = journals(&data);
    assert_eq!(left.len(), 1, "{left:?}");
    // Each use is in the chain or waits in the journal (with the plugin's
    // reads of its configuration), and verify says so.
    let verify = support::run_json(scratch.causeway().args(["audit", "verify", "--json"]));
    assert_eq!(verify["ok"], true, "{verify:#}");
    let committed = audit_rows(&data).len() as u64;
    assert!(
        committed + verify["journaled"].as_u64().unwrap() >= uses as u64,
        "{committed} committed; {verify:#}"
    );
    // A line slipped into the journal without causeway's seal: verify
    // fails naming it, and the next host leaves it out, saying so.
    let forged = r#"{"time":"2026-12-07T00:00:00.000000Z","plugin":"crm-source","version":"0.1.0","digest":"-","capability":"http","action":"GET","target":"https://elsewhere.example/","decision":"denied","detail":"forged","run_id":null}"#;
    let journal = data.join(&left[0]);
    let mut text = std::fs::read(&journal).unwrap();
    text.extend(format!("{forged}\n").as_bytes());
    std::fs::write(&journal, text).unwrap();
    let out = run(scratch.causeway().args(["audit", "verify"]));
    assert!(!out.success, "{}", out.stdout);
    assert!(
        out.stderr
            .contains("an audit journal holds lines without the seal of this audit key: ")
            && out.stderr.contains(&format!("{} (1 lines)", left[0])),
        "{}",
        out.stderr
    );

    let mut host = start(&scratch);
    let rows = every_use_logged(&data, uses);
    assert_eq!(rows.len(), uses, "{rows:#?}");
    assert!(rows.iter().all(|r| r.4 == "denied"), "{rows:#?}");
    assert!(!rows.iter().any(|r| r.5 == "forged"), "{rows:#?}");
    let all = support::run_json(scratch.causeway().args(["audit", "--json"]));
    let recovered: Vec<&Value> = all
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["action"] == "recovered")
        .collect();
    assert_eq!(recovered.len(), 1, "{all:#}");
    assert_eq!(recovered[0]["decision"], "denied");
    let detail = recovered[0]["detail"].as_str().unwrap();
    assert!(
        detail.contains("lines without the seal of this audit key, left out")
            && detail.ends_with(": 1"),
        "{detail}"
    );
    // The killed host's journal is gone; the new host's is its own.
    let now = journals(&data);
    assert!(now.len() == 1 && now != left, "{left:?} then {now:?}");
    let verify = run(scratch.causeway().args(["audit", "verify"]));
    assert!(verify.success, "{}{}", verify.stdout, verify.stderr);
    // A clean stop leaves no journal.
    host.terminate();
    assert!(host.wait_exit(30), "{}", host.logs());
    assert_eq!(journals(&data), Vec::<String>::new());
}

/// The same past the journal's cuts: a host killed after its writer has
/// cut its journal back to the uses still waiting, into a file of its own
/// that then took the journal's name, leaves each use it had not
/// committed once, and none it had twice.
#[test]
fn a_killed_host_that_had_cut_its_journal_leaves_each_use_once() {
    use std::os::unix::fs::MetadataExt;
    let scratch = Scratch::new();
    scratch.install("crm-source", "crm-source.wasm");
    scratch.grants(support::EXAMPLE_GRANTS);
    // Each use, a refused request, is some 2 KB in the journal: 300 of them
    // pass the 256 KiB past which a commit cuts it, twice.
    std::fs::write(
        scratch.path().join("causeway.toml"),
        format!(
            "[plugins.crm-source.config]\nbase_url = \"https://elsewhere.example/{}\"\n",
            "p".repeat(1500)
        ),
    )
    .unwrap();
    let data = scratch.path().join("causeway-data");
    let mut host = start(&scratch);
    let journal = data.join(&journals(&data)[0]);
    let first = std::fs::metadata(&journal).unwrap().ino();
    let uses = 300;
    refused_reads(&host, uses);
    // Cut: the journal traded names with its spare, which stays (or,
    // where the file system cannot trade them, a new file took its name).
    let spare = data.join(journals(&data)[0].replace(".audit-pending.", ".audit-new."));
    wait_until(
        "the journal cut",
        std::time::Duration::from_secs(10),
        || (spare.exists() || std::fs::metadata(&journal).ok()?.ino() != first).then_some(()),
    );
    host.kill();

    let mut host = start(&scratch);
    let rows = every_use_logged(&data, uses);
    assert_eq!(rows.len(), uses, "each use once");
    assert!(
        rows.iter()
            .all(|r| r.1 == "http" && r.4 == "denied" && r.3.contains("/pppp")),
        "{rows:#?}"
    );
    let verify = run(scratch.causeway().args(["audit", "verify"]));
    assert!(verify.success, "{}{}", verify.stdout, verify.stderr);
    host.terminate();
    assert!(host.wait_exit(30), "{}", host.logs());
    let left: Vec<String> = std::fs::read_dir(&data)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.contains(".audit-"))
        .collect();
    assert_eq!(left, Vec::<String>::new(), "a clean stop leaves no journal");
}

#[test]
fn a_restart_loads_plugins_from_the_cache_and_a_corrupted_artifact_is_recompiled() {
    let scratch = Scratch::new();
    scratch.install("map-fullname", "map-fullname.wasm");
    let start = || {
        RunningHost::start(
            scratch
                .causeway()
                .env("CAUSEWAY_LOG", "causeway=debug")
                .args(["run", "--listen", "127.0.0.1:0"]),
        )
    };
    let transform = |host: &RunningHost| {
        let body = json!({
            "operation": "transform",
            "input": [{"stream": "c", "key": "1", "data": {"firstName": "Ada", "lastName": "L", "email": "a@x"}}],
        })
        .to_string();
        host.api("POST", "/api/plugins/map-fullname/invoke", Some(&body))
    };
    let compiled = "compiled in";
    let cached = "loaded from the precompiled cache";

    // The log lines come on stderr, read beside the stdout line that says
    // the host listens: wait for them.
    let mut host = start();
    host.wait_for_log(compiled, 10);
    assert_eq!(transform(&host).0, 200);
    host.terminate();
    assert!(host.wait_exit(30), "{}", host.logs());

    let mut host = start();
    host.wait_for_log(cached, 10);
    assert!(!host.logs().contains(compiled), "{}", host.logs());
    assert_eq!(transform(&host).0, 200);
    host.terminate();
    assert!(host.wait_exit(30), "{}", host.logs());

    // Flip one byte of the artifact: it no longer verifies, so it is
    // compiled again rather than trusted.
    let artifact = std::fs::read_dir(scratch.path().join("causeway-data/cache"))
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| e.path().is_dir())
        .flat_map(|dir| {
            std::fs::read_dir(dir.path())
                .unwrap()
                .filter_map(Result::ok)
        })
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "cwasm"))
        .expect("an artifact in the cache");
    let mut bytes = std::fs::read(&artifact).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x55;
    std::fs::write(&artifact, &bytes).unwrap();
    let host = start();
    host.wait_for_log("does not verify", 10);
    host.wait_for_log(compiled, 10);
    assert_eq!(transform(&host).0, 200);
}
