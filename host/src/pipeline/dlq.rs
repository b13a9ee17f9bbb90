//! The dead-letter queue: records a sink rejected (or a transform could not
//! map), kept in SQLite (with a retention) until an operator replays them.

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
}

impl Stage {
    /// `sink` or `transform`, as stored.
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Sink => "sink",
            Stage::Transform => "transform",
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
    /// `upsert` or `delete`.
    pub op: String,
    /// The record's data (JSON text).
    pub data: String,
    /// The source timestamp, if known.
    pub source_timestamp: Option<i64>,
    /// Why the sink rejected it, last time.
    pub reason: String,
    /// The run that rejected it first.
    pub run_id: Option<i64>,
    /// When it was first rejected.
    pub created_at: String,
    /// How many times a sink rejected it.
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

/// Adds a record `plugin`, a stage of kind `stage`, set aside (inside the
/// caller's transaction).
pub fn insert(
    conn: &Connection,
    pipeline: &str,
    (plugin, stage): (&str, Stage),
    record: &Record,
    reason: &str,
    run_id: Option<i64>,
) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT INTO dead_letter (pipeline, sink, stream, key, op, data, source_timestamp, reason, run_id, created_at, stage)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
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
    ])?;
    Ok(())
}

/// The dead letters, oldest first; of one pipeline, or all.
pub fn list(conn: &Connection, pipeline: Option<&str>) -> rusqlite::Result<Vec<DeadLetter>> {
    let mut stmt = conn.prepare(
        "SELECT id, pipeline, sink, stream, key, op, data, source_timestamp, reason, run_id, created_at, attempts, stage
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
            stage: if row.get_ref(12)?.as_str()? == "transform" {
                Stage::Transform
            } else {
                Stage::Sink
            },
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
