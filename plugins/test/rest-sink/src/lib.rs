//! A sink that writes each record with a request of its own, `PUT` (the
//! record's data) or `DELETE {base_url}/items/{key}`, and answers each
//! record by its response, as the connector `causeway new` scaffolds does:
//! 2xx `ok`, 408/429/5xx `retry`, other 4xx `rejected`. After a 429 (or a
//! 503) it sends nothing more and answers `retry` for the rest of the
//! batch; how long to wait is the host's to read from the `Retry-After`.

use causeway_sdk::{Op, PluginError, Record, Sink, WriteOutcome, http, plugin};
use serde::Deserialize;

#[derive(Deserialize)]
struct Config {
    base_url: String,
}

struct RestSink;

impl Sink for RestSink {
    fn write(batch: Vec<Record>) -> Result<Vec<WriteOutcome>, PluginError> {
        let config: Config = causeway_sdk::config()?;
        let mut outcomes = Vec::with_capacity(batch.len());
        for record in &batch {
            let url = format!("{}/items/{}", config.base_url, http::escape(&record.key));
            let request = match record.op {
                Op::Upsert => http::put(url)
                    .header("content-type", "application/json")
                    .body(record.data.clone()),
                Op::Delete => http::delete(url),
            };
            let response = request.send()?;
            outcomes.push(response.write_outcome()?);
            if response.asks_to_wait() {
                break;
            }
        }
        let slowed = WriteOutcome::Retry("not sent: the API asked to wait".into());
        outcomes.resize(batch.len(), slowed);
        Ok(outcomes)
    }
}

plugin!(sink: RestSink);
