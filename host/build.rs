//! Builds the plugins workspace (`../plugins`) for `wasm32-wasip2`, the way
//! wasmtime's test-programs artifacts are built: a nested cargo with its own
//! target directory. The example plugins are embedded for `causeway demo`;
//! tests find every built plugin through `CAUSEWAY_BUILT_PLUGINS`.
//!
//! It also lists the SDK's sources and the WIT contract for `causeway new`,
//! which writes them into every new plugin crate (`OUT_DIR/sdk_files.rs`).

use std::path::PathBuf;
use std::process::Command;

fn main() {
    let manifest_dir = PathBuf::from(
        std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"),
    );
    let root = manifest_dir
        .parent()
        .expect("host/ is inside the workspace")
        .to_path_buf();
    let plugins = root.join("plugins");
    for watched in ["plugins", "sdk", "wit"] {
        println!("cargo:rerun-if-changed={}", root.join(watched).display());
    }
    let target_dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"))
        .join("plugins");

    write_sdk_files(&root);
    ensure_wasm_target();

    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut build = Command::new(cargo);
    build
        .current_dir(&plugins)
        .args([
            "build",
            "--release",
            "--workspace",
            "--target",
            TARGET,
            "--target-dir",
        ])
        .arg(&target_dir);
    // The outer build's flags and wrappers (clippy's, coverage's) are for the
    // host target; the plugins build with their own settings.
    for (key, _) in std::env::vars_os() {
        let key = key.to_string_lossy();
        let outer_only = key == "RUSTFLAGS"
            || key == "RUSTC_WORKSPACE_WRAPPER"
            || key == "CARGO_TARGET_DIR"
            || key == "CARGO_MAKEFLAGS"
            || (key.starts_with("CARGO_") && key != "CARGO_HOME" && key != "CARGO_NET_OFFLINE");
        if outer_only {
            build.env_remove(key.as_ref());
        }
    }
    let status = build
        .status()
        .expect("cannot run cargo to build the plugins");
    assert!(
        status.success(),
        "building the plugins in {} for wasm32-wasip2 failed (see the output above)",
        plugins.display()
    );
    let built = target_dir.join("wasm32-wasip2").join("release");
    println!("cargo:rustc-env=CAUSEWAY_BUILT_PLUGINS={}", built.display());
}

/// The plugins' target.
const TARGET: &str = "wasm32-wasip2";

/// Adds the `wasm32-wasip2` standard library when the toolchain lacks it.
/// rust-toolchain.toml names the target, but rustup adds a toolchain file's
/// targets only when it installs the toolchain itself (and not at all with
/// `RUSTUP_AUTO_INSTALL=0`): a machine whose `stable` came without it would
/// otherwise fail the build with "can't find crate for `std`".
fn ensure_wasm_target() {
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let libdir = Command::new(rustc)
        .args(["--print", "target-libdir", "--target", TARGET])
        .output();
    let installed = match libdir {
        Ok(out) if out.status.success() => {
            PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()).is_dir()
        }
        // A rustc that cannot say: the plugins' build says what is wrong.
        _ => true,
    };
    if installed {
        return;
    }
    println!("cargo:warning=the {TARGET} target is not installed: adding it with rustup");
    let added = Command::new("rustup")
        .args(["target", "add", TARGET])
        .status();
    if !added.as_ref().is_ok_and(|s| s.success()) {
        panic!(
            "the {TARGET} target is not installed and `rustup target add {TARGET}` failed ({added:?}): \
             add it to the toolchain rust-toolchain.toml names, then build again"
        );
    }
}

/// Writes `OUT_DIR/sdk_files.rs`: `SDK_FILES`, every file of the SDK crate
/// `causeway new` vendors (its `src/`, `plugin.toml`) and of `wit/`, as
/// (path under the vendor folder, contents).
fn write_sdk_files(root: &std::path::Path) {
    let mut files = Vec::new();
    let mut add_dir = |dir: PathBuf, under: &str| {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_file())
            .collect();
        entries.sort();
        for path in entries {
            let name = path
                .file_name()
                .expect("a file name")
                .to_string_lossy()
                .into_owned();
            files.push((format!("{under}/{name}"), path));
        }
    };
    add_dir(root.join("sdk").join("src"), "causeway-sdk/src");
    add_dir(root.join("wit"), "wit");
    files.push((
        "causeway-sdk/plugin.toml".to_string(),
        root.join("sdk").join("plugin.toml"),
    ));
    let mut out = String::from(
        "/// The SDK and contract files `causeway new` vendors.\npub const SDK_FILES: &[(&str, &str)] = &[\n",
    );
    for (name, path) in files {
        out.push_str(&format!(
            "    ({name:?}, include_str!({:?})),\n",
            path.display().to_string()
        ));
    }
    out.push_str("];\n");
    let out_dir = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    std::fs::write(out_dir.join("sdk_files.rs"), out).expect("write sdk_files.rs");
}
