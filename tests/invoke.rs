//! `causeway invoke`: one call against a real plugin, JSON in, JSON out.

use crate::support;

use serde_json::{Value, json};
use support::{Scratch, run, run_json};

/// Grants crm-source GET on crm.example.com and binds its credential.
fn grant_crm(scratch: &Scratch) {
    scratch.grants(support::EXAMPLE_GRANTS);
}

fn contacts() -> std::path::PathBuf {
    support::repo_root().join("examples/contacts.json")
}

#[test]
fn invoke_map_fullname_transform_prints_the_mapped_records() {
    let scratch = Scratch::new();
    scratch.install("map-fullname", "map-fullname.wasm");
    let out = run_json(
        scratch
            .causeway()
            .args(["invoke", "map-fullname", "transform", "--input"])
            .arg(contacts()),
    );
    let records = out.as_array().expect("an array of records");
    let keys: Vec<&str> = records.iter().map(|r| r["key"].as_str().unwrap()).collect();
    // c-1003 has no email and is dropped; the delete passes through.
    assert_eq!(keys, ["c-1001", "c-1002", "c-1004"]);
    assert_eq!(
        records[0]["data"],
        json!({"fullName": "Ada Lovelace", "email": "ada@example.com", "organization": "Analytical Engines"})
    );
    assert_eq!(
        records[1]["data"],
        json!({"fullName": "Grace Hopper", "email": "grace@example.com"})
    );
    assert_eq!(records[2]["op"], "delete");
    assert!(records.iter().all(|r| r["stream"] == "subscribers"));
}

#[test]
fn invoke_by_path_with_config_and_stdin_input() {
    let scratch = Scratch::new();
    let config = scratch.path().join("config.json");
    std::fs::write(&config, r#"{"target_stream": "people"}"#).unwrap();
    // In the scratch folder: invoke writes its audit to ./causeway-data.
    let mut child = support::causeway()
        .current_dir(scratch.path())
        .arg("invoke")
        .arg(support::built("map-fullname"))
        .args(["transform", "--input", "-", "--config"])
        .arg(&config)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(br#"[{"stream":"contacts","key":"1","data":{"firstName":"Ada","lastName":"L","email":"a@x.io"}}]"#)
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let out: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(out[0]["stream"], "people");
    assert_eq!(out[0]["data"]["fullName"], "Ada L");
}

#[test]
fn a_config_the_schema_forbids_is_the_plugins_config_error() {
    let scratch = Scratch::new();
    scratch.install("map-fullname", "map-fullname.wasm");
    let config = scratch.path().join("config.json");
    std::fs::write(&config, r#"{"target_stream": 5}"#).unwrap();
    let out = run(scratch
        .causeway()
        .args(["invoke", "map-fullname", "transform", "--input"])
        .arg(contacts())
        .arg("--config")
        .arg(&config));
    assert!(!out.success);
    assert!(
        out.stderr
            .contains("plugin map-fullname@0.1.0 returned an error: config:"),
        "{}",
        out.stderr
    );
}

#[test]
fn an_operation_the_plugin_does_not_implement_is_refused_by_name() {
    let scratch = Scratch::new();
    scratch.install("map-fullname", "map-fullname.wasm");
    let out = run(scratch
        .causeway()
        .args(["invoke", "map-fullname", "discover"]));
    assert!(!out.success);
    assert!(
        out.stderr
            .contains("does not implement source (it implements: transform)"),
        "{}",
        out.stderr
    );
    let out = run(scratch
        .causeway()
        .args(["invoke", "map-fullname", "explode"]));
    assert!(
        out.stderr.contains("unknown operation \"explode\""),
        "{}",
        out.stderr
    );
}

#[test]
fn an_unknown_plugin_name_is_a_clear_error() {
    let scratch = Scratch::new();
    let out = run(scratch.causeway().args(["invoke", "nope", "check"]));
    assert!(!out.success);
    assert!(
        out.stderr.contains("no plugin named \"nope\""),
        "{}",
        out.stderr
    );
    // A typo of an installed one: its likely name.
    scratch.install("map-fullname", "map-fullname.wasm");
    let out = run(scratch.causeway().args(["invoke", "map-fulname", "check"]));
    assert!(
        out.stderr.contains("(did you mean \"map-fullname\"?)"),
        "{}",
        out.stderr
    );
}

#[test]
fn discover_and_webhook_run_in_the_sandbox() {
    let scratch = Scratch::new();
    scratch.install("crm-source", "crm-source.wasm");
    grant_crm(&scratch);
    let streams = run_json(
        scratch
            .causeway()
            .args(["invoke", "crm-source", "discover"]),
    );
    assert_eq!(streams[0]["name"], "contacts");
    assert_eq!(streams[0]["incremental"], true);

    let input = scratch.path().join("event.json");
    let body = json!({"event": "contact.updated", "contact": {"id": 7, "updated_at": 1700000000000_i64, "firstName": "Ada"}});
    std::fs::write(&input, json!({ "body": body.to_string() }).to_string()).unwrap();
    let records = run_json(
        scratch
            .causeway()
            .args(["invoke", "crm-source", "handle", "--input"])
            .arg(&input),
    );
    assert_eq!(records[0]["key"], "7");
    assert_eq!(records[0]["source_timestamp"], 1700000000000_i64);
    assert_eq!(records[0]["data"]["firstName"], "Ada");
}

/// A request outside the grants is denied with an error value naming what to
/// grant, and the call fails cleanly.
#[test]
fn an_http_request_without_a_grant_is_denied_with_an_actionable_message() {
    let scratch = Scratch::new();
    scratch.install("crm-source", "crm-source.wasm");
    grant_crm(&scratch);
    let input = scratch.path().join("read.json");
    std::fs::write(&input, r#"{"stream": "contacts"}"#).unwrap();
    let config = scratch.path().join("config.json");
    std::fs::write(&config, r#"{"base_url": "https://crm.example"}"#).unwrap();
    let out = run(scratch
        .causeway()
        .args(["invoke", "crm-source", "read", "--input"])
        .arg(&input)
        .arg("--config")
        .arg(&config));
    assert!(!out.success);
    let expected = [
        "may not GET https://crm.example:443/v1/contacts: no grant allows it",
        "add to grants.toml [[plugins.crm-source.http]] { scheme = \"https\", host = \"crm.example\"",
    ];
    for text in expected {
        assert!(out.stderr.contains(text), "{text:?} not in {}", out.stderr);
    }
}
