//! A transform that stays busy for `spin_ms` milliseconds (from its config),
//! logging when it starts, then passes its records through: a call that is
//! reliably in flight while a test stops or swaps the host.

use std::time::{Duration, Instant};

use causeway_sdk::{PluginError, Record, Transform, plugin};
use serde::Deserialize;

#[derive(Deserialize, Default)]
struct Config {
    #[serde(default)]
    spin_ms: u64,
}

struct Slow;

impl Transform for Slow {
    fn transform(batch: Vec<Record>) -> Result<Vec<Record>, PluginError> {
        let config: Config = causeway_sdk::config()?;
        causeway_sdk::log::info(format!("slow call started, spinning {} ms", config.spin_ms));
        let start = Instant::now();
        while start.elapsed() < Duration::from_millis(config.spin_ms) {
            std::hint::spin_loop();
        }
        Ok(batch)
    }
}

plugin!(transform: Slow);
