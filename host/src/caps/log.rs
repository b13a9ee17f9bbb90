//! `log`: plugin log lines into the host's logs, attributed, size-capped and
//! rate-limited per plugin version, so no plugin can flood the host's logs.
//! A call's lines are audited together: one row for the call, with how many
//! lines and bytes it logged and how many the rate turned away (a row a
//! line would double every chatty plugin's log in the audit log).

use std::time::Instant;

use crate::audit::{AuditEvent, Decision};
use crate::bindings::causeway::plugin::log::{Host, Level};
use crate::caps::rate::Admission;
use crate::sandbox::StoreState;

/// The longest log line kept; the rest is cut, so a plugin cannot flood the
/// host's logs with one call.
pub const MAX_LINE_BYTES: usize = 4096;

/// Log lines a plugin may write per second, sustained.
pub const LINES_PER_SECOND: u32 = 50;

/// Log lines a plugin may write at once after a quiet spell.
pub const LINES_BURST: u32 = 200;

/// The log budget of one plugin version, shared by all its calls.
#[derive(Debug)]
pub struct LogLimiter(Admission);

impl Default for LogLimiter {
    fn default() -> Self {
        LogLimiter(Admission::new(LINES_PER_SECOND, LINES_BURST))
    }
}

impl LogLimiter {
    /// Whether a line may be written now; if so, how many were dropped since
    /// the last one written.
    pub fn admit(&self, now: Instant) -> Option<u64> {
        self.0.admit(now)
    }
}

/// What one call logged: its `log` audit row.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Logged {
    /// Lines written to the host's log.
    pub lines: u64,
    /// Their bytes, as written (cut lines count what was kept).
    pub bytes: u64,
    /// Lines the rate turned away.
    pub refused: u64,
}

impl StoreState {
    /// Records the call's `log` row, if it logged anything, and starts the
    /// next call's count.
    pub fn audit_logged(&mut self) {
        let Logged {
            lines,
            bytes,
            refused,
        } = std::mem::take(&mut self.logged);
        if lines == 0 && refused == 0 {
            return;
        }
        let mut detail = format!("{lines} lines, {bytes} bytes");
        if refused > 0 {
            detail.push_str(&format!(
                "; {refused} more not written: over {LINES_PER_SECOND} lines per second"
            ));
        }
        self.audit.record_for_the_call(AuditEvent::new(
            &self.plugin,
            "log",
            "write",
            "the host's log",
            Decision::Allowed,
            detail,
        ));
    }
}

impl Host for StoreState {
    async fn log(&mut self, level: Level, mut message: String) -> wasmtime::Result<()> {
        let plugin = self.plugin.label();
        let Some(dropped) = self.log_limit.admit(Instant::now()) else {
            self.logged.refused += 1;
            return Ok(());
        };
        if dropped > 0 {
            tracing::warn!(
                target: "plugin",
                %plugin,
                "{dropped} log lines dropped: over {LINES_PER_SECOND} lines per second"
            );
        }
        if message.len() > MAX_LINE_BYTES {
            let mut cut = MAX_LINE_BYTES;
            while !message.is_char_boundary(cut) {
                cut -= 1;
            }
            message.truncate(cut);
            message.push_str(" [cut]");
        }
        self.logged.lines += 1;
        self.logged.bytes += message.len() as u64;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plugin_may_log_a_burst_then_its_rate() {
        let limiter = LogLimiter::default();
        let t0 = Instant::now();
        let written = (0..1000).filter(|_| limiter.admit(t0).is_some()).count();
        assert_eq!(written, LINES_BURST as usize);
        let t1 = t0 + std::time::Duration::from_secs(1);
        let written = (0..1000).filter(|_| limiter.admit(t1).is_some()).count();
        assert_eq!(written, LINES_PER_SECOND as usize);
    }
}
