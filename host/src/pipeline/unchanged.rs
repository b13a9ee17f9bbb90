//! What a pipeline last wrote to each sink, by record, for pipelines that
//! skip unchanged records (`skip-unchanged = true`). A source that can only
//! read a stream whole (no `updated_since` in its API) answers every record
//! on every run; without this, each run writes them all again, into APIs
//! that count every write against a quota.
//!
//! A row holds a digest of the record as the sink was given it, mixed with
//! the sink's build and its configuration in the pipeline
//! ([`super::isolate::Proven::key`]): a record is skipped at a sink only
//! when this build of it, so configured, already wrote exactly this. So a
//! transform that maps differently, a sink upgraded or pointed elsewhere,
//! writes every record again once. A row stands for what the sink holds,
//! and is forgotten whenever that may no longer be so: a record the sink
//! refused or did not write whole, a delete written, a dead letter
//! replayed, a `pipeline reset`, and every row of a pipeline while it does
//! not skip (its writes are not kept, so what was kept goes stale).
//!
//! Rows are saved with the page that wrote them (`runner::commit`): a page
//! read again after a crash finds what it wrote before saved, or writes it
//! again, never skips what was not written.
//!
//! A dead-letter replay writes records past the runner, from another
//! process, while the host's runner may be writing the same ones. So it
//! forgets their rows before and after it writes, and marks them replayed
//! at each time ([`replayed`]); a page that read what the sinks held
//! before the replay's last mark saves nothing of those records: what it
//! wrote of them may be older than what the replay wrote after it.

use std::collections::HashMap;

use rusqlite::{Connection, params};
use sha2::{Digest as _, Sha256};

use crate::bindings::{Op, Record};

/// A record as one sink was given it, in one build and configuration.
pub type Digest = [u8; 16];

/// The digest of `record` for the sink as it runs (`sink_as`, its
/// [`super::isolate::Proven::key`]). Each part is length-prefixed, so no
/// two records share the bytes hashed.
pub fn digest(sink_as: &str, record: &Record) -> Digest {
    let mut hash = Sha256::new();
    for part in [sink_as, &record.stream, &record.key, &record.data] {
        hash.update((part.len() as u64).to_le_bytes());
        hash.update(part.as_bytes());
    }
    hash.update([match record.op {
        Op::Upsert => 0u8,
        Op::Delete => 1,
    }]);
    let full = hash.finalize();
    let mut digest = [0; 16];
    digest.copy_from_slice(&full[..16]);
    digest
}

/// What a pipeline last wrote to each sink of a batch's records: by
/// sink, a digest (or none) for each record, in the batch's order; and
/// when it was read.
#[derive(Debug, Default)]
pub struct Known {
    held: HashMap<String, Vec<Option<Digest>>>,
    /// When the page read it, before it wrote anything (as
    /// [`crate::audit::now`] writes times).
    pub since: String,
}

/// Reads what `pipeline` last wrote to each of `sinks` of `records`
/// (streams and keys, in the batch's order).
pub fn known(
    conn: &Connection,
    pipeline: &str,
    sinks: &[String],
    records: &[(String, String)],
) -> rusqlite::Result<Known> {
    let mut statement = conn.prepare_cached(
        "SELECT digest FROM sink_written
         WHERE pipeline = ?1 AND key = ?2 AND sink = ?3 AND stream = ?4",
    )?;
    let since = crate::audit::now();
    let mut held = HashMap::new();
    for sink in sinks {
        let mut digests = Vec::with_capacity(records.len());
        for (stream, key) in records {
            let mut rows = statement.query(params![pipeline, key, sink, stream])?;
            let stored: Option<Vec<u8>> = rows.next()?.map(|row| row.get(0)).transpose()?;
            digests.push(stored.and_then(|d| Digest::try_from(d.as_slice()).ok()));
        }
        held.insert(sink.clone(), digests);
    }
    Ok(Known { held, since })
}

/// What one sink was given of a batch, and what it wrote.
#[derive(Debug, Default)]
pub struct Writes {
    /// The sink.
    pub sink: String,
    /// When the page read what the sinks held ([`Known::since`]): a record
    /// replayed since is not saved.
    pub since: String,
    /// Written whole: each record's stream, key and last digest (`None`
    /// for a delete: nothing left to compare with).
    pub written: Vec<(String, String, Option<Digest>)>,
    /// Not written whole: forgotten.
    pub unsure: Vec<(String, String)>,
}

impl Known {
    /// Splits `records` (those [`known`] read for) for `sink` (running as
    /// `sink_as`): those to give it, with their digests, and for each
    /// record whether it is skipped, held as it is. A record's versions
    /// in the batch go together: all skipped when the last is what the
    /// sink holds, all given otherwise, in order.
    pub fn split(
        &self,
        sink: &str,
        sink_as: &str,
        records: &[Record],
    ) -> (Vec<Record>, Vec<Digest>, Vec<bool>) {
        let digests: Vec<Digest> = records.iter().map(|r| digest(sink_as, r)).collect();
        // The last version of each record in the batch.
        let mut last: HashMap<(&str, &str), usize> = HashMap::new();
        for (i, r) in records.iter().enumerate() {
            last.insert((&r.stream, &r.key), i);
        }
        let held = self.held.get(sink);
        let same: Vec<bool> = records
            .iter()
            .map(|r| {
                let i = last[&(r.stream.as_str(), r.key.as_str())];
                held.and_then(|held| held.get(i).copied().flatten()) == Some(digests[i])
            })
            .collect();
        let mut given = Vec::new();
        let mut given_digests = Vec::new();
        for ((record, digest), same) in records.iter().zip(digests).zip(&same) {
            if !same {
                given.push(record.clone());
                given_digests.push(digest);
            }
        }
        (given, given_digests, same)
    }
}

impl Writes {
    /// What `sink` did with `given` (digested as `digests`): the records
    /// of `refused` (set aside, whatever the reason) are forgotten with
    /// every other version of them in the batch; the rest are written, as
    /// of their last version.
    pub fn of(
        (sink, since): (&str, &str),
        given: &[Record],
        digests: &[Digest],
        refused: &[(Record, String)],
    ) -> Writes {
        let refused: std::collections::HashSet<(&str, &str)> = refused
            .iter()
            .map(|(r, _)| (r.stream.as_str(), r.key.as_str()))
            .collect();
        let mut last: HashMap<(&str, &str), Option<Digest>> = HashMap::new();
        let mut order = Vec::new();
        for (record, digest) in given.iter().zip(digests) {
            let id = (record.stream.as_str(), record.key.as_str());
            let kept = match record.op {
                Op::Upsert => Some(*digest),
                Op::Delete => None,
            };
            if last.insert(id, kept).is_none() {
                order.push(id);
            }
        }
        let mut writes = Writes {
            sink: sink.to_string(),
            since: since.to_string(),
            ..Writes::default()
        };
        for id in order {
            let (stream, key) = (id.0.to_string(), id.1.to_string());
            if refused.contains(&id) {
                writes.unsure.push((stream, key));
            } else {
                writes.written.push((stream, key, last[&id]));
            }
        }
        writes
    }
}

/// Saves what a page wrote to its sinks, inside the page's transaction;
/// forgets instead what a replay wrote since the page read what the sinks
/// held.
pub fn remember(conn: &Connection, pipeline: &str, writes: &[Writes]) -> rusqlite::Result<()> {
    let mut replayed_since = conn.prepare_cached(
        "SELECT 1 FROM sink_replayed WHERE pipeline = ?1 AND key = ?2 AND at >= ?3",
    )?;
    let mut set = conn.prepare_cached(
        "INSERT INTO sink_written (pipeline, sink, stream, key, digest, updated_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)
         ON CONFLICT (pipeline, key, sink, stream) DO UPDATE SET
             digest = excluded.digest, updated_at = excluded.updated_at",
    )?;
    let mut unset = conn.prepare_cached(
        "DELETE FROM sink_written WHERE pipeline = ?1 AND sink = ?2 AND stream = ?3 AND key = ?4",
    )?;
    let mut any_replayed_since = conn
        .prepare_cached("SELECT 1 FROM sink_replayed WHERE pipeline = ?1 AND at >= ?2 LIMIT 1")?;
    let now = crate::audit::now();
    for w in writes {
        // One lookup a sink, and one a record only after a replay.
        let replays = any_replayed_since.exists(params![pipeline, w.since])?;
        for (stream, key, digest) in &w.written {
            let kept = match digest {
                Some(_) if replays && replayed_since.exists(params![pipeline, key, w.since])? => {
                    None
                }
                kept => kept.as_ref(),
            };
            match kept {
                Some(digest) => {
                    set.execute(params![pipeline, w.sink, stream, key, &digest[..], now])?
                }
                None => unset.execute(params![pipeline, w.sink, stream, key])?,
            };
        }
        for (stream, key) in &w.unsure {
            unset.execute(params![pipeline, w.sink, stream, key])?;
        }
    }
    Ok(())
}

/// How long a replay's mark is kept: far longer than a page takes.
const REPLAYED_KEPT: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

/// Forgets what `pipeline` wrote of the records with `keys`, at every sink
/// and in every stream, and marks them replayed now: a replay writes them
/// past the runner. Called before the replay writes and again after, so
/// neither a page saved meanwhile nor one in progress keeps a digest of a
/// version older than the replay's. Marks older than a day go.
pub fn replayed<'a>(
    conn: &Connection,
    pipeline: &str,
    keys: impl IntoIterator<Item = &'a str>,
) -> rusqlite::Result<usize> {
    let mut forget =
        conn.prepare_cached("DELETE FROM sink_written WHERE pipeline = ?1 AND key = ?2")?;
    let mut mark = conn.prepare_cached(
        "INSERT INTO sink_replayed (pipeline, key, at) VALUES (?1, ?2, ?3)
         ON CONFLICT (pipeline, key) DO UPDATE SET at = excluded.at",
    )?;
    let now = crate::audit::now();
    let mut forgotten = 0;
    for key in keys {
        forgotten += forget.execute(params![pipeline, key])?;
        mark.execute(params![pipeline, key, now])?;
    }
    conn.prepare_cached("DELETE FROM sink_replayed WHERE pipeline = ?1 AND at < ?2")?
        .execute(params![pipeline, crate::audit::ago(REPLAYED_KEPT)])?;
    Ok(forgotten)
}

/// Forgets everything `pipeline` wrote: after a `pipeline reset` (the
/// source read anew is written anew, as an operator resetting for a
/// destination that lost data expects), and while it does not skip.
pub fn forget(conn: &Connection, pipeline: &str) -> rusqlite::Result<usize> {
    conn.prepare_cached("DELETE FROM sink_written WHERE pipeline = ?1")?
        .execute(params![pipeline])
}

/// Forgets at most `limit` rows of `pipeline`, no longer configured, once
/// it has no run left on record (as [`super::isolate::expire`]): while a
/// run is left, putting the pipeline back finds what its sinks hold.
pub fn expire(conn: &Connection, pipeline: &str, limit: usize) -> rusqlite::Result<usize> {
    conn.execute(
        "DELETE FROM sink_written WHERE (pipeline, key, sink, stream) IN
             (SELECT pipeline, key, sink, stream FROM sink_written WHERE pipeline = ?1
              AND NOT EXISTS (SELECT 1 FROM pipeline_run WHERE pipeline = ?1) LIMIT ?2)",
        params![pipeline, i64::try_from(limit).unwrap_or(i64::MAX)],
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(key: &str, data: &str) -> Record {
        Record {
            stream: "contacts".into(),
            key: key.into(),
            op: Op::Upsert,
            data: data.into(),
            source_timestamp: None,
        }
    }

    /// A page's time that no replay came after.
    const SINCE: &str = "9999-01-01T00:00:00.000000Z";

    fn deleted(key: &str) -> Record {
        Record {
            op: Op::Delete,
            ..record(key, "{}")
        }
    }

    /// What `sink` is given of `records` after `wrote` was written whole.
    fn given_after(wrote: &[Record], sink_as: &str, records: &[Record]) -> Vec<String> {
        let dir = tempfile::tempdir().unwrap();
        let conn = crate::db::open(&dir.path().join("db")).unwrap();
        let digests: Vec<Digest> = wrote.iter().map(|r| digest("sink#1", r)).collect();
        let writes = Writes::of(("sink", SINCE), wrote, &digests, &[]);
        remember(&conn, "p", &[writes]).unwrap();
        let ids: Vec<(String, String)> = records
            .iter()
            .map(|r| (r.stream.clone(), r.key.clone()))
            .collect();
        let known = known(&conn, "p", &["sink".into()], &ids).unwrap();
        let (given, digests, same) = known.split("sink", sink_as, records);
        assert_eq!(given.len(), digests.len());
        assert_eq!(same.iter().filter(|s| !**s).count(), given.len());
        given
            .iter()
            .map(|r| format!("{}={}", r.key, r.data))
            .collect()
    }

    #[test]
    fn a_sink_is_given_only_what_it_does_not_hold_as_it_is() {
        let wrote = [record("a", "1"), record("b", "1")];
        let now = [record("a", "1"), record("b", "2"), record("c", "1")];
        assert_eq!(given_after(&wrote, "sink#1", &now), ["b=2", "c=1"]);
        // Another build or configuration of the sink is given everything.
        assert_eq!(given_after(&wrote, "sink#2", &now).len(), 3);
        // A record's versions go together: all skipped when the last is
        // what the sink holds, all given otherwise.
        let versions = [record("a", "0"), record("a", "1"), record("b", "1")];
        assert!(given_after(&wrote, "sink#1", &versions).is_empty());
        let versions = [record("a", "1"), record("a", "2")];
        assert_eq!(given_after(&wrote, "sink#1", &versions), ["a=1", "a=2"]);
        // A delete is given, and once written leaves nothing to compare.
        assert_eq!(given_after(&wrote, "sink#1", &[deleted("a")]), ["a={}"]);
        let wrote = [record("a", "1"), deleted("a")];
        assert_eq!(given_after(&wrote, "sink#1", &[record("a", "1")]), ["a=1"]);
    }

    #[test]
    fn a_record_the_sink_refused_any_version_of_is_forgotten() {
        let given = [record("a", "1"), record("a", "2"), record("b", "1")];
        let digests: Vec<Digest> = given.iter().map(|r| digest("s", r)).collect();
        let refused = [(record("a", "1"), "no".to_string())];
        let writes = Writes::of(("sink", SINCE), &given, &digests, &refused);
        assert_eq!(writes.unsure, [("contacts".to_string(), "a".to_string())]);
        assert_eq!(
            writes.written,
            [("contacts".into(), "b".into(), Some(digests[2]))]
        );

        let dir = tempfile::tempdir().unwrap();
        let conn = crate::db::open(&dir.path().join("db")).unwrap();
        let all = Writes::of(("sink", SINCE), &given, &digests, &[]);
        assert_eq!(all.written[0].2, Some(digests[1]), "the last version");
        remember(&conn, "p", &[all]).unwrap();
        remember(&conn, "p", &[writes]).unwrap();
        let ids = [
            ("contacts".to_string(), "a".to_string()),
            ("contacts".into(), "b".into()),
        ];
        let known = known(&conn, "p", &["sink".into()], &ids).unwrap();
        assert_eq!(
            known.held["sink"],
            [None, Some(digests[2])],
            "a forgotten, b kept"
        );
        // A replay forgets a record at every sink; a reset, everything.
        let other = Writes {
            sink: "other".into(),
            since: SINCE.into(),
            written: vec![("contacts".into(), "b".into(), Some([1; 16]))],
            unsure: Vec::new(),
        };
        remember(&conn, "p", &[other]).unwrap();
        assert_eq!(replayed(&conn, "p", ["b"]).unwrap(), 2);
        // A page that read what the sinks held after the replay saves all.
        let after = crate::audit::now();
        remember(
            &conn,
            "p",
            &[Writes::of(("sink", &after), &given, &digests, &[])],
        )
        .unwrap();
        assert_eq!(forget(&conn, "q").unwrap(), 0);
        assert_eq!(forget(&conn, "p").unwrap(), 2);
    }

    /// A page in progress while a replay wrote the same record past it:
    /// what the page wrote of it may be older than what the replay wrote,
    /// so it is not saved, whichever of the two saved first.
    #[test]
    fn a_page_that_began_before_a_replay_saves_nothing_of_the_records_replayed() {
        let dir = tempfile::tempdir().unwrap();
        let conn = crate::db::open(&dir.path().join("db")).unwrap();
        let given = [record("a", "2"), record("b", "2")];
        let digests: Vec<Digest> = given.iter().map(|r| digest("s", r)).collect();
        let ids: Vec<(String, String)> = given
            .iter()
            .map(|r| (r.stream.clone(), r.key.clone()))
            .collect();
        let held = |conn: &Connection| known(conn, "p", &["sink".into()], &ids).unwrap();
        // The page reads what the sinks hold, then a replay writes `a`.
        let page = held(&conn);
        replayed(&conn, "p", ["a"]).unwrap();
        let wrote = Writes::of(("sink", &page.since), &given, &digests, &[]);
        remember(&conn, "p", &[wrote]).unwrap();
        assert_eq!(held(&conn).held["sink"], [None, Some(digests[1])]);
        // The page saved first: the replay's mark after its writes
        // forgets it.
        let page = held(&conn);
        let wrote = Writes::of(("sink", &page.since), &given, &digests, &[]);
        remember(&conn, "p", &[wrote]).unwrap();
        assert_eq!(
            held(&conn).held["sink"],
            [Some(digests[0]), Some(digests[1])]
        );
        replayed(&conn, "p", ["a"]).unwrap();
        assert_eq!(held(&conn).held["sink"], [None, Some(digests[1])]);
        // Marks older than a day go with the next replay.
        conn.execute(
            "UPDATE sink_replayed SET at = '2000-01-01T00:00:00.000000Z'",
            [],
        )
        .unwrap();
        replayed(&conn, "p", ["b"]).unwrap();
        let marks: Vec<String> = conn
            .prepare("SELECT key FROM sink_replayed")
            .unwrap()
            .query_map([], |row| row.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(marks, ["b"]);
    }

    #[test]
    fn no_two_records_share_a_digest_by_moving_bytes_between_parts() {
        let ab = Record {
            stream: "a".into(),
            ..record("bc", "{}")
        };
        let a_b = Record {
            stream: "ab".into(),
            ..record("c", "{}")
        };
        assert_ne!(digest("s", &ab), digest("s", &a_b));
        assert_ne!(digest("s", &record("a", "{}")), digest("s", &deleted("a")));
    }
}
