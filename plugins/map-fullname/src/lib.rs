//! `map-fullname`: CRM contacts in, mailing-list subscribers out.
//!
//! `{firstName, lastName, email, company}` becomes
//! `{fullName, email, organization}`; a contact with no email is dropped, since
//! a mailing list cannot hold it. Deletes pass through with the same key.

use causeway_sdk::{Op, PluginError, Record, Transform, plugin};
use serde::Deserialize;

mod contact;
pub use contact::{Contact, Subscriber, Text, map_contact};

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
                    let data = serde_json::to_string(&subscriber).map_err(|e| {
                        PluginError::Fatal(format!(
                            "record {}: data cannot be written as JSON: {e}",
                            record.key
                        ))
                    })?;
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

#[cfg(test)]
mod tests {
    use super::*;

    fn contact<'a>(first: &'a str, last: &'a str, email: Option<&'a str>) -> Contact<'a> {
        Contact {
            first_name: first.into(),
            last_name: last.into(),
            email: email.map(Into::into),
            company: None,
        }
    }

    #[test]
    fn joins_first_and_last_name() {
        let c = contact("Ada", "Lovelace", Some("ada@example.com"));
        let s = map_contact(&c).unwrap();
        assert_eq!(s.full_name, "Ada Lovelace");
        assert_eq!(s.email, "ada@example.com");
    }

    #[test]
    fn drops_contacts_without_email() {
        assert!(map_contact(&contact("No", "Mail", None)).is_none());
        assert!(map_contact(&contact("No", "Mail", Some("  "))).is_none());
    }

    #[test]
    fn a_missing_name_part_leaves_no_stray_space() {
        let c = contact("", "Hopper", Some("g@example.com"));
        let s = map_contact(&c).unwrap();
        assert_eq!(s.full_name, "Hopper");
    }

    #[test]
    fn escaped_and_null_fields_map_like_plain_ones() {
        let data = r#"{"firstName":"Ada \"the Countess\"","lastName":"Lovelace","email":" ada@example.com ","company":null}"#;
        let batch = vec![Record {
            stream: "contacts".into(),
            key: "c1".into(),
            op: Op::Upsert,
            data: data.into(),
            source_timestamp: Some(7),
        }];
        let out = map_batch(batch, "subscribers").unwrap();
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].stream, "subscribers");
        assert_eq!(out[0].key, "c1");
        assert_eq!(out[0].source_timestamp, Some(7));
        assert_eq!(
            out[0].data,
            r#"{"fullName":"Ada \"the Countess\" Lovelace","email":"ada@example.com"}"#
        );
    }
}
