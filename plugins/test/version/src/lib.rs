//! A transform that answers which build it is: each record comes back as
//! `{"build": BUILD}`. It spins `spin_ms` milliseconds first (from its
//! config), so calls are reliably in flight while a test swaps the file.
//!
//! The reload tests make a second build by replacing the marker bytes in the
//! compiled file with others of the same length.

use std::time::{Duration, Instant};

use causeway_sdk::{PluginError, Record, Transform, plugin};
use serde::Deserialize;

/// The marker the tests patch.
const BUILD: &str = "build-aaaa";

#[derive(Deserialize, Default)]
struct Config {
    #[serde(default)]
    spin_ms: u64,
}

struct Version;

impl Transform for Version {
    fn transform(batch: Vec<Record>) -> Result<Vec<Record>, PluginError> {
        let config: Config = causeway_sdk::config()?;
        causeway_sdk::log::info(format!("call started on {BUILD}"));
        let start = Instant::now();
        while start.elapsed() < Duration::from_millis(config.spin_ms) {
            std::hint::spin_loop();
        }
        batch
            .into_iter()
            .map(|r| Record::upsert(&r.stream, &r.key, &serde_json::json!({ "build": BUILD })))
            .collect()
    }
}

plugin!(transform: Version);
