//! The newest version of each record a webhook pipeline has let through,
//! by the source's timestamp (`source-timestamp`: when the source system
//! last changed the object). Webhook deliveries arrive out of order — a
//! vendor retries the ones an outage refused after newer ones went through,
//! a poll reads a replica that lags behind the pushes — and a late one
//! would write an older version over a newer one, or bring a deleted
//! record back. A record older than a version already let through is
//! skipped instead ([`Known::skip_older`]).
//!
//! Only pipelines with a webhook trigger keep this (a row per record): a
//! polled source is read in order, and its pages would pay a lookup and a
//! write per record for nothing. A record without a timestamp always goes
//! through, and so does one as new as the newest seen (the same version read
//! again: a page read twice, a poll reading what a webhook pushed).

use std::collections::HashMap;

use rusqlite::{Connection, params};

use crate::bindings::Record;

/// How far ahead of the host's clock a source's timestamp is still taken
/// as one: beyond, it is a plugin's mistake (microseconds for
/// milliseconds), and trusting it would skip every later version.
pub const AHEAD: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

/// The versions a pipeline let through of a page's records, by stream and
/// key (those with a timestamp only), and those newer it lets through now.
#[derive(Debug, Default)]
pub struct Known {
    newest: HashMap<(String, String), i64>,
    newer: Vec<Versioned>,
    /// Timestamps past this (ms) are taken as none ([`AHEAD`]).
    trusted_until: i64,
    /// The records let through whose timestamp was past it.
    ahead: Vec<Record>,
}

/// The streams and keys of those of `records` that carry a timestamp, to
/// look up ([`known`]).
pub fn timestamped(records: &[Record]) -> Vec<(String, String)> {
    records
        .iter()
        .filter(|r| r.source_timestamp.is_some() && crate::contract::identified(r))
        .map(|r| (r.stream.clone(), r.key.clone()))
        .collect()
}

/// Reads the versions `pipeline` let through of `records` (streams and
/// keys).
pub fn known(
    conn: &Connection,
    pipeline: &str,
    records: Vec<(String, String)>,
) -> rusqlite::Result<Known> {
    let mut statement = conn.prepare_cached(
        "SELECT source_timestamp FROM record_version
         WHERE pipeline = ?1 AND stream = ?2 AND key = ?3",
    )?;
    let mut known = HashMap::new();
    for (stream, key) in records {
        let mut rows = statement.query(params![pipeline, stream, key])?;
        if let Some(row) = rows.next()? {
            let at: i64 = row.get(0)?;
            known.insert((stream, key), at);
        }
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    Ok(Known {
        newest: known,
        trusted_until: i64::try_from((now + AHEAD).as_millis()).unwrap_or(i64::MAX),
        ..Known::default()
    })
}

impl Known {
    /// Of `records` (in the order the source answered them), those to let
    /// through, and those older than a version let through before or
    /// earlier in the batch, skipped. What is let through is known
    /// from then on.
    pub fn skip_older(&mut self, records: Vec<Record>) -> (Vec<Record>, Vec<Record>) {
        let mut through = Vec::with_capacity(records.len());
        let mut older = Vec::new();
        for record in records {
            // A record without a key or stream the contract allows is set
            // aside next: nothing is kept by it.
            let Some(at) = record
                .source_timestamp
                .filter(|_| crate::contract::identified(&record))
            else {
                through.push(record);
                continue;
            };
            if at > self.trusted_until {
                self.ahead.push(record.clone());
                through.push(record);
                continue;
            }
            let id = (record.stream.clone(), record.key.clone());
            match self.newest.get(&id) {
                Some(&newest) if at < newest => older.push(record),
                // The same version again (a poll reading what a webhook
                // pushed): nothing new to remember.
                Some(&newest) if at == newest => through.push(record),
                _ => {
                    self.newer.push(Versioned {
                        stream: id.0.clone(),
                        key: id.1.clone(),
                        at,
                    });
                    self.newest.insert(id, at);
                    through.push(record);
                }
            }
        }
        (through, older)
    }

    /// The records let through whose timestamp is more than [`AHEAD`] of
    /// the host's clock, taken as having none.
    pub fn ahead(&self) -> &[Record] {
        &self.ahead
    }

    /// The versions let through that are newer than those on record: to
    /// [`remember`].
    pub fn newer(self) -> Vec<Versioned> {
        self.newer
    }
}

/// Remembers `records`' versions as let through by `pipeline`, inside the
/// page's transaction: a version is never forgotten for an older one.
pub fn remember(conn: &Connection, pipeline: &str, records: &[Versioned]) -> rusqlite::Result<()> {
    if records.is_empty() {
        return Ok(());
    }
    let mut statement = conn.prepare_cached(
        "INSERT INTO record_version (pipeline, stream, key, source_timestamp, updated_at)
         VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT (pipeline, stream, key) DO UPDATE SET
             source_timestamp = max(source_timestamp, excluded.source_timestamp),
             updated_at = excluded.updated_at",
    )?;
    let now = crate::audit::now();
    for v in records {
        statement.execute(params![pipeline, v.stream, v.key, v.at, now])?;
    }
    Ok(())
}

/// A record's stream, key and timestamp, as [`remember`] keeps them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Versioned {
    /// The source's stream.
    pub stream: String,
    /// The record's key.
    pub key: String,
    /// The source's timestamp of this version.
    pub at: i64,
}

impl Versioned {
    /// The versions of `records` that carry a timestamp.
    pub fn of(records: &[Record]) -> Vec<Versioned> {
        records
            .iter()
            .filter_map(|r| {
                Some(Versioned {
                    stream: r.stream.clone(),
                    key: r.key.clone(),
                    at: r.source_timestamp?,
                })
            })
            .collect()
    }
}

/// Forgets every version `pipeline` let through: after a `pipeline reset`
/// the source is read anew, and trusted, whatever its timestamps.
pub fn forget(conn: &Connection, pipeline: &str) -> rusqlite::Result<usize> {
    conn.execute(
        "DELETE FROM record_version WHERE pipeline = ?1",
        params![pipeline],
    )
}

/// Forgets the versions of `pipeline` last let through before `cutoff`
/// (RFC 3339), at most `limit`: a delivery later than that is no longer
/// told from a new one (as a redelivery is no longer recognised).
pub fn expire(
    conn: &Connection,
    pipeline: &str,
    cutoff: &str,
    limit: usize,
) -> rusqlite::Result<usize> {
    conn.execute(
        "DELETE FROM record_version WHERE (pipeline, stream, key) IN
             (SELECT pipeline, stream, key FROM record_version
              WHERE pipeline = ?1 AND updated_at < ?2 LIMIT ?3)",
        params![pipeline, cutoff, i64::try_from(limit).unwrap_or(i64::MAX)],
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bindings::Op;

    fn record(key: &str, at: Option<i64>, data: &str) -> Record {
        Record {
            stream: "contacts".into(),
            key: key.into(),
            op: Op::Upsert,
            data: data.into(),
            source_timestamp: at,
        }
    }

    fn data(records: &[Record]) -> Vec<&str> {
        records.iter().map(|r| r.data.as_str()).collect()
    }

    #[test]
    fn a_version_older_than_one_let_through_is_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let conn = crate::db::open(&dir.path().join("db")).unwrap();
        let first = [record("a", Some(20), "a20"), record("b", Some(5), "b5")];
        let mut known = known(&conn, "p", timestamped(&first)).unwrap();
        let (through, older) = known.skip_older(first.to_vec());
        assert_eq!((data(&through), data(&older)), (vec!["a20", "b5"], vec![]));
        assert_eq!(known.newer(), Versioned::of(&through));
        remember(&conn, "p", &Versioned::of(&through)).unwrap();
        // Another pipeline knows nothing of them.
        remember(
            &conn,
            "q",
            &[Versioned {
                stream: "contacts".into(),
                key: "a".into(),
                at: 1,
            }],
        )
        .unwrap();

        // Late: a at 10 (older), a at 20 again (the same version), b at 6
        // then b at 5 within the batch, c unknown, d without a timestamp.
        let late = [
            record("a", Some(10), "a10"),
            record("a", Some(20), "a20 again"),
            record("b", Some(6), "b6"),
            record("b", Some(5), "b5 late"),
            record("c", Some(1), "c1"),
            record("d", None, "d"),
        ];
        let mut known = super::known(&conn, "p", timestamped(&late)).unwrap();
        let (through, older) = known.skip_older(late.to_vec());
        assert_eq!(data(&through), ["a20 again", "b6", "c1", "d"]);
        assert_eq!(data(&older), ["a10", "b5 late"]);
        // The same version of a again is nothing new.
        let newer: Vec<String> = known
            .newer()
            .iter()
            .map(|v| format!("{}@{}", v.key, v.at))
            .collect();
        assert_eq!(newer, ["b@6", "c@1"]);
        remember(&conn, "p", &Versioned::of(&through)).unwrap();
        // An older version never replaces a newer one on record.
        remember(&conn, "p", &Versioned::of(&[record("b", Some(2), "")])).unwrap();
        let on_record = |pipeline: &str, key: &str| -> Option<i64> {
            let probe = [record(key, Some(0), "")];
            super::known(&conn, pipeline, timestamped(&probe))
                .unwrap()
                .newest
                .into_values()
                .next()
        };
        assert_eq!(on_record("p", "b"), Some(6));
        assert_eq!(on_record("q", "a"), Some(1));
        assert_eq!(on_record("p", "d"), None);

        // A stamp days ahead of the clock (microseconds, say) is taken as
        // none: let through, never remembered, so it skips nothing later.
        let far = 1_700_000_000_000_000;
        let ahead = [record("e", Some(far), "e far"), record("e", Some(5), "e5")];
        let mut known = super::known(&conn, "p", timestamped(&ahead)).unwrap();
        let (through, older) = known.skip_older(ahead.to_vec());
        assert_eq!(
            (data(&through), data(&older)),
            (vec!["e far", "e5"], vec![])
        );
        assert_eq!(data(known.ahead()), ["e far"]);
        let newer: Vec<i64> = known.newer().iter().map(|v| v.at).collect();
        assert_eq!(newer, [5]);

        // A key too long or empty (set aside right after) is let
        // through, looked up and remembered by nothing.
        let long = [
            record(
                &"k".repeat(crate::contract::MAX_KEY_BYTES + 1),
                Some(9),
                "long",
            ),
            record("", Some(9), "empty"),
        ];
        assert!(timestamped(&long).is_empty());
        let mut known = super::known(&conn, "p", timestamped(&long)).unwrap();
        let (through, _) = known.skip_older(long.to_vec());
        assert_eq!(data(&through), ["long", "empty"]);
        assert!(known.newer().is_empty());

        // A reset forgets them; expiry forgets those not let through since.
        assert_eq!(forget(&conn, "q").unwrap(), 1);
        assert_eq!(expire(&conn, "p", "0000", 10).unwrap(), 0);
        assert_eq!(expire(&conn, "p", "9999", 2).unwrap(), 2);
        assert_eq!(expire(&conn, "p", "9999", 10).unwrap(), 1);
    }
}
