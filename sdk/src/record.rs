//! Conveniences on [`Record`]: build one from a serde value, read one into a
//! serde type.

use serde::{Deserialize, Serialize};

use crate::{Op, PluginError, Record};

impl Record {
    /// An upsert of `data` (serialized to JSON) under `key` in `stream`.
    pub fn upsert(
        stream: impl Into<String>,
        key: impl Into<String>,
        data: &impl Serialize,
    ) -> Result<Record, PluginError> {
        let key = key.into();
        let data = serde_json::to_string(data).map_err(|e| {
            PluginError::Fatal(format!("record {key}: data cannot be written as JSON: {e}"))
        })?;
        Ok(Record {
            stream: stream.into(),
            key,
            op: Op::Upsert,
            data,
            source_timestamp: None,
        })
    }

    /// A delete of `key` in `stream`.
    pub fn delete(stream: impl Into<String>, key: impl Into<String>) -> Record {
        Record {
            stream: stream.into(),
            key: key.into(),
            op: Op::Delete,
            data: "{}".to_string(),
            source_timestamp: None,
        }
    }

    /// This record with its source timestamp set (milliseconds since the epoch).
    pub fn at(mut self, source_timestamp_ms: i64) -> Record {
        self.source_timestamp = Some(source_timestamp_ms);
        self
    }

    /// Reads `data` into `T`, which may borrow from it (`&str`, `Cow<str>`
    /// with `#[serde(borrow)]`) to spare copies. A record whose data does not
    /// fit is a fatal error naming the stream and key.
    pub fn parse<'a, T: Deserialize<'a>>(&'a self) -> Result<T, PluginError> {
        serde_json::from_str(&self.data).map_err(|e| {
            PluginError::Fatal(format!(
                "record {} in stream {}: data does not match the expected shape: {e}",
                self.key, self.stream
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Serialize, serde::Deserialize, PartialEq, Debug)]
    struct Contact {
        email: String,
    }

    #[test]
    fn upsert_then_parse_round_trips() {
        let contact = Contact {
            email: "ada@example.com".into(),
        };
        let record = Record::upsert("contacts", "1", &contact).unwrap().at(5);
        assert_eq!(record.op, Op::Upsert);
        assert_eq!(record.source_timestamp, Some(5));
        assert_eq!(record.parse::<Contact>().unwrap(), contact);
    }

    #[test]
    fn parse_names_the_record_on_mismatch() {
        let record = Record::delete("contacts", "k9");
        match record.parse::<Contact>() {
            Err(PluginError::Fatal(message)) => {
                assert!(
                    message.contains("k9") && message.contains("contacts"),
                    "{message}"
                )
            }
            other => panic!("expected a fatal error, got {other:?}"),
        }
    }
}
