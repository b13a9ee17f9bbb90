//! Storage under test. `write` stores a batch of records as one atomic
//! storage batch (key → data; deletes remove); `read` with stream = a key
//! prefix returns the stored keys and values as records; `read` of the
//! stream `!denied-storm` asks for an invalid key in a loop, forever (a
//! plugin the host must stop, not audit to death).

use causeway_sdk::storage::{self, StorageError, Write};
use causeway_sdk::{Op, Page, PluginError, Record, Sink, Source, StreamInfo, WriteOutcome, plugin};

fn failed(e: StorageError) -> PluginError {
    PluginError::Fatal(match e {
        StorageError::Denied(m) => format!("storage denied: {m}"),
        StorageError::QuotaExceeded(m) => format!("storage quota exceeded: {m}"),
        StorageError::InvalidKey(m) => format!("storage key invalid: {m}"),
        StorageError::Unavailable(m) => format!("storage unavailable: {m}"),
    })
}

struct Kv;

impl Sink for Kv {
    fn write(batch: Vec<Record>) -> Result<Vec<WriteOutcome>, PluginError> {
        let writes: Vec<Write> = batch
            .iter()
            .map(|r| match r.op {
                Op::Upsert => Write::Set((r.key.clone(), r.data.clone().into_bytes())),
                Op::Delete => Write::Delete(r.key.clone()),
            })
            .collect();
        storage::batch(&writes).map_err(failed)?;
        Ok(vec![WriteOutcome::Ok; batch.len()])
    }
}

impl Source for Kv {
    fn discover() -> Result<Vec<StreamInfo>, PluginError> {
        Ok(Vec::new())
    }

    fn read(prefix: String, _checkpoint: Option<String>) -> Result<Page, PluginError> {
        if prefix == "!denied-storm" {
            loop {
                let _ = std::hint::black_box(storage::get(""));
            }
        }
        let mut records = Vec::new();
        for key in storage::list_keys(&prefix).map_err(failed)? {
            let value = storage::get(&key).map_err(failed)?.unwrap_or_default();
            records.push(Record {
                stream: prefix.clone(),
                key,
                op: Op::Upsert,
                data: String::from_utf8_lossy(&value).into_owned(),
                source_timestamp: None,
            });
        }
        Ok(Page {
            records,
            checkpoint: None,
            has_more: false,
        })
    }
}

plugin!(source + sink: Kv);
