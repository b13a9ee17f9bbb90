//! `log`: plugin log lines into the host's logs, attributed and size-capped.

use crate::bindings::causeway::plugin::log::{Host, Level};
use crate::sandbox::StoreState;

/// The longest log line kept; the rest is cut, so a plugin cannot flood the
/// host's logs with one call.
pub const MAX_LINE_BYTES: usize = 4096;

impl Host for StoreState {
    async fn log(&mut self, level: Level, mut message: String) -> wasmtime::Result<()> {
        if message.len() > MAX_LINE_BYTES {
            let mut cut = MAX_LINE_BYTES;
            while !message.is_char_boundary(cut) {
                cut -= 1;
            }
            message.truncate(cut);
            message.push_str(" [cut]");
        }
        let plugin = self.plugin.label();
        match level {
            Level::Trace => tracing::trace!(target: "plugin", %plugin, "{message}"),
            Level::Debug => tracing::debug!(target: "plugin", %plugin, "{message}"),
            Level::Info => tracing::info!(target: "plugin", %plugin, "{message}"),
            Level::Warn => tracing::warn!(target: "plugin", %plugin, "{message}"),
            Level::Error => tracing::error!(target: "plugin", %plugin, "{message}"),
        }
        Ok(())
    }
}
