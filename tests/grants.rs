//! `causeway grants`: what every plugin requests, is granted, and may do.

mod support;

use support::{EXAMPLE_GRANTS, Scratch, run, run_json};

#[test]
fn grants_shows_requested_granted_and_effective_side_by_side() {
    let scratch = Scratch::new();
    scratch.install("crm-source", "crm-source.wasm");
    scratch.install("map-fullname", "map-fullname.wasm");
    scratch.grants(EXAMPLE_GRANTS);
    let views = run_json(scratch.causeway().args(["grants", "--json"]));
    let view = |name: &str| {
        views
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["name"] == name)
            .unwrap_or_else(|| panic!("no {name} in {views:#}"))
            .clone()
    };
    let crm = view("crm-source");
    assert_eq!(crm["state"], "active");
    assert_eq!(crm["requested"]["http"][0]["host"], "*");
    assert_eq!(crm["requested"]["http"][0]["scheme"], "*");
    assert_eq!(crm["granted"]["http"][0]["host"], "crm.example.com");
    assert_eq!(crm["effective"]["http"][0]["host"], "crm.example.com");
    assert_eq!(crm["effective"]["http"][0]["scheme"], "https");
    assert_eq!(crm["effective"]["credentials"][0], "crm-token");
    assert_eq!(crm["not_granted"], serde_json::json!([]));
    assert!(crm["digest"].as_str().unwrap().starts_with("sha256:"));
    // The limits each call runs under: the defaults unless granted otherwise.
    assert_eq!(crm["effective"]["limits"]["resources"], 10000);
    assert_eq!(crm["effective"]["limits"]["call-timeout"], "30s");
    // Granted, but no such file: visible, so a stale grant is noticed.
    assert_eq!(view("mailer-sink")["state"], "not-installed");
    assert_eq!(
        view("map-fullname")["effective"]["http"],
        serde_json::json!([])
    );
}

#[test]
fn what_is_requested_beyond_the_grants_is_marked() {
    let scratch = Scratch::new();
    scratch.install("crm-source", "crm-source.wasm");
    // HTTP granted, the credential not bound.
    scratch.grants(
        "[plugins.crm-source]\nlimits = { resources = 20 }\n[[plugins.crm-source.http]]\nhost = \"crm.example.com\"\nmethods = [\"GET\"]\n",
    );
    let views = run_json(scratch.causeway().args(["grants", "--json"]));
    assert_eq!(views[0]["state"], "pending-approval");
    assert_eq!(
        views[0]["not_granted"],
        serde_json::json!(["credential crm-token"])
    );
    let out = run(scratch.causeway().arg("grants"));
    assert!(out.success, "{}", out.stderr);
    assert!(
        out.stdout.contains("! not granted: credential crm-token"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("crm-token: requested, not bound"),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("http granted"), "{}", out.stdout);
    // A limit the grant sets shows among the effective ones.
    assert_eq!(views[0]["effective"]["limits"]["resources"], 20);
    assert!(
        out.stdout.contains("call-timeout = \"30s\"") && out.stdout.contains("resources = 20"),
        "{}",
        out.stdout
    );
}
