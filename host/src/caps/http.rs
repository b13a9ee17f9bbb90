//! `http`: outbound requests, allowed only by the operator's grants.
//!
//! Until the grants model is in place nothing is granted, so every request
//! is denied with a message naming the plugin and what to add.

use crate::bindings::causeway::plugin::http::{Host, HttpError, Request, Response};
use crate::sandbox::StoreState;

impl Host for StoreState {
    async fn send(&mut self, req: Request) -> wasmtime::Result<Result<Response, HttpError>> {
        let plugin = &self.plugin.name;
        let target = req.url.split('?').next().unwrap_or_default();
        tracing::warn!(%plugin, method = %req.method, url = %target, "http request denied: no grant");
        Ok(Err(HttpError::Denied(format!(
            "plugin {plugin} has no http grant for {} {target}: an operator must grant it in grants.toml",
            req.method
        ))))
    }
}
