//! The README's main command: `causeway demo` on embedded defaults.

use crate::support;

use support::{run, run_json};

#[test]
fn demo_moves_every_contact_from_the_crm_to_the_mailer_and_the_calendar_mapped() {
    let scratch = tempfile::tempdir().unwrap();
    let out =
        run(support::causeway()
            .current_dir(scratch.path())
            .args(["demo", "--contacts", "25"]));
    assert!(out.success, "{}\n{}", out.stdout, out.stderr);
    for plugin in [
        "map-fullname.wasm",
        "crm-source.wasm",
        "mailer-sink.wasm",
        "calendar-sink.wasm",
    ] {
        assert!(
            scratch
                .path()
                .join("causeway-data/plugins")
                .join(plugin)
                .is_file(),
            "{plugin} not installed"
        );
    }
    let state_of = |name: &str| {
        out.stdout
            .lines()
            .find(|l| l.trim_start().starts_with(name))
            .and_then(|l| l.split_whitespace().last())
            .unwrap_or_default()
            .to_string()
    };
    // The demo grants the connectors exactly what they need.
    for plugin in ["map-fullname", "crm-source", "mailer-sink", "calendar-sink"] {
        assert_eq!(state_of(plugin), "active", "{}", out.stdout);
    }
    // Two samples with an email (one without is dropped) and 25 more.
    assert!(
        out.stdout
            .contains("All 27 contacts with an email are in the mailer"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("\"fullName\": \"Ada Lovelace\""),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout
            .contains("mailer: 27 subscribers · calendar: 27 attendees"),
        "{}",
        out.stdout
    );
    // The calendar took only the tokens the host fetched for calendar-sink.
    let fetched = out
        .stdout
        .split_once("s: the host fetched ")
        .and_then(|(_, rest)| rest.split_whitespace().next())
        .and_then(|n| n.parse::<usize>().ok());
    assert!(fetched.is_some_and(|n| n >= 1), "{}", out.stdout);
    // The calendar's attendees, mapped by calendar-sink from the same records.
    assert!(
        out.stdout.contains("And in the calendar, as 27 attendees"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("\"displayName\": \"Ada Lovelace\""),
        "{}",
        out.stdout
    );

    // The runs it made are there to see, with the demo's own configuration.
    let config = scratch.path().join("causeway-data/demo/causeway.toml");
    let runs = run_json(
        support::causeway()
            .current_dir(scratch.path())
            .arg("--config-file")
            .arg(&config)
            .args(["runs", "--json"]),
    );
    let written: i64 = runs
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["written"].as_i64().unwrap())
        .sum();
    assert!(written >= 27, "{runs:#?}");
    // Each record read is accounted for: map-fullname answers one record
    // for each, or none for a contact without an email (there are some).
    let count = |r: &serde_json::Value, what: &str| r[what].as_i64().unwrap();
    for r in runs.as_array().unwrap() {
        let accounted = ["written", "rejected", "skipped", "dropped", "unchanged"]
            .iter()
            .map(|what| count(r, what))
            .sum::<i64>();
        assert_eq!(count(r, "read"), accounted, "{r:#}");
    }
    let dropped: i64 = runs
        .as_array()
        .unwrap()
        .iter()
        .map(|r| count(r, "dropped"))
        .sum();
    assert!(dropped >= 1, "{runs:#?}");
    assert!(
        out.stdout.contains("dropped by map-fullname"),
        "{}",
        out.stdout
    );
    // A pipeline per sink, each both ways: the CRM's webhooks (at the one
    // path both take) and polling.
    for pipeline in ["crm-to-mailer", "crm-to-calendar"] {
        let triggers: Vec<&str> = runs
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["pipeline"] == pipeline)
            .map(|r| r["trigger"].as_str().unwrap())
            .collect();
        assert!(triggers.contains(&"webhook"), "{pipeline}: {triggers:?}");
        assert!(triggers.contains(&"schedule"), "{pipeline}: {triggers:?}");
        assert!(
            out.stdout.contains(&format!("  {pipeline}: ")),
            "{}",
            out.stdout
        );
    }

    // What it granted is in the audit log beside what the plugins did with
    // it, as under `causeway run`: every grant and every use is visible.
    let audit = |config: &std::path::Path| {
        run_json(
            support::causeway()
                .current_dir(scratch.path())
                .arg("--config-file")
                .arg(config)
                .args(["audit", "--json"]),
        )
    };
    let granted = |rows: &serde_json::Value| -> Vec<String> {
        rows.as_array()
            .unwrap()
            .iter()
            .filter(|r| r["capability"] == "grants")
            .map(|r| format!("{} {}", r["plugin"], r["detail"]))
            .collect()
    };
    let first = granted(&audit(&config));
    for plugin in ["crm-source", "mailer-sink", "calendar-sink"] {
        assert!(
            first
                .iter()
                .any(|g| g.contains(plugin) && g.contains("127.0.0.1")),
            "{plugin}'s grant is not in the audit log: {first:#?}"
        );
    }

    // Running it again over an existing data directory works too.
    let again =
        run(support::causeway()
            .current_dir(scratch.path())
            .args(["demo", "--contacts", "3"]));
    assert!(again.success, "{}", again.stderr);
    // Its fakes listen on new ports: the grants changed, and say so.
    let second = granted(&audit(&config));
    assert!(second.len() > first.len(), "{second:#?}");
}
