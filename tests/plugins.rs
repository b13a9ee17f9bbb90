//! Loading the plugins folder: `causeway plugins` and `causeway inspect`
//! against real plugin files, good and bad.

use crate::support;

use serde_json::Value;
use sha2::{Digest, Sha256};
use support::{Scratch, run, run_json};

const SIDECAR_TRANSFORM: &str = r#"
contract = "0.1.0"
name = "pass-through"
version = "0.2.0"
description = "Passes records through."
"#;

fn by_file<'a>(rows: &'a Value, file: &str) -> &'a Value {
    rows.as_array()
        .expect("an array")
        .iter()
        .find(|row| row["file"].as_str().is_some_and(|f| f.ends_with(file)))
        .unwrap_or_else(|| panic!("no row for {file} in {rows:#}"))
}

fn install_examples(scratch: &Scratch) {
    scratch.grants(support::EXAMPLE_GRANTS);
    scratch.install("map-fullname", "map-fullname.wasm");
    scratch.install("crm-source", "crm-source.wasm");
    scratch.install("mailer-sink", "mailer-sink.wasm");
}

#[test]
fn plugins_json_lists_the_three_examples_with_worlds_and_digests() {
    let scratch = Scratch::new();
    install_examples(&scratch);
    let rows = run_json(scratch.causeway().args(["plugins", "--json"]));
    let names: Vec<&str> = rows
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["crm-source", "mailer-sink", "map-fullname"]);
    for (file, worlds) in [
        ("crm-source.wasm", vec!["source", "webhook"]),
        ("mailer-sink.wasm", vec!["sink"]),
        ("map-fullname.wasm", vec!["transform"]),
    ] {
        let row = by_file(&rows, file);
        assert_eq!(row["state"], "active", "{row:#}");
        assert_eq!(row["version"], "0.1.0");
        assert_eq!(row["worlds"], serde_json::json!(worlds));
        let bytes = std::fs::read(scratch.plugins().join(file)).unwrap();
        assert_eq!(
            row["digest"],
            format!("sha256:{:x}", Sha256::digest(&bytes))
        );
        assert!(row["error"].is_null());
    }
}

#[test]
fn the_human_table_shows_each_plugin_and_state() {
    let scratch = Scratch::new();
    install_examples(&scratch);
    let out = run(scratch.causeway().arg("plugins"));
    assert!(out.success, "{}", out.stderr);
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert!(
        lines[0].starts_with("NAME") && lines[0].contains("DIGEST"),
        "{}",
        out.stdout
    );
    assert!(
        lines.iter().any(|l| l.starts_with("map-fullname")
            && l.contains("transform")
            && l.contains("active"))
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("crm-source") && l.contains("source,webhook"))
    );
}

/// Each bad file fails alone, with one line naming the file and what is wrong,
/// and every good plugin beside them still loads.
#[test]
fn each_bad_file_fails_with_one_line_and_the_others_keep_loading() {
    let scratch = Scratch::new();
    install_examples(&scratch);
    scratch.write("garbage.wasm", b"this is not wasm at all");
    scratch.write("core.wasm", b"\0asm\x01\0\0\0");
    scratch.install("test-no-world", "no-world.wasm");
    scratch.write(
        "no-world.toml",
        SIDECAR_TRANSFORM.replace("pass-through", "no-world"),
    );
    scratch.install("test-foreign-import", "foreign.wasm");
    scratch.install("test-no-manifest", "unknown-key.wasm");
    scratch.write(
        "unknown-key.toml",
        SIDECAR_TRANSFORM.replace("pass-through", "unknown-key") + "colour = \"red\"\n",
    );
    scratch.install("test-no-manifest", "bad-type.wasm");
    scratch.write(
        "bad-type.toml",
        SIDECAR_TRANSFORM
            .replace("pass-through", "bad-type")
            .replace("\"0.2.0\"", "2"),
    );
    scratch.install("test-no-manifest", "claims-sink.wasm");
    scratch.write(
        "claims-sink.toml",
        SIDECAR_TRANSFORM.replace("pass-through", "claims-sink")
            + "worlds = [\"transform\", \"sink\"]\n",
    );
    scratch.install("test-no-manifest", "no-manifest.wasm");

    let rows = run_json(scratch.causeway().args(["plugins", "--json"]));
    for file in ["map-fullname.wasm", "crm-source.wasm", "mailer-sink.wasm"] {
        assert_eq!(by_file(&rows, file)["state"], "active", "{file}");
    }
    let expectations = [
        ("garbage.wasm", "is not a WebAssembly file"),
        ("core.wasm", "is a core WebAssembly module, not a component"),
        ("no-world.wasm", "exports no Causeway world"),
        ("foreign.wasm", "imports `test:foreign/evil`"),
        ("unknown-key.wasm", "unknown field `colour`"),
        ("bad-type.wasm", "line 4"),
        ("claims-sink.wasm", "manifest claims world `sink`"),
        ("no-manifest.wasm", "has no manifest"),
    ];
    for (file, expected) in expectations {
        let row = by_file(&rows, file);
        assert_eq!(row["state"], "failed", "{file}: {row:#}");
        let error = row["error"]
            .as_str()
            .unwrap_or_else(|| panic!("{file} has no error"));
        assert!(
            error.contains(file),
            "{file}: the error does not name the file: {error}"
        );
        assert!(
            error.contains(expected),
            "{file}: expected {expected:?} in: {error}"
        );
        assert!(
            !error.contains('\n'),
            "{file}: the error is not one line: {error}"
        );
    }
    assert!(
        by_file(&rows, "bad-type.wasm")["error"]
            .as_str()
            .unwrap()
            .contains("bad-type.toml"),
        "an ill-typed sidecar is named"
    );

    // The table shows the same errors, one `error:` line each, whatever
    // a file's name holds.
    scratch.write("forged\n  + http { host = \"evil.example\" }.wasm", b"junk");
    let out = run(scratch.causeway().arg("plugins"));
    assert!(out.success);
    assert_eq!(
        out.stdout.matches("\nerror: ").count(),
        expectations.len() + 1,
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains(
            r#"forged\n  + http { host = "evil.example" }.wasm: is not a WebAssembly file"#
        ) && !out.stdout.lines().any(|l| l.starts_with("  + http")),
        "{}",
        out.stdout
    );
}

#[test]
fn a_sidecar_manifest_is_accepted_for_a_component_without_one() {
    let scratch = Scratch::new();
    let file = scratch.install("test-no-manifest", "pass-through.wasm");
    scratch.write("pass-through.toml", SIDECAR_TRANSFORM);
    let info = run_json(support::causeway().arg("inspect").arg(&file).arg("--json"));
    assert_eq!(info["manifest_origin"], "sidecar");
    assert_eq!(info["name"], "pass-through");
    assert_eq!(info["version"], "0.2.0");
    assert_eq!(info["valid"], true);
    let rows = run_json(scratch.causeway().args(["plugins", "--json"]));
    assert_eq!(by_file(&rows, "pass-through.wasm")["state"], "active");
}

#[test]
fn an_embedded_manifest_and_a_sidecar_together_are_ambiguous() {
    let scratch = Scratch::new();
    scratch.install("map-fullname", "map-fullname.wasm");
    scratch.write("map-fullname.toml", SIDECAR_TRANSFORM);
    let rows = run_json(scratch.causeway().args(["plugins", "--json"]));
    let error = by_file(&rows, "map-fullname.wasm")["error"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        error.contains("both an embedded manifest and a sidecar map-fullname.toml"),
        "{error}"
    );
}

#[test]
fn subfolders_and_other_files_are_ignored() {
    let scratch = Scratch::new();
    scratch.install("map-fullname", "map-fullname.wasm");
    std::fs::create_dir(scratch.plugins().join("old")).unwrap();
    std::fs::copy(
        support::built("crm-source"),
        scratch.plugins().join("old/crm-source.wasm"),
    )
    .unwrap();
    scratch.write("README.txt", "not a plugin");
    scratch.write("map-fullname.wasm.bak", "not a plugin either");
    let rows = run_json(scratch.causeway().args(["plugins", "--json"]));
    assert_eq!(rows.as_array().unwrap().len(), 1, "{rows:#}");
    assert_eq!(rows[0]["name"], "map-fullname");
}

#[test]
fn a_second_file_with_the_same_plugin_name_fails_naming_the_first() {
    let scratch = Scratch::new();
    scratch.install("map-fullname", "a.wasm");
    scratch.install("map-fullname", "b.wasm");
    let rows = run_json(scratch.causeway().args(["plugins", "--json"]));
    assert_eq!(by_file(&rows, "a.wasm")["state"], "active");
    let error = by_file(&rows, "b.wasm")["error"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        error.contains("already provided by") && error.contains("a.wasm"),
        "{error}"
    );
}

#[test]
fn inspect_shows_manifest_worlds_imports_and_exports_without_running_the_plugin() {
    let info = run_json(
        support::causeway()
            .arg("inspect")
            .arg(support::built("crm-source"))
            .arg("--json"),
    );
    assert_eq!(info["name"], "crm-source");
    assert_eq!(info["manifest_origin"], "embedded");
    assert_eq!(info["manifest"]["contract"], "0.1.0");
    assert_eq!(info["worlds"], serde_json::json!(["source", "webhook"]));
    assert_eq!(
        info["manifest"]["capabilities"]["credentials"][0]["name"],
        "crm-token"
    );
    let imports: Vec<&str> = info["imports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(
        imports.contains(&"causeway:plugin/http@0.1.0"),
        "{imports:?}"
    );
    let mut exports: Vec<&str> = info["exports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    exports.sort();
    assert_eq!(
        exports,
        [
            "causeway:plugin/source@0.1.0",
            "causeway:plugin/webhook@0.1.0"
        ]
    );
    assert_eq!(info["manifest"]["config-schema"]["required"][0], "base_url");
}

#[test]
fn a_transform_built_with_the_sdk_imports_no_http_and_no_storage() {
    let info = run_json(
        support::causeway()
            .arg("inspect")
            .arg(support::built("map-fullname"))
            .arg("--json"),
    );
    let imports = info["imports"].to_string();
    assert!(imports.contains("causeway:plugin/config"), "{imports}");
    assert!(!imports.contains("causeway:plugin/http"), "{imports}");
    assert!(!imports.contains("causeway:plugin/storage"), "{imports}");
}

#[test]
fn inspect_of_a_foreign_import_shows_it_and_fails_naming_it() {
    let out = run(support::causeway()
        .arg("inspect")
        .arg(support::built("test-foreign-import")));
    assert!(!out.success);
    assert!(out.stdout.contains("test:foreign/evil"), "{}", out.stdout);
    let error_lines: Vec<&str> = out
        .stderr
        .lines()
        .filter(|l| l.starts_with("error:"))
        .collect();
    assert_eq!(error_lines.len(), 1, "{}", out.stderr);
    assert!(
        error_lines[0].contains("imports `test:foreign/evil`"),
        "{}",
        error_lines[0]
    );
}

#[test]
fn inspect_of_garbage_is_one_error_line_naming_the_file() {
    let scratch = Scratch::new();
    let file = scratch.write("junk.wasm", "junk");
    let out = run(support::causeway().arg("inspect").arg(&file));
    assert!(!out.success);
    assert_eq!(out.stderr.trim().lines().count(), 1, "{}", out.stderr);
    assert!(
        out.stderr.contains("junk.wasm: is not a WebAssembly file"),
        "{}",
        out.stderr
    );
}

#[test]
fn an_empty_or_missing_plugins_folder_is_not_an_error() {
    let scratch = Scratch::new();
    let out = run(scratch.causeway().arg("plugins"));
    assert!(out.success);
    assert!(out.stdout.starts_with("no plugins in"), "{}", out.stdout);
    let rows = run_json(support::causeway().args([
        "--plugins",
        "/nonexistent/causeway",
        "plugins",
        "--json",
    ]));
    assert_eq!(rows, serde_json::json!([]));
}

/// The example plugins are written with the SDK alone: a plugin author never
/// touches wit-bindgen.
#[test]
fn no_example_plugin_mentions_wit_bindgen() {
    for example in ["map-fullname", "crm-source", "mailer-sink"] {
        let dir = support::repo_root().join("plugins").join(example);
        let mut files = vec![dir.join("Cargo.toml")];
        for entry in std::fs::read_dir(dir.join("src")).unwrap() {
            files.push(entry.unwrap().path());
        }
        for file in files {
            let text = std::fs::read_to_string(&file).unwrap();
            assert!(
                !text.contains("wit_bindgen") && !text.contains("wit-bindgen"),
                "{} mentions wit-bindgen",
                file.display()
            );
        }
    }
}
