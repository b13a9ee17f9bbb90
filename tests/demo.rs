//! The README's main command: `causeway demo` on embedded defaults.

mod support;

use support::run;

#[test]
fn demo_installs_the_examples_and_maps_sample_contacts() {
    let scratch = tempfile::tempdir().unwrap();
    let out = run(support::causeway().current_dir(scratch.path()).arg("demo"));
    assert!(out.success, "{}\n{}", out.stdout, out.stderr);
    for plugin in ["map-fullname.wasm", "crm-source.wasm", "mailer-sink.wasm"] {
        assert!(
            scratch
                .path()
                .join("causeway-data/plugins")
                .join(plugin)
                .is_file(),
            "{plugin} not installed"
        );
    }
    assert!(
        out.stdout.contains("\"fullName\": \"Ada Lovelace\""),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("\"firstName\": \"Ada\""),
        "{}",
        out.stdout
    );
    let state_of = |name: &str| {
        out.stdout
            .lines()
            .find(|l| l.trim_start().starts_with(name))
            .and_then(|l| l.split_whitespace().last())
            .unwrap_or_default()
            .to_string()
    };
    assert_eq!(state_of("map-fullname"), "active", "{}", out.stdout);
    // Nothing is granted by default: the connectors wait for approval.
    assert_eq!(state_of("crm-source"), "pending-approval", "{}", out.stdout);
    assert_eq!(
        state_of("mailer-sink"),
        "pending-approval",
        "{}",
        out.stdout
    );
    // Running it again over an existing data directory works too.
    let again = run(support::causeway().current_dir(scratch.path()).arg("demo"));
    assert!(again.success, "{}", again.stderr);
}
