//! The audit log: one event per capability use, allowed or denied, written
//! through the database's single writer. Every capability calls
//! [`AuditLog::record`] and nothing else. Rows are chained ([`chain`]) so
//! that tampering is detected.

pub mod chain;
pub mod query;

pub use chain::{Broken, Chain, Head, Report};

use std::time::SystemTime;

use serde::Serialize;

use crate::db::WriterHandle;
use crate::plugin::PluginInfo;

/// Whether a capability use was allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Decision {
    /// The grant allowed it.
    Allowed,
    /// The grant refused it.
    Denied,
}

impl Decision {
    /// The decision's name, as stored.
    pub fn name(self) -> &'static str {
        match self {
            Decision::Allowed => "allowed",
            Decision::Denied => "denied",
        }
    }

    /// The decision stored as `text` (anything but `allowed` reads as denied).
    pub fn parse(text: &str) -> Decision {
        if text == "allowed" {
            Decision::Allowed
        } else {
            Decision::Denied
        }
    }
}

/// The name host events are recorded under, where a plugin's would be.
pub const HOST: &str = "causeway";

/// One capability use.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AuditEvent {
    /// When (RFC 3339, UTC).
    pub time: String,
    /// The plugin's name.
    pub plugin: String,
    /// Its version.
    pub version: String,
    /// Its digest.
    pub digest: String,
    /// The capability: `http`, `storage`, `config`, `log`, or `host`.
    pub capability: String,
    /// What was done, e.g. `GET` or `set`.
    pub action: String,
    /// On what, e.g. a URL without its query values, or a key.
    pub target: String,
    /// Allowed or denied.
    pub decision: Decision,
    /// Sizes, status, duration, or why it was denied. Never a secret.
    pub detail: String,
    /// The pipeline run it belongs to, if any.
    pub run_id: Option<String>,
}

impl AuditEvent {
    /// An event for `plugin`, timed now.
    pub fn new(
        plugin: &PluginInfo,
        capability: &str,
        action: &str,
        target: &str,
        decision: Decision,
        detail: String,
    ) -> AuditEvent {
        let who = (
            plugin.name.as_str(),
            plugin.version.as_str(),
            plugin.digest.as_str(),
        );
        AuditEvent::by(who, capability, action, target, decision, detail)
    }

    /// An event of the host itself (grants changed, the log pruned), under
    /// the plugin name [`HOST`].
    pub fn host(
        capability: &str,
        action: &str,
        target: &str,
        decision: Decision,
        detail: String,
    ) -> AuditEvent {
        let who = (HOST, env!("CARGO_PKG_VERSION"), "-");
        AuditEvent::by(who, capability, action, target, decision, detail)
    }

    /// An event by `(name, version, digest)`, timed now.
    fn by(
        (name, version, digest): (&str, &str, &str),
        capability: &str,
        action: &str,
        target: &str,
        decision: Decision,
        detail: String,
    ) -> AuditEvent {
        AuditEvent {
            time: now(),
            plugin: name.to_string(),
            version: version.to_string(),
            digest: digest.to_string(),
            capability: capability.to_string(),
            action: action.to_string(),
            target: target.to_string(),
            decision,
            detail,
            run_id: None,
        }
    }
}

/// The current time as RFC 3339 UTC with microseconds.
pub fn now() -> String {
    humantime::format_rfc3339_micros(SystemTime::now()).to_string()
}

/// Where capability implementations send their events.
#[derive(Clone)]
pub struct AuditLog {
    writer: WriterHandle,
}

impl AuditLog {
    /// An audit log writing through `writer`.
    pub fn new(writer: WriterHandle) -> AuditLog {
        AuditLog { writer }
    }

    /// Records one event (queued; batched into the next transaction).
    pub fn record(&self, event: AuditEvent) {
        tracing::debug!(
            target: "audit",
            plugin = %event.plugin,
            capability = %event.capability,
            action = %event.action,
            target = %event.target,
            decision = event.decision.name(),
            "{}",
            event.detail
        );
        self.writer.audit(event);
    }
}
