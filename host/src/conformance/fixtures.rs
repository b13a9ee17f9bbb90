//! A plugin's test fixtures: one folder, every file optional.
//!
//! - `config.json`: the configuration to test with (`--config` overrides it);
//! - `bad-config.json`: a configuration `check` must refuse (default: the
//!   configuration without the properties its schema requires);
//! - `records.json`: the records a transform or a sink is given (default:
//!   four sample contacts, one of them a delete);
//! - `webhook.json`: a delivery a webhook must accept, as `causeway invoke
//!   handle` takes it (without it the webhook rule is skipped);
//! - `http.json`: the recorded HTTP exchanges the plugin's requests are
//!   answered from (written by `causeway test --record`).

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::bindings::{IncomingRequest, Record};

/// The sample records used when the fixtures hold none.
const SAMPLE_RECORDS: &str = include_str!("../../../examples/contacts.json");

/// The configuration file in a fixtures folder.
pub const CONFIG: &str = "config.json";
/// The refused configuration file.
pub const BAD_CONFIG: &str = "bad-config.json";
/// The input records file.
pub const RECORDS: &str = "records.json";
/// The webhook delivery file.
pub const WEBHOOK: &str = "webhook.json";
/// The recorded HTTP file.
pub const HTTP: &str = "http.json";

/// Why the fixtures cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("{file}: {message}")]
pub struct FixtureError {
    /// The file.
    pub file: String,
    /// What is wrong with it.
    pub message: String,
}

/// What the suite runs a plugin with.
#[derive(Debug, Clone)]
pub struct Fixtures {
    /// The folder.
    pub dir: PathBuf,
    /// The configuration, and the file it came from (`None`: `{}`).
    pub config: (Value, Option<PathBuf>),
    /// A configuration `check` must refuse, if given.
    pub bad_config: Option<(Value, PathBuf)>,
    /// The records for transforms and sinks, and their file (`None`: the sample).
    pub records: (Vec<Record>, Option<PathBuf>),
    /// A delivery for webhooks, if given.
    pub webhook: Option<IncomingRequest>,
}

fn read_json(file: &Path) -> Result<Option<Value>, FixtureError> {
    let fail = |message: String| FixtureError {
        file: file.display().to_string(),
        message,
    };
    match std::fs::read_to_string(file) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(fail(format!("cannot read: {e}"))),
        Ok(text) => serde_json::from_str(&text)
            .map(Some)
            .map_err(|e| fail(format!("not valid JSON: {e}"))),
    }
}

fn object(value: Value, file: &Path) -> Result<Value, FixtureError> {
    if value.is_object() {
        Ok(value)
    } else {
        Err(FixtureError {
            file: file.display().to_string(),
            message: "a configuration must be a JSON object".to_string(),
        })
    }
}

impl Fixtures {
    /// Reads the fixtures in `dir`, the configuration from `config` if given.
    pub fn load(dir: &Path, config: Option<&Path>) -> Result<Fixtures, FixtureError> {
        let config_file = config
            .map(Path::to_path_buf)
            .unwrap_or_else(|| dir.join(CONFIG));
        let config = match read_json(&config_file)? {
            Some(value) => (object(value, &config_file)?, Some(config_file)),
            None if config.is_some() => {
                return Err(FixtureError {
                    file: config_file.display().to_string(),
                    message: "does not exist".to_string(),
                });
            }
            None => (Value::Object(Default::default()), None),
        };
        let bad_file = dir.join(BAD_CONFIG);
        let bad_config = read_json(&bad_file)?
            .map(|v| object(v, &bad_file).map(|v| (v, bad_file.clone())))
            .transpose()?;
        let records_file = dir.join(RECORDS);
        let records = match read_json(&records_file)? {
            Some(value) => (
                crate::operation::records_from(value).map_err(|message| FixtureError {
                    file: records_file.display().to_string(),
                    message,
                })?,
                Some(records_file),
            ),
            None => (sample_records(), None),
        };
        let webhook_file = dir.join(WEBHOOK);
        let webhook = read_json(&webhook_file)?
            .map(|value| {
                crate::operation::request_from(value).map_err(|message| FixtureError {
                    file: webhook_file.display().to_string(),
                    message,
                })
            })
            .transpose()?;
        Ok(Fixtures {
            dir: dir.to_path_buf(),
            config,
            bad_config,
            records,
            webhook,
        })
    }

    /// The recorded HTTP file.
    pub fn http_file(&self) -> PathBuf {
        self.dir.join(HTTP)
    }
}

/// The built-in sample records.
pub fn sample_records() -> Vec<Record> {
    serde_json::from_str(SAMPLE_RECORDS)
        .ok()
        .and_then(|v| crate::operation::records_from(v).ok())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_folder_gives_an_empty_config_and_the_sample_records() {
        let dir = tempfile::tempdir().unwrap();
        let fixtures = Fixtures::load(dir.path(), None).unwrap();
        assert_eq!(fixtures.config.0, serde_json::json!({}));
        assert!(fixtures.bad_config.is_none());
        assert_eq!(fixtures.records.0.len(), 4);
        assert!(fixtures.records.1.is_none());
    }

    #[test]
    fn bad_fixture_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(RECORDS), "[{\"key\": 1}]").unwrap();
        let err = Fixtures::load(dir.path(), None).unwrap_err().to_string();
        assert!(err.contains("records.json"), "{err}");
        std::fs::remove_file(dir.path().join(RECORDS)).unwrap();
        std::fs::write(dir.path().join(CONFIG), "[]").unwrap();
        let err = Fixtures::load(dir.path(), None).unwrap_err().to_string();
        assert!(
            err.contains("config.json: a configuration must be a JSON object"),
            "{err}"
        );
        let err = Fixtures::load(dir.path(), Some(&dir.path().join("nope.json")))
            .unwrap_err()
            .to_string();
        assert!(err.contains("nope.json: does not exist"), "{err}");
    }
}
