//! `causeway new`: a plugin crate that builds, loads and passes `causeway
//! test` as generated, from templates compiled into the binary.
//!
//! The crate is its own workspace and carries what it builds against: the SDK
//! and the WIT contract of this Causeway version, vendored under `vendor/`
//! (the SDK is not on crates.io yet), and a `Cargo.lock` pinning the versions
//! this release was tested with. `--sdk DIR` depends on an SDK checkout
//! instead.

use std::path::{Path, PathBuf};

mod embedded {
    include!(concat!(env!("OUT_DIR"), "/sdk_files.rs"));
}

/// The kind of plugin to scaffold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Kind {
    /// A source + sink talking to one system's HTTP API.
    Connector,
    /// A transform reshaping records.
    Transform,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Connector => "connector",
            Kind::Transform => "transform",
        }
    }
}

/// Why a crate cannot be scaffolded.
#[derive(Debug, thiserror::Error)]
pub enum ScaffoldError {
    /// The name is not usable.
    #[error("{name:?} cannot name a plugin: {why}")]
    Name {
        /// The name given.
        name: String,
        /// What is wrong with it.
        why: String,
    },
    /// The folder exists and is not empty.
    #[error("{0} already exists and is not empty: choose another --dir or name")]
    Exists(String),
    /// A file could not be written.
    #[error("cannot write {path}: {error}")]
    Io {
        /// The file.
        path: String,
        /// The error.
        error: std::io::Error,
    },
}

/// Names Cargo or the host keep for themselves.
const RESERVED: &[&str] = &[
    "test",
    "std",
    "core",
    "alloc",
    "proc-macro",
    "causeway",
    "causeway-sdk",
];

/// Checks a new plugin's name: a plugin name (lower case, digits, `-`) that
/// is also a crate name Cargo accepts.
pub fn check_name(name: &str) -> Result<(), ScaffoldError> {
    let fail = |why: &str| {
        Err(ScaffoldError::Name {
            name: name.to_string(),
            why: why.to_string(),
        })
    };
    if !crate::manifest::is_plugin_name(name) {
        return fail("use lower-case letters, digits and '-' (at most 64)");
    }
    if !name.starts_with(|c: char| c.is_ascii_lowercase()) {
        return fail("it must start with a letter");
    }
    if name.ends_with('-') || name.contains("--") {
        return fail("'-' must separate words");
    }
    if RESERVED.contains(&name) {
        return fail("Cargo or Causeway reserves it");
    }
    Ok(())
}

/// `acme-crm` → `AcmeCrm`.
fn type_name(name: &str) -> String {
    name.split('-')
        .map(|word| {
            let mut chars = word.chars();
            chars
                .next()
                .map(|c| c.to_ascii_uppercase().to_string() + chars.as_str())
                .unwrap_or_default()
        })
        .collect()
}

/// The vendored SDK's manifest: the SDK crate's, standalone.
fn sdk_manifest() -> String {
    format!(
        r#"# causeway-sdk {version}, vendored by `causeway new` (the SDK is not on
# crates.io yet). Its dependencies are the ones Causeway is tested with.
[package]
name = "causeway-sdk"
description = "Write Causeway connector and transform plugins in plain Rust."
version = "{version}"
edition = "2024"
license = "Apache-2.0"
publish = false

[dependencies]
{dependencies}
{features}"#,
        version = env!("CARGO_PKG_VERSION"),
        dependencies = SDK_DEPENDENCIES,
        features = SDK_FEATURES,
    )
}

/// The SDK's dependencies, as the workspace's Cargo.toml declares them (a
/// unit test keeps the two the same).
const SDK_DEPENDENCIES: &str = r#"serde = { version = "1", features = ["derive"] }
serde_json = "1"
wit-bindgen = { version = "0.46", default-features = false, features = ["macros", "realloc", "std"] }
"#;

/// The SDK's features, as sdk/Cargo.toml declares them (the same unit test
/// keeps the two the same).
const SDK_FEATURES: &str = r#"[features]
default = ["allocator"]
# The SDK's size-class allocator as the plugin's `#[global_allocator]` (wasm
# builds only). Turn it off to bring your own.
allocator = []
"#;

/// The versions the example plugins build with, for the new crate's lock file.
const LOCK_FILE: &str = include_str!("../../plugins/Cargo.lock");

/// Fills `{{key}}` placeholders.
fn fill(template: &str, values: &[(&str, &str)]) -> String {
    values
        .iter()
        .fold(template.to_string(), |text, (key, value)| {
            text.replace(&format!("{{{{{key}}}}}"), value)
        })
}

/// Where the new crate gets the SDK.
#[derive(Debug, Clone)]
pub enum Sdk {
    /// A copy under `vendor/` (the default).
    Vendored,
    /// A checkout of the SDK crate at this path.
    Path(PathBuf),
}

/// Writes a new `kind` plugin crate named `name` into `dir` (which must not
/// exist or be empty); answers the files written.
pub fn create(
    kind: Kind,
    name: &str,
    dir: &Path,
    sdk: &Sdk,
) -> Result<Vec<PathBuf>, ScaffoldError> {
    check_name(name)?;
    if dir.exists()
        && std::fs::read_dir(dir)
            .map(|mut entries| entries.next().is_some())
            .unwrap_or(true)
    {
        return Err(ScaffoldError::Exists(dir.display().to_string()));
    }
    let crate_name = name.replace('-', "_");
    let type_name = type_name(name);
    let description = match kind {
        Kind::Connector => format!("Reads and writes {name} items through its HTTP API."),
        Kind::Transform => format!("Reshapes records: {name}."),
    };
    let sdk_dependency = match sdk {
        Sdk::Vendored => r#"{ path = "vendor/causeway-sdk" }"#.to_string(),
        Sdk::Path(path) => format!("{{ path = {:?} }}", path.display().to_string()),
    };
    let (what, http_fixture, next_steps) = match kind {
        Kind::Connector => (
            "a source (`check`, `discover`, `read`) and a sink (`write`) for an items API",
            ", `http.json` (recorded HTTP answers)",
            include_str!("../templates/connector/NEXT.md.tmpl"),
        ),
        Kind::Transform => ("a `transform` of record batches", "", ""),
    };
    let values = [
        ("name", name),
        ("crate", crate_name.as_str()),
        ("type", type_name.as_str()),
        ("kind", kind.name()),
        ("description", description.as_str()),
        ("sdk", sdk_dependency.as_str()),
        ("what", what),
        ("http_fixture", http_fixture),
    ];
    let next_steps = fill(next_steps, &values);
    let readme = fill(include_str!("../templates/common.README.md.tmpl"), &values)
        .replace("{{next_steps}}", &next_steps);
    let mut files: Vec<(String, String)> = vec![
        (
            "Cargo.toml".into(),
            fill(include_str!("../templates/common.Cargo.toml.tmpl"), &values),
        ),
        (
            "rust-toolchain.toml".into(),
            include_str!("../templates/common.rust-toolchain.toml.tmpl").into(),
        ),
        (
            ".gitignore".into(),
            include_str!("../templates/common.gitignore.tmpl").into(),
        ),
        ("README.md".into(), readme),
    ];
    let specific: &[(&str, &str)] = match kind {
        Kind::Connector => &[
            (
                "src/lib.rs",
                include_str!("../templates/connector/lib.rs.tmpl"),
            ),
            (
                "plugin.toml",
                include_str!("../templates/connector/plugin.toml.tmpl"),
            ),
            (
                "fixtures/config.json",
                include_str!("../templates/connector/fixtures/config.json.tmpl"),
            ),
            (
                "fixtures/records.json",
                include_str!("../templates/connector/fixtures/records.json.tmpl"),
            ),
            (
                "fixtures/http.json",
                include_str!("../templates/connector/fixtures/http.json.tmpl"),
            ),
        ],
        Kind::Transform => &[
            (
                "src/lib.rs",
                include_str!("../templates/transform/lib.rs.tmpl"),
            ),
            (
                "plugin.toml",
                include_str!("../templates/transform/plugin.toml.tmpl"),
            ),
            (
                "fixtures/config.json",
                include_str!("../templates/transform/fixtures/config.json.tmpl"),
            ),
            (
                "fixtures/records.json",
                include_str!("../templates/transform/fixtures/records.json.tmpl"),
            ),
        ],
    };
    files.extend(
        specific
            .iter()
            .map(|(path, text)| (path.to_string(), fill(text, &values))),
    );
    if let Sdk::Vendored = sdk {
        files.push(("Cargo.lock".into(), LOCK_FILE.into()));
        files.push(("vendor/causeway-sdk/Cargo.toml".into(), sdk_manifest()));
        files.extend(
            embedded::SDK_FILES
                .iter()
                .map(|(path, text)| (format!("vendor/{path}"), text.to_string())),
        );
    }
    let mut written = Vec::new();
    for (relative, text) in files {
        let path = dir.join(&relative);
        let io = |source| ScaffoldError::Io {
            path: path.display().to_string(),
            error: source,
        };
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(io)?;
        }
        std::fs::write(&path, text).map_err(io)?;
        written.push(path);
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_must_be_plugin_and_crate_names() {
        assert!(check_name("acme-crm").is_ok());
        for bad in [
            "Acme", "9lives", "acme-", "a--b", "test", "causeway", "", "a_b",
        ] {
            let err = check_name(bad).expect_err(bad).to_string();
            assert!(err.contains(&format!("{bad:?}")), "{err}");
        }
        assert_eq!(type_name("acme-crm-2"), "AcmeCrm2");
    }

    #[test]
    fn the_vendored_sdk_matches_the_workspace() {
        let workspace: toml::Table =
            toml::from_str(include_str!("../../Cargo.toml")).expect("the workspace manifest");
        let ours: toml::Table = toml::from_str(SDK_DEPENDENCIES).expect("SDK_DEPENDENCIES");
        let sdk: toml::Table =
            toml::from_str(include_str!("../../sdk/Cargo.toml")).expect("the SDK's manifest");
        let sdk_deps = sdk["dependencies"].as_table().expect("dependencies");
        assert_eq!(
            ours.keys().collect::<Vec<_>>(),
            sdk_deps.keys().collect::<Vec<_>>(),
            "the vendored SDK's dependencies differ from sdk/Cargo.toml's"
        );
        for (name, spec) in &ours {
            assert_eq!(
                Some(spec),
                workspace["workspace"]["dependencies"].get(name),
                "{name}: the vendored SDK's version differs from the workspace's"
            );
        }
        let features: toml::Table = toml::from_str(SDK_FEATURES).expect("SDK_FEATURES");
        assert_eq!(
            features.get("features"),
            sdk.get("features"),
            "the vendored SDK's features differ from sdk/Cargo.toml's"
        );
        let names: Vec<&str> = embedded::SDK_FILES.iter().map(|(p, _)| *p).collect();
        for expected in [
            "causeway-sdk/src/lib.rs",
            "causeway-sdk/plugin.toml",
            "wit/worlds.wit",
        ] {
            assert!(names.contains(&expected), "{expected} not in {names:?}");
        }
    }

    #[test]
    fn a_crate_is_written_once_with_its_names_filled_in() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("acme-crm");
        let files = create(Kind::Connector, "acme-crm", &target, &Sdk::Vendored).unwrap();
        assert!(files.iter().any(|f| f.ends_with("vendor/wit/types.wit")));
        let lib = std::fs::read_to_string(target.join("src/lib.rs")).unwrap();
        assert!(
            lib.contains("struct AcmeCrm;") && !lib.contains("{{"),
            "{lib}"
        );
        let manifest = std::fs::read_to_string(target.join("Cargo.toml")).unwrap();
        assert!(manifest.contains("name = \"acme-crm\""));
        assert!(manifest.contains("causeway-sdk = { path = \"vendor/causeway-sdk\" }"));
        let readme = std::fs::read_to_string(target.join("README.md")).unwrap();
        assert!(
            readme.contains("acme_crm.wasm") && readme.contains("--record"),
            "{readme}"
        );
        let err = create(Kind::Transform, "acme-crm", &target, &Sdk::Vendored).unwrap_err();
        assert!(matches!(err, ScaffoldError::Exists(_)), "{err}");

        let other = dir.path().join("tidy");
        create(
            Kind::Transform,
            "tidy",
            &other,
            &Sdk::Path("/src/sdk".into()),
        )
        .unwrap();
        let manifest = std::fs::read_to_string(other.join("Cargo.toml")).unwrap();
        assert!(
            manifest.contains("causeway-sdk = { path = \"/src/sdk\" }"),
            "{manifest}"
        );
        assert!(!other.join("vendor").exists());
        let readme = std::fs::read_to_string(other.join("README.md")).unwrap();
        assert!(
            !readme.contains("{{") && !readme.contains("--record"),
            "{readme}"
        );
    }
}
