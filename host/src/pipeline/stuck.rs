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
//!
//! The counts are saved as they change ([`Counted::save`]) and loaded when
//! a pipeline starts ([`Stuck::load`]): a host restarted more often than
//! the budgets take, or a pipeline run by `causeway pipeline run-now`
//! alone, still sets such a record aside.

use std::collections::HashMap;
use std::sync::Mutex;

use rusqlite::{Connection, params};

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
#[derive(Debug, Default)]
pub struct Stuck {
    counts: Mutex<HashMap<Key, u32>>,
}

/// A change to the counts, to be saved ([`Counted::save`]).
#[derive(Debug, Default)]
#[must_use = "a change not saved is lost at the next restart"]
pub struct Counted {
    /// Every count of the pipeline forgotten first.
    cleared: bool,
    /// Counts as they now are; `0`: forgotten.
    now: Vec<(Key, u32)>,
}

impl Stuck {
    /// `pipeline`'s counts, as saved.
    pub fn load(conn: &Connection, pipeline: &str) -> rusqlite::Result<Stuck> {
        let mut statement = conn.prepare(
            "SELECT sink, stream, key, budgets FROM sink_stuck WHERE pipeline = ?1 LIMIT ?2",
        )?;
        let rows = statement.query_map(params![pipeline, MAX_COUNTED as i64], |row| {
            let budgets: i64 = row.get(3)?;
            Ok((
                (row.get(0)?, row.get(1)?, row.get(2)?),
                u32::try_from(budgets).unwrap_or(SET_ASIDE_AFTER),
            ))
        })?;
        let counts = rows.collect::<rusqlite::Result<HashMap<Key, u32>>>()?;
        Ok(Stuck {
            counts: Mutex::new(counts),
        })
    }

    fn counts(&self) -> std::sync::MutexGuard<'_, HashMap<Key, u32>> {
        self.counts.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Counts one more spent budget for each of `records` at `sink`: whether
    /// every one of them has now spent [`SET_ASIDE_AFTER`] in a row, and
    /// the change to save.
    pub fn spent_budget(&self, sink: &str, records: &[Record]) -> (bool, Counted) {
        let mut counts = self.counts();
        let mut counted = Counted::default();
        if counts.len() + records.len() > MAX_COUNTED {
            counts.clear();
            counted.cleared = true;
        }
        let mut all = !records.is_empty();
        for record in records {
            let count = counts.entry(key(sink, record)).or_default();
            *count += 1;
            all &= *count >= SET_ASIDE_AFTER;
        }
        for record in records {
            let key = key(sink, record);
            let now = if all {
                counts.remove(&key);
                0
            } else {
                counts.get(&key).copied().unwrap_or_default()
            };
            counted.now.push((key, now));
        }
        (all, counted)
    }

    /// Forgets `records`, which `sink` took or refused for good: the change
    /// to save (none in the usual case, nothing counted).
    pub fn settled<'a>(
        &self,
        sink: &str,
        records: impl IntoIterator<Item = &'a Record>,
    ) -> Counted {
        let mut counts = self.counts();
        let mut counted = Counted::default();
        // Nearly always empty: then settling costs nothing per record.
        if counts.is_empty() {
            return counted;
        }
        for record in records {
            let key = key(sink, record);
            if counts.remove(&key).is_some() {
                counted.now.push((key, 0));
            }
        }
        counted
    }
}

/// Forgets `pipeline`'s counts last changed before `cutoff` (RFC 3339), at
/// most `limit` of them: a count left by a sink or a pipeline since
/// removed, or by a record that no longer comes.
pub fn expire(
    conn: &Connection,
    pipeline: &str,
    cutoff: &str,
    limit: usize,
) -> rusqlite::Result<usize> {
    conn.execute(
        "DELETE FROM sink_stuck WHERE (pipeline, sink, stream, key) IN
             (SELECT pipeline, sink, stream, key FROM sink_stuck
              WHERE pipeline = ?1 AND updated_at < ?2 LIMIT ?3)",
        params![pipeline, cutoff, i64::try_from(limit).unwrap_or(i64::MAX)],
    )
}

impl Counted {
    /// Whether there is nothing to save.
    pub fn is_empty(&self) -> bool {
        !self.cleared && self.now.is_empty()
    }

    /// Saves the change for `pipeline`, in the transaction `conn` is in.
    pub fn save(&self, conn: &Connection, pipeline: &str) -> rusqlite::Result<()> {
        if self.cleared {
            conn.execute(
                "DELETE FROM sink_stuck WHERE pipeline = ?1",
                params![pipeline],
            )?;
        }
        let now = crate::audit::now();
        for ((sink, stream, key), budgets) in &self.now {
            match budgets {
                0 => conn.execute(
                    "DELETE FROM sink_stuck WHERE pipeline = ?1 AND sink = ?2 AND stream = ?3 AND key = ?4",
                    params![pipeline, sink, stream, key],
                )?,
                budgets => conn.execute(
                    "INSERT INTO sink_stuck (pipeline, sink, stream, key, budgets, updated_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                     ON CONFLICT (pipeline, sink, stream, key) DO UPDATE SET
                         budgets = excluded.budgets, updated_at = excluded.updated_at",
                    params![pipeline, sink, stream, key, budgets, now],
                )?,
            };
        }
        Ok(())
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

    /// Whether every one of `records` is to be set aside; the change
    /// saved to `conn`, as the runner saves it.
    fn spent(stuck: &Stuck, conn: &Connection, sink: &str, records: &[Record]) -> bool {
        let (all, counted) = stuck.spent_budget(sink, records);
        counted.save(conn, "p").unwrap();
        all
    }

    #[test]
    fn a_record_is_set_aside_after_its_budgets_in_a_row_and_a_settled_one_starts_over() {
        let dir = tempfile::tempdir().unwrap();
        let conn = crate::db::open(&dir.path().join("db")).unwrap();
        let stuck = Stuck::default();
        let (a, b) = (record("a"), record("b"));
        let spent = |sink: &str, records: &[Record]| spent(&stuck, &conn, sink, records);
        for _ in 1..SET_ASIDE_AFTER {
            assert!(!spent("mailer", std::slice::from_ref(&a)));
        }
        // Another sink's count is its own.
        assert!(!spent("other", std::slice::from_ref(&a)));
        // Not all of them have spent enough yet: none is set aside.
        assert!(!spent("mailer", &[a.clone(), b.clone()]));
        stuck.settled("mailer", [&b]).save(&conn, "p").unwrap();
        for _ in 1..SET_ASIDE_AFTER {
            assert!(!spent("mailer", std::slice::from_ref(&b)));
        }
        assert!(spent("mailer", std::slice::from_ref(&b)));
        // Set aside, its count is gone: were it to come back, it starts over.
        assert!(!spent("mailer", std::slice::from_ref(&b)));
        assert!(!spent("mailer", &[]), "nothing is not stuck");
    }

    #[test]
    fn the_counts_go_on_after_a_restart_as_saved() {
        let dir = tempfile::tempdir().unwrap();
        let conn = crate::db::open(&dir.path().join("db")).unwrap();
        let (a, b, c) = (record("a"), record("b"), record("c"));
        let before = Stuck::default();
        for _ in 1..SET_ASIDE_AFTER {
            assert!(!spent(&before, &conn, "mailer", &[a.clone(), b.clone()]));
        }
        assert!(!spent(&before, &conn, "mailer", std::slice::from_ref(&c)));
        // Written at last: its count is forgotten, saved too.
        let settled = before.settled("mailer", [&b]);
        assert!(!settled.is_empty());
        settled.save(&conn, "p").unwrap();
        assert!(before.settled("mailer", [&b]).is_empty(), "once");
        assert!(
            Stuck::load(&conn, "q").unwrap().counts().is_empty(),
            "another pipeline's"
        );

        // A restart: `a` spends its last budget, `c` goes on from its one,
        // `b` starts over.
        let after = Stuck::load(&conn, "p").unwrap();
        assert!(spent(&after, &conn, "mailer", std::slice::from_ref(&a)));
        for _ in 1..SET_ASIDE_AFTER {
            assert!(!spent(&after, &conn, "mailer", std::slice::from_ref(&b)));
        }
        assert!(!spent(&after, &conn, "mailer", std::slice::from_ref(&c)));
        assert!(spent(&after, &conn, "mailer", std::slice::from_ref(&c)));
        let again = Stuck::load(&conn, "p").unwrap();
        let left: Vec<_> = again.counts().keys().map(|k| k.2.clone()).collect();
        assert_eq!(left, ["b"], "set aside, `a` and `c` are forgotten");
    }
}
