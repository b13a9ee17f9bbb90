//! A pass-through transform that fails, as `fatal`, any batch holding a
//! record whose key its config lists (`refuse`): a record a transform
//! cannot map, and that an operator can later let through by editing the
//! pipeline's configuration.

use causeway_sdk::{PluginError, Record, Transform, plugin};
use serde::Deserialize;

#[derive(Deserialize, Default)]
struct Config {
    #[serde(default)]
    refuse: Vec<String>,
}

struct Picky;

impl Transform for Picky {
    fn transform(batch: Vec<Record>) -> Result<Vec<Record>, PluginError> {
        let config: Config = causeway_sdk::config()?;
        if let Some(record) = batch.iter().find(|r| config.refuse.contains(&r.key)) {
            return Err(PluginError::Fatal(format!(
                "record {} is refused by configuration",
                record.key
            )));
        }
        Ok(batch)
    }
}

plugin!(transform: Picky);
