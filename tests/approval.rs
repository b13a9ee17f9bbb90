//! Approval and revocation through the real binary against a running host,
//! and the audit trail that records them: `causeway grants approve|revoke`,
//! `causeway audit`, `audit verify|export|prune`.

use crate::support;

use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};
use support::{
    Answer, FakeServer, RunningHost, Scratch, TEST_VERSION_BUILD, patched, run, run_json,
    test_version, wait_until,
};

const SECURITY_COMMENT: &str = "# Owned by the security team: review before editing.";

/// One `read` through test-fetch, which GETs `url`: the status and body.
fn fetch(host: &RunningHost, url: &str) -> (u16, String) {
    let stream = json!({ "method": "GET", "url": url });
    let body = json!({ "operation": "read", "input": { "stream": stream.to_string() } });
    host.api(
        "POST",
        "/api/plugins/test-fetch/invoke",
        Some(&body.to_string()),
    )
}

/// `causeway grants approve test-fetch` as alice, for 127.0.0.1 over http.
fn approve_fetch(scratch: &Scratch) -> support::Run {
    run(scratch.causeway().args([
        "grants",
        "approve",
        "test-fetch",
        "--by",
        "alice",
        "--host",
        "127.0.0.1",
        "--scheme",
        "http",
        "--secret",
        "token=env:TOKEN",
    ]))
}

/// What `causeway grants --json` says of the version pending approval
/// (a held upgrade), if one is.
fn held(scratch: &Scratch) -> Option<Value> {
    let views = run_json(scratch.causeway().args(["grants", "--json"]))["plugins"].take();
    let views = views.as_array()?;
    views
        .iter()
        .find(|v| v["state"] == "pending-approval")
        .cloned()
}

/// `causeway grants approve test-version --by carol`, which must succeed:
/// what it printed.
fn approve_version(scratch: &Scratch) -> String {
    let approved =
        run(scratch
            .causeway()
            .args(["grants", "approve", "test-version", "--by", "carol"]));
    assert!(approved.success, "{}", approved.stderr);
    approved.stdout
}

fn audit_json(scratch: &Scratch, args: &[&str]) -> Vec<Value> {
    let rows = run_json(scratch.causeway().arg("audit").args(args).arg("--json"));
    rows.as_array().expect("an array").clone()
}

#[test]
fn a_new_plugin_waits_for_approval_and_revoke_stops_the_next_call() {
    let server = FakeServer::start(|_| Answer::ok("{}"));
    let url = format!("http://{}/x", server.addr);
    let scratch = Scratch::new();
    scratch.install("test-fetch", "fetch.wasm");
    scratch.grants(&format!("{SECURITY_COMMENT}\n"));
    let mut host = RunningHost::start(scratch.causeway().env("TOKEN", "t0ken").args([
        "run",
        "--listen",
        "127.0.0.1:0",
    ]));

    // Requests nothing is granted: it does not run.
    let (status, body) = fetch(&host, &url);
    assert_ne!(status, 200, "{body}");
    assert!(body.contains("pending-approval"), "{body}");
    assert!(server.received().is_empty());

    let approved = approve_fetch(&scratch);
    assert!(approved.success, "{}", approved.stderr);
    assert!(
        approved.stdout.contains("approved by alice"),
        "{}",
        approved.stdout
    );
    let file = std::fs::read_to_string(scratch.path().join("grants.toml")).unwrap();
    assert!(file.starts_with(SECURITY_COMMENT), "{file}");

    // The running host picks the approval up by itself.
    wait_until(
        "the approved plugin answering",
        Duration::from_secs(10),
        || (fetch(&host, &url).0 == 200).then_some(()),
    );
    assert!(!server.received().is_empty());
    let views = run_json(scratch.causeway().args(["grants", "--json"]))["plugins"].take();
    let view = &views[0];
    assert_eq!(view["state"], "active");
    assert_eq!(view["granted"]["approval"]["by"], "alice");
    assert_eq!(view["granted"]["approval"]["digest"], view["digest"]);
    // The text a security team reads says who approved which build.
    let listed = run(scratch.causeway().arg("grants")).stdout;
    assert!(
        listed.lines().any(|l| l.contains("approved")
            && l.contains("by alice at ")
            && l.ends_with("for this build")),
        "{listed}"
    );

    let revoked = run(scratch.causeway().args([
        "grants",
        "revoke",
        "test-fetch",
        "http:127.0.0.1",
        "--by",
        "bob",
    ]));
    assert!(revoked.success, "{}", revoked.stderr);
    wait_until(
        "the revocation refusing calls",
        Duration::from_secs(10),
        || (fetch(&host, &url).0 != 200).then_some(()),
    );
    let listed = run(scratch.causeway().arg("grants")).stdout;
    assert!(
        listed
            .lines()
            .any(|l| l.contains("revoked") && l.contains("http:127.0.0.1 by bob at ")),
        "{listed}"
    );
    let reached = server.received().len();
    let (status, body) = fetch(&host, &url);
    assert_ne!(status, 200, "{body}");
    assert_eq!(server.received().len(), reached, "a revoked call went out");

    host.terminate();
    assert!(host.wait_exit(30), "{}", host.logs());

    // Both changes are in the audit log, with who made them, once each.
    let grants_rows: Vec<Value> = audit_json(&scratch, &["--plugin", "test-fetch"])
        .into_iter()
        .filter(|r| r["capability"] == "grants")
        .collect();
    let actions: Vec<(&str, &str)> = grants_rows
        .iter()
        .map(|r| (r["action"].as_str().unwrap(), r["detail"].as_str().unwrap()))
        .collect();
    assert_eq!(actions.len(), 2, "{actions:?}");
    assert_eq!(actions[0].0, "approve");
    assert!(actions[0].1.starts_with("by alice"), "{actions:?}");
    assert!(actions[0].1.contains("+ http"), "{actions:?}");
    assert_eq!(actions[1].0, "revoke");
    assert!(actions[1].1.starts_with("by bob"), "{actions:?}");
    // And the uses: allowed while granted, none after.
    let uses = audit_json(&scratch, &["--plugin", "test-fetch"]);
    assert!(
        uses.iter()
            .any(|r| r["capability"] == "http" && r["decision"] == "allowed"),
        "{uses:#?}"
    );
    let verify = run(scratch.causeway().args(["audit", "verify"]));
    assert!(verify.success, "{}{}", verify.stdout, verify.stderr);
    // A grant is the plugin's, whatever its build: the table names no version.
    let table = run(scratch.causeway().args(["audit", "--plugin", "test-fetch"]));
    let change = table
        .stdout
        .lines()
        .find(|l| l.contains(" grants "))
        .unwrap_or_else(|| panic!("no grants row: {}", table.stdout));
    assert!(
        change.contains(" test-fetch ") && !change.contains("test-fetch@"),
        "{change}"
    );
}

#[test]
fn an_upgrade_that_adds_a_host_is_held_while_the_old_version_serves_then_swaps_in_once_approved() {
    let scratch = Scratch::new();
    std::fs::write(
        scratch.plugins().join("version.wasm"),
        test_version(TEST_VERSION_BUILD),
    )
    .unwrap();
    scratch.grants(&format!("{SECURITY_COMMENT}\n"));
    let host = RunningHost::start(scratch.causeway().args(["run", "--listen", "127.0.0.1:0"]));
    let call = || -> Option<String> {
        let body = json!({
            "operation": "transform",
            "input": [{ "stream": "s", "key": "k", "data": {} }],
        });
        let (status, answer) = host.api(
            "POST",
            "/api/plugins/test-version/invoke",
            Some(&body.to_string()),
        );
        let answer: Value = serde_json::from_str(&answer).ok()?;
        (status == 200).then(|| answer[0]["data"]["build"].as_str().map(str::to_string))?
    };
    assert_eq!(call().as_deref(), Some(TEST_VERSION_BUILD));

    // The next build asks to reach one more host.
    let upgrade = patched(&test_version("build-bbbb"), "#@", "  ");
    let partial = scratch.path().join("version.partial");
    std::fs::write(&partial, upgrade).unwrap();
    std::fs::rename(&partial, scratch.plugins().join("version.wasm")).unwrap();
    wait_until("the upgrade held", Duration::from_secs(10), || {
        let (_, body) = host.api("GET", "/api/plugins", None);
        let rows: Vec<Value> = serde_json::from_str(&body).ok()?;
        rows.iter()
            .any(|r| r["state"] == "pending-approval")
            .then_some(())
    });
    assert_eq!(
        call().as_deref(),
        Some(TEST_VERSION_BUILD),
        "the old one serves"
    );
    let pending = held(&scratch).expect("a version pending approval");
    assert_eq!(
        pending["not_granted"][0],
        "http { scheme = \"https\", host = \"more.example.test\", methods = [\"GET\"], path-prefix = \"/\" }"
    );

    let approved = approve_version(&scratch);
    assert!(approved.contains("more.example.test"), "{approved}");
    wait_until("the upgrade serving", Duration::from_secs(10), || {
        (call().as_deref() == Some("build-bbbb")).then_some(())
    });

    // The build after asks one more method of that host: what it asks
    // beyond the grant is named, and approving widens the rule in place.
    let upgrade = patched(
        &patched(&test_version("build-cccc"), "#@", "  "),
        "#%",
        "  ",
    );
    std::fs::write(&partial, upgrade).unwrap();
    std::fs::rename(&partial, scratch.plugins().join("version.wasm")).unwrap();
    let pending = wait_until("the second upgrade held", Duration::from_secs(10), || {
        held(&scratch)
    });
    assert_eq!(
        pending["not_granted"][0],
        "http { scheme = \"https\", host = \"more.example.test\", methods = [\"GET\", \"PUT\"], path-prefix = \"/\" } (beyond the grant: methods PUT)",
        "{pending:#}"
    );
    let approved = approve_version(&scratch);
    assert!(approved.contains(", in place of {"), "{approved}");
    let grants = std::fs::read_to_string(scratch.path().join("grants.toml")).unwrap();
    assert_eq!(
        grants.matches("more.example.test").count(),
        1,
        "one rule for the host, widened:\n{grants}"
    );
    assert!(grants.contains(SECURITY_COMMENT), "{grants}");
    wait_until(
        "the second upgrade serving",
        Duration::from_secs(10),
        || (call().as_deref() == Some("build-cccc")).then_some(()),
    );
}

/// A data folder with an audit log of a few rows, written by `causeway
/// invoke` (no host running) and `grants approve`.
fn audited_scratch() -> Scratch {
    let server = FakeServer::start(|_| Answer::ok("{}"));
    let scratch = Scratch::new();
    scratch.install("test-fetch", "fetch.wasm");
    scratch.grants(&format!("{SECURITY_COMMENT}\n"));
    let approved = approve_fetch(&scratch);
    assert!(approved.success, "{}", approved.stderr);
    let stream = json!({ "method": "GET", "url": format!("http://{}/x", server.addr) });
    let input = scratch.path().join("input.json");
    std::fs::write(&input, json!({ "stream": stream.to_string() }).to_string()).unwrap();
    for _ in 0..3 {
        let out = run(scratch
            .causeway()
            .env("TOKEN", "t0ken")
            .args(["invoke", "test-fetch", "read", "--input"])
            .arg(&input));
        assert!(out.success, "{}", out.stderr);
    }
    scratch
}

fn verify(data: &Path) -> (bool, Value) {
    let out = support::causeway()
        .current_dir(data)
        .args(["audit", "verify", "--json"])
        .output()
        .unwrap();
    let report = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)));
    (out.status.success(), report)
}

fn db(scratch: &Scratch) -> rusqlite::Connection {
    rusqlite::Connection::open(scratch.path().join("causeway-data/causeway.db")).unwrap()
}

#[test]
fn the_audit_commands_list_export_and_verify_and_name_the_row_tampered_with() {
    let scratch = audited_scratch();
    let rows = audit_json(&scratch, &[]);
    assert!(rows.len() >= 4, "{rows:#?}");
    for field in [
        "seq",
        "time",
        "plugin",
        "version",
        "digest",
        "capability",
        "action",
        "target",
        "decision",
        "detail",
        "run_id",
        "hash",
    ] {
        assert!(rows[0].get(field).is_some(), "no {field} in {:#}", rows[0]);
    }
    let table = run(scratch.causeway().arg("audit"));
    assert!(table.stdout.starts_with("SEQ"), "{}", table.stdout);
    // The detail (long for a grants change) ends each line, unpadded.
    let header = table.stdout.lines().next().unwrap_or_default();
    assert!(header.ends_with("RUN  DETAIL"), "{header}");
    assert_eq!(table.stdout.lines().count(), rows.len() + 1);
    let denied = audit_json(&scratch, &["--denied"]);
    assert!(denied.iter().all(|r| r["decision"] == "denied"));
    let since = audit_json(&scratch, &["--since", "1h"]);
    assert_eq!(since.len(), rows.len());
    let since = audit_json(&scratch, &["--since", "100y"]);
    assert_eq!(
        since.len(),
        rows.len(),
        "a time before the epoch: every row"
    );
    let none = audit_json(&scratch, &["--since", "2099-01-01T00:00:00Z"]);
    assert!(none.is_empty());

    let export = run(scratch.causeway().args(["audit", "export"]));
    assert!(export.success, "{}", export.stderr);
    let exported: Vec<Value> = export
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(exported, rows);

    let (ok, report) = verify(scratch.path());
    assert!(ok, "{report:#}");
    assert_eq!(report["report"]["rows"], rows.len());

    // Altered.
    db(&scratch)
        .execute(
            "UPDATE audit SET decision = 'allowed', detail = 'nothing to see' WHERE seq = 2",
            [],
        )
        .unwrap();
    let (ok, report) = verify(scratch.path());
    assert!(!ok);
    assert_eq!(report["seq"], 2, "{report:#}");
    let text = run(scratch.causeway().args(["audit", "verify"]));
    assert!(!text.success);
    assert!(text.stderr.contains("broken at row 2"), "{}", text.stderr);
}

#[test]
fn deleting_the_last_row_fails_verification_and_pruning_leaves_it_verifiable() {
    let scratch = audited_scratch();
    let last: i64 = db(&scratch)
        .query_row("SELECT MAX(seq) FROM audit", [], |r| r.get(0))
        .unwrap();
    let backup = scratch.path().join("backup.db");
    std::fs::copy(scratch.path().join("causeway-data/causeway.db"), &backup).unwrap();
    db(&scratch)
        .execute("DELETE FROM audit WHERE seq = ?1", [last])
        .unwrap();
    let (ok, report) = verify(scratch.path());
    assert!(!ok);
    assert_eq!(report["seq"], last, "{report:#}");
    std::fs::copy(&backup, scratch.path().join("causeway-data/causeway.db")).unwrap();
    assert!(verify(scratch.path()).0);

    // Older than anything stored: nothing pruned, nothing broken.
    let kept = run(scratch
        .causeway()
        .args(["audit", "prune", "--older-than", "100y"]));
    assert!(kept.success, "{}", kept.stderr);
    assert!(verify(scratch.path()).0);
    assert_eq!(
        db(&scratch)
            .query_row("SELECT MIN(seq) FROM audit", [], |r| r.get::<_, i64>(0))
            .unwrap(),
        1
    );

    // Under a day is more likely a slip of the unit: refused, nothing
    // pruned, unless forced.
    let slip = run(scratch
        .causeway()
        .args(["audit", "prune", "--older-than", "90m"]));
    assert!(
        !slip.success
            && slip.stderr.contains(
                "--older-than = \"1h 30m\" is shorter than a day: it would prune nearly all the audit log"
            ),
        "{}",
        slip.stderr
    );
    assert_eq!(
        db(&scratch)
            .query_row("SELECT MIN(seq) FROM audit", [], |r| r.get::<_, i64>(0))
            .unwrap(),
        1
    );
    let pruned = run(scratch
        .causeway()
        .args(["audit", "prune", "--older-than", "0s", "--force"]));
    assert!(pruned.success, "{}", pruned.stderr);
    let rows = audit_json(&scratch, &[]);
    assert_eq!(rows.len(), 1, "only the pruning itself is left: {rows:#?}");
    assert_eq!(rows[0]["action"], "prune");
    assert_eq!(rows[0]["plugin"], "causeway");
    let (ok, report) = verify(scratch.path());
    assert!(ok, "{report:#}");
    assert_eq!(report["report"]["pruned_through"], last);
}
