//! A transform built without the SDK and without an embedded manifest: the
//! host accepts it only with a sidecar `NAME.toml`. It passes records through.

wit_bindgen::generate!({
    path: "../../../wit",
    world: "causeway:plugin/transform-plugin@0.1.0",
});

use causeway::plugin::types::{PluginError, Record};
use exports::causeway::plugin::transform::Guest;

struct PassThrough;

impl Guest for PassThrough {
    fn transform(batch: Vec<Record>) -> Result<Vec<Record>, PluginError> {
        Ok(batch)
    }
}

export!(PassThrough);
