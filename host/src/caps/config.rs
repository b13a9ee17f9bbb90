//! `config`: the operator's configuration for this plugin, as JSON. Every
//! plugin may read its own (its secret fields never in it); each read is
//! audited, as every capability use is.

use crate::audit::{AuditEvent, Decision};
use crate::bindings::causeway::plugin::config::Host;
use crate::sandbox::StoreState;

impl Host for StoreState {
    async fn get(&mut self) -> wasmtime::Result<String> {
        let target = match self.pipeline.as_str() {
            "" => "its configuration".to_string(),
            pipeline => format!("its configuration in pipeline {pipeline}"),
        };
        self.audit.record(AuditEvent::new(
            &self.plugin,
            "config",
            "get",
            &target,
            Decision::Allowed,
            format!("{} bytes", self.config_json.len()),
        ));
        Ok(self.config_json.clone())
    }
}
