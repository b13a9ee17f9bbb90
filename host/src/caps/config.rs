//! `config`: the operator's configuration for this plugin, as JSON.

use crate::bindings::causeway::plugin::config::Host;
use crate::sandbox::StoreState;

impl Host for StoreState {
    async fn get(&mut self) -> wasmtime::Result<String> {
        Ok(self.config_json.clone())
    }
}
