//! A pass-through transform that breaks, on purpose, the conformance rule its
//! config names, so the tests can show `causeway test` names it.

use causeway_sdk::{PluginError, Record, Transform, plugin};
use serde::Deserialize;

#[derive(Deserialize, Default)]
struct Config {
    #[serde(rename = "break", default)]
    broken: Option<String>,
}

struct NonconformantTransform;

impl Transform for NonconformantTransform {
    fn transform(batch: Vec<Record>) -> Result<Vec<Record>, PluginError> {
        let config: Config = causeway_sdk::config()?;
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        let size = batch.len();
        Ok(batch
            .into_iter()
            .map(|mut record| {
                match config.broken.as_deref() {
                    Some("transform-deterministic") => {
                        record.data = format!("{{\"at\": {nanos}}}");
                    }
                    Some("transform-keeps-keys") => record.key = format!("{}-renamed", record.key),
                    // Deterministic, keys kept, but a record's answer
                    // depends on the batch it came in.
                    Some("transform-record-wise") => {
                        record.data = format!("{{\"batch\": {size}}}");
                    }
                    _ => {}
                }
                record
            })
            .collect())
    }
}

plugin!(transform: NonconformantTransform);
