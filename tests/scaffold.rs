//! `causeway new`: a scaffolded connector and transform build with cargo,
//! pass their own unit tests, load in a plugins folder and pass `causeway
//! test` with no edits.

use crate::support;

use std::path::{Path, PathBuf};
use std::process::Command;

use support::{BUILT_PLUGINS, Scratch, run, run_json};

/// The target folder the example plugins were built in: the scaffolded
/// crates share its compiled dependencies (same profile, same versions).
fn wasm_target() -> PathBuf {
    Path::new(BUILT_PLUGINS)
        .ancestors()
        .nth(2)
        .expect("target/plugins")
        .to_path_buf()
}

/// `cargo ARGS` in `dir` with `target` as its target folder, free of the
/// outer cargo's settings (as host/build.rs runs the plugins' build).
fn cargo(dir: &Path, target: &Path, args: &[&str]) -> String {
    let mut command = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    command.current_dir(dir).args(args);
    for (key, _) in std::env::vars_os() {
        let key = key.to_string_lossy();
        if key == "RUSTFLAGS"
            || key == "RUSTC_WORKSPACE_WRAPPER"
            || (key.starts_with("CARGO_") && key != "CARGO_HOME" && key != "CARGO_NET_OFFLINE")
        {
            command.env_remove(key.as_ref());
        }
    }
    command.env("CARGO_TARGET_DIR", target);
    // The native build of the crates' own tests needs no debug info: with
    // it, that folder was a third of a gigabyte of CI's disk.
    command.env("CARGO_PROFILE_DEV_DEBUG", "0");
    let out = command.output().expect("run cargo");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "cargo {args:?} in {} failed:\n{text}",
        dir.display()
    );
    text
}

#[test]
fn a_scaffolded_connector_and_transform_build_load_and_pass_causeway_test() {
    let scratch = Scratch::new();
    let native = wasm_target().with_file_name("scaffold-native");
    let mut crates = Vec::new();
    for (kind, name) in [("connector", "acme-crm"), ("transform", "tidy-contacts")] {
        let dir = scratch.path().join("src").join(name);
        let out = run(scratch
            .causeway()
            .args(["new", kind, name, "--dir"])
            .arg(&dir));
        assert!(out.success, "{}", out.stderr);
        assert!(
            out.stdout
                .contains("cargo build --release --target wasm32-wasip2"),
            "{}",
            out.stdout
        );
        for file in [
            "Cargo.toml",
            "plugin.toml",
            "src/lib.rs",
            "README.md",
            "fixtures/config.json",
        ] {
            assert!(dir.join(file).is_file(), "{kind}: {file} missing");
        }

        // What an author's own CI would check first.
        cargo(&dir, &native, &["fmt", "--check"]);
        let tests = cargo(&dir, &native, &["test"]);
        assert!(
            tests.contains("2 passed"),
            "{kind}: its unit tests did not run:\n{tests}"
        );
        let build = cargo(
            &dir,
            &wasm_target(),
            &["build", "--release", "--target", "wasm32-wasip2"],
        );
        assert!(
            !build.contains("warning"),
            "{kind}: the build warns:\n{build}"
        );
        let wasm = format!("{}.wasm", name.replace('-', "_"));
        std::fs::copy(
            wasm_target().join("wasm32-wasip2/release").join(&wasm),
            scratch.plugins().join(format!("{name}.wasm")),
        )
        .expect("copy the built plugin");
        crates.push((name, dir));
    }

    // Dropped into a plugins folder, both load (the connector waits for an
    // operator's grant, as any plugin requesting HTTP does).
    let listed = run_json(scratch.causeway().args(["plugins", "--json"]));
    let states: Vec<(String, String)> = listed
        .as_array()
        .expect("a list")
        .iter()
        .map(|p| {
            (
                p["name"].as_str().unwrap().to_string(),
                p["state"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        states,
        [
            ("acme-crm".to_string(), "pending-approval".to_string()),
            ("tidy-contacts".to_string(), "active".to_string())
        ]
    );

    for (name, dir) in crates {
        let out = run(scratch
            .causeway()
            .args(["test", name, "--fixtures"])
            .arg(dir.join("fixtures")));
        assert!(out.success, "{name}:\n{}{}", out.stdout, out.stderr);
        assert!(
            out.stdout.contains("0 failed, 0 skipped"),
            "{name}:\n{}",
            out.stdout
        );
    }
}

#[test]
fn new_refuses_a_bad_name_and_an_existing_folder() {
    let scratch = Scratch::new();
    let out = run(scratch.causeway().args(["new", "transform", "Bad_Name"]));
    assert!(!out.success);
    assert!(
        out.stderr.contains("\"Bad_Name\" cannot name a plugin"),
        "{}",
        out.stderr
    );
    assert!(!scratch.path().join("Bad_Name").exists());

    std::fs::create_dir(scratch.path().join("taken")).unwrap();
    std::fs::write(scratch.path().join("taken/keep.txt"), "mine").unwrap();
    let out = run(scratch.causeway().args(["new", "connector", "taken"]));
    assert!(!out.success);
    assert!(
        out.stderr.contains("already exists and is not empty"),
        "{}",
        out.stderr
    );
    assert_eq!(
        std::fs::read_to_string(scratch.path().join("taken/keep.txt")).unwrap(),
        "mine"
    );
}
