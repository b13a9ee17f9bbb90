//! `calendar-sink`: contacts into a calendar's directory of attendees, the
//! people a meeting can be sent to.
//!
//! Unlike `mailer-sink`, the API takes one request per record, as most
//! calendar and contact APIs do: `PUT
//! {base_url}/v2/calendars/{calendar_id}/attendees/{key}` with
//! `{"displayName", "email", "organization"?}`, and `DELETE` at the same
//! address. Each answer becomes that record's outcome
//! ([`http::Response::write_outcome`]). When the calendar asks to be left
//! alone (a 429, a 503), or a request does not get through (the network,
//! or the grant's rate limit that would pass the call's deadline), the rest
//! of the batch is not sent and answers `retry`: the host writes those
//! records again later (after a 429, when its `Retry-After` says), while
//! the ones written stay written. The record key is the attendee's id, so a
//! record written twice (at-least-once delivery) replaces itself, and a
//! delete of an attendee already gone is done.

use causeway_sdk::{Op, PluginError, Record, Sink, WriteOutcome, http, plugin};
use serde::{Deserialize, Serialize};

#[derive(Deserialize)]
struct Config {
    base_url: String,
    calendar_id: String,
}

/// What the sink reads of a record: a contact as `map-fullname` answers it.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Contact {
    #[serde(default)]
    full_name: Option<String>,
    #[serde(default)]
    email: Option<String>,
    #[serde(default)]
    organization: Option<String>,
}

/// An attendee as the calendar takes it.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Attendee {
    display_name: String,
    email: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    organization: Option<String>,
}

impl Attendee {
    /// The attendee `record` describes, or why it cannot be one.
    fn of(record: &Record) -> Result<Attendee, String> {
        let contact: Contact = record.parse().map_err(|e| e.to_string())?;
        let Some(email) = contact.email.filter(|e| !e.trim().is_empty()) else {
            return Err(format!(
                "record {}: a calendar attendee needs an email, and it has none",
                record.key
            ));
        };
        let display_name = contact
            .full_name
            .filter(|n| !n.trim().is_empty())
            .unwrap_or_else(|| email.clone());
        Ok(Attendee {
            display_name,
            email,
            organization: contact.organization,
        })
    }
}

struct CalendarSink;

impl CalendarSink {
    fn calendar_url(config: &Config) -> String {
        format!(
            "{}/v2/calendars/{}",
            config.base_url.trim_end_matches('/'),
            http::escape(&config.calendar_id)
        )
    }

    fn attendee_url(config: &Config, key: &str) -> String {
        format!(
            "{}/attendees/{}",
            Self::calendar_url(config),
            http::escape(key)
        )
    }

    /// Writes one record; the calendar's answer.
    fn send(config: &Config, record: &Record) -> Result<Sent, PluginError> {
        let url = Self::attendee_url(config, &record.key);
        let request = match record.op {
            Op::Upsert => match Attendee::of(record) {
                Ok(attendee) => http::put(url).json(&attendee)?,
                Err(why) => return Ok(Sent::Refused(why)),
            },
            Op::Delete => http::delete(url),
        };
        match request.credential("calendar-key").send() {
            // Already gone: a delete delivered twice, or of a contact the
            // calendar never had.
            Ok(response) if record.op == Op::Delete && response.status() == 404 => Ok(Sent::Gone),
            Ok(response) => Ok(Sent::Answered(response)),
            // Not sent in time (the grant's rate limit would pass the
            // call's deadline), or the network failed: a later call sends it.
            Err(http::HttpError::Timeout(m) | http::HttpError::Network(m)) => Ok(Sent::Unsent(m)),
            Err(refused) => Err(refused.into()),
        }
    }
}

/// What became of one record.
enum Sent {
    Answered(http::Response),
    /// Not sent: the record cannot be an attendee.
    Refused(String),
    /// A delete of an attendee the calendar does not have.
    Gone,
    /// The request did not get through; why.
    Unsent(String),
}

impl Sink for CalendarSink {
    fn check() -> Result<(), PluginError> {
        let config: Config = causeway_sdk::config()?;
        // A 404 here is a calendar_id that does not exist: a config error.
        http::get(Self::calendar_url(&config))
            .credential("calendar-key")
            .send()?
            .error_for_status()?;
        Ok(())
    }

    fn write(batch: Vec<Record>) -> Result<Vec<WriteOutcome>, PluginError> {
        let config: Config = causeway_sdk::config()?;
        let mut outcomes = Vec::with_capacity(batch.len());
        // Once the calendar asks to wait, or a request does not get
        // through, nothing more is sent this call: the rest answers
        // `retry`, and the records written so far stay written. Failing the
        // whole batch would send them again, and under a rate limit never
        // reach the end of a long one.
        let mut stopped = None;
        for record in &batch {
            match Self::send(&config, record)? {
                Sent::Answered(response) => {
                    outcomes.push(response.write_outcome()?);
                    if response.asks_to_wait() {
                        stopped = Some(format!(
                            "not sent: the calendar answered {} to an earlier record of the batch",
                            response.status()
                        ));
                    }
                }
                Sent::Refused(why) => outcomes.push(WriteOutcome::Rejected(why)),
                Sent::Gone => outcomes.push(WriteOutcome::Ok),
                Sent::Unsent(why) => {
                    stopped = Some(format!("not sent after an earlier record's request: {why}"));
                    outcomes.push(WriteOutcome::Retry(why));
                }
            }
            if stopped.is_some() {
                break;
            }
        }
        if let Some(why) = stopped {
            outcomes.resize(batch.len(), WriteOutcome::Retry(why));
        }
        Ok(outcomes)
    }
}

plugin!(sink: CalendarSink);
