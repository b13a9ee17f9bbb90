//! What the `causeway:plugin` contract allows a component to export and import.
//!
//! The worlds a plugin implements are read from its export names, never taken
//! from its manifest. Imports must be the contract's capabilities or the fixed
//! WASI set the host links (and, for connectors, wasi:http, held to the same
//! grants as the `http` capability); anything else is refused at load, by name.

use std::fmt;

use serde::{Deserialize, Serialize};

/// The package prefix of every contract interface.
pub const PACKAGE: &str = "causeway:plugin";

/// The contract version this host's bindings are generated from.
pub const VERSION: &str = "0.1.0";

/// WASI packages the host links (cli, clocks, random, io; a filesystem with
/// nothing preopened; sockets that refuse everything).
pub const WASI_PACKAGES: &[&str] = &[
    "wasi:cli",
    "wasi:clocks",
    "wasi:random",
    "wasi:io",
    "wasi:filesystem",
    "wasi:sockets",
];

/// The WASI package connectors may import besides the fixed set: a guest
/// language's own HTTP client, served through the `http` capability's checks.
pub const WASI_HTTP: &str = "wasi:http";

/// A role a plugin can play, read from the interface it exports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum World {
    /// Exports `causeway:plugin/source`.
    Source,
    /// Exports `causeway:plugin/sink`.
    Sink,
    /// Exports `causeway:plugin/webhook`.
    Webhook,
    /// Exports `causeway:plugin/transform`.
    Transform,
}

impl World {
    /// Every world, in display order.
    pub const ALL: [World; 4] = [World::Source, World::Sink, World::Webhook, World::Transform];

    /// The world's name, as in the WIT interface.
    pub fn name(self) -> &'static str {
        match self {
            World::Source => "source",
            World::Sink => "sink",
            World::Webhook => "webhook",
            World::Transform => "transform",
        }
    }

    /// The export name of the world's interface.
    pub fn export_name(self) -> String {
        format!("{PACKAGE}/{}@{VERSION}", self.name())
    }
}

impl fmt::Display for World {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Why a component does not fit the contract.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ContractError {
    /// No export names a Causeway world.
    #[error("exports no Causeway world (expected one of {expected}); it exports: {found}")]
    NoWorld {
        /// The accepted export names.
        expected: String,
        /// What it does export.
        found: String,
    },
    /// An import outside the contract and the WASI set.
    #[error(
        "imports `{0}`, which is outside the Causeway contract and the WASI set the host links"
    )]
    ForeignImport(String),
    /// A transform importing a connector capability.
    #[error("is a transform but imports `{0}`: transforms get no network and no storage")]
    TransformCapability(String),
    /// The manifest claims a world the component does not export.
    #[error("manifest claims world `{claimed}` but the component does not export {export}")]
    UnbackedClaim {
        /// The claimed world.
        claimed: World,
        /// The export that is missing.
        export: String,
    },
}

/// The worlds a component implements, from its export names.
pub fn worlds_from_exports<'a>(
    exports: impl IntoIterator<Item = &'a str>,
) -> Result<Vec<World>, ContractError> {
    let exports: Vec<&str> = exports.into_iter().collect();
    let mut worlds: Vec<World> = World::ALL
        .into_iter()
        .filter(|w| exports.contains(&w.export_name().as_str()))
        .collect();
    worlds.sort();
    if worlds.is_empty() {
        return Err(ContractError::NoWorld {
            expected: World::ALL.map(World::export_name).join(", "),
            found: if exports.is_empty() {
                "nothing".to_string()
            } else {
                exports.join(", ")
            },
        });
    }
    Ok(worlds)
}

/// Checks every import against the contract for a plugin of `worlds`.
pub fn check_imports<'a>(
    imports: impl IntoIterator<Item = &'a str>,
    worlds: &[World],
) -> Result<(), ContractError> {
    let transform_only = worlds.iter().all(|w| *w == World::Transform);
    for import in imports {
        let (package, interface) = split_import(import);
        if package == PACKAGE {
            let allowed = match interface {
                "types" | "config" | "log" => true,
                "http" | "storage" if transform_only => {
                    return Err(ContractError::TransformCapability(import.to_string()));
                }
                "http" | "storage" => true,
                _ => false,
            };
            if allowed && import.ends_with(&format!("@{VERSION}")) {
                continue;
            }
        } else if WASI_PACKAGES.contains(&package) {
            continue;
        } else if package == WASI_HTTP {
            if transform_only {
                return Err(ContractError::TransformCapability(import.to_string()));
            }
            continue;
        }
        return Err(ContractError::ForeignImport(import.to_string()));
    }
    Ok(())
}

/// Checks that every world the manifest claims is backed by an export.
pub fn check_claims(claimed: &[World], exported: &[World]) -> Result<(), ContractError> {
    match claimed.iter().find(|w| !exported.contains(w)) {
        Some(world) => Err(ContractError::UnbackedClaim {
            claimed: *world,
            export: world.export_name(),
        }),
        None => Ok(()),
    }
}

/// `"wasi:io/streams@0.2.6"` → `("wasi:io", "streams")`.
fn split_import(name: &str) -> (&str, &str) {
    let unversioned = name.split('@').next().unwrap_or(name);
    match unversioned.split_once('/') {
        Some((package, interface)) => (package, interface),
        None => (unversioned, ""),
    }
}

/// The most bytes a record's key may have. A pipeline keeps keys for each
/// record (the versions a webhook let through, what each sink was given,
/// dead letters) and a sink writes it as its idempotency key: a plugin's
/// megabyte key would be copied into every one of them.
pub const MAX_KEY_BYTES: usize = 1024;

/// The most bytes a record's stream (an object type's name) may have.
pub const MAX_STREAM_BYTES: usize = 256;

/// The most bytes a page's checkpoint may have: it is stored with every
/// page a pipeline reads, and a cursor, a page token or a timestamp is a
/// few hundred bytes at most.
pub const MAX_CHECKPOINT_BYTES: usize = 64 * 1024;

/// How a record breaks the contract: what `causeway test`'s `records-valid`
/// rule checks, and what a running pipeline sets aside rather than pass on.
#[derive(Debug, Clone, PartialEq)]
pub enum RecordProblem {
    /// Its stream is empty.
    EmptyStream,
    /// Its stream is longer than [`MAX_STREAM_BYTES`] (its length).
    LongStream(usize),
    /// Its key, the sinks' idempotency key, is empty.
    EmptyKey,
    /// Its key is longer than [`MAX_KEY_BYTES`] (its length).
    LongKey(usize),
    /// Its data is not JSON (why).
    NotJson(String),
    /// It is an upsert whose data is JSON but not an object.
    NotAnObject,
}

impl fmt::Display for RecordProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RecordProblem::EmptyStream => f.write_str("has an empty stream"),
            RecordProblem::LongStream(bytes) => write!(
                f,
                "has a stream of {bytes} bytes, over the {MAX_STREAM_BYTES} a stream may have"
            ),
            RecordProblem::EmptyKey => f.write_str("has an empty key"),
            RecordProblem::LongKey(bytes) => write!(
                f,
                "has a key of {bytes} bytes, over the {MAX_KEY_BYTES} a key may have"
            ),
            RecordProblem::NotJson(e) => write!(f, "has data that is not JSON: {e}"),
            RecordProblem::NotAnObject => {
                f.write_str("is an upsert whose data is not a JSON object")
            }
        }
    }
}

/// How `record` breaks the contract, if it does. Its data is parsed
/// without being kept (a pipeline checks every record a source answers).
pub fn record_problems(record: &crate::bindings::Record) -> Vec<RecordProblem> {
    let mut problems = Vec::new();
    if record.stream.is_empty() {
        problems.push(RecordProblem::EmptyStream);
    } else if record.stream.len() > MAX_STREAM_BYTES {
        problems.push(RecordProblem::LongStream(record.stream.len()));
    }
    if record.key.is_empty() {
        problems.push(RecordProblem::EmptyKey);
    } else if record.key.len() > MAX_KEY_BYTES {
        problems.push(RecordProblem::LongKey(record.key.len()));
    }
    match serde_json::from_str::<serde::de::IgnoredAny>(&record.data) {
        Err(e) => problems.push(RecordProblem::NotJson(e.to_string())),
        // Valid JSON that starts with a brace is an object.
        Ok(_)
            if record.op == crate::bindings::Op::Upsert
                && !record.data.trim_start().starts_with('{') =>
        {
            problems.push(RecordProblem::NotAnObject)
        }
        Ok(_) => {}
    }
    problems
}

/// How `page` breaks the contract, if it does: a checkpoint longer than
/// [`MAX_CHECKPOINT_BYTES`]. Such a page is not delivered.
pub fn page_problem(page: &crate::bindings::Page) -> Option<String> {
    let next = page.checkpoint.as_ref()?;
    (next.len() > MAX_CHECKPOINT_BYTES).then(|| {
        format!(
            "its page's checkpoint is {} bytes, over the {} KiB a checkpoint may have (it is where the next read starts, a cursor, a page token or a time, and is stored with every page; the page is not delivered)",
            next.len(),
            MAX_CHECKPOINT_BYTES / 1024
        )
    })
}

/// Whether `record` has a stream and a key the contract allows (not
/// empty, not too long): a record without is set aside, and nothing is
/// kept by its stream and key.
pub fn identified(record: &crate::bindings::Record) -> bool {
    (1..=MAX_STREAM_BYTES).contains(&record.stream.len())
        && (1..=MAX_KEY_BYTES).contains(&record.key.len())
}

/// A plugin's `text` (a key, a checkpoint) as a message shows it: its
/// first `chars` characters, and its length when it is cut.
pub fn shown(text: &str, chars: usize) -> std::borrow::Cow<'_, str> {
    match text.char_indices().nth(chars) {
        Some((cut, _)) => format!("{}… ({} bytes)", &text[..cut], text.len()).into(),
        None => text.into(),
    }
}

/// A checkpoint as a message shows it: [`shown`] to 200 characters
/// (`(none)` for none), since a source may write kilobytes.
pub fn shown_checkpoint(checkpoint: Option<&str>) -> std::borrow::Cow<'_, str> {
    shown(checkpoint.unwrap_or("(none)"), 200)
}

/// A record's key as a message or a listing shows it: [`shown`] to 80
/// characters, and `""` when empty (a list would otherwise read `()`).
pub fn shown_key(key: &str) -> std::borrow::Cow<'_, str> {
    match key {
        "" => "\"\"".into(),
        key => shown(key, 80),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_whose_key_or_stream_is_too_long_breaks_the_contract() {
        let record = |stream: &str, key: &str| crate::bindings::Record {
            stream: stream.into(),
            key: key.into(),
            op: crate::bindings::Op::Upsert,
            data: "{}".into(),
            source_timestamp: None,
        };
        let longest = record(&"s".repeat(MAX_STREAM_BYTES), &"k".repeat(MAX_KEY_BYTES));
        assert!(record_problems(&longest).is_empty());
        assert!(identified(&longest));
        assert!(!identified(&record("s", "")) && !identified(&record("", "k")));
        let long = record(
            &"s".repeat(MAX_STREAM_BYTES + 1),
            &"k".repeat(MAX_KEY_BYTES + 1),
        );
        assert!(!identified(&long));
        let problems = record_problems(&long);
        assert_eq!(
            problems,
            [
                RecordProblem::LongStream(MAX_STREAM_BYTES + 1),
                RecordProblem::LongKey(MAX_KEY_BYTES + 1)
            ]
        );
        assert_eq!(
            problems[1].to_string(),
            "has a key of 1025 bytes, over the 1024 a key may have"
        );
    }

    #[test]
    fn a_long_text_is_shown_cut_with_its_length() {
        assert_eq!(shown("short", 10), "short");
        assert_eq!(
            shown(&"é".repeat(11), 10),
            format!("{}… (22 bytes)", "é".repeat(10))
        );
    }

    #[test]
    fn worlds_come_from_export_names() {
        let exports = [
            "causeway:plugin/webhook@0.1.0",
            "causeway:plugin/source@0.1.0",
        ];
        assert_eq!(
            worlds_from_exports(exports).unwrap(),
            vec![World::Source, World::Webhook]
        );
    }

    #[test]
    fn a_component_with_no_known_export_is_refused_naming_its_exports() {
        let err = worlds_from_exports(["test:other/thing@1.0.0"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("test:other/thing@1.0.0"), "{err}");
    }

    #[test]
    fn foreign_imports_are_named() {
        let err =
            check_imports(["wasi:io/streams@0.2.6", "evil:net/raw"], &[World::Source]).unwrap_err();
        assert_eq!(err, ContractError::ForeignImport("evil:net/raw".into()));
    }

    #[test]
    fn wasi_http_is_for_connectors_only() {
        let imports = ["wasi:http/types@0.2.3", "wasi:http/outgoing-handler@0.2.3"];
        assert!(check_imports(imports, &[World::Source]).is_ok());
        let err = check_imports(imports, &[World::Transform]).unwrap_err();
        assert!(matches!(err, ContractError::TransformCapability(_)));
        assert!(check_imports(["wasi:httpx/raw@0.2.3"], &[World::Source]).is_err());
    }

    #[test]
    fn transforms_may_not_import_http_or_storage() {
        let err = check_imports(["causeway:plugin/http@0.1.0"], &[World::Transform]).unwrap_err();
        assert!(matches!(err, ContractError::TransformCapability(_)));
        assert!(check_imports(["causeway:plugin/http@0.1.0"], &[World::Sink]).is_ok());
    }

    #[test]
    fn a_claim_without_export_is_flagged() {
        let err = check_claims(&[World::Sink], &[World::Transform]).unwrap_err();
        assert!(err.to_string().contains("causeway:plugin/sink@0.1.0"));
    }
}
