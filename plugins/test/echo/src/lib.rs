//! A transform that answers its batch unchanged, touching nothing: what a
//! call costs beyond the plugin's own work (records lowered into the guest,
//! the same records lifted back). The transform benchmark runs it beside
//! `map-fullname`.

use causeway_sdk::{PluginError, Record, Transform, plugin};

struct Echo;

impl Transform for Echo {
    fn transform(batch: Vec<Record>) -> Result<Vec<Record>, PluginError> {
        Ok(batch)
    }
}

plugin!(transform: Echo);
