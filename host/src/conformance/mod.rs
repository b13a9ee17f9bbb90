//! The conformance suite a plugin author runs locally (`causeway test`), in
//! the spirit of Airbyte's connector acceptance tests: each rule of the
//! contract that can be checked from outside, checked by calling the plugin
//! exactly as the host does, each failure naming the rule broken.
//!
//! HTTP is answered from recorded fixtures (see [`crate::caps::http::tape`]),
//! so after one recording no live API is needed.

pub mod fixtures;
pub mod grant;

use std::collections::BTreeSet;
use std::fmt;
use std::sync::Arc;

use serde::Serialize;
use serde_json::Value;

use crate::bindings::{Record, StreamInfo};
use crate::contract::World;
use crate::db::WriterHandle;
use crate::engine::Runtime;
use crate::operation::{Answer, Operation};
use crate::registry::Installed;
use crate::sandbox::CallError;
use crate::secrets::Secrets;

pub use fixtures::Fixtures;

/// How many pages a complete read may take before the suite calls it endless.
pub const MAX_PAGES: usize = 1000;

/// A rule of the contract the suite checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Rule {
    /// The manifest loads and its config schema is one the host can check.
    ManifestValid,
    /// The test configuration fits the config schema.
    ConfigMatchesSchema,
    /// `check` passes with the test configuration.
    CheckAcceptsConfig,
    /// `check` fails on a bad configuration.
    CheckRejectsBadConfig,
    /// `discover` answers the same streams every time.
    DiscoverStable,
    /// Reading each stream from the start ends (`has-more` false).
    ReadCompletes,
    /// A read resumed from a complete read's checkpoint repeats no record.
    ReadResumes,
    /// Every record has a stream, a key and, for upserts, a JSON object.
    RecordsValid,
    /// A transform answers the same records for the same input.
    TransformDeterministic,
    /// A transform answers only keys it was given.
    TransformKeepsKeys,
    /// A transform maps a batch as it maps its records one by one (the
    /// host splits a batch it fails on to find the record at fault).
    TransformRecordWise,
    /// A sink answers exactly one outcome per record.
    SinkAnswersEach,
    /// A webhook turns the same delivery into the same records.
    WebhookDeterministic,
}

impl Rule {
    /// Every rule, in the order the suite reports them.
    pub const ALL: [Rule; 13] = [
        Rule::ManifestValid,
        Rule::ConfigMatchesSchema,
        Rule::CheckAcceptsConfig,
        Rule::CheckRejectsBadConfig,
        Rule::DiscoverStable,
        Rule::ReadCompletes,
        Rule::ReadResumes,
        Rule::RecordsValid,
        Rule::TransformDeterministic,
        Rule::TransformKeepsKeys,
        Rule::TransformRecordWise,
        Rule::SinkAnswersEach,
        Rule::WebhookDeterministic,
    ];

    /// The rule's name, as reports show it.
    pub fn name(self) -> &'static str {
        match self {
            Rule::ManifestValid => "manifest-valid",
            Rule::ConfigMatchesSchema => "config-matches-schema",
            Rule::CheckAcceptsConfig => "check-accepts-config",
            Rule::CheckRejectsBadConfig => "check-rejects-bad-config",
            Rule::DiscoverStable => "discover-stable",
            Rule::ReadCompletes => "read-completes",
            Rule::ReadResumes => "read-resumes",
            Rule::RecordsValid => "records-valid",
            Rule::TransformDeterministic => "transform-deterministic",
            Rule::TransformKeepsKeys => "transform-keeps-keys",
            Rule::TransformRecordWise => "transform-record-wise",
            Rule::SinkAnswersEach => "sink-answers-each",
            Rule::WebhookDeterministic => "webhook-deterministic",
        }
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What the suite found for one rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    /// The rule holds.
    Pass,
    /// The rule is broken.
    Fail,
    /// The rule applies but could not be checked; the message says what to add.
    Skip,
}

/// One rule's outcome.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// The rule.
    pub rule: Rule,
    /// Pass, fail or skip.
    pub verdict: Verdict,
    /// What was checked, or what broke it.
    pub message: String,
}

/// The findings of one run, a finding per applicable rule.
#[derive(Debug, Default, Clone, Serialize)]
pub struct Report {
    /// The findings, in rule order.
    pub findings: Vec<Finding>,
}

impl Report {
    fn add(&mut self, rule: Rule, verdict: Verdict, message: impl Into<String>) {
        let message = message.into();
        // One finding per rule: a failure outranks a pass, messages accumulate.
        if let Some(found) = self.findings.iter_mut().find(|f| f.rule == rule) {
            match (found.verdict, verdict) {
                (Verdict::Fail, Verdict::Fail) => {
                    found.message = format!("{}; {message}", found.message)
                }
                (Verdict::Fail, _) => {}
                (_, Verdict::Fail) => {
                    found.verdict = Verdict::Fail;
                    found.message = message;
                }
                (Verdict::Pass, Verdict::Pass) => {
                    found.message = format!("{}; {message}", found.message)
                }
                (Verdict::Skip, Verdict::Pass) => {
                    found.verdict = Verdict::Pass;
                    found.message = message;
                }
                (_, Verdict::Skip) => {}
            }
        } else {
            self.findings.push(Finding {
                rule,
                verdict,
                message,
            });
        }
    }

    fn pass(&mut self, rule: Rule, message: impl Into<String>) {
        self.add(rule, Verdict::Pass, message);
    }

    fn fail(&mut self, rule: Rule, message: impl Into<String>) {
        self.add(rule, Verdict::Fail, message);
    }

    fn skip(&mut self, rule: Rule, message: impl Into<String>) {
        self.add(rule, Verdict::Skip, message);
    }

    /// Findings with this verdict.
    pub fn count(&self, verdict: Verdict) -> usize {
        self.findings
            .iter()
            .filter(|f| f.verdict == verdict)
            .count()
    }

    /// Whether no rule failed.
    pub fn passed(&self) -> bool {
        self.count(Verdict::Fail) == 0
    }

    /// The finding for `rule`, if it applied.
    pub fn get(&self, rule: Rule) -> Option<&Finding> {
        self.findings.iter().find(|f| f.rule == rule)
    }

    fn sort(&mut self) {
        self.findings.sort_by_key(|f| f.rule);
    }
}

/// A plugin loaded under the suite's grant, and what its calls need.
pub struct Subject {
    /// The runtime.
    pub runtime: Arc<Runtime>,
    /// The plugin and its test policy.
    pub installed: Installed,
    /// The suite's in-memory secrets.
    pub secrets: Arc<Secrets>,
    /// The suite's scratch database (storage and audit).
    pub db: WriterHandle,
}

impl Subject {
    async fn call(&self, operation: Operation, config: &Value) -> Result<Answer, CallError> {
        let context = self
            .installed
            .call_context(config, &self.db, &self.secrets, "");
        self.installed
            .plugin
            .call_typed(&self.runtime.engine, operation, &context)
            .await
    }

    /// Calls `operation` twice (for the determinism rules): both answers'
    /// records, or why there are none.
    async fn records_twice(
        &self,
        operation: Operation,
        config: &Value,
    ) -> Result<(Vec<Record>, Vec<Record>), String> {
        let first = self.call(operation.clone(), config).await;
        let second = self.call(operation, config).await;
        match (first, second) {
            (Ok(Answer::Records(a)), Ok(Answer::Records(b))) => Ok((a, b)),
            (Err(e), _) | (_, Err(e)) => Err(e.to_string()),
            _ => Err("it did not answer records".to_string()),
        }
    }
}

/// The problems of one record, if any: `at` names it.
fn record_problems(record: &Record, at: &str) -> Vec<String> {
    use crate::contract::RecordProblem;
    crate::contract::record_problems(record)
        .into_iter()
        .map(|problem| match problem {
            RecordProblem::EmptyKey => format!("{at} {problem}"),
            _ => format!(
                "{at} ({}): {problem}",
                crate::contract::shown_key(&record.key)
            ),
        })
        .collect()
}

fn check_records(report: &mut Report, records: &[Record], what: &str) {
    let problems: Vec<String> = records
        .iter()
        .enumerate()
        .flat_map(|(i, r)| record_problems(r, &format!("{what}: record {i}")))
        .collect();
    if problems.is_empty() {
        report.pass(
            Rule::RecordsValid,
            format!("{what}: {} records well-formed", records.len()),
        );
    } else {
        report.fail(Rule::RecordsValid, problems.join("; "));
    }
}

/// The configuration without the properties its schema requires, if it
/// requires any.
fn derived_bad_config(schema: Option<&Value>, config: &Value) -> Option<Value> {
    let required: Vec<&str> = schema?
        .get("required")?
        .as_array()?
        .iter()
        .filter_map(Value::as_str)
        .collect();
    if required.is_empty() {
        return None;
    }
    let mut bad = config.clone();
    if let Some(fields) = bad.as_object_mut() {
        for name in &required {
            fields.remove(*name);
        }
    }
    Some(bad)
}

/// A stream list as a comparable value.
fn streams_text(streams: &[StreamInfo]) -> Vec<(String, String, bool, Option<String>)> {
    streams
        .iter()
        .map(|s| {
            (
                s.name.clone(),
                s.description.clone(),
                s.incremental,
                s.json_schema.clone(),
            )
        })
        .collect()
}

/// Runs every rule that applies to the subject's worlds.
pub async fn run(subject: &Subject, fixtures: &Fixtures) -> Report {
    let mut report = Report::default();
    let info = &subject.installed.plugin.info;
    let schema = info.manifest.config_schema.as_ref();
    let (config, config_file) = &fixtures.config;
    let config_name = config_file
        .as_ref()
        .map(|f| f.display().to_string())
        .unwrap_or_else(|| "the configuration {} (no config.json in the fixtures)".to_string());

    match schema {
        None => report.pass(Rule::ManifestValid, "manifest valid; no config schema"),
        Some(schema) => {
            let problems = crate::schema::lint(schema, "config-schema");
            if problems.is_empty() {
                report.pass(Rule::ManifestValid, "manifest and config schema valid");
            } else {
                report.fail(Rule::ManifestValid, problems.join("; "));
            }
            let problems = crate::schema::validate(schema, config, "config");
            if problems.is_empty() {
                report.pass(
                    Rule::ConfigMatchesSchema,
                    format!("{config_name} fits the schema"),
                );
            } else {
                report.fail(
                    Rule::ConfigMatchesSchema,
                    format!("{config_name}: {}", problems.join("; ")),
                );
            }
        }
    }

    if report
        .get(Rule::ConfigMatchesSchema)
        .is_some_and(|f| f.verdict == Verdict::Fail)
    {
        // The host never calls a plugin with a configuration its schema
        // refuses: calling it so would blame the plugin for the fixture.
        for rule in applicable(&info.worlds) {
            report.skip(
                rule,
                "not run: the test configuration does not fit the schema",
            );
        }
        report.sort();
        return report;
    }
    for world in [World::Source, World::Sink] {
        if info.worlds.contains(&world) {
            check_rules(subject, fixtures, world, schema, config, &mut report).await;
        }
    }
    if info.worlds.contains(&World::Source) {
        source_rules(subject, config, &mut report).await;
    }
    if info.worlds.contains(&World::Transform) {
        transform_rules(subject, fixtures, config, &mut report).await;
    }
    if info.worlds.contains(&World::Sink) {
        sink_rules(subject, fixtures, config, &mut report).await;
    }
    if info.worlds.contains(&World::Webhook) {
        webhook_rules(subject, fixtures, config, &mut report).await;
    }
    report.sort();
    report
}

/// The rules that call the plugin, for these worlds.
fn applicable(worlds: &[World]) -> Vec<Rule> {
    let has = |w| worlds.contains(&w);
    let mut rules = Vec::new();
    if has(World::Source) || has(World::Sink) {
        rules.extend([Rule::CheckAcceptsConfig, Rule::CheckRejectsBadConfig]);
    }
    if has(World::Source) {
        rules.extend([Rule::DiscoverStable, Rule::ReadCompletes, Rule::ReadResumes]);
    }
    if has(World::Source) || has(World::Transform) || has(World::Webhook) {
        rules.push(Rule::RecordsValid);
    }
    if has(World::Transform) {
        rules.extend([
            Rule::TransformDeterministic,
            Rule::TransformKeepsKeys,
            Rule::TransformRecordWise,
        ]);
    }
    if has(World::Sink) {
        rules.push(Rule::SinkAnswersEach);
    }
    if has(World::Webhook) {
        rules.push(Rule::WebhookDeterministic);
    }
    rules
}

async fn check_rules(
    subject: &Subject,
    fixtures: &Fixtures,
    world: World,
    schema: Option<&Value>,
    config: &Value,
    report: &mut Report,
) {
    match subject.call(Operation::Check(world), config).await {
        Ok(_) => report.pass(
            Rule::CheckAcceptsConfig,
            format!("{world} check passes with the test configuration"),
        ),
        Err(e) => report.fail(
            Rule::CheckAcceptsConfig,
            format!("{world} check fails with the test configuration: {e}"),
        ),
    }
    let bad = match &fixtures.bad_config {
        Some((value, file)) => Some((value.clone(), file.display().to_string())),
        None => derived_bad_config(schema, config).map(|v| {
            (
                v,
                "the configuration without its required properties".to_string(),
            )
        }),
    };
    let Some((bad, named)) = bad else {
        report.skip(
            Rule::CheckRejectsBadConfig,
            format!(
                "the schema requires nothing, so no bad configuration can be derived: put one check must refuse in {}",
                fixtures.dir.join(fixtures::BAD_CONFIG).display()
            ),
        );
        return;
    };
    match subject.call(Operation::Check(world), &bad).await {
        Ok(_) => report.fail(
            Rule::CheckRejectsBadConfig,
            format!(
                "{world} check passed with {named} ({bad}): it must fail on a bad configuration"
            ),
        ),
        Err(CallError::Plugin { error, .. }) => report.pass(
            Rule::CheckRejectsBadConfig,
            format!("{world} check refuses {named}: {error}"),
        ),
        Err(e) => report.fail(
            Rule::CheckRejectsBadConfig,
            format!("{world} check on {named} did not answer an error value: {e}"),
        ),
    }
}

async fn source_rules(subject: &Subject, config: &Value, report: &mut Report) {
    let first = subject.call(Operation::Discover, config).await;
    let second = subject.call(Operation::Discover, config).await;
    let streams = match (first, second) {
        (Ok(Answer::Streams(a)), Ok(Answer::Streams(b))) => {
            let names: BTreeSet<&str> = a.iter().map(|s| s.name.as_str()).collect();
            if a.is_empty() {
                report.fail(Rule::DiscoverStable, "discover answered no stream");
            } else if names.len() != a.len() || names.contains("") {
                report.fail(
                    Rule::DiscoverStable,
                    "discover answered an empty or repeated stream name",
                );
            } else if streams_text(&a) != streams_text(&b) {
                report.fail(
                    Rule::DiscoverStable,
                    format!(
                        "discover answered differently on a second call: {:?} then {:?}",
                        streams_text(&a),
                        streams_text(&b)
                    ),
                );
            } else {
                report.pass(
                    Rule::DiscoverStable,
                    format!("the same {} stream(s) twice", a.len()),
                );
            }
            a
        }
        (Err(e), _) | (_, Err(e)) => {
            report.fail(Rule::DiscoverStable, format!("discover failed: {e}"));
            return;
        }
        _ => {
            report.fail(Rule::DiscoverStable, "discover answered no stream list");
            return;
        }
    };
    for stream in &streams {
        read_rules(subject, config, stream, report).await;
    }
}

async fn read_rules(subject: &Subject, config: &Value, stream: &StreamInfo, report: &mut Report) {
    let name = &stream.name;
    let mut checkpoint: Option<String> = None;
    let mut seen: Vec<Record> = Vec::new();
    let mut pages = 0;
    let mut visited = crate::checkpoint::Visited::default();
    loop {
        let read = Operation::Read {
            stream: name.clone(),
            checkpoint: checkpoint.clone(),
        };
        let page = match subject.call(read, config).await {
            Ok(Answer::Page(page)) => page,
            Ok(_) => {
                report.fail(
                    Rule::ReadCompletes,
                    format!("stream {name}: read answered no page"),
                );
                return;
            }
            Err(e) => {
                report.fail(
                    Rule::ReadCompletes,
                    format!("stream {name}: read of page {} failed: {e}", pages + 1),
                );
                return;
            }
        };
        pages += 1;
        check_records(
            report,
            &page.records,
            &format!("stream {name} page {pages}"),
        );
        if let Some(other) = page.records.iter().find(|r| &r.stream != name) {
            report.fail(
                Rule::RecordsValid,
                format!(
                    "stream {name} page {pages}: record {} is in stream {:?}",
                    crate::contract::shown_key(&other.key),
                    crate::contract::shown(&other.stream, 80)
                ),
            );
        }
        visited.start(checkpoint.as_deref());
        if let Some(looped) = visited.loops(checkpoint.as_deref(), &page) {
            report.fail(
                Rule::ReadCompletes,
                format!("stream {name}: page {pages}: {looped}: the reads would go round forever"),
            );
            return;
        }
        seen.extend(page.records);
        // `none` keeps the checkpoint, as the host does.
        checkpoint = page.checkpoint.or(checkpoint);
        if !page.has_more {
            break;
        }
        if pages >= MAX_PAGES {
            report.fail(
                Rule::ReadCompletes,
                format!("stream {name}: still more after {MAX_PAGES} pages"),
            );
            return;
        }
    }
    report.pass(
        Rule::ReadCompletes,
        format!("stream {name}: {} records in {pages} page(s)", seen.len()),
    );
    if !stream.incremental {
        return;
    }
    let resume = Operation::Read {
        stream: name.clone(),
        checkpoint: checkpoint.clone(),
    };
    match subject.call(resume, config).await {
        Ok(Answer::Page(page)) => match page.records.iter().find(|r| seen.contains(r)) {
            Some(again) => report.fail(
                Rule::ReadResumes,
                format!(
                    "stream {name}: record {} was read again after resuming from checkpoint {}",
                    crate::contract::shown_key(&again.key),
                    crate::contract::shown_checkpoint(checkpoint.as_deref())
                ),
            ),
            None => report.pass(
                Rule::ReadResumes,
                format!(
                    "stream {name}: resuming after a complete read yields {} new record(s)",
                    page.records.len()
                ),
            ),
        },
        Ok(_) => report.fail(
            Rule::ReadResumes,
            format!("stream {name}: read answered no page"),
        ),
        Err(e) => report.fail(
            Rule::ReadResumes,
            format!("stream {name}: resuming from checkpoint {checkpoint:?} failed: {e}"),
        ),
    }
}

async fn transform_rules(
    subject: &Subject,
    fixtures: &Fixtures,
    config: &Value,
    report: &mut Report,
) {
    let input = &fixtures.records.0;
    let (a, b) = match subject
        .records_twice(Operation::Transform(input.clone()), config)
        .await
    {
        Ok(both) => both,
        Err(e) => {
            let message = format!("transform of {} records failed: {e}", input.len());
            report.fail(Rule::TransformDeterministic, message.clone());
            report.fail(Rule::TransformKeepsKeys, message.clone());
            report.fail(Rule::TransformRecordWise, message);
            return;
        }
    };
    let deterministic = a == b;
    match difference(&a, &b) {
        Some(how) => report.fail(
            Rule::TransformDeterministic,
            format!("the same input, mapped twice: {how}"),
        ),
        None => report.pass(
            Rule::TransformDeterministic,
            format!("{} records in, the same {} out twice", input.len(), a.len()),
        ),
    }
    let keys: BTreeSet<&str> = input.iter().map(|r| r.key.as_str()).collect();
    match a.iter().find(|r| !keys.contains(r.key.as_str())) {
        Some(stranger) => report.fail(
            Rule::TransformKeepsKeys,
            format!(
                "output record key {:?} is not the key of any input record",
                crate::contract::shown_key(&stranger.key)
            ),
        ),
        None => report.pass(Rule::TransformKeepsKeys, "every output key is an input key"),
    }
    if deterministic {
        record_wise(subject, input, &a, config, report).await;
    } else {
        report.skip(
            Rule::TransformRecordWise,
            "not checked: the same batch does not map into the same records twice",
        );
    }
    check_records(report, &a, "transform output");
}

/// [`Rule::TransformRecordWise`]: `batch`, mapped as a whole into
/// `whole`, maps into the same records one record at a time.
async fn record_wise(
    subject: &Subject,
    batch: &[Record],
    whole: &[Record],
    config: &Value,
    report: &mut Report,
) {
    let mut alone = Vec::new();
    for record in batch {
        match subject
            .call(Operation::Transform(vec![record.clone()]), config)
            .await
        {
            Ok(Answer::Records(records)) => alone.extend(records),
            Ok(_) => {
                return report.fail(Rule::TransformRecordWise, "it did not answer records");
            }
            Err(e) => {
                return report.fail(
                    Rule::TransformRecordWise,
                    format!(
                        "record {} alone failed, though its batch was mapped: {e}",
                        record.key
                    ),
                );
            }
        }
    }
    match difference(whole, &alone) {
        Some(how) => report.fail(
            Rule::TransformRecordWise,
            format!("the batch, then its records one by one: {how}"),
        ),
        None => report.pass(
            Rule::TransformRecordWise,
            format!(
                "{} records mapped as a batch and one by one alike",
                batch.len()
            ),
        ),
    }
}

/// How two answers differ, if they do: in length, or at the first record
/// that differs.
fn difference(a: &[Record], b: &[Record]) -> Option<String> {
    if a.len() != b.len() {
        return Some(format!("{} records, then {}", a.len(), b.len()));
    }
    let i = a.iter().zip(b).position(|(x, y)| x != y)?;
    Some(format!(
        "different records at position {i} (key {}): {} then {}",
        a[i].key, a[i].data, b[i].data
    ))
}

async fn webhook_rules(
    subject: &Subject,
    fixtures: &Fixtures,
    config: &Value,
    report: &mut Report,
) {
    let Some(delivery) = &fixtures.webhook else {
        report.skip(
            Rule::WebhookDeterministic,
            format!(
                "no delivery to hand the webhook: put one it must accept in {}, as `causeway invoke handle` takes it",
                fixtures.dir.join(fixtures::WEBHOOK).display()
            ),
        );
        return;
    };
    let (a, b) = match subject
        .records_twice(Operation::Handle(delivery.clone()), config)
        .await
    {
        Ok(both) => both,
        Err(e) => {
            report.fail(
                Rule::WebhookDeterministic,
                format!(
                    "handle refused the delivery in {}: {e}",
                    fixtures.dir.join(fixtures::WEBHOOK).display()
                ),
            );
            return;
        }
    };
    if a != b {
        report.fail(
            Rule::WebhookDeterministic,
            format!(
                "the same delivery gave different records: {} then {}",
                records_text(&a),
                records_text(&b)
            ),
        );
    } else {
        report.pass(
            Rule::WebhookDeterministic,
            format!("the same delivery gave the same {} records twice", a.len()),
        );
    }
    check_records(report, &a, "webhook output");
}

/// Records as a short text for a message: key and data of each.
fn records_text(records: &[Record]) -> String {
    let shown: Vec<String> = records
        .iter()
        .map(|r| format!("{} {}", r.key, r.data))
        .collect();
    format!("[{}]", shown.join(", "))
}

async fn sink_rules(subject: &Subject, fixtures: &Fixtures, config: &Value, report: &mut Report) {
    let batch = fixtures.records.0.clone();
    let count = batch.len();
    match subject.call(Operation::Write(batch), config).await {
        Ok(Answer::Outcomes { outcomes, .. }) if outcomes.len() == count => report.pass(
            Rule::SinkAnswersEach,
            format!("{count} records written, {count} outcomes"),
        ),
        Ok(Answer::Outcomes { outcomes, .. }) => report.fail(
            Rule::SinkAnswersEach,
            format!("{} outcomes for {count} records", outcomes.len()),
        ),
        Ok(_) => report.fail(Rule::SinkAnswersEach, "write answered no outcomes"),
        Err(e) => report.fail(
            Rule::SinkAnswersEach,
            format!("write of {count} records failed: {e}"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bindings::Op;
    use serde_json::json;

    #[test]
    fn a_failure_outranks_a_pass_and_messages_accumulate() {
        let mut report = Report::default();
        report.pass(Rule::RecordsValid, "page 1 fine");
        report.fail(Rule::RecordsValid, "page 2 broken");
        report.pass(Rule::RecordsValid, "page 3 fine");
        report.fail(Rule::RecordsValid, "page 4 broken");
        report.skip(Rule::CheckRejectsBadConfig, "no bad config");
        let found = report.get(Rule::RecordsValid).unwrap();
        assert_eq!(found.verdict, Verdict::Fail);
        assert_eq!(found.message, "page 2 broken; page 4 broken");
        assert!(!report.passed());
        assert_eq!(report.count(Verdict::Skip), 1);
    }

    #[test]
    fn a_bad_config_is_derived_from_the_required_properties() {
        let schema = json!({"type": "object", "required": ["base_url"], "properties": {"base_url": {"type": "string"}, "page_size": {"type": "integer"}}});
        let config = json!({"base_url": "https://x.example", "page_size": 5});
        assert_eq!(
            derived_bad_config(Some(&schema), &config),
            Some(json!({"page_size": 5}))
        );
        assert_eq!(
            derived_bad_config(Some(&json!({"type": "object"})), &config),
            None
        );
        assert_eq!(derived_bad_config(None, &config), None);
    }

    #[test]
    fn records_are_checked_for_stream_key_and_object_data() {
        let record = |key: &str, op, data: &str| Record {
            stream: "s".into(),
            key: key.into(),
            op,
            data: data.into(),
            source_timestamp: None,
        };
        assert!(record_problems(&record("k", Op::Upsert, "{}"), "r").is_empty());
        assert!(record_problems(&record("k", Op::Delete, "{}"), "r").is_empty());
        assert_eq!(
            record_problems(&record("", Op::Upsert, "[1]"), "r").len(),
            2
        );
        assert!(record_problems(&record("k", Op::Upsert, "nope"), "r")[0].contains("not JSON"));
        // An object after white space is an object; a string is not, but
        // a delete's data may be any JSON.
        assert!(record_problems(&record("k", Op::Upsert, " \n{\"a\": [1]}"), "r").is_empty());
        assert!(record_problems(&record("k", Op::Upsert, "\"{}\""), "r")[0].contains("object"));
        assert!(record_problems(&record("k", Op::Upsert, "{} {}"), "r")[0].contains("not JSON"));
        assert!(record_problems(&record("k", Op::Delete, "null"), "r").is_empty());
    }
}
