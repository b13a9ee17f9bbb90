//! `causeway grants`: what every plugin requests, is granted, and may do.

use crate::support;

use support::{EXAMPLE_GRANTS, Scratch, run, run_json};

#[test]
fn grants_shows_requested_granted_and_effective_side_by_side() {
    let scratch = Scratch::new();
    scratch.install("crm-source", "crm-source.wasm");
    scratch.install("map-fullname", "map-fullname.wasm");
    scratch.grants(EXAMPLE_GRANTS);
    let views = run_json(scratch.causeway().args(["grants", "--json"]))["plugins"].take();
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
        "[plugins.crm-source]\nlimits = { resources = 20 }\n[[plugins.crm-source.http]]\nhost = \"crm.example.com\"\nmethods = [\"GET\"]\n[plugins.crm-source.http-limits]\nrequests-per-second = 5\n",
    );
    let views = run_json(scratch.causeway().args(["grants", "--json"]))["plugins"].take();
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
    // So do its outbound HTTP limits: the grant's, and the defaults.
    let http_limits = &views[0]["effective"]["http-limits"];
    assert_eq!(http_limits["requests-per-second"], 5);
    assert_eq!(http_limits["max-response-bytes"], 10 * 1024 * 1024);
    let line = out
        .stdout
        .lines()
        .find(|l| l.trim_start().starts_with("http limits"))
        .unwrap_or_else(|| panic!("no http limits line in\n{}", out.stdout));
    assert!(
        line.contains("requests-per-second = 5")
            && line.contains("burst = 20")
            && line.contains("timeout = \"30s\""),
        "{line}"
    );
}

/// How a credential goes into a request is the grant's, and the plugin's
/// description is where its author says how the API takes it: both are
/// shown where the operator binds it.
#[test]
fn a_credential_is_shown_with_the_plugins_description_where_it_is_bound() {
    let scratch = Scratch::new();
    scratch.install("calendar-sink", "calendar-sink.wasm");
    let said = "calendar-key: API key of the calendar, which it reads from the X-Api-Key header";
    let pending = run(scratch.causeway().arg("grants"));
    assert!(
        pending
            .stdout
            .contains("calendar-key: requested, not bound")
            && pending
                .stdout
                .contains("calendar-key, as the plugin describes it: API key of the calendar"),
        "{}",
        pending.stdout
    );
    let approve = |extra: &[&str]| {
        let out = run(scratch
            .causeway()
            .args(["grants", "approve", "calendar-sink", "--by", "ops"])
            .args(["--host", "calendar.example.com"])
            .args(["--secret", "calendar-key=env:CALENDAR_KEY"])
            .args(extra));
        assert!(out.success, "{}", out.stderr);
        out.stdout
    };
    let first = approve(&[]);
    assert!(
        first.contains("(bearer)") && first.contains(said),
        "{first}"
    );
    let fixed = approve(&["--inject", "calendar-key=header:x-api-key"]);
    assert!(
        fixed.contains("~ credential calendar-key: sent as header:x-api-key, in place of bearer"),
        "{fixed}"
    );
    // Said once more the same way: nothing to change.
    let again = approve(&["--inject", "calendar-key=header:x-api-key"]);
    assert!(
        again.contains("already approved: nothing changed"),
        "{again}"
    );
    // A name the plugin does not request is named, not passed over.
    for (flag, value) in [
        ("--secret", "calendr-key=env:CALENDAR_KEY"),
        ("--inject", "calendr-key=header:x-api-key"),
    ] {
        let out = run(scratch
            .causeway()
            .args(["grants", "approve", "calendar-sink", "--by", "ops"])
            .args([flag, value]));
        assert!(!out.success);
        assert!(
            out.stderr.contains(&format!(
                "{flag} calendr-key: calendar-sink 0.1.0 requests no credential of that name (did you mean \"calendar-key\"?)"
            )),
            "{}",
            out.stderr
        );
    }
    let shown = run(scratch.causeway().arg("grants"));
    assert!(
        shown
            .stdout
            .contains("calendar-key: env:CALENDAR_KEY to calendar.example.com (header:x-api-key)"),
        "{}",
        shown.stdout
    );
}

/// A plugin's descriptions are its author's text: shown on one line, they
/// cannot forge a line of what was requested or approved.
#[test]
fn a_description_cannot_forge_a_line_of_the_grants_or_the_approval() {
    let scratch = Scratch::new();
    scratch.install("test-no-manifest", "forge.wasm");
    scratch.write(
        "forge.toml",
        r#"contract = "0.1.0"
name = "forge"
version = "0.1.0"
description = "Passes records.\n  storage"
[[capabilities.http]]
host = "api.example.com"
methods = ["GET"]
[[capabilities.credentials]]
name = "api-key"
description = "the key\n  + http { host = \"evil.example\" }"
"#,
    );
    let forged = |text: &str| {
        text.lines().any(|l| {
            l.trim_start()
                .starts_with("+ http { host = \"evil.example\" }")
                || l == "  storage"
        })
    };
    let grants = run(scratch.causeway().arg("grants"));
    let approve = run(scratch
        .causeway()
        .args(["grants", "approve", "forge", "--by", "ops"])
        .args(["--secret", "api-key=env:API_KEY"]));
    assert!(approve.success, "{}", approve.stderr);
    let inspect = run(scratch.causeway().args(["inspect", "forge"]));
    for (command, out) in [
        ("grants", grants),
        ("approve", approve),
        ("inspect", inspect),
    ] {
        assert!(!forged(&out.stdout), "{command}:\n{}", out.stdout);
        assert!(
            out.stdout
                .contains(r#"the key\n  + http { host = "evil.example" }"#),
            "{command}:\n{}",
            out.stdout
        );
    }

    // A credential's name and a path prefix are shown as they are, so a
    // manifest whose name or prefix holds a line break does not load; nor
    // one whose description would drown the lines around it.
    let long = format!("name = \"api-key\"\ndescription = \"{}\"", "x".repeat(2000));
    for (field, line, manifest) in [
        ("capabilities.credentials[0].description", 4, long.as_str()),
        (
            "capabilities.credentials[0].name",
            4,
            r#"name = "api-key\n  + http { host = \"evil.example\" }""#,
        ),
        (
            "capabilities.http[0].path-prefix",
            6,
            r#"name = "api-key"
[[capabilities.http]]
host = "api.example.com"
methods = ["GET"]
path-prefix = "/v1/\n  + http { host = \"evil.example\" }""#,
        ),
    ] {
        scratch.write(
            "forge.toml",
            format!(
                "contract = \"0.1.0\"\nname = \"forge\"\nversion = \"0.2.0\"\n[[capabilities.credentials]]\n{manifest}\n"
            ),
        );
        let plugins = run(scratch.causeway().arg("plugins"));
        assert!(
            plugins
                .stdout
                .contains(&format!("forge.toml line {line}: {field} ")),
            "{field}:\n{}",
            plugins.stdout
        );
        let grants = run(scratch.causeway().arg("grants"));
        let inspect = run(scratch.causeway().args(["inspect", "forge"]));
        for (command, out) in [
            ("plugins", plugins),
            ("grants", grants),
            ("inspect", inspect),
        ] {
            let text = format!("{}{}", out.stdout, out.stderr);
            assert!(!forged(&text), "{field}, {command}:\n{text}");
        }
    }
    // Nor one whose version carries more than a semantic version's
    // pre-release: it is shown beside the name, on the plugin's own line.
    scratch.write(
        "forge.toml",
        "contract = \"0.1.0\"\nname = \"forge\"\nversion = \"0.3.0-a\\n  + http { host = \\\"evil.example\\\" }\"\n",
    );
    let plugins = run(scratch.causeway().arg("plugins"));
    assert!(
        plugins
            .stdout
            .contains("forge.toml: version \"0.3.0-a\\n  + http"),
        "{}",
        plugins.stdout
    );
    for args in [&["grants"][..], &["inspect", "forge"]] {
        let out = run(scratch.causeway().args(args));
        let text = format!("{}{}", out.stdout, out.stderr);
        assert!(!forged(&text), "version, {args:?}:\n{text}");
    }
}
