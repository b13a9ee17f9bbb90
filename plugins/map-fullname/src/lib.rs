//! `map-fullname`: CRM contacts in, mailing-list subscribers out.
//!
//! `{firstName, lastName, email, company}` becomes
//! `{fullName, email, organization}`; a contact with no email is dropped, since
//! a mailing list cannot hold it. Deletes pass through with the same key.

use causeway_sdk::{Op, PluginError, Record, Transform, plugin};
use serde::{Deserialize, Serialize};

/// A contact as the CRM sends it.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Contact {
    #[serde(default)]
    pub first_name: String,
    #[serde(default)]
    pub last_name: String,
    #[serde(default)]
    pub email: Option<String>,
    #[serde(default)]
    pub company: Option<String>,
}

/// A subscriber as the mailer expects it.
#[derive(Debug, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Subscriber {
    pub full_name: String,
    pub email: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub organization: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct Config {
    target_stream: Option<String>,
}

/// Maps one contact; `None` when it has no email.
pub fn map_contact(contact: Contact) -> Option<Subscriber> {
    let email = contact.email.filter(|e| !e.trim().is_empty())?;
    let full_name = [contact.first_name.trim(), contact.last_name.trim()]
        .iter()
        .filter(|part| !part.is_empty())
        .copied()
        .collect::<Vec<_>>()
        .join(" ");
    Some(Subscriber {
        full_name,
        email: email.trim().to_string(),
        organization: contact.company.filter(|c| !c.trim().is_empty()),
    })
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
                if let Some(subscriber) = map_contact(contact) {
                    let mut mapped = Record::upsert(target_stream, record.key, &subscriber)?;
                    mapped.source_timestamp = record.source_timestamp;
                    out.push(mapped);
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

    fn contact(first: &str, last: &str, email: Option<&str>) -> Contact {
        Contact {
            first_name: first.into(),
            last_name: last.into(),
            email: email.map(Into::into),
            company: None,
        }
    }

    #[test]
    fn joins_first_and_last_name() {
        let s = map_contact(contact("Ada", "Lovelace", Some("ada@example.com"))).unwrap();
        assert_eq!(s.full_name, "Ada Lovelace");
        assert_eq!(s.email, "ada@example.com");
    }

    #[test]
    fn drops_contacts_without_email() {
        assert!(map_contact(contact("No", "Mail", None)).is_none());
        assert!(map_contact(contact("No", "Mail", Some("  "))).is_none());
    }

    #[test]
    fn a_missing_name_part_leaves_no_stray_space() {
        let s = map_contact(contact("", "Hopper", Some("g@example.com"))).unwrap();
        assert_eq!(s.full_name, "Hopper");
    }
}
