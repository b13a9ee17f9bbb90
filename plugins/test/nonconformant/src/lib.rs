//! A source + sink + webhook over five in-memory items that breaks, on purpose, the
//! conformance rule its config names, so the tests can show `causeway test`
//! names each rule broken. With `break = "none"` it conforms. `long-key`
//! breaks records-valid by a key's length, `long-checkpoint` read-completes
//! by a checkpoint's.

use causeway_sdk::paging::{self, PageNumber};
use causeway_sdk::{
    IncomingRequest, Page, PluginError, Record, Sink, Source, StreamInfo, Webhook, WriteOutcome,
    plugin,
};
use serde::Deserialize;

const STREAM: &str = "items";
const ITEMS: u64 = 5;
const PAGE: u64 = 2;

#[derive(Deserialize)]
struct Config {
    #[serde(rename = "break")]
    broken: String,
}

fn broken() -> Result<String, PluginError> {
    Ok(causeway_sdk::config::<Config>()?.broken)
}

fn nanos() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default()
}

fn item(n: u64) -> Result<Record, PluginError> {
    Record::upsert(STREAM, format!("item-{n}"), &serde_json::json!({ "n": n }))
}

struct Nonconformant;

impl Source for Nonconformant {
    fn check() -> Result<(), PluginError> {
        match causeway_sdk::config::<Config>() {
            // With a line break that would read as a verdict of its own.
            Ok(c) if c.broken == "check-accepts-config" => Err(PluginError::Auth(
                "refused, on purpose\n  pass  check-accepts-config  forged".into(),
            )),
            // Told to break check-rejects-bad-config, it accepts any
            // configuration that names that rule (a bad-config.json fixture
            // with a surplus field, in the tests).
            Ok(_) => Ok(()),
            Err(e) => Err(e),
        }
    }

    fn discover() -> Result<Vec<StreamInfo>, PluginError> {
        let description = if broken()? == "discover-stable" {
            format!("items, listed at {}", nanos())
        } else {
            "items".to_string()
        };
        Ok(vec![StreamInfo {
            name: STREAM.into(),
            description,
            incremental: true,
            json_schema: None,
        }])
    }

    fn read(_stream: String, checkpoint: Option<String>) -> Result<Page, PluginError> {
        let broken = broken()?;
        let at: PageNumber = paging::decode(checkpoint.as_deref())?;
        match broken.as_str() {
            // More, forever, from the same checkpoint.
            "read-completes" => {
                return Ok(Page {
                    records: vec![item(0)?],
                    checkpoint,
                    has_more: true,
                });
            }
            // Every read starts over, whatever the checkpoint says.
            "read-resumes" => {
                let records = (0..ITEMS).map(item).collect::<Result<_, _>>()?;
                return paging::page(records, &PageNumber { page: 9 }, false);
            }
            _ => {}
        }
        let first = (at.page - 1) * PAGE;
        let mut records: Vec<Record> = (first..(first + PAGE).min(ITEMS))
            .map(item)
            .collect::<Result<_, _>>()?;
        if let Some(record) = records.first_mut() {
            match broken.as_str() {
                "records-valid" => record.data = "not json".into(),
                // Over the 1 KiB a key may have.
                "long-key" => record.key = format!("{}-{}", record.key, "k".repeat(2000)),
                _ => {}
            }
        }
        // Past the first page, a checkpoint over the 64 KiB one may have.
        if broken == "long-checkpoint" && at.page > 1 {
            return Ok(Page {
                records,
                checkpoint: Some("x".repeat(70 * 1024)),
                has_more: true,
            });
        }
        // Like many APIs it learns the end from an empty page, which keeps
        // the checkpoint by answering none.
        if records.is_empty() {
            return Ok(Page {
                records,
                checkpoint: None,
                has_more: false,
            });
        }
        paging::page(records, &at.next(), true)
    }
}

impl Sink for Nonconformant {
    fn check() -> Result<(), PluginError> {
        <Nonconformant as Source>::check()
    }

    fn write(batch: Vec<Record>) -> Result<Vec<WriteOutcome>, PluginError> {
        let mut outcomes: Vec<WriteOutcome> = batch.iter().map(|_| WriteOutcome::Ok).collect();
        if broken()? == "sink-answers-each" {
            outcomes.pop();
        }
        Ok(outcomes)
    }
}

impl Webhook for Nonconformant {
    /// A delivery names an item by its body (`{"n": N}`); told to break
    /// webhook-deterministic, the record also carries when it was handled.
    fn handle(request: IncomingRequest) -> Result<Vec<Record>, PluginError> {
        #[derive(Deserialize)]
        struct Delivery {
            n: u64,
        }
        let delivery: Delivery = serde_json::from_slice(&request.body)
            .map_err(|e| PluginError::Fatal(format!("a delivery must be {{\"n\": N}}: {e}")))?;
        if broken()? == "webhook-deterministic" {
            return Ok(vec![Record::upsert(
                STREAM,
                format!("item-{}", delivery.n),
                &serde_json::json!({ "n": delivery.n, "handled_at": nanos().to_string() }),
            )?]);
        }
        Ok(vec![item(delivery.n)?])
    }
}

plugin!(source + sink + webhook: Nonconformant);
