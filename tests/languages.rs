//! Plugins beyond Rust: the Python (componentize-py) and JavaScript
//! (componentize-js) ports of map-fullname, built by scripts/guest-plugins.sh
//! (which installs their toolchains), load like any plugin, pass `causeway
//! test`, and answer exactly what the Rust plugin answers.
//!
//! Their runtimes are large (an interpreter each): every command here shares
//! one compiled-artifact cache, so each is compiled once per machine.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock};

use serde_json::Value;
use support::{BUILT_PLUGINS, Scratch, repo_root, run, run_json};

/// The target folder (BUILT_PLUGINS is TARGET/plugins/wasm32-wasip2/release).
fn target() -> PathBuf {
    Path::new(BUILT_PLUGINS)
        .ancestors()
        .nth(3)
        .expect("the target folder")
        .to_path_buf()
}

/// Builds the guest-language plugins once for this test binary; a missing
/// toolchain fails the tests, with the script's own message.
fn guest_plugins() -> &'static Path {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT.get_or_init(|| {
        let out = target().join("guest-plugins");
        let result = Command::new("bash")
            .arg(repo_root().join("scripts/guest-plugins.sh"))
            .arg(&out)
            .env("CARGO_TARGET_DIR", target())
            .output()
            .expect("run scripts/guest-plugins.sh");
        assert!(
            result.status.success(),
            "scripts/guest-plugins.sh failed:\n{}{}",
            String::from_utf8_lossy(&result.stdout),
            String::from_utf8_lossy(&result.stderr)
        );
        out
    })
}

/// One compile at a time: the first test to need a runtime compiles it into
/// the shared cache, the others load it from there.
static CACHE: Mutex<()> = Mutex::new(());

/// A scratch host with map-fullname and its Python and JavaScript ports
/// installed, sharing the artifact cache.
fn host() -> Scratch {
    let scratch = Scratch::new();
    scratch.install("map-fullname", "map-fullname.wasm");
    for name in ["map-fullname-py", "map-fullname-js"] {
        for ext in ["wasm", "toml"] {
            std::fs::copy(
                guest_plugins().join(format!("{name}.{ext}")),
                scratch.plugins().join(format!("{name}.{ext}")),
            )
            .expect("install a guest plugin");
        }
    }
    let cache = target().join("guest-plugins").join("cache");
    std::fs::write(
        scratch.path().join("causeway.toml"),
        format!("cache-dir = {:?}\n", cache.display().to_string()),
    )
    .expect("write causeway.toml");
    scratch
}

#[test]
fn python_and_javascript_transforms_pass_causeway_test() {
    let scratch = host();
    let fixtures = repo_root().join("plugins/map-fullname/fixtures");
    for name in ["map-fullname-py", "map-fullname-js"] {
        let _one = CACHE.lock().unwrap_or_else(|e| e.into_inner());
        let out = run(scratch
            .causeway()
            .args(["test", name, "--json", "--fixtures"])
            .arg(&fixtures));
        let report: Value = serde_json::from_str(&out.stdout)
            .unwrap_or_else(|e| panic!("{name}: not a report ({e}): {}{}", out.stdout, out.stderr));
        assert!(out.success, "{name}: {report:#}");
        let rules: Vec<(&str, &str)> = report["findings"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| (f["rule"].as_str().unwrap(), f["verdict"].as_str().unwrap()))
            .collect();
        assert_eq!(
            rules,
            [
                ("manifest-valid", "pass"),
                ("config-matches-schema", "pass"),
                ("records-valid", "pass"),
                ("transform-deterministic", "pass"),
                ("transform-keeps-keys", "pass"),
            ],
            "{name}"
        );
    }
}

#[test]
fn python_and_javascript_transforms_answer_what_the_rust_one_does() {
    let scratch = host();
    let plugins = run_json(scratch.causeway().args(["plugins", "--json"]));
    let active = plugins
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["state"] == "active")
        .count();
    assert_eq!(active, 3, "{plugins:#}");

    // The sample, plus what trips ports up: non-ASCII, stray spaces, a
    // missing or empty part, an empty company, a configured stream.
    let input = scratch.path().join("input.json");
    std::fs::write(
        &input,
        r#"[
  {"stream": "contacts", "key": "c-1", "data": {"firstName": "Zoë", "lastName": " Ørsted ", "email": " zoe@example.com ", "company": "Ünïcode & Co"}},
  {"stream": "contacts", "key": "c-2", "data": {"firstName": "", "lastName": "Hopper", "email": "grace@example.com", "company": "  "}},
  {"stream": "contacts", "key": "c-3", "data": {"firstName": "No", "lastName": "Mail", "email": "   "}},
  {"stream": "contacts", "key": "c-4", "data": {"lastName": "Solo", "email": "solo@example.com"}, "source_timestamp": 1700000000000},
  {"stream": "contacts", "key": "c-5", "op": "delete", "source_timestamp": 5}
]"#,
    )
    .unwrap();
    let config = scratch.path().join("config.json");
    std::fs::write(&config, r#"{"target_stream": "members"}"#).unwrap();
    for (file, config) in [
        (repo_root().join("examples/contacts.json"), None),
        (input, Some(&config)),
    ] {
        let answer = |name: &str| {
            let _one = CACHE.lock().unwrap_or_else(|e| e.into_inner());
            let mut command = scratch.causeway();
            command
                .args(["invoke", name, "transform", "--input"])
                .arg(&file);
            if let Some(config) = config {
                command.arg("--config").arg(config);
            }
            run_json(&mut command)
        };
        let rust = answer("map-fullname");
        assert!(!rust.as_array().unwrap().is_empty());
        assert_eq!(
            answer("map-fullname-py"),
            rust,
            "Python differs on {}",
            file.display()
        );
        assert_eq!(
            answer("map-fullname-js"),
            rust,
            "JavaScript differs on {}",
            file.display()
        );
    }
}
