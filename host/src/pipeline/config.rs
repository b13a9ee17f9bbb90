//! A pipeline as `causeway.toml` names it:
//!
//! ```toml
//! [pipelines.contacts-to-mailer]
//! every = "30s"                                       # the schedule
//! source = { plugin = "crm-source", stream = "contacts" }
//! transforms = [{ plugin = "map-fullname" }]          # in order; may be empty
//! sinks = [{ plugin = "mailer-sink" }]                # one or more
//! [pipelines.contacts-to-mailer.retry]                # optional, defaults shown
//! initial = "500ms"
//! max = "30s"
//! budget = "2m"
//! circuit-cooldown = "30s"
//! ```
//!
//! `skip-unchanged = true` gives each sink only the records it has not
//! already written as they are (`pipeline::unchanged`).
//!
//! A stage's `config` table, if given, replaces the plugin's
//! `[plugins.NAME.config]` for this pipeline.

use std::num::NonZeroUsize;
use std::time::Duration;

use serde::Deserialize;

use crate::config::TextDuration;
use crate::config::range::{duration_text, no_shorter_than};
use crate::secrets::SecretRef;
use crate::webhook::verify::{Encoding, Method, Scheme};

/// One pipeline.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(
    deny_unknown_fields,
    rename_all = "kebab-case",
    expecting = "a table with a trigger (every or webhook), a source and sinks"
)]
pub struct PipelineConfig {
    /// Run on this schedule.
    pub every: Option<TextDuration>,
    /// Run on each verified delivery to this webhook.
    pub webhook: Option<WebhookTrigger>,
    /// Where records come from.
    pub source: SourceStage,
    /// What reshapes them, in order.
    #[serde(default)]
    pub transforms: Vec<Stage>,
    /// Where they go: every sink gets every record.
    pub sinks: Vec<Stage>,
    /// Retries, backoff and the circuit breaker.
    #[serde(default)]
    pub retry: RetryConfig,
    /// How long dead letters (and processed webhook deliveries, the
    /// window in which a redelivery is recognised) are kept.
    #[serde(default = "default_retention", deserialize_with = "dlq_retention")]
    pub dlq_retention: TextDuration,
    /// How long the run history is kept (the newest run, and the newest
    /// that ended well, are kept whatever their age).
    #[serde(default = "default_runs_retention")]
    pub runs_retention: TextDuration,
    /// The most runs kept, whatever their age: a pipeline on busy webhooks
    /// makes a run per batch of deliveries, and its history stays bounded
    /// (the newest that ended well is kept too).
    #[serde(default = "default_runs_keep", deserialize_with = "runs_keep")]
    pub runs_keep: NonZeroUsize,
    /// Give a sink only the records it has not written as they are now
    /// (`pipeline::unchanged`): for a source that reads its stream whole.
    #[serde(default)]
    pub skip_unchanged: bool,
}

/// How long dead letters are kept unless a pipeline says otherwise, and
/// those of a pipeline no longer configured.
pub const DEFAULT_DLQ_RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);

/// The shortest `dlq-retention`: dead letters are records kept for an
/// operator to replay, and shorter is more likely "30m" (minutes) for
/// "30M" (months) than a wish; it is also the window a redelivery is
/// recognised in.
pub const MIN_DLQ_RETENTION: Duration = Duration::from_secs(60 * 60);

fn dlq_retention<'de, D: serde::Deserializer<'de>>(d: D) -> Result<TextDuration, D::Error> {
    let retention = TextDuration::deserialize(d)?;
    no_shorter_than(
        "dlq-retention",
        retention.0,
        (MIN_DLQ_RETENTION, "an hour"),
        "dead letters would be forgotten before anyone could replay them \
         (\"1m\" is a minute, \"1M\" a month)",
    )
    .map_err(serde::de::Error::custom)?;
    Ok(retention)
}

fn default_retention() -> TextDuration {
    TextDuration(DEFAULT_DLQ_RETENTION)
}

/// How long a pipeline's runs are kept unless it says otherwise, and the
/// runs of a pipeline no longer configured.
pub const DEFAULT_RUNS_RETENTION: Duration = Duration::from_secs(30 * 24 * 3600);

fn default_runs_retention() -> TextDuration {
    TextDuration(DEFAULT_RUNS_RETENTION)
}

/// How many runs a pipeline keeps unless it says otherwise, and a pipeline
/// no longer configured: more than a month of runs every half a minute
/// (86,400), and about 13 MiB of history whatever the traffic.
pub const DEFAULT_RUNS_KEEP: NonZeroUsize = NonZeroUsize::new(100_000).unwrap();

fn default_runs_keep() -> NonZeroUsize {
    DEFAULT_RUNS_KEEP
}

/// `runs-keep`, a count of at least one, said in words an operator reads.
fn runs_keep<'de, D: serde::Deserializer<'de>>(d: D) -> Result<NonZeroUsize, D::Error> {
    let count = i64::deserialize(d)?;
    usize::try_from(count)
        .ok()
        .and_then(NonZeroUsize::new)
        .ok_or_else(|| {
            serde::de::Error::custom(format!(
                "runs-keep = {count}: the most runs kept must be at least 1"
            ))
        })
}

/// A webhook trigger: where deliveries arrive and how they are verified.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(
    deny_unknown_fields,
    rename_all = "kebab-case",
    expecting = "a table such as { path = \"/hooks/crm\", scheme = \"standard-webhooks\", secret = \"env:NAME\" }"
)]
pub struct WebhookTrigger {
    /// The path on the listen address, e.g. `/hooks/crm`.
    pub path: String,
    /// The sender's signature scheme.
    pub scheme: Scheme,
    /// The signing secret, as a reference (`env:NAME` or `file:KEY`).
    pub secret: SecretRef,
    /// The secret before a rotation, still taken until the sender uses the
    /// new one: deliveries proven with it are audited as such.
    pub previous_secret: Option<SecretRef>,
    /// How far a delivery's timestamp may be from now (the schemes that
    /// sign one; five minutes unless written).
    #[serde(default, deserialize_with = "tolerance")]
    pub tolerance: Option<TextDuration>,
    /// The largest body accepted; a larger one gets 413.
    #[serde(default = "default_max_body", deserialize_with = "max_body_bytes")]
    pub max_body_bytes: usize,
    /// The header with the signature (`hmac-sha256`) or the token
    /// (`token`), lower case.
    #[serde(default, deserialize_with = "header_name")]
    pub header: Option<String>,
    /// How the signature is written (`hmac-sha256`; hex unless named).
    pub encoding: Option<Encoding>,
    /// What precedes the signature or token in its header (`sha256=`,
    /// `Bearer `).
    pub prefix: Option<String>,
    /// The query parameter with the token (`token`), for a sender that can
    /// only be given a URL.
    pub query: Option<String>,
    /// The header naming each delivery, lower case (`hmac-sha256`,
    /// `token`, `basic`: the named schemes know their own).
    #[serde(default, deserialize_with = "header_name")]
    pub id_header: Option<String>,
    /// How a delivery stored (or recognised) is answered; the scheme's
    /// sender's way unless written ([`WebhookTrigger::answer`]).
    pub answer: Option<Answer>,
    /// The networks deliveries may come from; from anywhere without it.
    pub allow_from: Option<Vec<crate::webhook::allow::Network>>,
    /// The verify token Meta's subscription check must carry (`meta`), as
    /// a reference.
    pub verify_token: Option<SecretRef>,
    /// What the sender signs (`hmac-sha256`, `hmac-sha1`), e.g.
    /// `"{timestamp}{body}"`: the body alone unless written.
    pub signed: Option<String>,
    /// The header with the time the sender signed, lower case
    /// (`hmac-sha256`, `hmac-sha1`): checked within `tolerance`.
    #[serde(default, deserialize_with = "header_name")]
    pub timestamp_header: Option<String>,
}

/// How a webhook delivery the host took is answered.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Answer {
    /// 202 `{"status": "accepted", "id"}`, or 200 `{"status": "duplicate",
    /// "id"}` for one already stored.
    #[default]
    Json,
    /// 200 and no body, either way: what Xero's "intent to receive" check
    /// takes, and nothing else.
    Empty,
    /// 200 and the SOAP acknowledgement Salesforce's outbound messages
    /// wait for (without it they are sent again for a day).
    SalesforceAck,
}

/// The acknowledgement of [`Answer::SalesforceAck`], as Salesforce's
/// outbound messaging WSDL defines `notificationsResponse`.
pub const SALESFORCE_ACK: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/">
 <soapenv:Body>
  <notificationsResponse xmlns="http://soap.sforce.com/2005/09/outbound">
   <Ack>true</Ack>
  </notificationsResponse>
 </soapenv:Body>
</soapenv:Envelope>
"#;

impl WebhookTrigger {
    /// How far a delivery's signed timestamp may be from now.
    pub fn tolerance(&self) -> Duration {
        self.tolerance.map_or(DEFAULT_TOLERANCE, |t| t.0)
    }

    /// How a delivery taken is answered: as written, else what the
    /// sender's documentation asks (200 and nothing else for Slack, Zoom,
    /// Meta, Dropbox and Mailgun; Zoom counts a 202 as a failure, and
    /// Mailgun sends again whatever is not a 200), else JSON.
    pub fn answer(&self) -> Answer {
        self.answer.unwrap_or(match self.scheme {
            Scheme::Slack | Scheme::Zoom | Scheme::Meta | Scheme::Dropbox | Scheme::Mailgun => {
                Answer::Empty
            }
            _ => Answer::Json,
        })
    }

    /// How its deliveries are verified.
    pub fn method(&self) -> Method<'_> {
        Method {
            scheme: self.scheme,
            header: self.header.as_deref().unwrap_or_default(),
            encoding: self.encoding.unwrap_or_default(),
            prefix: self.prefix.as_deref().unwrap_or_default(),
            query: self.query.as_deref(),
            id_header: self.id_header.as_deref(),
            signed: self.signed.as_deref().unwrap_or_default(),
            timestamp_header: self.timestamp_header.as_deref(),
        }
    }

    /// Checks what the types cannot: that the keys written are the ones
    /// its scheme reads. `at` names the trigger's table.
    fn validate(&self, at: &str) -> Result<(), String> {
        let scheme = self.scheme.name();
        match (self.scheme, &self.header, &self.query) {
            (Scheme::HmacSha256 | Scheme::HmacSha1, None, _) => {
                return Err(format!(
                    "{at}: scheme \"{scheme}\" needs header = \"...\": the header the sender puts its signature in, as its documentation names it"
                ));
            }
            (Scheme::Token, None, None) => {
                return Err(format!(
                    "{at}: scheme \"{scheme}\" needs header = \"...\" (the header the sender puts its token in) or query = \"...\" (the parameter of the URL you give it that holds the token)"
                ));
            }
            (Scheme::Token, Some(_), Some(_)) => {
                return Err(format!(
                    "{at}: scheme \"{scheme}\" takes its token from header or from query, not both"
                ));
            }
            (Scheme::Token, None, Some(_)) if self.prefix.is_some() => {
                return Err(format!(
                    "{at}.prefix: a token in the query is the whole parameter; prefix is for one in a header"
                ));
            }
            _ => {}
        }
        let hmac = matches!(self.scheme, Scheme::HmacSha256 | Scheme::HmacSha1);
        if self.previous_secret.as_ref() == Some(&self.secret) {
            return Err(format!(
                "{at}.previous-secret is the secret itself: name the one the sender used before the rotation"
            ));
        }
        if self.scheme == Scheme::Meta && self.verify_token.is_none() {
            return Err(format!(
                "{at}: scheme \"meta\" needs verify-token = \"env:NAME\": the Verify Token you type in the app's Webhooks settings, which Meta's subscription check carries"
            ));
        }
        // A delivery's id is stored and audited: the secret must not be it.
        if let Some(id) = &self.id_header
            && self.method().secret_header() == Some(id.as_str())
        {
            return Err(format!(
                "{at}.id-header {id:?} is the header the secret comes in: a delivery's id is stored and audited, so it would write the secret there; name the header that numbers the deliveries"
            ));
        }
        if self.allow_from.as_ref().is_some_and(Vec::is_empty) {
            return Err(format!(
                "{at}.allow-from is empty: no sender could deliver; name the networks senders send from, or leave it out"
            ));
        }
        if let Some(query) = &self.query
            && (query.is_empty() || query.contains(['&', '=', '#', '?']))
        {
            return Err(format!(
                "{at}.query {query:?} must be a parameter's name, such as \"key\""
            ));
        }
        let reads = |key: &str, set: bool, schemes: &[Scheme]| {
            if set && !schemes.contains(&self.scheme) {
                let what = match (self.scheme, key) {
                    (_, "tolerance") => "signs no timestamp",
                    (Scheme::Stripe, "id-header") => "knows a delivery by its event's id",
                    (
                        Scheme::Hubspot
                        | Scheme::Sendgrid
                        | Scheme::Zoom
                        | Scheme::Meta
                        | Scheme::Dropbox,
                        "id-header",
                    ) => "knows a delivery by its body",
                    (Scheme::Slack, "id-header") => "knows an event by its event_id",
                    (Scheme::StandardWebhooks | Scheme::Github, "id-header") => {
                        "names its deliveries itself"
                    }
                    (Scheme::Stripe, _) => "reads its own header, or the one `header` names",
                    (_, "verify-token") => "makes no subscription check with one",
                    (
                        Scheme::StandardWebhooks
                        | Scheme::Github
                        | Scheme::Hubspot
                        | Scheme::Sendgrid
                        | Scheme::Slack
                        | Scheme::Zoom
                        | Scheme::Meta
                        | Scheme::Dropbox,
                        _,
                    ) => "reads its own headers",
                    (Scheme::Mailgun, "id-header") => "knows an event by its event-data.id",
                    (Scheme::Mailgun, _) => "reads its signature from the body",
                    (Scheme::HmacSha256 | Scheme::HmacSha1, _) => {
                        "reads a signature from its header"
                    }
                    (_, "encoding" | "signed" | "timestamp-header") => {
                        "compares a secret, not a signature"
                    }
                    _ => "reads Authorization",
                };
                let names: Vec<String> = schemes
                    .iter()
                    .map(|s| format!("\"{}\"", s.name()))
                    .collect();
                let names = match names.split_last() {
                    Some((last, [])) => last.clone(),
                    Some((last, others)) => format!("{} and {last}", others.join(", ")),
                    None => String::new(),
                };
                return Err(format!(
                    "{at}.{key}: scheme \"{scheme}\" {what}; {key} is for {names}"
                ));
            }
            Ok(())
        };
        let chosen = [Scheme::HmacSha256, Scheme::HmacSha1, Scheme::Token];
        reads(
            "header",
            self.header.is_some(),
            &[
                Scheme::HmacSha256,
                Scheme::HmacSha1,
                Scheme::Token,
                Scheme::Stripe,
            ],
        )?;
        reads(
            "encoding",
            self.encoding.is_some(),
            &[Scheme::HmacSha256, Scheme::HmacSha1],
        )?;
        reads("prefix", self.prefix.is_some(), &chosen)?;
        reads("query", self.query.is_some(), &[Scheme::Token])?;
        reads(
            "tolerance",
            self.tolerance.is_some() && !hmac,
            &[
                Scheme::StandardWebhooks,
                Scheme::Stripe,
                Scheme::Hubspot,
                Scheme::Sendgrid,
                Scheme::Slack,
                Scheme::Zoom,
                Scheme::Mailgun,
            ],
        )?;
        reads("verify-token", self.verify_token.is_some(), &[Scheme::Meta])?;
        let chosen_hmac = [Scheme::HmacSha256, Scheme::HmacSha1];
        reads("signed", self.signed.is_some(), &chosen_hmac)?;
        reads(
            "timestamp-header",
            self.timestamp_header.is_some(),
            &chosen_hmac,
        )?;
        reads(
            "id-header",
            self.id_header.is_some(),
            &[
                Scheme::HmacSha256,
                Scheme::HmacSha1,
                Scheme::Token,
                Scheme::Basic,
            ],
        )?;
        use crate::webhook::signed::{Part, parts};
        let mut signs_time = false;
        if let Some(signed) = &self.signed {
            let parts = parts(signed).map_err(|e| format!("{at}.signed {signed:?}: {e}"))?;
            signs_time = parts.contains(&Part::Timestamp);
            if signs_time && self.timestamp_header.is_none() {
                return Err(format!(
                    "{at}.signed {signed:?} signs {{timestamp}}: name the header it comes in, timestamp-header = \"...\""
                ));
            }
            if parts.contains(&Part::Id) && self.id_header.is_none() {
                return Err(format!(
                    "{at}.signed {signed:?} signs {{id}}: name the header it comes in, id-header = \"...\""
                ));
            }
        }
        if self.timestamp_header.is_some() && !signs_time {
            return Err(format!(
                "{at}.timestamp-header: a time the sender does not sign proves nothing (anyone could change it); write where it is signed, as signed = \"{{timestamp}}{{body}}\""
            ));
        }
        if hmac && self.tolerance.is_some() && self.timestamp_header.is_none() {
            return Err(format!(
                "{at}.tolerance: scheme \"{scheme}\" checks a time only with timestamp-header = \"...\" (and {{timestamp}} in signed)"
            ));
        }
        Ok(())
    }
}

/// A header name as written (`X-Shopify-Hmac-Sha256`), kept lower case, as
/// the server looks headers up; one that is no header name is refused.
fn header_name<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let name = String::deserialize(d)?;
    axum::http::HeaderName::from_bytes(name.trim().as_bytes())
        .map(|n| Some(n.as_str().to_string()))
        .map_err(|_| serde::de::Error::custom(format!("{name:?} is not a header name")))
}

/// How far a signed timestamp may be from now: whole seconds (the schemes
/// sign seconds), and at most an hour, since beyond the tolerance is what
/// keeps a delivery captured on its way from being sent again later.
pub const TOLERANCE: std::ops::RangeInclusive<Duration> =
    Duration::from_secs(1)..=Duration::from_secs(60 * 60);

/// The largest body a webhook may take: it is held in memory until its
/// signature is checked, so before anyone is known.
pub const MAX_BODY_BYTES: usize = 64 * 1024 * 1024;

fn tolerance<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<TextDuration>, D::Error> {
    crate::config::range::within_duration(d, "tolerance", TOLERANCE).map(|t| Some(TextDuration(t)))
}

fn max_body_bytes<'de, D: serde::Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
    crate::config::range::within(
        d,
        "max-body-bytes",
        1..=MAX_BODY_BYTES,
        "a body is held in memory until its signature is checked",
    )
}

/// The tolerance when a webhook table says none.
const DEFAULT_TOLERANCE: Duration = Duration::from_secs(300);

fn default_max_body() -> usize {
    1024 * 1024
}

/// The source stage: a plugin and the stream it reads.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(
    deny_unknown_fields,
    rename_all = "kebab-case",
    expecting = "a table such as { plugin = \"NAME\", stream = \"STREAM\" }"
)]
pub struct SourceStage {
    /// The plugin.
    pub plugin: String,
    /// The stream.
    pub stream: String,
    /// The plugin's configuration in this pipeline.
    pub config: Option<serde_json::Map<String, serde_json::Value>>,
}

/// A transform or sink stage.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(
    deny_unknown_fields,
    rename_all = "kebab-case",
    expecting = "a table such as { plugin = \"NAME\" }"
)]
pub struct Stage {
    /// The plugin.
    pub plugin: String,
    /// The plugin's configuration in this pipeline.
    pub config: Option<serde_json::Map<String, serde_json::Value>>,
}

/// How failures are retried.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(
    deny_unknown_fields,
    rename_all = "kebab-case",
    expecting = "a table such as { initial = \"500ms\", max = \"30s\", budget = \"2m\" }"
)]
pub struct RetryConfig {
    /// The first backoff.
    #[serde(default = "default_initial")]
    pub initial: TextDuration,
    /// The longest backoff.
    #[serde(default = "default_max")]
    pub max: TextDuration,
    /// The most time one step may spend backing off (rate-limit waits do
    /// not count) before the run fails and the circuit opens.
    #[serde(default = "default_budget")]
    pub budget: TextDuration,
    /// How long an open circuit waits before it probes.
    #[serde(default = "default_cooldown")]
    pub circuit_cooldown: TextDuration,
}

fn default_initial() -> TextDuration {
    TextDuration(Duration::from_millis(500))
}

fn default_max() -> TextDuration {
    TextDuration(Duration::from_secs(30))
}

fn default_budget() -> TextDuration {
    TextDuration(Duration::from_secs(120))
}

fn default_cooldown() -> TextDuration {
    TextDuration(Duration::from_secs(30))
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            initial: default_initial(),
            max: default_max(),
            budget: default_budget(),
            circuit_cooldown: default_cooldown(),
        }
    }
}

/// The shortest schedule: below it, `every` is more likely a typo ("1ms"
/// for "1m") than a wish, and would poll a third party without pause.
pub const MIN_EVERY: Duration = Duration::from_millis(100);

/// The shortest first backoff: with none, a stage failing at once (an API
/// that is down answers in microseconds) would be called again and again
/// without pause for the whole retry budget.
pub const MIN_BACKOFF: Duration = Duration::from_millis(10);

/// The first plugin named by two of `stages`.
fn named_twice(stages: &[Stage]) -> Option<&str> {
    let mut seen = std::collections::HashSet::new();
    stages
        .iter()
        .map(|s| s.plugin.as_str())
        .find(|plugin| !seen.insert(*plugin))
}

impl PipelineConfig {
    /// Checks what the types cannot: `at` names the pipeline's section.
    pub fn validate(&self, at: &str) -> Result<(), String> {
        if self.every.is_none() && self.webhook.is_none() {
            return Err(format!(
                "{at}: no trigger: set every = \"30s\" (a schedule) or webhook = {{ path, scheme, secret }}"
            ));
        }
        if let Some(webhook) = &self.webhook {
            let reserved = ["/api", "/healthz", "/metrics"]
                .iter()
                .any(|r| webhook.path == *r || webhook.path.starts_with(&format!("{r}/")));
            if !webhook.path.starts_with('/') || reserved || webhook.path.contains("..") {
                return Err(format!(
                    "{at}.webhook.path {:?} must start with '/' and stay out of /api, /healthz and /metrics",
                    webhook.path
                ));
            }
            webhook.validate(&format!("{at}.webhook"))?;
        }
        let min_every = duration_text(MIN_EVERY);
        if let Some(every) = self.every {
            no_shorter_than(
                &format!("{at}.every"),
                every.0,
                (MIN_EVERY, &min_every),
                "each run reads the source's API, so a schedule this tight hammers it \
                 (\"1m\" is a minute, \"1ms\" a millisecond); for changes as they happen, \
                 add a webhook",
            )?;
        }
        if self.sinks.is_empty() {
            return Err(format!("{at}.sinks is empty: name at least one sink"));
        }
        for (list, stages) in [("transforms", &self.transforms), ("sinks", &self.sinks)] {
            if let Some(plugin) = named_twice(stages) {
                return Err(format!(
                    "{at}.{list} names {plugin} twice: a pipeline keeps a stage's dead letters, \
                     retries and replays by its plugin, so a plugin is one of its {list} only; \
                     for a second configuration of it, give it a pipeline of its own (the same \
                     source, with its own checkpoint)"
                ));
            }
        }
        if self.source.stream.is_empty() {
            return Err(format!("{at}.source.stream is empty"));
        }
        no_shorter_than(
            &format!("{at}.retry.initial"),
            self.retry.initial.0,
            (MIN_BACKOFF, &duration_text(MIN_BACKOFF)),
            "a stage failing at once would be called again without pause until the budget is spent",
        )?;
        // Each probe of an open circuit is a run reading the source's API,
        // as a scheduled one is: no tighter than the tightest schedule.
        no_shorter_than(
            &format!("{at}.retry.circuit-cooldown"),
            self.retry.circuit_cooldown.0,
            (MIN_EVERY, &min_every),
            "each probe of an open circuit is a run calling the APIs, so a cooldown this short \
             hammers an API that is down",
        )?;
        if self.retry.initial.0 > self.retry.max.0 {
            return Err(format!("{at}.retry.initial is longer than retry.max"));
        }
        Ok(())
    }
}
