//! `map-fullname`: CRM contacts in, mailing-list subscribers out.
//!
//! `{firstName, lastName, email, company}` becomes
//! `{fullName, email, organization}`; a contact with no email is dropped, since
//! a mailing list cannot hold it. Deletes pass through with the same key.

use causeway_sdk::{Op, PluginError, Record, Transform, plugin};
use serde::Deserialize;

mod contact;
pub use contact::{Contact, JsonOut, Subscriber, Text, map_contact};

#[derive(Debug, Default, Deserialize)]
struct Config {
    target_stream: Option<String>,
}

/// Maps a batch of records as the host holds them. Shared by the plugin and
/// the native baseline in the benchmarks.
pub fn map_batch(batch: Vec<Record>, target_stream: &str) -> Result<Vec<Record>, PluginError> {
    let mut out = Vec::with_capacity(batch.len());
    for record in batch {
        match record.op {
            Op::Delete => out.push(Record {
                stream: target_stream.to_string(),
                ..record
            }),
            Op::Upsert => {
                let contact: Contact = record.parse()?;
                if let Some(subscriber) = map_contact(&contact) {
                    let data = subscriber.to_json();
                    // Built here, not by `Record::upsert`: that would need the
                    // key while the contact still borrows the record; here the
                    // key moves over once the data is written, uncopied.
                    out.push(Record {
                        stream: target_stream.to_string(),
                        key: record.key,
                        op: Op::Upsert,
                        data,
                        source_timestamp: record.source_timestamp,
                    });
                }
            }
        }
    }
    Ok(out)
}

struct MapFullname;

impl Transform for MapFullname {
    fn transform(batch: Vec<Record>) -> Result<Vec<Record>, PluginError> {
        let config: Config = causeway_sdk::config()?;
        map_batch(
            batch,
            config.target_stream.as_deref().unwrap_or("subscribers"),
        )
    }
}

plugin!(transform: MapFullname);

// The mapping's tests are in the host workspace's tests/mapping.rs, which
// runs this crate natively: CI runs that workspace's tests, not this one's.
