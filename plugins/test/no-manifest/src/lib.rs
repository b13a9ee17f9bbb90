//! A transform built without the SDK and without an embedded manifest: the
//! host accepts it only with a sidecar `NAME.toml`. It passes records
//! through, but for one keyed `config`, whose data becomes the configuration
//! the plugin reads: what a sidecar's config schema lets through.

wit_bindgen::generate!({
    path: "../../../wit",
    world: "causeway:plugin/transform-plugin@0.1.0",
});

use causeway::plugin::types::{PluginError, Record};
use exports::causeway::plugin::transform::Guest;

struct PassThrough;

impl Guest for PassThrough {
    fn transform(batch: Vec<Record>) -> Result<Vec<Record>, PluginError> {
        Ok(batch
            .into_iter()
            .map(|record| match record.key.as_str() {
                "config" => Record {
                    data: causeway::plugin::config::get(),
                    ..record
                },
                _ => record,
            })
            .collect())
    }
}

export!(PassThrough);
