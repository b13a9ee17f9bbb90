//! `mailer-sink`: subscribers into an email-marketing API.
//!
//! One request per batch: `POST {base_url}/v1/lists/{list_id}/subscribers/batch`
//! with `{"operations": [{"op": "upsert", "key", "subscriber"} | {"op":
//! "delete", "key"}]}`; the API answers one result per operation,
//! `{"status": "ok" | "retry" | "rejected", "reason"?}`, which become the
//! per-record outcomes. The record key is the API's idempotency key.

use causeway_sdk::{Op, PluginError, Record, Sink, WriteOutcome, http, plugin};
use serde::{Deserialize, Serialize};
use serde_json::Value;

#[derive(Deserialize)]
struct Config {
    base_url: String,
    list_id: String,
}

#[derive(Serialize)]
#[serde(tag = "op", rename_all = "lowercase")]
enum Operation<'a> {
    Upsert { key: &'a str, subscriber: Value },
    Delete { key: &'a str },
}

#[derive(Deserialize)]
struct BatchAnswer {
    results: Vec<OperationResult>,
}

#[derive(Deserialize)]
struct OperationResult {
    status: String,
    #[serde(default)]
    reason: Option<String>,
}

struct MailerSink;

impl MailerSink {
    fn url(config: &Config) -> String {
        format!(
            "{}/v1/lists/{}/subscribers/batch",
            config.base_url.trim_end_matches('/'),
            config.list_id
        )
    }
}

impl Sink for MailerSink {
    fn check() -> Result<(), PluginError> {
        let config: Config = causeway_sdk::config()?;
        http::post(Self::url(&config))
            .credential("mailer-key")
            .json(&serde_json::json!({ "operations": [] }))?
            .send()?
            .error_for_status()?;
        Ok(())
    }

    fn write(batch: Vec<Record>) -> Result<Vec<WriteOutcome>, PluginError> {
        let config: Config = causeway_sdk::config()?;
        let mut operations = Vec::with_capacity(batch.len());
        for record in &batch {
            operations.push(match record.op {
                Op::Upsert => Operation::Upsert {
                    key: &record.key,
                    subscriber: record.parse()?,
                },
                Op::Delete => Operation::Delete { key: &record.key },
            });
        }
        let answer: BatchAnswer = http::post(Self::url(&config))
            .credential("mailer-key")
            .json(&serde_json::json!({ "operations": operations }))?
            .send()?
            .error_for_status()?
            .json()?;
        if answer.results.len() != batch.len() {
            return Err(PluginError::Transient(format!(
                "the mailer answered {} results for {} operations",
                answer.results.len(),
                batch.len()
            )));
        }
        Ok(answer
            .results
            .into_iter()
            .map(|r| {
                let reason = r.reason.unwrap_or_default();
                match r.status.as_str() {
                    "ok" => WriteOutcome::Ok,
                    "rejected" => WriteOutcome::Rejected(reason),
                    _ => WriteOutcome::Retry(reason),
                }
            })
            .collect())
    }
}

plugin!(sink: MailerSink);
