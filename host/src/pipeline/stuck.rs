//! Records a sink will not take: the ones it asks to retry through whole
//! retry budgets while it writes the rest of their batch. After
//! [`SET_ASIDE_AFTER`] such budgets in a row a record is set aside as a
//! dead letter, so one record the sink can never take does not hold back
//! every record behind it (the circuit would open, probe and open again on
//! the same page for ever).
//!
//! An outage is never taken for such a record: a budget counts only when
//! the sink wrote other records of the batch in it and took none in its
//! last answer (a sink that is down writes nothing; one that takes a few
//! records per call makes progress in every answer).

use std::collections::HashMap;
use std::sync::Mutex;

use crate::bindings::Record;

/// How many retry budgets in a row a record may spend before it is set
/// aside.
pub const SET_ASIDE_AFTER: u32 = 3;

/// Past this many records counted at once, the counts start over: so many
/// records stuck at once is the sink's trouble, not theirs.
const MAX_COUNTED: usize = 10_000;

/// A record at a sink: the sink, the record's stream and key.
type Key = (String, String, String);

fn key(sink: &str, record: &Record) -> Key {
    (sink.to_string(), record.stream.clone(), record.key.clone())
}

/// A pipeline's count of spent budgets per record, by sink, stream and key.
/// Kept in memory: a restart starts the count over.
#[derive(Debug, Default)]
pub struct Stuck {
    counts: Mutex<HashMap<Key, u32>>,
}

impl Stuck {
    /// Counts one more spent budget for each of `records` at `sink`: whether
    /// every one of them has now spent [`SET_ASIDE_AFTER`] in a row.
    pub fn spent_budget(&self, sink: &str, records: &[Record]) -> bool {
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        if counts.len() + records.len() > MAX_COUNTED {
            counts.clear();
        }
        let mut all = !records.is_empty();
        for record in records {
            let count = counts.entry(key(sink, record)).or_default();
            *count += 1;
            all &= *count >= SET_ASIDE_AFTER;
        }
        if all {
            for record in records {
                counts.remove(&key(sink, record));
            }
        }
        all
    }

    /// Forgets `records`, which `sink` took or refused for good.
    pub fn settled<'a>(&self, sink: &str, records: impl IntoIterator<Item = &'a Record>) {
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        // Nearly always empty: then settling costs nothing per record.
        if counts.is_empty() {
            return;
        }
        for record in records {
            counts.remove(&key(sink, record));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bindings::Op;

    fn record(key: &str) -> Record {
        Record {
            stream: "contacts".into(),
            key: key.into(),
            op: Op::Upsert,
            data: "{}".into(),
            source_timestamp: None,
        }
    }

    #[test]
    fn a_record_is_set_aside_after_its_budgets_in_a_row_and_a_settled_one_starts_over() {
        let stuck = Stuck::default();
        let (a, b) = (record("a"), record("b"));
        for _ in 1..SET_ASIDE_AFTER {
            assert!(!stuck.spent_budget("mailer", std::slice::from_ref(&a)));
        }
        // Another sink's count is its own.
        assert!(!stuck.spent_budget("other", std::slice::from_ref(&a)));
        // Not all of them have spent enough yet: none is set aside.
        assert!(!stuck.spent_budget("mailer", &[a.clone(), b.clone()]));
        stuck.settled("mailer", [&b]);
        for _ in 1..SET_ASIDE_AFTER {
            assert!(!stuck.spent_budget("mailer", std::slice::from_ref(&b)));
        }
        assert!(stuck.spent_budget("mailer", std::slice::from_ref(&b)));
        // Set aside, its count is gone: were it to come back, it starts over.
        assert!(!stuck.spent_budget("mailer", std::slice::from_ref(&b)));
        assert!(!stuck.spent_budget("mailer", &[]), "nothing is not stuck");
    }
}
