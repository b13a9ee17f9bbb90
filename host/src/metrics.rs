//! Metrics for Prometheus, served by a running host at `GET /metrics` (an
//! operator API route: loopback peers only, see [`crate::server`]).
//!
//! Two kinds of numbers: what this process counted since it started (plugin
//! calls by outcome and duration, capability uses by decision, pipeline runs
//! and records, webhook deliveries), kept in atomics beside what they count
//! ([`CallStats`] on each loaded plugin version, [`PipelineStats`] per
//! pipeline); and what is true now (plugin and pipeline states, dead letters,
//! deliveries waiting), read from the registry and the database at each
//! scrape, the same truth `causeway plugins` and `causeway pipelines` show.
//!
//! The text format (Prometheus exposition format 0.0.4) is written here: it
//! is a few lines, and a client crate would bring a global registry the host
//! does not need.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The content type of the exposition format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// A metric family's type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Only goes up (resets when the host restarts).
    Counter,
    /// Goes up and down.
    Gauge,
    /// Observations in cumulative buckets, with their sum and count.
    Histogram,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }
}

/// A page in the exposition format, written one family at a time.
#[derive(Debug, Default)]
pub struct Exposition {
    out: String,
}

impl Exposition {
    /// Starts the family `name`: its help line and its type. Every sample
    /// after it, until the next family, must belong to it.
    pub fn family(&mut self, name: &str, kind: Kind, help: &str) {
        let help = help.replace('\\', "\\\\").replace('\n', "\\n");
        let _ = writeln!(self.out, "# HELP {name} {help}");
        let _ = writeln!(self.out, "# TYPE {name} {}", kind.name());
    }

    /// One sample: `name{labels} value`.
    pub fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (label, text)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                self.out.push_str(label);
                self.out.push_str("=\"");
                for c in text.chars() {
                    match c {
                        '\\' => self.out.push_str("\\\\"),
                        '"' => self.out.push_str("\\\""),
                        '\n' => self.out.push_str("\\n"),
                        c => self.out.push(c),
                    }
                }
                self.out.push('"');
            }
            self.out.push('}');
        }
        if value.is_infinite() {
            self.out
                .push_str(if value > 0.0 { " +Inf\n" } else { " -Inf\n" });
        } else {
            let _ = writeln!(self.out, " {value}");
        }
    }

    /// A histogram's samples (`_bucket`, `_sum`, `_count`) under `labels`.
    pub fn histogram(&mut self, name: &str, labels: &[(&str, &str)], histogram: &Histogram) {
        let (buckets, sum) = histogram.snapshot();
        let bounds: Vec<String> = DURATION_BUCKETS
            .iter()
            .map(|b| b.to_string())
            .chain(["+Inf".to_string()])
            .collect();
        let mut cumulative = 0;
        let mut with_le = labels.to_vec();
        for (count, le) in buckets.iter().zip(&bounds) {
            cumulative += count;
            with_le.push(("le", le));
            self.sample(&format!("{name}_bucket"), &with_le, cumulative as f64);
            with_le.pop();
        }
        self.sample(&format!("{name}_sum"), labels, sum.as_secs_f64());
        self.sample(&format!("{name}_count"), labels, cumulative as f64);
    }

    /// The page.
    pub fn finish(self) -> String {
        self.out
    }
}

/// The upper bounds, in seconds, of the call-duration buckets: from a warm
/// call of a few microseconds to the longest deadline an operator may set.
pub const DURATION_BUCKETS: [f64; 14] = [
    0.00001, 0.00005, 0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0,
];

/// Durations in fixed buckets, updated without a lock.
#[derive(Debug, Default)]
pub struct Histogram {
    /// One per bound, then one for what is over the last.
    buckets: [AtomicU64; DURATION_BUCKETS.len() + 1],
    sum_nanos: AtomicU64,
}

impl Histogram {
    /// Counts one observation.
    pub fn observe(&self, elapsed: Duration) {
        let seconds = elapsed.as_secs_f64();
        let bucket = DURATION_BUCKETS
            .iter()
            .position(|bound| seconds <= *bound)
            .unwrap_or(DURATION_BUCKETS.len());
        self.buckets[bucket].fetch_add(1, Relaxed);
        let nanos = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        self.sum_nanos.fetch_add(nanos, Relaxed);
    }

    /// The per-bucket counts (not cumulative) and the sum. The count is the
    /// buckets' total, so the two always agree.
    fn snapshot(&self) -> ([u64; DURATION_BUCKETS.len() + 1], Duration) {
        let buckets = std::array::from_fn(|i| self.buckets[i].load(Relaxed));
        (buckets, Duration::from_nanos(self.sum_nanos.load(Relaxed)))
    }

    /// How many observations.
    pub fn count(&self) -> u64 {
        self.buckets.iter().map(|b| b.load(Relaxed)).sum()
    }
}

/// The operations a plugin call can be, as `operation` labels.
pub const OPERATIONS: [&str; 6] = ["check", "discover", "read", "write", "handle", "transform"];

/// How a call can end, as `outcome` labels: `ok`, the plugin's own error
/// kinds, then the host's.
pub const OUTCOMES: [&str; 13] = [
    "ok",
    "config",
    "auth",
    "rate-limited",
    "transient",
    "fatal",
    "timeout",
    "out-of-memory",
    "resource-limit",
    "busy",
    "trap",
    "invalid-call",
    "broken-answer",
];

/// One operation's calls.
#[derive(Debug, Default)]
struct OperationStats {
    outcomes: [AtomicU64; OUTCOMES.len()],
    duration: Histogram,
}

/// What one loaded plugin version did: its calls by operation and outcome
/// with their durations, and its capability uses by decision. Kept on the
/// plugin, so a new version starts its own series.
#[derive(Debug, Default)]
pub struct CallStats {
    operations: [OperationStats; OPERATIONS.len()],
    /// (capability, decision) → uses. Rarer than calls, and each also
    /// writes an audit row: a lock is cheap beside that.
    capabilities: Mutex<BTreeMap<(String, &'static str), u64>>,
}

impl CallStats {
    /// Counts one call of `operation` (one of [`OPERATIONS`]) that ended
    /// with `outcome` (one of [`OUTCOMES`]) after `elapsed`.
    pub fn record_call(&self, operation: &str, outcome: &str, elapsed: Duration) {
        let (Some(op), Some(out)) = (
            OPERATIONS.iter().position(|o| *o == operation),
            OUTCOMES.iter().position(|o| *o == outcome),
        ) else {
            debug_assert!(false, "unknown operation {operation} or outcome {outcome}");
            return;
        };
        let stats = &self.operations[op];
        stats.outcomes[out].fetch_add(1, Relaxed);
        stats.duration.observe(elapsed);
    }

    /// Counts one use of `capability`, `decision` being `allowed` or `denied`.
    pub fn record_use(&self, capability: &str, decision: &'static str) {
        let mut uses = self.capabilities.lock().unwrap_or_else(|p| p.into_inner());
        // A key is allocated once per (capability, decision), not per use.
        match uses
            .iter_mut()
            .find(|((c, d), _)| c == capability && *d == decision)
        {
            Some((_, n)) => *n += 1,
            None => {
                uses.insert((capability.to_string(), decision), 1);
            }
        }
    }

    /// Calls of `operation` that ended with `outcome`.
    pub fn calls(&self, operation: &str, outcome: &str) -> u64 {
        match (
            OPERATIONS.iter().position(|o| *o == operation),
            OUTCOMES.iter().position(|o| *o == outcome),
        ) {
            (Some(op), Some(out)) => self.operations[op].outcomes[out].load(Relaxed),
            _ => 0,
        }
    }
}

/// How a run can end, as `outcome` labels.
pub const RUN_OUTCOMES: [&str; 5] = ["ok", "failed", "stopped", "interrupted", "paused"];

/// What a record can have become in a pipeline, as `stage` labels: read
/// from the source, acknowledged by every sink, rejected by a stage (a
/// dead letter), skipped as older than a version let through, dropped by
/// a transform, given to no sink as unchanged (`history::Moved`).
pub const RECORD_STAGES: [&str; 6] = [
    "read",
    "written",
    "rejected",
    "skipped",
    "dropped",
    "unchanged",
];

/// How a webhook delivery can be answered, as `outcome` labels.
pub const DELIVERY_OUTCOMES: [&str; 9] = [
    "accepted",
    "duplicate",
    "handshake",
    "not-allowed",
    "bad-signature",
    "too-large",
    "too-slow",
    "misconfigured",
    "unavailable",
];

/// What one pipeline did since the host started.
#[derive(Debug, Default)]
pub struct PipelineStats {
    runs: [AtomicU64; RUN_OUTCOMES.len()],
    records: [AtomicU64; RECORD_STAGES.len()],
    deliveries: [AtomicU64; DELIVERY_OUTCOMES.len()],
}

impl PipelineStats {
    /// Counts a finished run (`outcome` one of [`RUN_OUTCOMES`]).
    pub fn run_ended(&self, outcome: &str) {
        bump(&self.runs, &RUN_OUTCOMES, outcome, 1);
    }

    /// Counts a committed page's or batch of deliveries' records.
    pub fn records(&self, page: &crate::pipeline::history::Moved) {
        // In the order of RECORD_STAGES.
        let counts = [
            page.read,
            page.written,
            page.rejected,
            page.skipped,
            page.dropped,
            page.unchanged,
        ];
        for (counter, n) in self.records.iter().zip(counts) {
            counter.fetch_add(u64::try_from(n).unwrap_or(0), Relaxed);
        }
    }

    /// Counts a webhook delivery (`outcome` one of [`DELIVERY_OUTCOMES`]).
    pub fn delivery(&self, outcome: &str) {
        bump(&self.deliveries, &DELIVERY_OUTCOMES, outcome, 1);
    }
}

fn bump(counters: &[AtomicU64], names: &[&str], name: &str, by: u64) {
    match names.iter().position(|n| *n == name) {
        Some(i) => {
            counters[i].fetch_add(by, Relaxed);
        }
        None => debug_assert!(false, "unknown label {name}"),
    }
}

/// The pipelines' stats, by name, shared by their tasks and the server.
#[derive(Debug, Default)]
pub struct PipelineStatsSet {
    by_name: Mutex<BTreeMap<String, Arc<PipelineStats>>>,
}

impl PipelineStatsSet {
    /// `pipeline`'s stats, made on first use.
    pub fn get(&self, pipeline: &str) -> Arc<PipelineStats> {
        let mut by_name = self.by_name.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(stats) = by_name.get(pipeline) {
            return stats.clone();
        }
        by_name.entry(pipeline.to_string()).or_default().clone()
    }
}

/// What the database says of one pipeline now.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct PipelineNow {
    /// Its recorded state (`idle`, `running`, `circuit-open`, `stopped`),
    /// `never-run` without one.
    pub state: String,
    /// Paused by an operator.
    pub paused: bool,
    /// Records in its dead-letter queue.
    pub dead_letters: u64,
    /// Webhook deliveries stored and not yet processed.
    pub pending_deliveries: u64,
    /// Webhook deliveries set aside: the source could not make sense of them.
    pub failed_deliveries: u64,
    /// When a run last ended well, in seconds since the Unix epoch.
    pub last_success: Option<f64>,
}

/// Reads what `pipelines` are now from the database. Each query walks an
/// index by pipeline over what waits (dead letters within their retention,
/// pending deliveries) or the runs since the last good one, never the
/// whole history.
pub fn pipelines_now(
    conn: &rusqlite::Connection,
    pipelines: &[String],
) -> rusqlite::Result<Vec<(String, PipelineNow)>> {
    let mut now = Vec::new();
    for name in pipelines {
        let row = crate::pipeline::history::state(conn, name)?;
        let dead_letters = crate::pipeline::dlq::count(conn, name)?;
        let inbox = crate::webhook::inbox::counts(conn, name)?;
        let last_success = crate::pipeline::history::last_ok_at(conn, name)?
            .as_deref()
            .and_then(|at| humantime::parse_rfc3339(at).ok())
            .and_then(|at| at.duration_since(std::time::UNIX_EPOCH).ok())
            .map(|d| d.as_secs_f64());
        now.push((
            name.clone(),
            PipelineNow {
                state: row
                    .as_ref()
                    .map_or("never-run".to_string(), |r| r.state.clone()),
                paused: row.as_ref().is_some_and(|r| r.paused),
                dead_letters,
                pending_deliveries: inbox.pending,
                failed_deliveries: inbox.set_aside,
                last_success,
            },
        ));
    }
    Ok(now)
}

/// Everything a scrape reads, gathered by the server.
pub struct Scrape<'a> {
    /// The installed plugins, as the reloader last swapped them.
    pub registry: &'a crate::registry::Registry,
    /// The pipelines' counters.
    pub pipelines: &'a PipelineStatsSet,
    /// What the database says of each configured pipeline.
    pub now: &'a [(String, PipelineNow)],
    /// What the database's writer committed.
    pub writer: &'a crate::db::WriterStats,
    /// With `[tls]`: when its certificate expires (seconds since the
    /// epoch), if that could be read.
    pub tls_expires: Option<Option<i64>>,
}

/// The `/metrics` page.
pub fn render(scrape: &Scrape<'_>) -> String {
    let mut page = Exposition::default();
    render_plugins(&mut page, scrape.registry);
    render_pipelines(&mut page, scrape.pipelines, scrape.now);
    page.family(
        "causeway_database_commits_total",
        Kind::Counter,
        "Transactions the database's writer committed (each synced to disk) since the host started.",
    );
    page.sample(
        "causeway_database_commits_total",
        &[],
        scrape.writer.commits() as f64,
    );
    page.family(
        "causeway_audit_events_total",
        Kind::Counter,
        "Audit events committed into the chain since the host started.",
    );
    page.sample(
        "causeway_audit_events_total",
        &[],
        scrape.writer.audit_events() as f64,
    );
    page.family(
        "causeway_database_failing",
        Kind::Gauge,
        "1 while the database refuses writes (a full disk) and audit events wait to be written again; /healthz says why.",
    );
    page.sample(
        "causeway_database_failing",
        &[],
        f64::from(u8::from(scrape.writer.failing().is_some())),
    );
    if let Some(Some(expires)) = scrape.tls_expires {
        page.family(
            "causeway_tls_certificate_expiry_seconds",
            Kind::Gauge,
            "When the certificate the [tls] listener serves expires, in seconds since the epoch (renewals are taken as they are written): alert when it is less than 14 days from time().",
        );
        page.sample(
            "causeway_tls_certificate_expiry_seconds",
            &[],
            expires as f64,
        );
    }
    page.finish()
}

/// Each serving plugin version's operations that were called at least once
/// (a family's samples must be contiguous, so each family walks them anew).
fn operations_called<'a>(
    plugins: &'a [&Arc<crate::registry::Installed>],
) -> impl Iterator<
    Item = (
        &'a crate::plugin::PluginInfo,
        &'static str,
        &'a OperationStats,
    ),
> {
    plugins.iter().flat_map(|installed| {
        let plugin = &installed.plugin;
        OPERATIONS
            .iter()
            .zip(&plugin.stats.operations)
            .filter(|(_, stats)| stats.duration.count() > 0)
            .map(move |(operation, stats)| (&*plugin.info, *operation, stats))
    })
}

fn render_plugins(page: &mut Exposition, registry: &crate::registry::Registry) {
    page.family(
        "causeway_plugin_state",
        Kind::Gauge,
        "1 for each plugin file in the plugins folder, labelled with its plugin, version and state (active, pending-approval, failed, compiling).",
    );
    for status in registry.statuses() {
        // The file label keeps two files of one plugin (a duplicate, a
        // failed copy) apart as two series.
        let file = status
            .file
            .file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_default();
        page.sample(
            "causeway_plugin_state",
            &[
                ("plugin", &status.name),
                ("file", &file),
                ("version", status.version.as_deref().unwrap_or("")),
                ("state", status.state.name()),
            ],
            1.0,
        );
    }
    // The serving versions: one held back for approval never runs.
    let plugins: Vec<_> = registry.plugins().collect();
    page.family(
        "causeway_plugin_calls_total",
        Kind::Counter,
        "Plugin calls since the host started, by operation and outcome (ok, the plugin's error kind, or the host's: timeout, out-of-memory, resource-limit, busy, trap, invalid-call, broken-answer).",
    );
    for (info, operation, stats) in operations_called(&plugins) {
        for (out, outcome) in OUTCOMES.iter().enumerate() {
            page.sample(
                "causeway_plugin_calls_total",
                &[
                    ("plugin", &info.name),
                    ("version", &info.version),
                    ("operation", operation),
                    ("outcome", outcome),
                ],
                stats.outcomes[out].load(Relaxed) as f64,
            );
        }
    }
    page.family(
        "causeway_plugin_call_duration_seconds",
        Kind::Histogram,
        "How long plugin calls took, instantiation included, by operation.",
    );
    for (info, operation, stats) in operations_called(&plugins) {
        page.histogram(
            "causeway_plugin_call_duration_seconds",
            &[
                ("plugin", &info.name),
                ("version", &info.version),
                ("operation", operation),
            ],
            &stats.duration,
        );
    }
    page.family(
        "causeway_capability_uses_total",
        Kind::Counter,
        "Capability uses by plugins since the host started, by capability (http, storage, config, log: one a call that logged) and decision (allowed, denied); each is also an audit row.",
    );
    for installed in &plugins {
        let info = &installed.plugin.info;
        let uses = installed
            .plugin
            .stats
            .capabilities
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        for ((capability, decision), n) in uses {
            page.sample(
                "causeway_capability_uses_total",
                &[
                    ("plugin", &info.name),
                    ("version", &info.version),
                    ("capability", &capability),
                    ("decision", decision),
                ],
                n as f64,
            );
        }
    }
}

/// One of [`PipelineStats`]' counter families.
struct PipelineCounter {
    name: &'static str,
    help: &'static str,
    /// The label telling its counters apart, and their values.
    label: &'static str,
    values: &'static [&'static str],
    of: fn(&PipelineStats) -> &[AtomicU64],
}

fn render_pipelines(
    page: &mut Exposition,
    stats: &PipelineStatsSet,
    now: &[(String, PipelineNow)],
) {
    let counters = [
        PipelineCounter {
            name: "causeway_pipeline_runs_total",
            help: "Pipeline runs that ended since the host started, by outcome.",
            label: "outcome",
            values: &RUN_OUTCOMES,
            of: |s| &s.runs,
        },
        PipelineCounter {
            name: "causeway_pipeline_records_total",
            help: "Records since the host started, by stage: read from the source, written (every sink acknowledged), rejected (refused by a stage: a dead letter), skipped (older than a version of it a webhook pipeline already let through), dropped (a transform answered nothing for it), unchanged (a pipeline with skip-unchanged gave it to no sink: each had written it as it is).",
            label: "stage",
            values: &RECORD_STAGES,
            of: |s| &s.records,
        },
        PipelineCounter {
            name: "causeway_webhook_deliveries_total",
            help: "Webhook deliveries since the host started, by answer: accepted (stored), duplicate, handshake (a sender checking the URL, answered; nothing stored), not-allowed (from an address allow-from does not name), bad-signature, too-large, too-slow (the body took too long), misconfigured (the host cannot use the pipeline's webhook secret), unavailable (not stored; the sender retries).",
            label: "outcome",
            values: &DELIVERY_OUTCOMES,
            of: |s| &s.deliveries,
        },
    ];
    for counter in counters {
        page.family(counter.name, Kind::Counter, counter.help);
        for (pipeline, _) in now {
            let s = stats.get(pipeline);
            for (value, n) in counter.values.iter().zip((counter.of)(&s)) {
                page.sample(
                    counter.name,
                    &[("pipeline", pipeline), (counter.label, value)],
                    n.load(Relaxed) as f64,
                );
            }
        }
    }
    type Gauge = (&'static str, &'static str, fn(&PipelineNow) -> Option<f64>);
    let gauges: [Gauge; 5] = [
        (
            "causeway_pipeline_paused",
            "1 while an operator has the pipeline paused.",
            |p| Some(f64::from(u8::from(p.paused))),
        ),
        (
            "causeway_pipeline_dead_letters",
            "Records in the pipeline's dead-letter queue (causeway dlq list).",
            |p| Some(p.dead_letters as f64),
        ),
        (
            "causeway_webhook_deliveries_pending",
            "Webhook deliveries stored and not yet processed.",
            |p| Some(p.pending_deliveries as f64),
        ),
        (
            "causeway_webhook_deliveries_set_aside",
            "Webhook deliveries the source plugin could not make sense of, set aside (causeway pipeline redeliver queues them again).",
            |p| Some(p.failed_deliveries as f64),
        ),
        (
            "causeway_pipeline_last_success_timestamp_seconds",
            "When a run of the pipeline last ended well (Unix time); absent before the first.",
            |p| p.last_success,
        ),
    ];
    page.family(
        "causeway_pipeline_state",
        Kind::Gauge,
        "1 for each configured pipeline, labelled with its state (idle, running, circuit-open, stopped, never-run).",
    );
    for (pipeline, p) in now {
        page.sample(
            "causeway_pipeline_state",
            &[("pipeline", pipeline), ("state", &p.state)],
            1.0,
        );
    }
    for (name, help, value) in gauges {
        page.family(name, Kind::Gauge, help);
        for (pipeline, p) in now {
            if let Some(v) = value(p) {
                page.sample(name, &[("pipeline", pipeline)], v);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A kind missing from [`OUTCOMES`] would go uncounted (and fail a
    /// debug build's assertion) the first time a call ends so.
    #[test]
    fn every_way_a_call_can_end_is_an_outcome() {
        use crate::sandbox::CallError;
        let plugin = || "p@1".to_string();
        let text = String::new;
        let host = [
            CallError::Timeout {
                plugin: plugin(),
                timeout: Duration::from_secs(1),
            },
            CallError::OutOfMemory {
                plugin: plugin(),
                requested: 2,
                limit: 1,
            },
            CallError::ResourceLimit {
                plugin: plugin(),
                message: text(),
            },
            CallError::OutOfFuel {
                plugin: plugin(),
                message: text(),
            },
            CallError::Busy {
                plugin: plugin(),
                reason: text(),
            },
            CallError::Trap {
                plugin: plugin(),
                message: text(),
            },
            CallError::Invalid(text()),
            CallError::BrokenAnswer {
                plugin: plugin(),
                message: text(),
            },
        ];
        // A variant added to CallError must be added above: this match
        // stops compiling until it is.
        for end in &host {
            match end {
                CallError::Timeout { .. }
                | CallError::OutOfMemory { .. }
                | CallError::ResourceLimit { .. }
                | CallError::OutOfFuel { .. }
                | CallError::Busy { .. }
                | CallError::Trap { .. }
                | CallError::Plugin { .. }
                | CallError::Invalid(_)
                | CallError::BrokenAnswer { .. } => {}
            }
        }
        use crate::operation::FailureKind::*;
        let plugins = [Config, Auth, RateLimited, Transient, Fatal];
        let kinds = host
            .iter()
            .map(CallError::kind)
            .chain(plugins.into_iter().map(|k| k.name()));
        for kind in kinds {
            assert!(OUTCOMES.contains(&kind), "{kind}");
        }
    }

    #[test]
    fn label_values_and_help_are_escaped() {
        let mut page = Exposition::default();
        page.family("m", Kind::Gauge, "a \\ b\nc");
        page.sample("m", &[("a", "x\"y\\z\nw"), ("b", "é")], 2.0);
        page.sample("m", &[], f64::INFINITY);
        assert_eq!(
            page.finish(),
            "# HELP m a \\\\ b\\nc\n# TYPE m gauge\nm{a=\"x\\\"y\\\\z\\nw\",b=\"é\"} 2\nm +Inf\n"
        );
    }

    #[test]
    fn a_histogram_is_cumulative_and_its_count_is_its_last_bucket() {
        let h = Histogram::default();
        h.observe(Duration::from_micros(3));
        h.observe(Duration::from_micros(70));
        h.observe(Duration::from_millis(700));
        h.observe(Duration::from_secs(60));
        let mut page = Exposition::default();
        page.histogram("d", &[("p", "x")], &h);
        let page = page.finish();
        let value = |line: &str| -> f64 {
            page.lines()
                .find(|l| l.starts_with(line))
                .unwrap_or_else(|| panic!("no {line} in\n{page}"))
                .rsplit(' ')
                .next()
                .unwrap()
                .parse()
                .unwrap()
        };
        assert_eq!(value("d_bucket{p=\"x\",le=\"0.00001\"}"), 1.0);
        assert_eq!(value("d_bucket{p=\"x\",le=\"0.0001\"}"), 2.0);
        assert_eq!(value("d_bucket{p=\"x\",le=\"1\"}"), 3.0);
        assert_eq!(value("d_bucket{p=\"x\",le=\"30\"}"), 3.0);
        assert_eq!(value("d_bucket{p=\"x\",le=\"+Inf\"}"), 4.0);
        assert_eq!(value("d_count{p=\"x\"}"), 4.0);
        let sum = value("d_sum{p=\"x\"}");
        assert!((sum - 60.700073).abs() < 1e-9, "{sum}");
    }

    #[test]
    fn calls_and_uses_are_counted_by_their_labels() {
        let stats = CallStats::default();
        stats.record_call("transform", "ok", Duration::from_micros(5));
        stats.record_call("transform", "ok", Duration::from_micros(5));
        stats.record_call("transform", "timeout", Duration::from_secs(2));
        stats.record_use("http", "denied");
        stats.record_use("http", "denied");
        assert_eq!(stats.calls("transform", "ok"), 2);
        assert_eq!(stats.calls("transform", "timeout"), 1);
        assert_eq!(stats.calls("write", "ok"), 0);
        let uses = stats.capabilities.lock().unwrap().clone();
        assert_eq!(uses.get(&("http".to_string(), "denied")), Some(&2));
    }
}
