//! Secrets, referenced by name and never written in clear in `causeway.toml`
//! or `grants.toml`: `env:NAME` reads an environment variable of the host
//! process, `file:KEY` reads a key of the secrets file, which must not be
//! readable by group or others.
//!
//! A [`Secret`] never prints its value: not in `Debug`, not in `Display`.
//!
//! The running host reads the secrets file again when it changes
//! ([`Secrets::reload`]): a rotated credential is used from the next request
//! on, without a restart.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::RwLock;

use serde::{Deserialize, Serialize};

use crate::config::{self, FileError};

/// A reference to a secret: `env:NAME` or `file:KEY`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum SecretRef {
    /// An environment variable of the host process.
    Env(String),
    /// A key of the secrets file.
    File(String),
}

impl TryFrom<String> for SecretRef {
    type Error = String;

    fn try_from(text: String) -> Result<Self, String> {
        let valid = |name: &str| {
            !name.is_empty()
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.')
        };
        match text.split_once(':') {
            Some(("env", name)) if valid(name) => Ok(SecretRef::Env(name.to_string())),
            Some(("file", key)) if valid(key) => Ok(SecretRef::File(key.to_string())),
            _ => Err(
                "a secret must be a reference, \"env:NAME\" or \"file:KEY\", never the value itself"
                    .to_string(),
            ),
        }
    }
}

impl From<SecretRef> for String {
    fn from(r: SecretRef) -> String {
        r.to_string()
    }
}

impl fmt::Display for SecretRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SecretRef::Env(name) => write!(f, "env:{name}"),
            SecretRef::File(key) => write!(f, "file:{key}"),
        }
    }
}

/// A secret value. It prints as `[redacted]`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// The value, for the one place that injects it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// A secret with this value, for tests.
    #[cfg(test)]
    pub fn for_tests(value: &str) -> Secret {
        Secret(value.to_string())
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// The secrets the host can resolve.
#[derive(Debug, Default)]
pub struct Secrets {
    file: Option<PathBuf>,
    // Swapped whole by a reload; a request resolves against one version.
    values: RwLock<BTreeMap<String, Secret>>,
}

#[derive(Deserialize)]
#[serde(transparent)]
struct SecretsFile(BTreeMap<String, toml::Spanned<toml::Value>>);

/// What a reload of the secrets file changed: key names only.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Changes {
    /// Keys new in the file.
    pub added: Vec<String>,
    /// Keys whose value changed.
    pub changed: Vec<String>,
    /// Keys no longer in the file.
    pub removed: Vec<String>,
}

impl Changes {
    /// Whether nothing changed.
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.changed.is_empty() && self.removed.is_empty()
    }
}

impl fmt::Display for Changes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = [
            ("added", &self.added),
            ("changed", &self.changed),
            ("removed", &self.removed),
        ]
        .into_iter()
        .filter(|(_, keys)| !keys.is_empty())
        .map(|(what, keys)| format!("{what} {}", keys.join(", ")))
        .collect();
        f.write_str(&parts.join("; "))
    }
}

impl Secrets {
    /// Loads the secrets file, if one is configured. It must be a TOML table
    /// of `KEY = "value"` and not readable by group or others.
    pub fn load(file: Option<&Path>) -> Result<Secrets, FileError> {
        let Some(file) = file else {
            return Ok(Secrets::default());
        };
        Ok(Secrets {
            file: Some(file.to_path_buf()),
            values: RwLock::new(read(file)?),
        })
    }

    /// The secrets file, if one is configured.
    pub fn file(&self) -> Option<&Path> {
        self.file.as_deref()
    }

    /// Reads the secrets file again and takes its values, saying which keys
    /// changed. A file that cannot be taken (unreadable, readable by others,
    /// not TOML) is an error, and the values read last stay.
    pub fn reload(&self) -> Result<Changes, FileError> {
        let Some(file) = &self.file else {
            return Ok(Changes::default());
        };
        let new = read(file)?;
        let mut values = self.values.write().unwrap_or_else(|p| p.into_inner());
        let mut changes = Changes::default();
        for (key, value) in &new {
            match values.get(key) {
                None => changes.added.push(key.clone()),
                Some(old) if old != value => changes.changed.push(key.clone()),
                Some(_) => {}
            }
        }
        changes.removed = values
            .keys()
            .filter(|k| !new.contains_key(*k))
            .cloned()
            .collect();
        *values = new;
        Ok(changes)
    }

    /// Writes `value` under `key` in the secrets file, and takes it at once:
    /// a refresh token an authorization server rotated, which the next
    /// start must send. The file's other keys, its comments and its
    /// permissions are kept; the file is replaced whole, so a reader never
    /// sees half of it. Says which file, or why not (never a value).
    pub fn keep(&self, key: &str, value: &Secret) -> Result<PathBuf, String> {
        let Some(file) = &self.file else {
            return Err("no secrets-file is configured".to_string());
        };
        let text = config::read_file(file).map_err(|e| e.to_string())?;
        // Its error would quote the text, secrets and all.
        let mut doc: toml_edit::DocumentMut = text
            .parse()
            .map_err(|_| format!("{}: is not TOML", file.display()))?;
        doc[key] = toml_edit::value(value.expose());
        let mut partial = file.as_os_str().to_owned();
        partial.push(".partial");
        crate::files::replace(
            file,
            Path::new(&partial),
            doc.to_string().as_bytes(),
            crate::files::Durability::Rename,
        )
        .map_err(|e| format!("cannot write {}: {e}", file.display()))?;
        self.values
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key.to_string(), value.clone());
        Ok(file.clone())
    }

    /// Secrets held in memory under `file:KEY` references, `label` naming
    /// where they came from in messages (the conformance suite's).
    pub fn in_memory(label: &str, values: BTreeMap<String, Secret>) -> Secrets {
        Secrets {
            file: Some(PathBuf::from(label)),
            values: RwLock::new(values),
        }
    }

    /// A secret with this value, for a process that holds secrets itself
    /// (the conformance suite's placeholders and recorded credentials).
    pub fn value(text: String) -> Secret {
        Secret(text)
    }

    /// Resolves a reference, or says what is missing (never a value).
    pub fn resolve(&self, reference: &SecretRef) -> Result<Secret, String> {
        match reference {
            SecretRef::Env(name) => std::env::var(name).map(Secret).map_err(|_| {
                format!("secret {reference}: the environment variable {name} is not set")
            }),
            SecretRef::File(key) => match (
                &self.file,
                self.values
                    .read()
                    .unwrap_or_else(|p| p.into_inner())
                    .get(key)
                    .cloned(),
            ) {
                (Some(_), Some(value)) => Ok(value),
                (Some(file), None) => Err(format!(
                    "secret {reference}: {} has no key {key:?}",
                    file.display()
                )),
                (None, _) => Err(format!(
                    "secret {reference}: no secrets-file is configured in causeway.toml"
                )),
            },
        }
    }
}

/// The values in the secrets file `file`, once it is checked private.
fn read(file: &Path) -> Result<BTreeMap<String, Secret>, FileError> {
    let name = file.display().to_string();
    check_private(file, &name)?;
    let text = config::read_file(file)?;
    // Any value first: a typed parse's error would quote a value that is
    // not a string (`invalid type: integer `1234``), and that is a secret.
    let SecretsFile(raw) = config::parse_toml(&text, &name)?;
    raw.into_iter()
        .map(|(key, value)| {
            let line = config::line_of(&text, value.span().start);
            match value.into_inner() {
                toml::Value::String(secret) => Ok((key, Secret(secret))),
                other => Err(FileError::at(
                    &name,
                    Some(line),
                    format!(
                        "{key}: a secret must be a string in quotes, not {} (its value is not shown)",
                        other.type_str()
                    ),
                )),
            }
        })
        .collect()
}

#[cfg(unix)]
fn check_private(file: &Path, name: &str) -> Result<(), FileError> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(file)
        .map_err(|e| FileError::at(name, None, format!("cannot read: {e}")))?;
    let mode = meta.permissions().mode();
    if mode & 0o077 != 0 {
        return Err(FileError::at(
            name,
            None,
            format!(
                "is readable by others (mode {:o}): run chmod 600 {name}",
                mode & 0o777
            ),
        ));
    }
    Ok(())
}

#[cfg(not(unix))]
fn check_private(_file: &Path, _name: &str) -> Result<(), FileError> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reference_is_never_a_value() {
        assert_eq!(
            SecretRef::try_from("env:CRM_TOKEN".to_string()),
            Ok(SecretRef::Env("CRM_TOKEN".into()))
        );
        assert_eq!(
            SecretRef::try_from("file:crm".to_string()),
            Ok(SecretRef::File("crm".into()))
        );
        assert!(SecretRef::try_from("hunter2".to_string()).is_err());
        assert!(SecretRef::try_from("env:".to_string()).is_err());
    }

    #[test]
    fn a_secret_never_prints_its_value() {
        let secret = Secret("hunter2".into());
        assert_eq!(format!("{secret} {secret:?}"), "[redacted] [redacted]");
    }

    #[cfg(unix)]
    #[test]
    fn a_secret_that_is_not_a_string_is_refused_without_its_value() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("secrets.toml");
        for (text, kind) in [
            ("crm = \"s\"\npin = 739164\n", "integer"),
            ("crm = \"s\"\npin = 7391.64\n", "float"),
            ("crm = \"s\"\npin = [739164]\n", "array"),
        ] {
            std::fs::write(&file, text).unwrap();
            std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
            let err = Secrets::load(Some(&file)).unwrap_err().to_string();
            assert!(
                err.contains("line 2: pin: a secret must be a string in quotes")
                    && err.contains(kind),
                "{err}"
            );
            assert!(!err.contains("7391"), "the value is shown: {err}");
        }
    }

    #[cfg(unix)]
    #[test]
    fn a_kept_secret_replaces_its_key_alone_and_is_taken_at_once() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("secrets.toml");
        let text = "# Rotated by the host.\ncrm = \"s3cret\"  # the CRM's\nrefresh = \"r-0\"\n";
        std::fs::write(&file, text).unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
        let secrets = Secrets::load(Some(&file)).unwrap();
        let kept = secrets
            .keep("refresh", &Secrets::value("r-1".into()))
            .unwrap();
        assert_eq!(kept, file);
        assert_eq!(
            std::fs::read_to_string(&file).unwrap(),
            text.replace("r-0", "r-1")
        );
        let mode = std::fs::metadata(&file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let value = secrets.resolve(&SecretRef::File("refresh".into())).unwrap();
        assert_eq!(value.expose(), "r-1");
        assert!(secrets.reload().unwrap().is_empty());
        // Without a file there is nowhere to keep it.
        let error = Secrets::default()
            .keep("refresh", &Secrets::value("r-1".into()))
            .unwrap_err();
        assert_eq!(error, "no secrets-file is configured");
    }

    #[cfg(unix)]
    #[test]
    fn a_secrets_file_readable_by_others_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("secrets.toml");
        std::fs::write(&file, "crm = \"s3cret\"\n").unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = Secrets::load(Some(&file)).unwrap_err().to_string();
        assert!(
            err.contains("readable by others") && err.contains("chmod 600"),
            "{err}"
        );
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
        let secrets = Secrets::load(Some(&file)).unwrap();
        let value = secrets.resolve(&SecretRef::File("crm".into())).unwrap();
        assert_eq!(value.expose(), "s3cret");
        let missing = secrets
            .resolve(&SecretRef::File("nope".into()))
            .unwrap_err();
        assert!(!missing.contains("s3cret"));

        // Rotated, one key added and one gone: taken by a reload, which
        // names the keys and never a value.
        std::fs::write(&file, "crm = \"n3w\"\nmailer = \"m4il\"\n").unwrap();
        let changes = secrets.reload().unwrap();
        assert_eq!(
            changes,
            Changes {
                added: vec!["mailer".into()],
                changed: vec!["crm".into()],
                removed: vec![],
            }
        );
        assert_eq!(changes.to_string(), "added mailer; changed crm");
        let crm = SecretRef::File("crm".into());
        assert_eq!(secrets.resolve(&crm).unwrap().expose(), "n3w");
        std::fs::write(&file, "mailer = \"m4il\"\n").unwrap();
        assert_eq!(secrets.reload().unwrap().to_string(), "removed crm");
        assert!(secrets.reload().unwrap().is_empty());
        // A file that cannot be taken leaves the last values in place.
        std::fs::write(&file, "mailer = \"other\"\n").unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(secrets.reload().is_err());
        let mailer = SecretRef::File("mailer".into());
        assert_eq!(secrets.resolve(&mailer).unwrap().expose(), "m4il");
    }
}
