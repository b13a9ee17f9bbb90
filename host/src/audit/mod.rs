//! The audit log: one event per capability use, allowed or denied, written
//! through the database's single writer. Every capability calls
//! [`AuditLog::record`] and nothing else. Rows are chained ([`chain`]) so
//! that tampering is detected.

pub mod chain;
pub mod journal;
pub mod query;

pub use chain::{Broken, Chain, Head, Report};

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::db::WriterHandle;
use crate::plugin::PluginInfo;

/// Whether a capability use was allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
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
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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

    /// An event by `(name, version, digest)`, timed now: for a plugin known
    /// by name alone (a pipeline's source that may not be installed).
    pub fn by(
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
            action: capped(action.to_string(), MAX_ACTION_BYTES),
            target: capped(target.to_string(), MAX_TARGET_BYTES),
            decision,
            detail: capped(detail, MAX_DETAIL_BYTES),
            run_id: None,
        }
    }
}

/// The longest action an event keeps (an HTTP method is a plugin's text).
pub const MAX_ACTION_BYTES: usize = 64;
/// The longest target an event keeps: a URL or a batch's keys are a
/// plugin's choice, and must not make one row megabytes long.
pub const MAX_TARGET_BYTES: usize = 2048;
/// The longest detail an event keeps.
pub const MAX_DETAIL_BYTES: usize = 4096;

/// `text` cut to at most `max` bytes (on a character boundary), saying how
/// much was cut.
pub(crate) fn capped(mut text: String, max: usize) -> String {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let cut = text.len() - end;
    text.truncate(end);
    text.push_str(&format!("… ({cut} more bytes)"));
    text
}

/// The current time as RFC 3339 UTC with microseconds.
pub fn now() -> String {
    humantime::format_rfc3339_micros(SystemTime::now()).to_string()
}

/// The time `keep` ago, as [`now`] writes it: what a retention or `--since`
/// compares stored times with. Never before the epoch, which no stored time
/// is, and which is as far back as RFC 3339 times are written here
/// (humantime panics on an earlier one: `--since 100y`).
pub fn ago(keep: std::time::Duration) -> String {
    let at = SystemTime::now()
        .checked_sub(keep)
        .filter(|at| *at > SystemTime::UNIX_EPOCH)
        .unwrap_or(SystemTime::UNIX_EPOCH);
    humantime::format_rfc3339_micros(at).to_string()
}

/// Denied capability uses one plugin call may make. Each is audited one by
/// one; a plugin looping on a refused call would otherwise write hundreds of
/// thousands of rows a second (and queue them in memory faster than they are
/// written) until its deadline. Beyond this the call is stopped.
pub const MAX_DENIALS_PER_CALL: u32 = 100;

/// Allowed capability uses one plugin call records one by one. A plugin
/// reading its configuration in a loop made 30,000 rows a second; past
/// this, uses are counted by capability and recorded as one row each at
/// the call's end ([`AuditLog::record_uncounted`]). The call goes on: an
/// allowed use is not a fault. A call's `log` row, one per call, is not
/// held to it ([`AuditLog::record_for_the_call`]).
pub const MAX_ALLOWED_PER_CALL: u32 = 1000;

/// A call's allowed uses: how many, and past the budget, by capability.
#[derive(Debug, Default)]
struct AllowedUses {
    count: AtomicU32,
    beyond: Mutex<std::collections::BTreeMap<String, u64>>,
}

/// Where capability implementations send their events.
#[derive(Clone)]
pub struct AuditLog {
    writer: WriterHandle,
    /// For a plugin call's log: the denials counted in this call.
    denials: Option<Arc<AtomicU32>>,
    /// For a plugin call's log: the allowed uses counted in this call.
    allowed: Option<Arc<AllowedUses>>,
    /// For a plugin's log: its version's counters (`/metrics`).
    stats: Option<Arc<crate::metrics::CallStats>>,
    /// For a plugin call's log: the pipeline run the call belongs to, set
    /// per call (a warm instance serves the runs one after another).
    run: Option<Arc<Mutex<Option<Arc<str>>>>>,
}

impl AuditLog {
    /// An audit log writing through `writer`.
    pub fn new(writer: WriterHandle) -> AuditLog {
        AuditLog {
            writer,
            denials: None,
            allowed: None,
            stats: None,
            run: None,
        }
    }

    /// This log, also counting each event in `stats` (a plugin version's).
    pub fn counting_in(self, stats: Arc<crate::metrics::CallStats>) -> AuditLog {
        AuditLog {
            stats: Some(stats),
            ..self
        }
    }

    /// The log for one plugin call (its clones share it): denials beyond
    /// [`MAX_DENIALS_PER_CALL`] are counted, not recorded, and
    /// [`AuditLog::over_budget`] tells the sandbox to stop the call;
    /// allowed uses beyond [`MAX_ALLOWED_PER_CALL`] are counted, and
    /// recorded together by [`AuditLog::record_uncounted`].
    pub fn for_call(&self) -> AuditLog {
        AuditLog {
            writer: self.writer.clone(),
            denials: Some(Arc::new(AtomicU32::new(0))),
            allowed: Some(Arc::default()),
            stats: self.stats.clone(),
            run: Some(Arc::default()),
        }
    }

    /// Starts a new call's count (a warm instance's next call), its uses
    /// recorded as `run`'s (a pipeline run's, `PIPELINE#ID`), if any.
    pub fn begin_call(&self, run: Option<&Arc<str>>) {
        if let Some(denials) = &self.denials {
            denials.store(0, Ordering::Relaxed);
        }
        if let Some(allowed) = &self.allowed {
            allowed.count.store(0, Ordering::Relaxed);
            allowed
                .beyond
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clear();
        }
        if let Some(current) = &self.run {
            *current.lock().unwrap_or_else(|p| p.into_inner()) = run.cloned();
        }
    }

    /// How many denials this call has had, once they exceed the budget.
    pub fn over_budget(&self) -> Option<u32> {
        let denied = self.denials.as_ref()?.load(Ordering::Relaxed);
        (denied > MAX_DENIALS_PER_CALL).then_some(denied)
    }

    /// Records one event (queued; batched into the next transaction).
    /// `false` when it was over the call's budget, a denial or an allowed
    /// use: counted, not recorded one by one (the caller then logs nothing
    /// either).
    pub fn record(&self, event: AuditEvent) -> bool {
        let event = self.counted(event);
        if event.decision == Decision::Denied
            && let Some(denials) = &self.denials
            && denials.fetch_add(1, Ordering::Relaxed) >= MAX_DENIALS_PER_CALL
        {
            return false;
        }
        if event.decision == Decision::Allowed
            && let Some(allowed) = &self.allowed
            && allowed.count.fetch_add(1, Ordering::Relaxed) >= MAX_ALLOWED_PER_CALL
        {
            *allowed
                .beyond
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .entry(event.capability)
                .or_default() += 1;
            return false;
        }
        self.write(event);
        true
    }

    /// Records the one row a call makes for all its uses of a capability
    /// (its log lines): counted, and never held to the call's budget.
    pub fn record_for_the_call(&self, event: AuditEvent) {
        let event = self.counted(event);
        self.write(event);
    }

    /// `event` in its run, counted in the plugin version's `/metrics`.
    fn counted(&self, event: AuditEvent) -> AuditEvent {
        let event = self.in_run(event);
        if let Some(stats) = &self.stats {
            stats.record_use(&event.capability, event.decision.name());
        }
        event
    }

    /// Queues `event` for the writer.
    fn write(&self, event: AuditEvent) {
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

    /// `event`, marked with the pipeline run of the call it belongs to.
    fn in_run(&self, mut event: AuditEvent) -> AuditEvent {
        if event.run_id.is_none()
            && let Some(run) = &self.run
        {
            event.run_id = run
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .as_deref()
                .map(str::to_string);
        }
        event
    }

    /// Records, one row per capability, the allowed uses `plugin`'s call
    /// made beyond [`MAX_ALLOWED_PER_CALL`]; at the call's end.
    pub fn record_uncounted(&self, plugin: &PluginInfo) {
        let Some(allowed) = &self.allowed else {
            return;
        };
        let beyond = std::mem::take(&mut *allowed.beyond.lock().unwrap_or_else(|p| p.into_inner()));
        for (capability, uses) in beyond {
            self.writer.audit(self.in_run(AuditEvent::new(
                plugin,
                &capability,
                "more",
                "",
                Decision::Allowed,
                format!(
                    "{uses} more {capability} uses in this call, past the {MAX_ALLOWED_PER_CALL} a call records one by one"
                ),
            )));
        }
    }

    /// Records that `plugin`'s call was stopped after `denied` denials.
    pub fn record_stopped(&self, plugin: &PluginInfo, denied: u32) {
        self.writer.audit(self.in_run(AuditEvent::new(
            plugin,
            "call",
            "stop",
            "",
            Decision::Denied,
            format!(
                "{denied} capability uses denied in one call, over the limit of {MAX_DENIALS_PER_CALL}: the call was stopped; the denials after the {MAX_DENIALS_PER_CALL}th are not recorded one by one"
            ),
        )));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::query::{Filter, query};

    fn event(decision: Decision) -> AuditEvent {
        AuditEvent::by(
            ("p", "1", "-"),
            "storage",
            "get",
            "k",
            decision,
            String::new(),
        )
    }

    #[test]
    fn a_plugins_long_text_is_cut_on_a_character_boundary_saying_how_much() {
        let long = format!("{}é{}", "a".repeat(MAX_TARGET_BYTES - 1), "b".repeat(5000));
        let event = AuditEvent::by(
            ("p", "1", "-"),
            "http",
            &"G".repeat(100),
            &long,
            Decision::Denied,
            "d".repeat(MAX_DETAIL_BYTES),
        );
        let kept = event.target.strip_suffix("… (5002 more bytes)").unwrap();
        assert_eq!(kept, "a".repeat(MAX_TARGET_BYTES - 1));
        assert_eq!(event.action, format!("{}… (36 more bytes)", "G".repeat(64)));
        assert_eq!(
            event.detail.len(),
            MAX_DETAIL_BYTES,
            "text at the limit is kept whole"
        );
    }

    #[test]
    fn a_calls_allowed_uses_beyond_the_budget_are_one_row_each_capability() {
        let (_dir, db, writer) = crate::db::Writer::temporary();
        let call = AuditLog::new(writer.handle()).for_call();
        for _ in 0..MAX_ALLOWED_PER_CALL {
            assert!(call.record(event(Decision::Allowed)));
        }
        for _ in 0..5 {
            assert!(
                !call.record(event(Decision::Allowed)),
                "counted, not recorded"
            );
        }
        // Denials keep their own budget; the call's log row is never counted.
        assert!(call.record(event(Decision::Denied)));
        let mut log = event(Decision::Allowed);
        log.capability = "log".into();
        call.record_for_the_call(log);
        let plugin = PluginInfo::for_tests("p");
        call.record_uncounted(&plugin);
        // A warm instance's next call has the whole budget again.
        call.begin_call(None);
        assert!(call.record(event(Decision::Allowed)));
        writer.close();

        let conn = rusqlite::Connection::open(&db).unwrap();
        let rows = query(&conn, &Filter::default()).unwrap();
        assert_eq!(rows.len() as u32, MAX_ALLOWED_PER_CALL + 4);
        let summary = &rows[rows.len() - 2].event;
        assert_eq!(
            (summary.capability.as_str(), summary.action.as_str()),
            ("storage", "more")
        );
        assert_eq!(
            summary.detail,
            "5 more storage uses in this call, past the 1000 a call records one by one"
        );
    }

    #[test]
    fn a_calls_denials_beyond_the_budget_are_counted_not_recorded() {
        let (_dir, db, writer) = crate::db::Writer::temporary();
        let host_log = AuditLog::new(writer.handle());
        let call = host_log.for_call();
        let shared = call.clone();

        for _ in 0..MAX_DENIALS_PER_CALL {
            assert!(shared.record(event(Decision::Denied)));
        }
        assert_eq!(call.over_budget(), None);
        assert!(!call.record(event(Decision::Denied)));
        assert!(!shared.record(event(Decision::Denied)));
        assert_eq!(call.over_budget(), Some(MAX_DENIALS_PER_CALL + 2));
        // Allowed uses are always recorded; the host's own log has no budget.
        assert!(call.record(event(Decision::Allowed)));
        assert!(host_log.record(event(Decision::Denied)));
        assert_eq!(host_log.over_budget(), None);
        // A warm instance's next call starts a new count, here in a
        // pipeline run that its rows name.
        let run: Arc<str> = Arc::from("p#7");
        call.begin_call(Some(&run));
        assert_eq!(shared.over_budget(), None);
        assert!(call.record(event(Decision::Denied)));
        writer.close();

        let conn = rusqlite::Connection::open(&db).unwrap();
        let rows = query(&conn, &Filter::default()).unwrap();
        let denied = rows
            .iter()
            .filter(|r| r.event.decision == Decision::Denied)
            .count();
        assert_eq!(
            denied as u32,
            MAX_DENIALS_PER_CALL + 2,
            "the budget, the host's, the next call's"
        );
        assert_eq!(rows.len() as u32, MAX_DENIALS_PER_CALL + 3);
        let runs: Vec<Option<&str>> = rows.iter().map(|r| r.event.run_id.as_deref()).collect();
        assert_eq!(runs.last(), Some(&Some("p#7")));
        assert!(
            runs[..runs.len() - 1].iter().all(Option::is_none),
            "{runs:?}"
        );
    }
}
