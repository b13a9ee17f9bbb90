//! `causeway test`: the conformance suite, on the example plugins with their
//! committed fixtures, on a recording made against a live (fake) API and
//! replayed without it, and on plugins that each break one rule.

use crate::support;

use std::path::{Path, PathBuf};

use causeway::fakes::{FakeCalendar, FakeCrm, FakeMailer};
use serde_json::{Value, json};
use support::{Scratch, built, repo_root, run};

const CRM_TOKEN: &str = "crm-t0ken-for-rec0rding";
const MAILER_KEY: &str = "ma1ler-key-for-rec0rding";
const CALENDAR_KEY: &str = "ca1endar-key-for-rec0rding";

/// Runs `causeway test --json` with `args` in the scratch folder: whether it
/// passed (exit 0), and the report.
fn suite(scratch: &Scratch, plugin: &Path, args: &[&str]) -> (bool, Value) {
    let out = run(scratch
        .causeway()
        .arg("test")
        .arg(plugin)
        .arg("--json")
        .args(args)
        .env("CRM_TOKEN", CRM_TOKEN)
        .env("MAILER_KEY", MAILER_KEY)
        .env("CALENDAR_KEY", CALENDAR_KEY));
    let report: Value = serde_json::from_str(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "not a JSON report ({e}):\nstdout: {}\nstderr: {}",
            out.stdout, out.stderr
        )
    });
    assert_eq!(report["passed"], json!(out.success), "{report:#}");
    (out.success, report)
}

/// `causeway test --record` with the configuration `live` and one
/// credential's secret reference (`NAME=env:VAR`).
fn record(scratch: &Scratch, plugin: &Path, live: &Path, secret: &str) -> (bool, Value) {
    let live = live.to_str().expect("a UTF-8 path");
    suite(
        scratch,
        plugin,
        &["--record", "--config", live, "--secret", secret],
    )
}

/// The verdict of each rule in a report.
fn verdicts(report: &Value) -> Vec<(String, String)> {
    report["findings"]
        .as_array()
        .expect("findings")
        .iter()
        .map(|f| {
            (
                f["rule"].as_str().unwrap_or_default().to_string(),
                f["verdict"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

fn all_pass(rules: &[&str]) -> Vec<(String, String)> {
    rules
        .iter()
        .map(|r| (r.to_string(), "pass".to_string()))
        .collect()
}

fn fixtures_of(plugin: &str) -> PathBuf {
    repo_root().join("plugins").join(plugin).join("fixtures")
}

const SOURCE_RULES: &[&str] = &[
    "manifest-valid",
    "config-matches-schema",
    "check-accepts-config",
    "check-rejects-bad-config",
    "discover-stable",
    "read-completes",
    "read-resumes",
    "records-valid",
];

/// crm-source's rules: it is a source and a webhook.
fn crm_rules() -> Vec<&'static str> {
    let mut rules = SOURCE_RULES.to_vec();
    rules.push("webhook-deterministic");
    rules
}

/// A delivery the nonconformant plugin's webhook accepts.
const NONCONFORMANT_DELIVERY: &str = r#"{"body": "{\"n\": 3}"}"#;

#[test]
fn the_example_plugins_pass_with_their_committed_fixtures() {
    let scratch = Scratch::new();
    let sink_rules = [
        "manifest-valid",
        "config-matches-schema",
        "check-accepts-config",
        "check-rejects-bad-config",
        "sink-answers-each",
    ];
    let transform_rules = [
        "manifest-valid",
        "config-matches-schema",
        "records-valid",
        "transform-deterministic",
        "transform-keeps-keys",
        "transform-record-wise",
    ];
    for (plugin, rules) in [
        ("crm-source", &crm_rules()[..]),
        ("mailer-sink", &sink_rules[..]),
        ("calendar-sink", &sink_rules[..]),
        ("map-fullname", &transform_rules[..]),
    ] {
        let fixtures = fixtures_of(plugin);
        let (passed, report) = suite(
            &scratch,
            &built(plugin),
            &["--fixtures", fixtures.to_str().unwrap()],
        );
        assert!(passed, "{plugin}: {report:#}");
        assert_eq!(verdicts(&report), all_pass(rules), "{plugin}");
    }
}

#[test]
fn a_recording_against_the_live_api_replays_without_it_and_holds_no_secret() {
    let scratch = Scratch::new();
    let crm = FakeCrm::start(CRM_TOKEN, 0).expect("start the fake CRM");
    for (first, last) in [("Ada", "Lovelace"), ("Grace", "Hopper"), ("Alan", "Turing")] {
        crm.create(support::connectors::person(
            first,
            last,
            &format!("{}@example.com", first.to_lowercase()),
        ));
    }
    let live = scratch.path().join("live.json");
    std::fs::write(
        &live,
        json!({"base_url": crm.base_url(), "page_size": 2}).to_string(),
    )
    .unwrap();
    let fixtures = scratch.path().join("fixtures");
    std::fs::create_dir_all(&fixtures).unwrap();
    std::fs::copy(
        fixtures_of("crm-source").join("webhook.json"),
        fixtures.join("webhook.json"),
    )
    .unwrap();
    let plugin = built("crm-source");

    // Recording needs the credential's secret, and says how to give it.
    let out = run(scratch
        .causeway()
        .arg("test")
        .arg(&plugin)
        .args(["--record", "--config"])
        .arg(&live));
    assert!(!out.success);
    assert!(
        out.stderr.contains("--secret crm-token=env:VAR"),
        "{}",
        out.stderr
    );

    let (passed, recorded) = record(&scratch, &plugin, &live, "crm-token=env:CRM_TOKEN");
    assert!(passed, "{recorded:#}");
    let requests_live = crm.faults().requests();
    assert!(requests_live >= 4, "the CRM saw {requests_live} requests");
    let tape = std::fs::read_to_string(fixtures.join("http.json")).expect("http.json written");
    assert!(tape.contains("Grace"), "{tape}");
    assert!(
        !tape.contains(CRM_TOKEN),
        "the token leaked into the fixtures:\n{tape}"
    );
    let config: Value =
        serde_json::from_str(&std::fs::read_to_string(fixtures.join("config.json")).unwrap())
            .unwrap();
    assert_eq!(config["base_url"], json!(crm.base_url()));

    // Replayed: the same verdicts, and not one request reaches the API.
    let (passed, replayed) = suite(&scratch, &plugin, &[]);
    assert!(passed, "{replayed:#}");
    assert_eq!(verdicts(&replayed), verdicts(&recorded));
    assert_eq!(verdicts(&replayed), all_pass(&crm_rules()));
    assert_eq!(crm.faults().requests(), requests_live);
    drop(crm);
    let (passed, _) = suite(&scratch, &plugin, &[]);
    assert!(passed, "the replay needed the live API");

    // A request the tape does not hold fails, naming the file and the fix.
    std::fs::write(
        fixtures.join("config.json"),
        json!({"base_url": config["base_url"], "page_size": 3}).to_string(),
    )
    .unwrap();
    let (passed, report) = suite(&scratch, &plugin, &[]);
    assert!(!passed);
    let finding = report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["verdict"] == "fail")
        .expect("a failed rule");
    let message = finding["message"].as_str().unwrap();
    assert!(
        message.contains("http.json holds no recorded answer") && message.contains("--record"),
        "{message}"
    );
}

/// Records `plugin`'s suite with its committed records against a live API
/// configured by `live`, with `args` (its credentials), then replays it:
/// whether the recording passed, its report, and the scratch folder
/// holding the fixtures (`requests`: what the live API received so far, so
/// the replay is seen to send it nothing).
fn record_then_replay(
    plugin: &str,
    live: Value,
    args: &[&str],
    requests: impl Fn() -> u64,
) -> (bool, Value, Scratch) {
    let scratch = Scratch::new();
    let live_file = scratch.path().join("live.json");
    std::fs::write(&live_file, live.to_string()).unwrap();
    let fixtures = scratch.path().join("fixtures");
    std::fs::create_dir_all(&fixtures).unwrap();
    std::fs::copy(
        fixtures_of(plugin).join("records.json"),
        fixtures.join("records.json"),
    )
    .unwrap();
    let wasm = built(plugin);
    let mut recording = vec!["--record", "--config", live_file.to_str().unwrap()];
    recording.extend(args);
    let (passed, recorded) = suite(&scratch, &wasm, &recording);
    if passed {
        let sent = requests();
        let (replayed, report) = suite(&scratch, &wasm, &[]);
        assert!(replayed, "{report:#}");
        assert_eq!(requests(), sent, "the replay reached the live API");
    }
    (passed, recorded, scratch)
}

#[test]
fn a_sink_recording_replays_its_writes() {
    let mailer = FakeMailer::start(MAILER_KEY, 0).expect("start the fake mailer");
    let (passed, recorded, _) = record_then_replay(
        "mailer-sink",
        json!({"base_url": mailer.base_url(), "list_id": "newsletter"}),
        &["--secret", "mailer-key=env:MAILER_KEY"],
        || mailer.faults().requests(),
    );
    assert!(passed, "{recorded:#}");
    assert_eq!(mailer.subscribers("newsletter").len(), 2);
}

#[test]
fn a_credential_the_api_reads_from_its_own_header_is_recorded_with_inject() {
    let calendar =
        FakeCalendar::start(CALENDAR_KEY, &["team"], 0).expect("start the fake calendar");
    let live = json!({"base_url": calendar.base_url(), "calendar_id": "team"});
    let secret = ["--secret", "calendar-key=env:CALENDAR_KEY"];

    // As a bearer token, the calendar refuses it: the suite says so.
    let (passed, report, _) = record_then_replay("calendar-sink", live.clone(), &secret, || 0);
    assert!(!passed, "{report:#}");
    assert!(report.to_string().contains("401"), "{report:#}");
    assert!(calendar.attendees("team").is_empty());

    let mut inject = secret.to_vec();
    inject.extend(["--inject", "calendar-key=header:x-api-key"]);
    let (passed, report, scratch) = record_then_replay("calendar-sink", live, &inject, || {
        calendar.faults().requests()
    });
    assert!(passed, "{report:#}");
    assert_eq!(
        calendar.attendees("team").keys().collect::<Vec<_>>(),
        ["c-1001", "c-1002"]
    );
    let tape = std::fs::read_to_string(scratch.path().join("fixtures/http.json")).unwrap();
    assert!(!tape.contains(CALENDAR_KEY), "{tape}");

    // A credential the plugin does not request, or a way the host does
    // not know, is named.
    for (flag, expected) in [
        (
            "calendar-ky=header:x-api-key",
            "requests no credential of that name (did you mean \"calendar-key\"?)",
        ),
        (
            "calendar-key=cookie",
            "must be \"bearer\", \"basic\", \"header:NAME\", \"query:NAME\" or \"json:NAME\"",
        ),
    ] {
        let out = run(scratch
            .causeway()
            .args(["test", "--inject", flag])
            .arg(built("calendar-sink")));
        assert!(!out.success);
        assert!(out.stderr.contains(expected), "{flag}: {}", out.stderr);
    }
}

/// `causeway test` on the nonconformant plugin told to break `rule`: that
/// rule, and only that rule, fails, and the text report names it.
fn breaks(plugin: &str, rule: &str, bad_config: Option<Value>) {
    breaks_as(plugin, rule, rule, bad_config);
}

/// [`breaks`], the plugin told to break `how` (a way of breaking `rule`):
/// the text report.
fn breaks_as(plugin: &str, rule: &str, how: &str, bad_config: Option<Value>) -> String {
    let scratch = Scratch::new();
    let fixtures = scratch.path().join("fixtures");
    std::fs::create_dir_all(&fixtures).unwrap();
    std::fs::write(
        fixtures.join("config.json"),
        json!({ "break": how }).to_string(),
    )
    .unwrap();
    if let Some(bad) = bad_config {
        std::fs::write(fixtures.join("bad-config.json"), bad.to_string()).unwrap();
    }
    std::fs::write(fixtures.join("webhook.json"), NONCONFORMANT_DELIVERY).unwrap();
    let (passed, report) = suite(&scratch, &built(plugin), &[]);
    assert!(!passed, "{rule}: {report:#}");
    let failed: Vec<String> = verdicts(&report)
        .into_iter()
        .filter(|(_, v)| v == "fail")
        .map(|(r, _)| r)
        .collect();
    assert_eq!(failed, [rule], "{report:#}");
    let text = run(scratch.causeway().arg("test").arg(built(plugin)));
    assert!(!text.success);
    assert!(
        text.stdout.contains(&format!("FAIL  {rule}")),
        "{rule}:\n{}",
        text.stdout
    );
    text.stdout
}

#[test]
fn each_connector_rule_is_named_when_broken() {
    // Conforming, it passes every rule that applies to a source + sink +
    // webhook.
    let scratch = Scratch::new();
    let fixtures = scratch.path().join("fixtures");
    std::fs::create_dir_all(&fixtures).unwrap();
    std::fs::write(fixtures.join("webhook.json"), NONCONFORMANT_DELIVERY).unwrap();
    let config = scratch.path().join("none.json");
    std::fs::write(&config, r#"{"break": "none"}"#).unwrap();
    let (passed, report) = suite(
        &scratch,
        &built("test-nonconformant"),
        &["--config", config.to_str().unwrap()],
    );
    assert!(passed, "{report:#}");
    let mut rules = SOURCE_RULES.to_vec();
    rules.extend(["sink-answers-each", "webhook-deterministic"]);
    assert_eq!(verdicts(&report), all_pass(&rules));

    // The plugin's error, which holds a line break, stays on its line.
    let text = breaks_as(
        "test-nonconformant",
        "check-accepts-config",
        "check-accepts-config",
        None,
    );
    assert!(
        text.contains("refused, on purpose\\n  pass  check-accepts-config  forged")
            && !text
                .lines()
                .any(|l| l.starts_with("  pass  check-accepts-config")),
        "{text}"
    );
    for rule in [
        "discover-stable",
        "read-completes",
        "read-resumes",
        "records-valid",
        "sink-answers-each",
        "webhook-deterministic",
    ] {
        breaks("test-nonconformant", rule, None);
    }
    breaks(
        "test-nonconformant",
        "check-rejects-bad-config",
        Some(json!({"break": "check-rejects-bad-config", "surplus": true})),
    );
    // A key, a checkpoint longer than the contract allows, named cut short.
    let text = breaks_as("test-nonconformant", "records-valid", "long-key", None);
    assert!(
        text.contains("has a key of 2007 bytes, over the 1024 a key may have"),
        "{text}"
    );
    assert!(
        text.contains("… (2007 bytes)") && text.len() < 4000,
        "{text}"
    );
    let text = breaks_as(
        "test-nonconformant",
        "read-completes",
        "long-checkpoint",
        None,
    );
    assert!(
        text.contains("read of page 2 failed: plugin test-nonconformant@")
            && text.contains(
                "its page's checkpoint is 71680 bytes, over the 64 KiB a checkpoint may have"
            ),
        "{text}"
    );
}

#[test]
fn each_transform_rule_is_named_when_broken() {
    for rule in [
        "transform-deterministic",
        "transform-keeps-keys",
        "transform-record-wise",
    ] {
        breaks("test-nonconformant-transform", rule, None);
    }
}

#[test]
fn a_broken_manifest_or_config_is_named() {
    let scratch = Scratch::new();
    // A config schema the host cannot check configurations against.
    let plugin = scratch.install("test-no-manifest", "odd.wasm");
    scratch.write(
        "odd.toml",
        r#"contract = "0.1.0"
name = "odd"
version = "0.1.0"
[config-schema]
type = "object"
required = ["base_url"]
[config-schema.properties.url]
type = "uri"
"#,
    );
    let (passed, report) = suite(&scratch, &plugin, &[]);
    assert!(!passed);
    let finding = &report["findings"][0];
    assert_eq!(finding["rule"], "manifest-valid");
    assert_eq!(finding["verdict"], "fail");
    let message = finding["message"].as_str().unwrap();
    assert!(
        message
            .contains("config-schema.required: \"base_url\" is not one of the schema's properties")
            && message.contains("config-schema.properties.url.type"),
        "{message}"
    );

    // No manifest at all: the plugin does not load.
    let bare = scratch.install("test-no-manifest", "bare.wasm");
    let (passed, report) = suite(&scratch, &bare, &[]);
    assert!(!passed);
    assert_eq!(
        verdicts(&report),
        [("manifest-valid".into(), "fail".into())]
    );
    assert!(
        report["findings"][0]["message"]
            .as_str()
            .unwrap()
            .contains("has no manifest"),
        "{report:#}"
    );

    // A test configuration its schema refuses.
    let config = scratch.path().join("bad.json");
    std::fs::write(&config, r#"{"target_stream": 5}"#).unwrap();
    let (passed, report) = suite(
        &scratch,
        &built("map-fullname"),
        &["--config", config.to_str().unwrap()],
    );
    assert!(!passed);
    let failed: Vec<(String, String)> = verdicts(&report)
        .into_iter()
        .filter(|(_, v)| v == "fail")
        .collect();
    assert_eq!(failed, [("config-matches-schema".into(), "fail".into())]);
    // The rules that would call the plugin with it are not run.
    let skipped = verdicts(&report)
        .into_iter()
        .filter(|(_, v)| v == "skip")
        .count();
    assert_eq!(skipped, 4, "{report:#}");

    // A fixtures folder named but missing (a typo) would test nothing of
    // the plugin's: it is named, not passed over on defaults.
    let out = run(scratch
        .causeway()
        .arg("test")
        .arg(built("map-fullname"))
        .args(["--fixtures", "fixturs"]));
    assert!(!out.success, "{}", out.stdout);
    assert!(
        out.stderr.contains("--fixtures fixturs: no such folder"),
        "{}",
        out.stderr
    );
}

#[test]
fn a_webhook_without_a_delivery_is_skipped_and_a_bad_delivery_is_named() {
    let scratch = Scratch::new();
    let fixtures = scratch.path().join("fixtures");
    std::fs::create_dir_all(&fixtures).unwrap();
    for file in ["config.json", "http.json"] {
        std::fs::copy(fixtures_of("crm-source").join(file), fixtures.join(file)).unwrap();
    }
    let plugin = built("crm-source");

    let (passed, report) = suite(&scratch, &plugin, &[]);
    assert!(passed, "a skip is not a failure: {report:#}");
    let finding = report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["rule"] == "webhook-deterministic")
        .expect("the webhook rule applies to crm-source");
    assert_eq!(finding["verdict"], "skip", "{finding:#}");
    assert!(
        finding["message"]
            .as_str()
            .unwrap()
            .contains("webhook.json"),
        "{finding:#}"
    );

    std::fs::write(fixtures.join("webhook.json"), r#"{"body": {"n": 3}}"#).unwrap();
    let out = run(scratch.causeway().arg("test").arg(&plugin));
    assert!(!out.success);
    assert!(
        out.stderr.contains("webhook.json") && out.stderr.contains("body"),
        "{}",
        out.stderr
    );
}
