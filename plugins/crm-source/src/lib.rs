//! `crm-source`: contacts from a CRM-style API.
//!
//! Pull: `GET {base_url}/v1/contacts?updated_after=T&after_id=K&limit=N`
//! answers `{"contacts": [...], "has_more": bool}` ordered by
//! `(updated_at, id)`; the checkpoint is the last `(updated_at, id)` read, so a
//! resumed read never repeats a contact and never skips one changed in the
//! same millisecond. Push: the CRM posts `{"event": "contact.updated" |
//! "contact.deleted", "contact": {...}}`.

use causeway_sdk::{
    IncomingRequest, Page, PluginError, Record, Source, StreamInfo, Webhook, http, plugin,
};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

const STREAM: &str = "contacts";

#[derive(Deserialize)]
struct Config {
    base_url: String,
    page_size: Option<u32>,
}

/// Where the last read stopped.
#[derive(Serialize, Deserialize, Default, Debug, PartialEq)]
struct Cursor {
    updated_at: i64,
    id: String,
}

/// A contact as the CRM lists it; other fields pass through untouched.
#[derive(Deserialize)]
struct Contact {
    id: Value,
    updated_at: i64,
    #[serde(flatten)]
    fields: Map<String, Value>,
}

#[derive(Deserialize)]
struct ContactPage {
    contacts: Vec<Contact>,
    has_more: bool,
}

#[derive(Deserialize)]
struct Event {
    event: String,
    contact: Contact,
}

fn id_text(id: &Value) -> String {
    match id {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn record_of(contact: Contact) -> Result<Record, PluginError> {
    let key = id_text(&contact.id);
    let mut data = contact.fields;
    data.insert("id".into(), contact.id);
    data.insert("updated_at".into(), contact.updated_at.into());
    Ok(Record::upsert(STREAM, key, &data)?.at(contact.updated_at))
}

struct CrmSource;

impl CrmSource {
    fn get(url: &str) -> Result<http::Response, PluginError> {
        http::get(url)
            .credential("crm-token")
            .header("accept", "application/json")
            .send()?
            .error_for_status()
    }
}

impl Source for CrmSource {
    fn check() -> Result<(), PluginError> {
        let config: Config = causeway_sdk::config()?;
        Self::get(&format!(
            "{}/v1/contacts?limit=1",
            config.base_url.trim_end_matches('/')
        ))?;
        Ok(())
    }

    fn discover() -> Result<Vec<StreamInfo>, PluginError> {
        Ok(vec![StreamInfo {
            name: STREAM.into(),
            description: "CRM contacts, ordered by last update.".into(),
            incremental: true,
            json_schema: None,
        }])
    }

    fn read(stream: String, checkpoint: Option<String>) -> Result<Page, PluginError> {
        if stream != STREAM {
            return Err(PluginError::Config(format!(
                "unknown stream {stream:?}: crm-source reads only {STREAM:?}"
            )));
        }
        let config: Config = causeway_sdk::config()?;
        let cursor: Cursor = match checkpoint.as_deref() {
            None => Cursor::default(),
            Some(text) => serde_json::from_str(text).map_err(|e| {
                PluginError::Fatal(format!(
                    "checkpoint {text:?} is not a crm-source cursor: {e}"
                ))
            })?,
        };
        let url = format!(
            "{}/v1/contacts?updated_after={}&after_id={}&limit={}",
            config.base_url.trim_end_matches('/'),
            cursor.updated_at,
            cursor.id,
            config.page_size.unwrap_or(100)
        );
        let page: ContactPage = Self::get(&url)?.json()?;
        let next = page.contacts.last().map(|c| Cursor {
            updated_at: c.updated_at,
            id: id_text(&c.id),
        });
        let records = page
            .contacts
            .into_iter()
            .map(record_of)
            .collect::<Result<Vec<_>, _>>()?;
        let checkpoint =
            match next {
                Some(cursor) => Some(serde_json::to_string(&cursor).map_err(|e| {
                    PluginError::Fatal(format!("checkpoint cannot be written: {e}"))
                })?),
                None => checkpoint,
            };
        Ok(Page {
            records,
            checkpoint,
            has_more: page.has_more,
        })
    }
}

impl Webhook for CrmSource {
    fn handle(request: IncomingRequest) -> Result<Vec<Record>, PluginError> {
        let event: Event = serde_json::from_slice(&request.body).map_err(|e| {
            PluginError::Fatal(format!("webhook body is not a CRM contact event: {e}"))
        })?;
        match event.event.as_str() {
            "contact.created" | "contact.updated" => Ok(vec![record_of(event.contact)?]),
            "contact.deleted" => Ok(vec![
                Record::delete(STREAM, id_text(&event.contact.id)).at(event.contact.updated_at),
            ]),
            other => {
                causeway_sdk::log::info(format!("ignoring CRM event {other:?}"));
                Ok(Vec::new())
            }
        }
    }
}

plugin!(source + webhook: CrmSource);
