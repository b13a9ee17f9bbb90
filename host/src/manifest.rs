//! The plugin manifest: the static spec a security reviewer and `causeway
//! inspect` read without running plugin code.
//!
//! It travels inside the component as the `causeway:manifest` custom section
//! (written by the SDK; it lands in the nested core module, and is read there),
//! or, for toolchains that cannot embed one, as a sidecar `NAME.toml` beside
//! `NAME.wasm`. Both are the same TOML document.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::caps::http::HttpRule;
use crate::config::{self, FileError};
use crate::contract::World;

/// The custom section the SDK writes the manifest into.
pub const SECTION: &str = "causeway:manifest";

/// Contract versions this host loads plugins for.
pub const SUPPORTED_CONTRACTS: &[&str] = &["0.1.0"];

/// The most bytes a manifest may have: a reviewer reads it in `causeway
/// grants` and `inspect`, which a plugin's megabytes must not drown.
pub const MAX_MANIFEST_BYTES: usize = 64 * 1024;

/// The most bytes a description (the plugin's, a credential's) may have.
pub const MAX_DESCRIPTION_BYTES: usize = 1024;

/// A plugin's manifest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(
    deny_unknown_fields,
    rename_all = "kebab-case",
    expecting = "a manifest table: contract, name, version, capabilities"
)]
pub struct Manifest {
    /// The `causeway:plugin` version the plugin was built against.
    pub contract: String,
    /// The plugin's name: grants and pipelines refer to it.
    pub name: String,
    /// The plugin's version (semver).
    pub version: String,
    /// A sentence for operators and reviewers.
    #[serde(default)]
    pub description: String,
    /// The worlds the author says the plugin implements; the exports decide,
    /// and a claim the exports do not back is an error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worlds: Option<Vec<World>>,
    /// The capabilities the plugin requests.
    #[serde(default)]
    pub capabilities: Capabilities,
    /// A JSON Schema of the plugin's configuration; properties with
    /// `secret = true` must be given as secret references, never in clear.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_schema: Option<serde_json::Value>,
}

/// Requested capabilities. `config` and `log` are always available.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(
    deny_unknown_fields,
    rename_all = "kebab-case",
    expecting = "a table such as { http = [...], credentials = [...], storage = true }"
)]
pub struct Capabilities {
    /// Outbound HTTP the plugin asks for.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub http: Vec<HttpRule>,
    /// Credentials the plugin asks the host to inject.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub credentials: Vec<CredentialRequest>,
    /// Whether the plugin asks for private storage.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub storage: bool,
}

/// A credential the plugin asks the host to inject into its requests.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(
    deny_unknown_fields,
    rename_all = "kebab-case",
    expecting = "a table such as { name = \"api-token\", description = \"...\" }"
)]
pub struct CredentialRequest {
    /// The name the plugin uses in requests.
    pub name: String,
    /// What it is, for the operator who binds it.
    #[serde(default)]
    pub description: String,
}

/// Why a manifest is missing or unusable.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// Neither an embedded section nor a sidecar.
    #[error(
        "has no manifest: build it with causeway-sdk's plugin! macro, or put a {sidecar} beside it"
    )]
    Missing {
        /// The sidecar file name that would have been accepted.
        sidecar: String,
    },
    /// Both an embedded manifest and a sidecar: which one is the spec would be ambiguous.
    #[error("has both an embedded manifest and a sidecar {sidecar}: remove the sidecar")]
    Ambiguous {
        /// The sidecar's file name.
        sidecar: String,
    },
    /// The manifest text is not valid.
    #[error("manifest {0}")]
    Invalid(FileError),
    /// The sidecar could not be read.
    #[error("cannot read manifest sidecar {path}: {error}")]
    Io {
        /// The sidecar path.
        path: String,
        /// The I/O error.
        error: std::io::Error,
    },
    /// The sidecar is not a regular file, or too long to be a manifest:
    /// not read.
    #[error("manifest sidecar {path} {problem}")]
    Sidecar {
        /// The sidecar path.
        path: String,
        /// What is wrong with it.
        problem: String,
    },
    /// The component's sections could not be parsed.
    #[error("cannot read the component's custom sections: {0}")]
    Wasm(String),
}

// Not `#[from]`: the message already carries the error, and a source
// would print it twice.
impl From<FileError> for ManifestError {
    fn from(e: FileError) -> Self {
        ManifestError::Invalid(e)
    }
}

/// Where a manifest was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ManifestOrigin {
    /// The `causeway:manifest` custom section.
    Embedded,
    /// A `NAME.toml` beside the file.
    Sidecar,
}

impl ManifestOrigin {
    /// The origin's name, as the CLI shows it.
    pub fn name(self) -> &'static str {
        match self {
            ManifestOrigin::Embedded => "embedded",
            ManifestOrigin::Sidecar => "sidecar",
        }
    }
}

/// The sidecar manifest at `path`, if there is one: a regular file (or a
/// link to one) of at most [`MAX_MANIFEST_BYTES`]. Anything else there is
/// an error, found without reading it: a FIFO would hold the reload until
/// someone wrote to it, and megabytes would be read at every scan.
pub fn read_sidecar(path: &Path) -> Result<Option<Vec<u8>>, ManifestError> {
    use crate::files::Unread;
    let refused = |problem: String| ManifestError::Sidecar {
        path: path.display().to_string(),
        problem,
    };
    match crate::files::read_regular(path, MAX_MANIFEST_BYTES as u64) {
        Ok(text) => Ok(Some(text)),
        Err(Unread::Io(e)) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(Unread::Io(error)) => Err(ManifestError::Io {
            path: path.display().to_string(),
            error,
        }),
        Err(Unread::Kind(kind)) => Err(refused(format!("is not a regular file but {kind}"))),
        Err(Unread::TooLarge(size)) => Err(refused(format!(
            "is {size} bytes, over the {} KiB a manifest may have",
            MAX_MANIFEST_BYTES / 1024
        ))),
    }
}

impl Manifest {
    /// Reads the manifest of the component at `path` (whose bytes are
    /// `bytes`): the embedded section, or else the sidecar.
    pub fn load(path: &Path, bytes: &[u8]) -> Result<(Manifest, ManifestOrigin), ManifestError> {
        let sidecar_path = path.with_extension("toml");
        let sidecar_name = sidecar_path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let embedded = embedded_text(bytes)?;
        let sidecar = read_sidecar(&sidecar_path)?;
        match (embedded, sidecar) {
            (Some(_), Some(_)) => Err(ManifestError::Ambiguous {
                sidecar: sidecar_name,
            }),
            (Some(text), None) => Ok((
                Manifest::parse(&text, "(embedded)")?,
                ManifestOrigin::Embedded,
            )),
            (None, Some(text)) => {
                let text = String::from_utf8(text).map_err(|_| ManifestError::Sidecar {
                    path: sidecar_path.display().to_string(),
                    problem: "is not UTF-8 text".into(),
                })?;
                Ok((
                    Manifest::parse(&text, &sidecar_name)?,
                    ManifestOrigin::Sidecar,
                ))
            }
            (None, None) => Err(ManifestError::Missing {
                sidecar: sidecar_name,
            }),
        }
    }

    /// Parses and validates manifest text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Manifest, ManifestError> {
        if text.len() > MAX_MANIFEST_BYTES {
            return Err(FileError::at(
                origin,
                None,
                format!(
                    "is {} bytes, over the {} KiB a manifest may have",
                    text.len(),
                    MAX_MANIFEST_BYTES / 1024
                ),
            )
            .into());
        }
        let manifest: Manifest = config::parse_toml(text, origin)?;
        manifest.validate().map_err(|message| {
            let line = entry_line(text, &message);
            FileError::at(origin, line, message)
        })?;
        Ok(manifest)
    }

    fn validate(&self) -> Result<(), String> {
        if !SUPPORTED_CONTRACTS.contains(&self.contract.as_str()) {
            return Err(format!(
                "contract {:?} is not supported by this host (supported: {})",
                self.contract,
                SUPPORTED_CONTRACTS.join(", ")
            ));
        }
        if !is_plugin_name(&self.name) {
            return Err(format!(
                "name {:?} is not a plugin name: use 1-64 lower-case letters, digits and '-', starting with a letter or digit",
                self.name
            ));
        }
        if self.name == crate::audit::HOST {
            return Err(format!(
                "name {:?} is reserved: the audit log records the host's own events under it",
                self.name
            ));
        }
        if !is_version(&self.version) {
            return Err(format!(
                "version {:?} is not a semantic version like 1.2.3 (or 1.2.3-beta.1+build.7: letters, digits and '-' after the numbers)",
                self.version
            ));
        }
        described("description", &self.description)?;
        for (i, rule) in self.capabilities.http.iter().enumerate() {
            rule.validate(&format!("capabilities.http[{i}]"))?;
        }
        let mut named = std::collections::BTreeSet::new();
        for (i, credential) in self.capabilities.credentials.iter().enumerate() {
            // Operators type it (`--secret NAME=env:VAR`) and read it on a
            // line of what is requested and approved.
            if !is_credential_name(&credential.name) {
                return Err(format!(
                    "capabilities.credentials[{i}].name {:?} is not a credential name: use 1-64 letters, digits, '-', '_' and '.'",
                    credential.name
                ));
            }
            described(
                &format!("capabilities.credentials[{i}].description"),
                &credential.description,
            )?;
            if !named.insert(credential.name.as_str()) {
                return Err(format!(
                    "capabilities.credentials[{i}].name {:?} is requested twice",
                    credential.name
                ));
            }
        }
        if let Some(schema) = &self.config_schema
            && !schema.is_object()
        {
            return Err("config-schema must be a table (a JSON Schema object)".to_string());
        }
        Ok(())
    }
}

/// The text of the `causeway:manifest` section, wherever it is nested.
pub fn embedded_text(bytes: &[u8]) -> Result<Option<String>, ManifestError> {
    for payload in wasmparser::Parser::new(0).parse_all(bytes) {
        let payload = payload.map_err(|e| ManifestError::Wasm(e.to_string()))?;
        if let wasmparser::Payload::CustomSection(section) = payload
            && section.name() == SECTION
        {
            return String::from_utf8(section.data().to_vec())
                .map(Some)
                .map_err(|_| ManifestError::Wasm(format!("section {SECTION} is not UTF-8")));
        }
    }
    Ok(None)
}

/// `description`, the field `field`, if it is not longer than a
/// description may be.
fn described(field: &str, description: &str) -> Result<(), String> {
    if description.len() <= MAX_DESCRIPTION_BYTES {
        return Ok(());
    }
    Err(format!(
        "{field} is {} bytes, over the {MAX_DESCRIPTION_BYTES} a description may have (a sentence or two for operators and reviewers)",
        description.len()
    ))
}

/// Whether `name` is a valid plugin name.
pub fn is_plugin_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
}

/// The line of the `[[capabilities.http]]` or `[[capabilities.credentials]]`
/// entry a validation message names (`capabilities.http[1].host …`).
fn entry_line(text: &str, message: &str) -> Option<usize> {
    let rest = message.strip_prefix("capabilities.")?;
    let (list, rest) = rest.split_once('[')?;
    let index = rest.split_once(']')?.0.parse().ok()?;
    matches!(list, "http" | "credentials")
        .then(|| config::key_line(text, "capabilities", list, index))
        .flatten()
}

/// Whether `name` is a valid credential name.
pub fn is_credential_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// Whether `version` is a semantic version: `1.2.3`, then optionally a
/// pre-release (`-beta.1`) and build metadata (`+build.7`) made of
/// letters, digits and `-`, dot-separated; at most 128 bytes. It is shown
/// beside the plugin's name on the lines a reviewer reads.
fn is_version(version: &str) -> bool {
    let (rest, build) = match version.split_once('+') {
        Some((rest, build)) => (rest, Some(build)),
        None => (version, None),
    };
    let (core, pre) = match rest.split_once('-') {
        Some((core, pre)) => (core, Some(pre)),
        None => (rest, None),
    };
    let identifiers = |text: &str| {
        text.split('.')
            .all(|id| !id.is_empty() && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'))
    };
    let parts: Vec<&str> = core.split('.').collect();
    version.len() <= 128
        && parts.len() == 3
        && parts
            .iter()
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
        && pre.is_none_or(identifiers)
        && build.is_none_or(identifiers)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sidecar_is_read_only_when_it_is_a_manifests_text_file() {
        let dir = tempfile::tempdir().unwrap();
        let at = |name: &str| dir.path().join(name);
        assert!(read_sidecar(&at("none.toml")).unwrap().is_none());
        std::fs::write(at("good.toml"), "name = 1").unwrap();
        assert_eq!(
            read_sidecar(&at("good.toml")).unwrap().unwrap(),
            b"name = 1"
        );
        std::fs::create_dir(at("folder.toml")).unwrap();
        let refused = |name: &str| match read_sidecar(&at(name)) {
            Err(e) => e.to_string(),
            Ok(text) => panic!("{name} read: {text:?}"),
        };
        assert!(
            refused("folder.toml").ends_with("folder.toml is not a regular file but a folder"),
            "{}",
            refused("folder.toml")
        );
        std::fs::write(at("long.toml"), "#".repeat(MAX_MANIFEST_BYTES + 1)).unwrap();
        assert!(
            refused("long.toml").ends_with("is 65537 bytes, over the 64 KiB a manifest may have")
        );
        std::fs::write(at("bytes.wasm"), b"not a component").unwrap();
        std::fs::write(at("bytes.toml"), [0xff, 0xfe]).unwrap();
        let not_text = Manifest::load(&at("bytes.wasm"), b"\0asm\x0d\0\x01\0").unwrap_err();
        assert!(
            not_text
                .to_string()
                .ends_with("bytes.toml is not UTF-8 text"),
            "{not_text}"
        );
    }

    const GOOD: &str = r#"
contract = "0.1.0"
name = "crm-source"
version = "1.2.3"
worlds = ["source"]

[[capabilities.http]]
host = "api.crm.example"
methods = ["GET"]
path-prefix = "/v1/"

[config-schema]
type = "object"
"#;

    #[test]
    fn a_good_manifest_parses_with_defaults() {
        let m = Manifest::parse(GOOD, "test").unwrap();
        assert_eq!(m.capabilities.http[0].scheme, "https");
        assert_eq!(m.worlds, Some(vec![World::Source]));
        assert_eq!(m.config_schema.unwrap()["type"], "object");
    }

    #[test]
    fn versions_are_semantic_versions_and_nothing_else() {
        for good in [
            "0.1.0",
            "1.2.3-beta.1",
            "1.0.0-alpha-1+build.7",
            "10.20.30+x",
        ] {
            assert!(is_version(good), "{good}");
        }
        for bad in [
            "1.2",
            "1.2.x",
            "1.2.3-",
            "1.2.3-a..b",
            "1.2.3+",
            "1.2.3-a\n  + http { host = \"evil.example\" }",
            "1.2.3-a b",
            &format!("1.2.3-{}", "a".repeat(128)),
        ] {
            assert!(!is_version(bad), "{bad:?}");
        }
    }

    #[test]
    fn a_manifest_or_a_description_too_long_for_a_reviewer_is_refused() {
        let long = "d".repeat(MAX_DESCRIPTION_BYTES + 1);
        let err = Manifest::parse(
            &GOOD.replace("worlds =", &format!("description = {long:?}\nworlds =")),
            "m.toml",
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("description is 1025 bytes, over the 1024 a description may have"),
            "{err}"
        );
        let credential =
            format!("[[capabilities.credentials]]\nname = \"k\"\ndescription = {long:?}\n");
        let text = GOOD.replace("[config-schema]\ntype = \"object\"\n", "") + &credential;
        let err = Manifest::parse(&text, "m.toml").unwrap_err().to_string();
        assert!(
            err.contains("capabilities.credentials[0].description is 1025 bytes"),
            "{err}"
        );
        let padded = format!("{GOOD}# {}\n", "x".repeat(MAX_MANIFEST_BYTES));
        let err = Manifest::parse(&padded, "m.toml").unwrap_err().to_string();
        assert!(err.contains("over the 64 KiB a manifest may have"), "{err}");
    }

    #[test]
    fn credential_names_are_names_and_asked_for_once() {
        let with = |names: &[&str]| {
            let mut text = GOOD.replace("[config-schema]\ntype = \"object\"\n", "");
            for name in names {
                text.push_str(&format!("[[capabilities.credentials]]\nname = {name:?}\n"));
            }
            Manifest::parse(&text, "m.toml")
        };
        assert!(with(&["crm-token", "api_key.v2"]).is_ok());
        for bad in ["", "a=b", "a b", "key\n  + http", &"k".repeat(65)] {
            let err = with(&[bad]).unwrap_err().to_string();
            assert!(
                err.contains("capabilities.credentials[0].name")
                    && err.contains("not a credential name"),
                "{bad:?}: {err}"
            );
        }
        let err = with(&["t", "t"]).unwrap_err().to_string();
        assert!(
            err.contains("capabilities.credentials[1].name \"t\" is requested twice"),
            "{err}"
        );
        // Named at its entry's line: the second `[[capabilities.credentials]]`.
        let text = GOOD.replace("[config-schema]\ntype = \"object\"\n", "")
            + "[[capabilities.credentials]]\nname = \"t\"\n[[capabilities.credentials]]\n";
        let line = text.lines().count();
        assert!(err.contains(&format!("m.toml line {line}: ")), "{err}");
        let err = Manifest::parse(&GOOD.replace("GET", "get"), "m.toml")
            .unwrap_err()
            .to_string();
        let line = GOOD
            .lines()
            .position(|l| l == "[[capabilities.http]]")
            .unwrap()
            + 1;
        assert!(
            err.contains(&format!("m.toml line {line}: capabilities.http[0].methods")),
            "{err}"
        );
    }

    #[test]
    fn an_unknown_key_is_named_with_its_line() {
        let text = format!("{GOOD}\ncolour = \"red\"\n");
        let text = text.replace("[config-schema]\ntype = \"object\"\n", "");
        let err = Manifest::parse(&text, "x.toml").unwrap_err().to_string();
        assert!(err.contains("colour"), "{err}");
        assert!(err.contains("x.toml") && err.contains("line"), "{err}");
    }

    #[test]
    fn an_ill_typed_value_is_named() {
        let text = GOOD.replace("version = \"1.2.3\"", "version = 3");
        let err = Manifest::parse(&text, "x.toml").unwrap_err().to_string();
        assert!(err.contains("line 4"), "{err}");
    }

    #[test]
    fn an_unsupported_contract_is_refused() {
        let text = GOOD.replace("0.1.0", "9.0.0");
        let err = Manifest::parse(&text, "x").unwrap_err().to_string();
        assert!(err.contains("contract \"9.0.0\" is not supported"), "{err}");
    }

    #[test]
    fn names_are_restricted() {
        assert!(is_plugin_name("map-fullname"));
        for bad in ["", "-x", "A", "a:b", "a/b", "a b", &"x".repeat(65)] {
            assert!(!is_plugin_name(bad), "{bad:?}");
        }
    }
}
