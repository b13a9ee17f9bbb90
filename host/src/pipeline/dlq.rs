//! The dead-letter queue: records a sink rejected (or a transform could not
//! map), kept in SQLite (with a retention) until an operator replays them.
//!
//! A letter holds one version of a record, and only the newest is worth
//! replaying: replaying an older one would write old data over new. So a
//! stage that sets a record aside again replaces its letter ([`insert`]),
//! and one that takes a newer version of it forgets the letter
//! ([`supersede`]): the queue holds at most one letter per record and
//! stage, never one older than what that stage last took. Across stages,
//! a letter names the source record it is a version of (its `origin`:
//! the stream the source answered it in, and its key, which a record keeps
//! through every transform): once a newer version of that record has come
//! through the pipeline, whatever happened to it (taken, set aside at
//! another stage, dropped by a transform), the older letters of every
//! stage are forgotten ([`forget_older`]).

use std::collections::HashMap;

use rusqlite::{Connection, params};
use serde::Serialize;

use crate::bindings::{Op, Record};

/// The kind of stage that set a record aside.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Stage {
    /// A sink rejected it (or would never take it): a replay writes it to
    /// that sink again.
    Sink,
    /// A transform failed on it alone: a replay maps it from that transform
    /// on and writes it to every sink of the pipeline.
    Transform,
    /// The source answered it breaking the contract (no key, data that is
    /// not a JSON object): a replay, were it mended, would take it through
    /// the whole pipeline; as it is, it is there to be seen and dropped.
    Source,
}

impl Stage {
    /// `sink` or `transform`, as stored.
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Sink => "sink",
            Stage::Transform => "transform",
            Stage::Source => "source",
        }
    }
}

/// One dead letter.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DeadLetter {
    /// Its id, for `causeway dlq replay ID`.
    pub id: i64,
    /// The pipeline.
    pub pipeline: String,
    /// The plugin that set it aside: the sink, or the transform when
    /// `stage` says so (the name is kept for the JSON of earlier versions).
    pub sink: String,
    /// Which kind of stage that plugin was.
    pub stage: Stage,
    /// The record's stream.
    pub stream: String,
    /// The record's key.
    pub key: String,
    /// The source's stream of the record this letter is a version of
    /// ([`Origins`]); none when not known (set aside before causeway
    /// recorded it, or the page held its key in several streams).
    pub origin: Option<String>,
    /// `upsert` or `delete`.
    pub op: String,
    /// The record's data (JSON text).
    pub data: String,
    /// The source timestamp, if known.
    pub source_timestamp: Option<i64>,
    /// Why its stage set it aside, last time.
    pub reason: String,
    /// The run that set this version of the record aside (none: a replay).
    pub run_id: Option<i64>,
    /// When this version of the record was set aside.
    pub created_at: String,
    /// How many times its stage failed the record: set aside, rejected
    /// again by a replay, or a newer version set aside in its place.
    pub attempts: i64,
}

impl DeadLetter {
    /// The record to write again.
    pub fn record(&self) -> Record {
        Record {
            stream: self.stream.clone(),
            key: self.key.clone(),
            op: if self.op == "delete" {
                Op::Delete
            } else {
                Op::Upsert
            },
            data: self.data.clone(),
            source_timestamp: self.source_timestamp,
        }
    }
}

/// Why a record the source `plugin` answered breaking the contract
/// (`problems`) is set aside.
pub fn broken_by_source(plugin: &str, problems: &[crate::contract::RecordProblem]) -> String {
    let problems: Vec<String> = problems.iter().map(ToString::to_string).collect();
    format!(
        "set aside: source {plugin} answered it breaking the contract: the record {}",
        problems.join("; ")
    )
}

/// Adds a record `plugin`, a stage of kind `stage`, set aside (inside the
/// caller's transaction); `origin` is the source's stream of the record it
/// is a version of (none: not known, [`Origins`]). It replaces the letter that stage set aside
/// before for the same record (stream and key), if any, and goes on
/// counting its attempts: whether it replaced one.
pub fn insert(
    conn: &Connection,
    pipeline: &str,
    (plugin, stage): (&str, Stage),
    record: &Record,
    origin: Option<&str>,
    reason: &str,
    run_id: Option<i64>,
) -> rusqlite::Result<bool> {
    let before: Option<i64> = conn
        .prepare_cached(
            "DELETE FROM dead_letter
             WHERE pipeline = ?1 AND key = ?2 AND stream = ?3 AND sink = ?4 AND stage = ?5
             RETURNING attempts",
        )?
        .query_map(
            params![pipeline, record.key, record.stream, plugin, stage.as_str()],
            |row| row.get::<_, i64>(0),
        )?
        .collect::<rusqlite::Result<Vec<i64>>>()?
        .into_iter()
        .max();
    conn.prepare_cached(
        "INSERT INTO dead_letter (pipeline, sink, stream, key, op, data, source_timestamp, reason, run_id, created_at, stage, attempts, origin)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
    )?
    .execute(params![
        pipeline,
        plugin,
        record.stream,
        record.key,
        match record.op {
            Op::Upsert => "upsert",
            Op::Delete => "delete",
        },
        record.data,
        record.source_timestamp,
        reason,
        run_id,
        crate::audit::now(),
        stage.as_str(),
        before.unwrap_or(0).saturating_add(1),
        origin,
    ])?;
    Ok(before.is_some())
}

/// Forgets the letters `plugin`, a stage of kind `stage`, set aside for
/// `records` (streams and keys) it has now taken newer versions of (inside
/// the caller's transaction): how many.
pub fn supersede<'a>(
    conn: &Connection,
    pipeline: &str,
    (plugin, stage): (&str, Stage),
    records: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> rusqlite::Result<usize> {
    let mut statement = conn.prepare_cached(
        "DELETE FROM dead_letter
         WHERE pipeline = ?1 AND key = ?2 AND stream = ?3 AND sink = ?4 AND stage = ?5",
    )?;
    let mut forgotten = 0;
    for (stream, key) in records {
        forgotten += statement.execute(params![pipeline, key, stream, plugin, stage.as_str()])?;
    }
    Ok(forgotten)
}

/// Forgets the letters of `pipeline` older than its letter `newest` (an
/// id: those set aside after it are kept) that are versions of the source's
/// `records` (origin streams and keys), inside the caller's transaction: a
/// newer version of each has come through the pipeline since. How many.
pub fn forget_older<'a>(
    conn: &Connection,
    pipeline: &str,
    records: impl IntoIterator<Item = (&'a str, &'a str)>,
    newest: i64,
) -> rusqlite::Result<usize> {
    let mut statement = conn.prepare_cached(
        "DELETE FROM dead_letter
         WHERE pipeline = ?1 AND key = ?2 AND origin = ?3 AND id <= ?4",
    )?;
    let mut forgotten = 0;
    for (origin, key) in records {
        forgotten += statement.execute(params![pipeline, key, origin, newest])?;
    }
    Ok(forgotten)
}

/// The id of the newest letter there is (0: none ever): what a commit sets
/// aside comes after it (ids only grow).
pub fn newest(conn: &Connection) -> rusqlite::Result<i64> {
    conn.prepare_cached("SELECT MAX(id) FROM dead_letter")?
        .query_row([], |row| row.get::<_, Option<i64>>(0))
        .map(|id| id.unwrap_or(0))
}

/// The source's stream each key of a page came in. A record keeps its key
/// through the transforms (each answers only keys it was given), so what
/// any stage sets aside is a version of the source record of its key,
/// unless the page held that key in several streams.
#[derive(Debug)]
pub enum Origins {
    /// Every record in one stream (a page read: the usual case), so
    /// nothing is kept by key.
    One(String),
    /// Records of several streams (webhook deliveries of contacts and
    /// deals): each key's stream; none for a key in several.
    Several(HashMap<String, Option<String>>),
}

impl Origins {
    /// The origins of the records a source answered.
    pub fn of(records: &[Record]) -> Origins {
        if let Some(first) = records.first()
            && records.iter().all(|r| r.stream == first.stream)
        {
            return Origins::One(first.stream.clone());
        }
        let mut origins: HashMap<String, Option<String>> = HashMap::with_capacity(records.len());
        for r in records {
            match origins.get_mut(r.key.as_str()) {
                None => {
                    origins.insert(r.key.clone(), Some(r.stream.clone()));
                }
                Some(origin) => {
                    if origin.as_deref() != Some(r.stream.as_str()) {
                        *origin = None;
                    }
                }
            }
        }
        Origins::Several(origins)
    }

    /// The source's stream of the record `key` (one of the page's keys)
    /// is a version of, if it is known.
    pub fn of_key(&self, key: &str) -> Option<&str> {
        match self {
            Origins::One(stream) => Some(stream),
            Origins::Several(origins) => origins.get(key).and_then(Option::as_deref),
        }
    }
}

/// Past this many letters a page's records are looked up in the database
/// rather than among the letters read when it starts.
const FEW: usize = 1000;

/// Where one letter was set aside, as [`Queued`] holds it.
#[derive(Debug)]
pub struct Lettered {
    plugin: String,
    stage: Stage,
    stream: String,
    origin: Option<String>,
}

/// A pipeline's dead letters as a page starts: which of its records may
/// supersede one ([`supersede`], [`forget_older`]).
#[derive(Debug, Default)]
pub enum Queued {
    /// None: nothing to look up (the usual case).
    #[default]
    None,
    /// A few, by key.
    Few(HashMap<String, Vec<Lettered>>),
    /// More than a few: every record is looked up.
    Many,
}

impl Queued {
    /// The streams and keys of `records` that `plugin`, a stage of kind
    /// `stage`, may have a letter of.
    pub fn of(&self, (plugin, stage): (&str, Stage), records: &[Record]) -> Vec<(String, String)> {
        let lettered = |r: &&Record| match self {
            Queued::None => false,
            Queued::Few(letters) => letters.get(r.key.as_str()).is_some_and(|at| {
                at.iter()
                    .any(|l| l.plugin == plugin && l.stage == stage && l.stream == r.stream)
            }),
            Queued::Many => true,
        };
        records
            .iter()
            .filter(lettered)
            .map(|r| (r.stream.clone(), r.key.clone()))
            .collect()
    }

    /// The source's `records` (of `origins`) that may have letters of
    /// older versions, at any stage ([`forget_older`]): origin streams and
    /// keys, each once.
    pub fn older_versions(&self, records: &[Record], origins: &Origins) -> Vec<(String, String)> {
        let lettered = |key: &str, origin: &str| match self {
            Queued::None => false,
            Queued::Few(letters) => letters
                .get(key)
                .is_some_and(|at| at.iter().any(|l| l.origin.as_deref() == Some(origin))),
            Queued::Many => true,
        };
        if matches!(self, Queued::None) {
            return Vec::new();
        }
        let mut seen = std::collections::HashSet::new();
        records
            .iter()
            .filter_map(|r| Some((r.key.as_str(), origins.of_key(&r.key)?)))
            .filter(|&(key, origin)| lettered(key, origin) && seen.insert((key, origin)))
            .map(|(key, origin)| (origin.to_string(), key.to_string()))
            .collect()
    }
}

/// `pipeline`'s letters, as [`Queued`].
pub fn queued(conn: &Connection, pipeline: &str) -> rusqlite::Result<Queued> {
    let mut statement = conn.prepare_cached(
        "SELECT key, sink, stage, stream, origin FROM dead_letter WHERE pipeline = ?1 LIMIT ?2",
    )?;
    let mut rows = statement.query(params![pipeline, FEW as i64 + 1])?;
    let mut letters: HashMap<String, Vec<Lettered>> = HashMap::new();
    let mut count = 0;
    while let Some(row) = rows.next()? {
        count += 1;
        if count > FEW {
            return Ok(Queued::Many);
        }
        letters.entry(row.get(0)?).or_default().push(Lettered {
            plugin: row.get(1)?,
            stage: stage_of(row.get_ref(2)?.as_str()?),
            stream: row.get(3)?,
            origin: row.get(4)?,
        });
    }
    Ok(if letters.is_empty() {
        Queued::None
    } else {
        Queued::Few(letters)
    })
}

fn stage_of(stored: &str) -> Stage {
    match stored {
        "transform" => Stage::Transform,
        "source" => Stage::Source,
        _ => Stage::Sink,
    }
}

/// The records of `batch` whose stream and key come more than once in it,
/// in order: versions of one record in one page (a contact edited twice
/// between two reads of a webhook inbox). Empty when every key is unique,
/// the usual case, at the cost of a set of borrowed keys.
pub fn repeated(batch: &[Record]) -> Vec<Record> {
    let mut seen = std::collections::HashSet::with_capacity(batch.len());
    let twice: std::collections::HashSet<(&str, &str)> = batch
        .iter()
        .map(|r| (r.stream.as_str(), r.key.as_str()))
        .filter(|k| !seen.insert(*k))
        .collect();
    if twice.is_empty() {
        return Vec::new();
    }
    batch
        .iter()
        .filter(|r| twice.contains(&(r.stream.as_str(), r.key.as_str())))
        .cloned()
        .collect()
}

/// Of the records a stage set `aside` from a batch, those to keep as
/// letters: all, but where the batch held several versions of a record
/// ([`repeated`]), only the newest, if it is among them. An older version
/// set aside beside a newer one the stage took is stale already.
pub fn newest_only<T>(repeated: &[Record], aside: Vec<(Record, T)>) -> Vec<(Record, T)> {
    if repeated.is_empty() {
        return aside;
    }
    let mut kept: Vec<(Record, T)> = Vec::with_capacity(aside.len());
    for (record, why) in aside {
        let newest = repeated
            .iter()
            .rev()
            .find(|r| r.stream == record.stream && r.key == record.key);
        let already = kept
            .iter()
            .any(|(k, _)| k.stream == record.stream && k.key == record.key);
        if newest.is_none_or(|newest| *newest == record) && !already {
            kept.push((record, why));
        }
    }
    kept
}

/// The dead letters, oldest first; of one pipeline, or all.
pub fn list(conn: &Connection, pipeline: Option<&str>) -> rusqlite::Result<Vec<DeadLetter>> {
    let mut stmt = conn.prepare(
        "SELECT id, pipeline, sink, stream, key, op, data, source_timestamp, reason, run_id, created_at, attempts, stage, origin
         FROM dead_letter WHERE ?1 IS NULL OR pipeline = ?1 ORDER BY id",
    )?;
    let rows = stmt.query_map(params![pipeline], |row| {
        Ok(DeadLetter {
            id: row.get(0)?,
            pipeline: row.get(1)?,
            sink: row.get(2)?,
            stream: row.get(3)?,
            key: row.get(4)?,
            op: row.get(5)?,
            data: row.get(6)?,
            source_timestamp: row.get(7)?,
            reason: row.get(8)?,
            run_id: row.get(9)?,
            created_at: row.get(10)?,
            attempts: row.get(11)?,
            stage: stage_of(row.get_ref(12)?.as_str()?),
            origin: row.get(13)?,
        })
    })?;
    rows.collect()
}

/// How many dead letters `pipeline` has.
pub fn count(conn: &Connection, pipeline: &str) -> rusqlite::Result<u64> {
    conn.prepare_cached("SELECT COUNT(*) FROM dead_letter WHERE pipeline = ?1")?
        .query_row([pipeline], |r| r.get(0))
}

/// Forgets a dead letter (written after all, or dropped): whether it was
/// there.
pub fn delete(conn: &Connection, id: i64) -> rusqlite::Result<bool> {
    Ok(conn.execute("DELETE FROM dead_letter WHERE id = ?1", params![id])? > 0)
}

/// Records that a replay was rejected again.
pub fn rejected_again(conn: &Connection, id: i64, reason: &str) -> rusqlite::Result<()> {
    conn.execute(
        "UPDATE dead_letter SET reason = ?2, attempts = attempts + 1 WHERE id = ?1",
        params![id, reason],
    )?;
    Ok(())
}

/// Drops the dead letters of `pipeline` older than `cutoff` (RFC 3339), at
/// most `limit` of them.
pub fn expire(
    conn: &Connection,
    pipeline: &str,
    cutoff: &str,
    limit: usize,
) -> rusqlite::Result<usize> {
    conn.execute(
        "DELETE FROM dead_letter WHERE id IN (SELECT id FROM dead_letter
             WHERE pipeline = ?1 AND created_at < ?2 LIMIT ?3)",
        params![pipeline, cutoff, i64::try_from(limit).unwrap_or(i64::MAX)],
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(stream: &str, key: &str, data: &str) -> Record {
        Record {
            stream: stream.into(),
            key: key.into(),
            op: Op::Upsert,
            data: data.into(),
            source_timestamp: None,
        }
    }

    /// The letters as (stage's plugin, stage, stream, key, data, attempts).
    fn letters(conn: &Connection) -> Vec<(String, &'static str, String, String, String, i64)> {
        list(conn, None)
            .unwrap()
            .into_iter()
            .map(|l| {
                (
                    l.sink,
                    l.stage.as_str(),
                    l.stream,
                    l.key,
                    l.data,
                    l.attempts,
                )
            })
            .collect()
    }

    fn row(
        plugin: &str,
        stage: Stage,
        key: &str,
        data: &str,
        attempts: i64,
    ) -> (String, &'static str, String, String, String, i64) {
        (
            plugin.into(),
            stage.as_str(),
            "contacts".into(),
            key.into(),
            data.into(),
            attempts,
        )
    }

    /// Sets `stream`/`key` (holding `data`) aside at `stage` of `pipeline`:
    /// whether it replaced a letter.
    fn put(conn: &Connection, pipeline: &str, stage: (&str, Stage), at: [&str; 3]) -> bool {
        let [stream, key, data] = at;
        insert(
            conn,
            pipeline,
            stage,
            &record(stream, key, data),
            Some(stream),
            "no",
            None,
        )
        .unwrap()
    }

    #[test]
    fn a_record_set_aside_again_replaces_its_letter_and_goes_on_counting() {
        let dir = tempfile::tempdir().unwrap();
        let conn = crate::db::open(&dir.path().join("db")).unwrap();
        let mailer = ("mailer", Stage::Sink);
        assert!(matches!(queued(&conn, "p").unwrap(), Queued::None));
        assert!(!put(&conn, "p", mailer, ["contacts", "c1", "v1"]));
        assert!(matches!(queued(&conn, "q").unwrap(), Queued::None));
        // Beside it: another key, stream, stage, plugin and pipeline.
        let map = ("mapper", Stage::Transform);
        let calendar = ("calendar", Stage::Sink);
        for (pipeline, stage, at) in [
            ("p", mailer, ["contacts", "c2", "v1"]),
            ("p", mailer, ["people", "c1", "v1"]),
            ("p", map, ["contacts", "c1", "v1"]),
            ("p", calendar, ["contacts", "c1", "v1"]),
            ("q", mailer, ["contacts", "c1", "v1"]),
        ] {
            assert!(!put(&conn, pipeline, stage, at));
        }

        assert!(put(&conn, "p", mailer, ["contacts", "c1", "v2"]));
        assert!(put(&conn, "p", mailer, ["contacts", "c1", "v3"]));
        let p: Vec<_> = letters(&conn)
            .into_iter()
            .filter(|l| l.3 == "c1" && l.2 == "contacts" && l.0 == "mailer")
            .collect();
        // One letter of c1 at the mailer in each pipeline: p's the newest,
        // its third time.
        assert_eq!(
            p,
            [
                row("mailer", Stage::Sink, "c1", "v1", 1),
                row("mailer", Stage::Sink, "c1", "v3", 3),
            ]
        );
        assert_eq!(list(&conn, Some("p")).unwrap().len(), 5);
    }

    #[test]
    fn a_letter_is_forgotten_once_its_stage_takes_a_newer_version_of_its_record() {
        let dir = tempfile::tempdir().unwrap();
        let conn = crate::db::open(&dir.path().join("db")).unwrap();
        let (mailer, map) = (("mailer", Stage::Sink), ("mapper", Stage::Transform));
        for (stage, key) in [(mailer, "c1"), (mailer, "c2"), (map, "c1"), (mailer, "c3")] {
            put(&conn, "p", stage, ["contacts", key, "v1"]);
        }
        put(&conn, "q", mailer, ["contacts", "c1", "v1"]);

        // The mailer took c1 and c3 (and c9, which had no letter) of
        // stream contacts, and c2 of another stream.
        let took = [
            ("contacts", "c1"),
            ("contacts", "c3"),
            ("contacts", "c9"),
            ("people", "c2"),
        ];
        assert_eq!(supersede(&conn, "p", mailer, took).unwrap(), 2);
        assert_eq!(
            letters(&conn),
            [
                row("mailer", Stage::Sink, "c2", "v1", 1),
                row("mapper", Stage::Transform, "c1", "v1", 1),
                row("mailer", Stage::Sink, "c1", "v1", 1),
            ]
        );
        assert_eq!(list(&conn, Some("q")).unwrap().len(), 1);
        // The transform's letter goes once it maps c1.
        assert_eq!(supersede(&conn, "p", map, [("contacts", "c1")]).unwrap(), 1);
        assert_eq!(list(&conn, Some("p")).unwrap().len(), 1);
    }

    #[test]
    fn a_page_looks_up_only_the_records_its_stages_have_letters_of() {
        let dir = tempfile::tempdir().unwrap();
        let conn = crate::db::open(&dir.path().join("db")).unwrap();
        let (mailer, map) = (("mailer", Stage::Sink), ("mapper", Stage::Transform));
        put(&conn, "p", mailer, ["contacts", "c1", "v1"]);
        put(&conn, "p", map, ["contacts", "c2", "v1"]);
        let page: Vec<Record> = ["c1", "c2", "c3"]
            .iter()
            .map(|k| record("contacts", k, "v2"))
            .chain([record("people", "c1", "v2")])
            .collect();
        let keys = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
            pairs
                .iter()
                .map(|(s, k)| (s.to_string(), k.to_string()))
                .collect()
        };
        let queued = queued(&conn, "p").unwrap();
        assert!(matches!(queued, Queued::Few(_)), "{queued:?}");
        assert_eq!(queued.of(mailer, &page), keys(&[("contacts", "c1")]));
        assert_eq!(queued.of(map, &page), keys(&[("contacts", "c2")]));
        assert_eq!(queued.of(("calendar", Stage::Sink), &page), keys(&[]));
        assert_eq!(Queued::None.of(mailer, &page), keys(&[]));

        // Past a thousand letters, every record is looked up.
        for i in 0..FEW {
            put(&conn, "p", mailer, ["contacts", &format!("x{i}"), "v1"]);
        }
        let queued = super::queued(&conn, "p").unwrap();
        assert!(matches!(queued, Queued::Many), "{queued:?}");
        assert_eq!(queued.of(map, &page[..1]), keys(&[("contacts", "c1")]));
    }

    #[test]
    fn a_newer_version_forgets_the_older_letters_of_its_record_at_every_stage() {
        let dir = tempfile::tempdir().unwrap();
        let conn = crate::db::open(&dir.path().join("db")).unwrap();
        let (mailer, map) = (("mailer", Stage::Sink), ("mapper", Stage::Transform));
        // c1's letters at two stages, one in another stream than its
        // source's (what the transform made of it); c2's; c1 of another
        // source stream; c1 of another pipeline; and one of unknown origin.
        put(&conn, "p", map, ["contacts", "c1", "v1"]);
        insert(
            &conn,
            "p",
            mailer,
            &record("subscribers", "c1", "v1"),
            Some("contacts"),
            "no",
            None,
        )
        .unwrap();
        put(&conn, "p", mailer, ["contacts", "c2", "v1"]);
        put(&conn, "p", mailer, ["people", "c1", "v1"]);
        put(&conn, "q", mailer, ["contacts", "c1", "v1"]);
        insert(
            &conn,
            "p",
            ("cal", Stage::Sink),
            &record("events", "c1", "v1"),
            None,
            "no",
            None,
        )
        .unwrap();

        // A page with c1 of contacts, and c3 in two streams (unknown).
        let page = [
            record("contacts", "c1", "v2"),
            record("contacts", "c3", "v2"),
            record("people", "c3", "v2"),
        ];
        let origins = Origins::of(&page);
        assert_eq!(origins.of_key("c1"), Some("contacts"));
        assert_eq!(origins.of_key("c3"), None);
        assert_eq!(origins.of_key("c9"), None);
        let pairs = |v: Vec<(String, String)>| -> Vec<String> {
            let mut v: Vec<String> = v.into_iter().map(|(o, k)| format!("{o}/{k}")).collect();
            v.sort();
            v
        };
        let queued = queued(&conn, "p").unwrap();
        assert_eq!(
            pairs(queued.older_versions(&page, &origins)),
            ["contacts/c1"]
        );
        assert!(Queued::None.older_versions(&page, &origins).is_empty());
        assert_eq!(
            pairs(Queued::Many.older_versions(&page, &origins)),
            ["contacts/c1"]
        );
        // A page of one stream (the usual case) keeps nothing by key.
        let read = [
            record("contacts", "c1", "v2"),
            record("contacts", "c1", "v3"),
        ];
        let one = Origins::of(&read);
        assert!(matches!(one, Origins::One(_)), "{one:?}");
        assert_eq!(one.of_key("c1"), Some("contacts"));
        assert_eq!(pairs(queued.older_versions(&read, &one)), ["contacts/c1"]);
        assert!(matches!(Origins::of(&[]), Origins::Several(_)));

        // This page sets c1 aside again at the mailer: that letter stays.
        let newest = newest(&conn).unwrap();
        insert(
            &conn,
            "p",
            mailer,
            &record("subscribers", "c1", "v2"),
            Some("contacts"),
            "no",
            None,
        )
        .unwrap();
        assert_eq!(
            forget_older(&conn, "p", [("contacts", "c1")], newest).unwrap(),
            1
        );
        let left: Vec<String> = list(&conn, None)
            .unwrap()
            .into_iter()
            .map(|l| {
                format!(
                    "{}:{}/{}={}@{}",
                    l.pipeline, l.stream, l.key, l.data, l.sink
                )
            })
            .collect();
        assert_eq!(
            left,
            [
                "p:contacts/c2=v1@mailer",
                "p:people/c1=v1@mailer",
                "q:contacts/c1=v1@mailer",
                "p:events/c1=v1@cal",
                "p:subscribers/c1=v2@mailer",
            ]
        );
        let kept = list(&conn, Some("p")).unwrap();
        let last = kept.last().unwrap();
        assert_eq!(
            (last.origin.as_deref(), last.attempts),
            (Some("contacts"), 2)
        );
    }

    #[test]
    fn of_several_versions_in_one_batch_only_the_newest_set_aside_is_a_letter() {
        let batch = [
            record("contacts", "a", "a1"),
            record("contacts", "b", "b1"),
            record("contacts", "a", "a2"),
            record("contacts", "c", "c1"),
            record("people", "a", "a1"),
            record("contacts", "c", "c2"),
            record("contacts", "d", "d1"),
            record("contacts", "d", "d1"),
        ];
        assert!(repeated(&batch[..2]).is_empty());
        let repeated = repeated(&batch);
        let keys: Vec<&str> = repeated.iter().map(|r| r.data.as_str()).collect();
        assert_eq!(keys, ["a1", "a2", "c1", "c2", "d1", "d1"]);
        let aside = |data: &[&str]| -> Vec<(Record, ())> {
            data.iter()
                .map(|d| {
                    let r = batch.iter().find(|r| r.data == *d).unwrap().clone();
                    (r, ())
                })
                .collect()
        };
        let kept = |aside: Vec<(Record, ())>| -> Vec<String> {
            newest_only(&repeated, aside)
                .into_iter()
                .map(|(r, ())| format!("{}/{}", r.stream, r.data))
                .collect()
        };
        // a1 is older than a2, which the stage took; c2 is the newest of
        // c, taken or not; b and people/a come once; d twice the same.
        assert_eq!(
            kept(aside(&["a1", "b1", "c1", "c2", "d1", "d1"])),
            ["contacts/b1", "contacts/c2", "contacts/d1"]
        );
        let people = vec![(batch[4].clone(), ())];
        assert_eq!(kept(people), ["people/a1"]);
        assert!(newest_only(&[], aside(&["a1"])).len() == 1);
    }
}
