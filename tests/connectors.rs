//! The example connectors over real HTTP: `crm-source`, `mailer-sink` and
//! `calendar-sink` run in the real host against the fake CRM, mailer and
//! calendar on 127.0.0.1 —
//! paging with cursors, credentials, 429 with Retry-After, 5xx, slow answers,
//! per-record outcomes.

use crate::support;

use causeway::fakes::Fault;
use serde_json::{Value, json};
use support::connectors::{CALENDAR, CALENDAR_KEY, CRM_TOKEN, LIST, MAILER_KEY, World, person};
use support::run;

fn world(extra_grants: &str, page_size: u32) -> World {
    World::new(page_size, extra_grants, "")
}

impl World {
    /// One call through the real binary: its JSON answer, or the error line.
    fn invoke(&self, plugin: &str, operation: &str, input: Value) -> Result<Value, String> {
        let file = self.scratch.path().join("input.json");
        std::fs::write(&file, input.to_string()).unwrap();
        let out = run(self
            .causeway()
            .args(["invoke", plugin, operation, "--input"])
            .arg(&file));
        for secret in [CRM_TOKEN, MAILER_KEY, CALENDAR_KEY] {
            assert!(
                !out.stdout.contains(secret) && !out.stderr.contains(secret),
                "a secret leaked:\n{}\n{}",
                out.stdout,
                out.stderr
            );
        }
        if out.success {
            Ok(serde_json::from_str(&out.stdout).unwrap())
        } else {
            Err(out
                .stderr
                .lines()
                .rfind(|l| l.starts_with("error:"))
                .unwrap_or(&out.stderr)
                .to_string())
        }
    }

    fn read(&self, checkpoint: Option<&str>) -> Result<Value, String> {
        self.invoke(
            "crm-source",
            "read",
            json!({ "stream": "contacts", "checkpoint": checkpoint }),
        )
    }
}

fn keys(page: &Value) -> Vec<String> {
    page["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["key"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn crm_source_pages_through_contacts_and_resumes_from_its_cursor() {
    let w = world("", 2);
    let ids: Vec<String> = (0..5)
        .map(|i| {
            w.crm
                .create(person(&format!("F{i}"), "L", "x@example.com"))
                .id
        })
        .collect();

    let mut seen = Vec::new();
    let mut checkpoint: Option<String> = None;
    let mut pages = 0;
    loop {
        let page = w.read(checkpoint.as_deref()).unwrap();
        pages += 1;
        seen.extend(keys(&page));
        checkpoint = page["checkpoint"].as_str().map(str::to_string);
        if !page["has_more"].as_bool().unwrap() {
            break;
        }
        assert!(pages < 10, "paging never ends");
    }
    assert_eq!(pages, 3);
    assert_eq!(seen, ids, "every contact once, in order");

    // Nothing new: an empty page keeps the cursor.
    let page = w.read(checkpoint.as_deref()).unwrap();
    assert!(keys(&page).is_empty());
    assert_eq!(page["checkpoint"].as_str(), checkpoint.as_deref());

    // A change after the cursor is read next, with its data.
    w.crm
        .update(&ids[1], person("Ada", "Lovelace", "ada@example.com"));
    let page = w.read(checkpoint.as_deref()).unwrap();
    assert_eq!(keys(&page), [ids[1].clone()]);
    assert_eq!(page["records"][0]["data"]["firstName"], "Ada", "{page}");
}

#[test]
fn crm_source_sends_the_token_only_the_host_knows() {
    let w = world("", 10);
    w.crm.create(person("A", "B", "a@example.com"));
    // With the right secret the CRM answers; with a wrong one it refuses,
    // and the plugin reports an auth error.
    assert!(w.read(None).is_ok());
    let file = w.scratch.path().join("input.json");
    let out = run(w
        .scratch
        .causeway()
        .env("CRM_TOKEN", "wrong")
        .args(["invoke", "crm-source", "read", "--input"])
        .arg(&file));
    assert!(!out.success);
    assert!(out.stderr.contains("auth"), "{}", out.stderr);
    assert!(out.stderr.contains("401"), "{}", out.stderr);
}

#[test]
fn a_429_with_retry_after_is_reported_as_rate_limited_with_its_delay() {
    let w = world("", 10);
    w.crm.faults().inject(
        Fault::RateLimited {
            retry_after_secs: 7,
        },
        1,
    );
    let err = w.read(None).unwrap_err();
    assert!(err.contains("rate-limited (retry after 7000 ms)"), "{err}");
    // The fault is spent: the next read goes through.
    assert!(w.read(None).is_ok());
}

#[test]
fn a_5xx_is_transient_and_a_slow_api_times_out_within_the_bound() {
    let w = world(
        "[plugins.crm-source.http-limits]\ntimeout = \"500ms\"\n",
        10,
    );
    w.crm.faults().inject(Fault::Unavailable, 1);
    let err = w.read(None).unwrap_err();
    assert!(err.contains("transient"), "{err}");
    assert!(err.contains("503"), "{err}");

    w.crm
        .faults()
        .inject(Fault::Slow(std::time::Duration::from_secs(5)), 1);
    let started = std::time::Instant::now();
    let err = w.read(None).unwrap_err();
    assert!(err.contains("timed out"), "{err}");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(4),
        "the 500 ms bound was not kept: {:?}",
        started.elapsed()
    );
}

fn record(key: &str, data: Value) -> Value {
    json!({ "stream": "contacts", "key": key, "data": data })
}

#[test]
fn mailer_sink_writes_a_batch_and_answers_per_record() {
    let w = world("", 10);
    let batch = json!([
        record(
            "c1",
            json!({ "fullName": "Ada Lovelace", "email": "ada@example.com" })
        ),
        record(
            "c2",
            json!({ "fullName": "No Mail", "email": "not-an-address" })
        ),
        record(
            "c3",
            json!({ "fullName": "Alan Turing", "email": "alan@example.com" })
        ),
    ]);
    let outcomes = w.invoke("mailer-sink", "write", batch.clone()).unwrap();
    let kinds: Vec<&str> = outcomes
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["ok", "rejected", "ok"], "{outcomes}");
    assert!(
        outcomes[1]["reason"].as_str().unwrap().contains("email"),
        "{outcomes}"
    );
    let subscribers = w.mailer.subscribers(LIST);
    assert_eq!(subscribers.keys().collect::<Vec<_>>(), ["c1", "c3"]);
    assert_eq!(subscribers["c1"]["fullName"], "Ada Lovelace");
    assert_eq!(w.mailer.batches(), [3], "one request per batch");

    // Writing the same batch again is harmless: the key is the idempotency key.
    w.invoke("mailer-sink", "write", batch).unwrap();
    assert_eq!(w.mailer.subscribers(LIST).len(), 2);

    // A delete removes the subscriber.
    let delete = json!([{ "stream": "contacts", "key": "c1", "op": "delete", "data": null }]);
    let outcomes = w.invoke("mailer-sink", "write", delete).unwrap();
    assert_eq!(outcomes[0]["outcome"], "ok", "{outcomes}");
    assert_eq!(
        w.mailer.subscribers(LIST).keys().collect::<Vec<_>>(),
        ["c3"]
    );
}

/// The kind of each outcome of a sink's answer.
fn outcome_kinds(outcomes: &Value) -> Vec<&str> {
    outcomes
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["outcome"].as_str().unwrap())
        .collect()
}

#[test]
fn calendar_sink_writes_each_record_by_its_own_request_and_answers_per_record() {
    let w = World::with_calendar(10, "", "");
    let batch = json!([
        record(
            "c1",
            json!({ "fullName": "Ada Lovelace", "email": "ada@example.com", "organization": "Analytical Engines" })
        ),
        record("c2", json!({ "fullName": "No Mail" })),
        record(
            "c3",
            json!({ "fullName": "Bad Mail", "email": "not-an-address" })
        ),
        { "stream": "contacts", "key": "gone", "op": "delete", "data": null },
        record("c/4", json!({ "email": "alan@example.com" })),
    ]);
    let outcomes = w.invoke("calendar-sink", "write", batch.clone()).unwrap();
    assert_eq!(
        outcome_kinds(&outcomes),
        ["ok", "rejected", "rejected", "ok", "ok"],
        "{outcomes}"
    );
    // Refused by the plugin (nothing to send), and by the calendar (422).
    assert!(
        outcomes[1]["reason"]
            .as_str()
            .unwrap()
            .contains("needs an email"),
        "{outcomes}"
    );
    assert!(
        outcomes[2]["reason"].as_str().unwrap().contains("422"),
        "{outcomes}"
    );
    let attendees = w.calendar().attendees(CALENDAR);
    assert_eq!(attendees.keys().collect::<Vec<_>>(), ["c/4", "c1"]);
    assert_eq!(attendees["c1"].display_name, "Ada Lovelace");
    assert_eq!(
        attendees["c1"].organization.as_deref(),
        Some("Analytical Engines")
    );
    // No fullName: the email is the name a meeting shows.
    assert_eq!(attendees["c/4"].display_name, "alan@example.com");
    // One request per record it could send: c2 was not.
    assert_eq!(w.calendar().faults().requests(), 4);

    // Again: the key is the attendee's id, so nothing is duplicated.
    w.invoke("calendar-sink", "write", batch).unwrap();
    assert_eq!(w.calendar().attendees(CALENDAR).len(), 2);

    // A delete removes the attendee; a second one finds it gone, and is done.
    let delete = json!([{ "stream": "contacts", "key": "c1", "op": "delete", "data": null }]);
    for _ in 0..2 {
        let outcomes = w.invoke("calendar-sink", "write", delete.clone()).unwrap();
        assert_eq!(outcome_kinds(&outcomes), ["ok"], "{outcomes}");
    }
    assert_eq!(
        w.calendar().attendees(CALENDAR).keys().collect::<Vec<_>>(),
        ["c/4"]
    );
}

#[test]
fn a_calendar_that_asks_to_wait_is_sent_nothing_more_and_the_rest_is_retried() {
    let w = World::with_calendar(10, "", "");
    let batch = json!([
        record("c1", json!({ "fullName": "A", "email": "a@example.com" })),
        record("c2", json!({ "fullName": "B", "email": "b@example.com" })),
        record("c3", json!({ "fullName": "C", "email": "c@example.com" })),
        record("c4", json!({ "fullName": "D", "email": "d@example.com" })),
    ]);
    // The first request is served, the second is told to slow down.
    w.calendar()
        .faults()
        .inject(Fault::Slow(std::time::Duration::ZERO), 1);
    w.calendar().faults().inject(
        Fault::RateLimited {
            retry_after_secs: 7,
        },
        1,
    );
    let outcomes = w.invoke("calendar-sink", "write", batch).unwrap();
    assert_eq!(
        outcome_kinds(&outcomes),
        ["ok", "retry", "retry", "retry"],
        "{outcomes}"
    );
    assert!(
        outcomes[1]["reason"].as_str().unwrap().contains("429"),
        "{outcomes}"
    );
    assert!(
        outcomes[3]["reason"].as_str().unwrap().contains("not sent"),
        "{outcomes}"
    );
    assert_eq!(w.calendar().faults().requests(), 2, "nothing more was sent");
    assert_eq!(
        w.calendar().attendees(CALENDAR).keys().collect::<Vec<_>>(),
        ["c1"]
    );
}

#[test]
fn a_calendar_refusing_the_key_or_missing_is_named_by_check() {
    let w = World::with_calendar(10, "", "");
    assert!(
        w.invoke("calendar-sink", "check", json!(null)).is_ok(),
        "the granted key and the configured calendar pass"
    );
    let config = w.scratch.path().join("other.json");
    std::fs::write(
        &config,
        json!({ "base_url": w.calendar().base_url(), "calendar_id": "holidays" }).to_string(),
    )
    .unwrap();
    let out = run(w
        .causeway()
        .args(["invoke", "calendar-sink", "check", "--config"])
        .arg(&config));
    assert!(!out.success);
    assert!(
        out.stderr.contains("404") && out.stderr.contains("no calendar \\\"holidays\\\""),
        "{}",
        out.stderr
    );
    let out = run(w.causeway().env("CALENDAR_KEY", "a-wrong-key").args([
        "invoke",
        "calendar-sink",
        "check",
    ]));
    assert!(!out.success);
    assert!(
        out.stderr.contains("auth") && out.stderr.contains("401"),
        "{}",
        out.stderr
    );
}

#[test]
fn a_mailer_that_is_down_fails_the_batch_as_transient_and_loses_nothing_it_accepted() {
    let w = world("", 10);
    w.mailer.faults().set_down(true);
    let batch = json!([record("c1", json!({ "email": "a@example.com" }))]);
    let err = w.invoke("mailer-sink", "write", batch.clone()).unwrap_err();
    assert!(err.contains("transient") && err.contains("503"), "{err}");
    assert!(w.mailer.subscribers(LIST).is_empty());
    w.mailer.faults().set_down(false);
    let outcomes = w.invoke("mailer-sink", "write", batch).unwrap();
    assert_eq!(outcomes[0]["outcome"], "ok", "{outcomes}");
    assert_eq!(w.mailer.subscribers(LIST).len(), 1);
}
