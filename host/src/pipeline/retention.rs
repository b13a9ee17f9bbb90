//! Retention: what each pipeline keeps of its past (runs, dead letters,
//! processed webhook deliveries, counts of records a sink would not take,
//! stages proven, versions let through, what a removed pipeline's sinks
//! were given) is forgotten once past its configured age, a chunk per
//! transaction.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use crate::audit::ago;
use crate::db::DbError;

use super::{Shared, config, dlq, history, isolate, stuck, unchanged, versions};

/// The most rows one transaction of [`expire`] deletes: a first expiry of
/// a long backlog (a retention shortened, webhook bodies of up to 1 MiB
/// each) would otherwise hold the database from pipelines' commits for as
/// long as it takes.
const EXPIRE_CHUNK: usize = 10_000;

/// Forgets what is past its pipeline's retention: runs past
/// `runs-retention` or `runs-keep`; dead letters, processed webhook
/// deliveries, counts of records a sink would not take and versions of
/// records let through past `dlq-retention` (a pipeline no longer
/// configured: the defaults), in
/// transactions of at most [`EXPIRE_CHUNK`] rows. A failure is logged, not
/// fatal.
pub(super) async fn expire(shared: &Shared) {
    let retention: BTreeMap<String, Retention> = shared
        .live
        .snapshot()
        .config
        .pipelines
        .iter()
        .map(|(name, p)| {
            let retention = Retention {
                runs: p.runs_retention.0,
                runs_keep: p.runs_keep.get(),
                letters: p.dlq_retention.0,
            };
            (name.clone(), retention)
        })
        .collect();
    // The pipelines on record and their cutoffs, once: the chunks after
    // need not look for them again.
    let planned = shared
        .db
        .transact(move |conn| Ok::<_, DbError>(expiries(conn, &retention)?))
        .await;
    let expiries = match planned {
        Ok(expiries) => Arc::new(expiries),
        Err(e) => {
            tracing::error!("cannot forget what is past its retention: {e}");
            return;
        }
    };
    let mut total = [0; 7];
    loop {
        let expiries = expiries.clone();
        let result = shared
            .db
            .transact(move |conn| Ok::<_, DbError>(expire_some(conn, &expiries, EXPIRE_CHUNK)?))
            .await;
        match result {
            Ok((expired, more)) => {
                for (total, expired) in total.iter_mut().zip(expired) {
                    *total += expired;
                }
                if !more || shared.stop.is_set() {
                    break;
                }
            }
            Err(e) => {
                tracing::error!("cannot forget what is past its retention: {e}");
                break;
            }
        }
    }
    if let [runs, letters, deliveries, counts, stages, versions, written] = total
        && runs + letters + deliveries + counts + stages + versions + written > 0
    {
        tracing::info!(
            "past their retention, forgotten: {runs} pipeline runs, {letters} dead letters, {deliveries} processed webhook deliveries, {counts} counts of records a sink would not take, {stages} stages proven by pipelines no longer configured, {versions} versions of records a webhook pipeline let through, {written} records the sinks of pipelines no longer configured were given"
        );
    }
}

/// How long a pipeline keeps what, as configured.
#[derive(Debug, Clone, Copy)]
struct Retention {
    runs: Duration,
    runs_keep: usize,
    letters: Duration,
}

/// What [`expire`] forgets of one pipeline: what is older than these.
#[derive(Debug)]
struct Expiry {
    pipeline: String,
    runs_before: String,
    runs_keep: usize,
    letters_before: String,
    /// A configured pipeline keeps its last runs, whatever their age.
    keep_last: bool,
}

/// The pipelines with anything on record, each with its retention
/// (`retention`, by name; a pipeline no longer configured: the defaults).
fn expiries(
    conn: &rusqlite::Connection,
    retention: &BTreeMap<String, Retention>,
) -> rusqlite::Result<Vec<Expiry>> {
    Ok(history::pipelines_on_record(conn)?
        .into_iter()
        .map(|pipeline| {
            let configured = retention.get(&pipeline).copied();
            let Retention {
                runs,
                runs_keep,
                letters,
            } = configured.unwrap_or(Retention {
                runs: config::DEFAULT_RUNS_RETENTION,
                runs_keep: config::DEFAULT_RUNS_KEEP.get(),
                letters: config::DEFAULT_DLQ_RETENTION,
            });
            Expiry {
                pipeline,
                runs_before: ago(runs),
                runs_keep,
                letters_before: ago(letters),
                keep_last: configured.is_some(),
            }
        })
        .collect())
}

/// One transaction of [`expire`]: at most `chunk` rows forgotten (runs,
/// dead letters, deliveries, counts of records a sink would not take,
/// stages proven by a pipeline no longer configured once its runs are
/// gone, versions of records let through, what the sinks of a pipeline
/// no longer configured were given once its runs are gone), and whether
/// more may be left.
fn expire_some(
    conn: &rusqlite::Connection,
    expiries: &[Expiry],
    chunk: usize,
) -> rusqlite::Result<([usize; 7], bool)> {
    let mut expired = [0; 7];
    let mut room = chunk;
    for e in expiries {
        let forgets: [&dyn Fn(usize) -> rusqlite::Result<usize>; 7] = [
            &|room| {
                history::expire_runs(
                    conn,
                    &e.pipeline,
                    &e.runs_before,
                    e.runs_keep,
                    e.keep_last,
                    room,
                )
            },
            &|room| dlq::expire(conn, &e.pipeline, &e.letters_before, room),
            &|room| crate::webhook::inbox::expire(conn, &e.pipeline, &e.letters_before, room),
            &|room| stuck::expire(conn, &e.pipeline, &e.letters_before, room),
            // After its runs: the last one gone, a removed pipeline's
            // stages go in the same transaction.
            &|room| {
                if e.keep_last {
                    Ok(0)
                } else {
                    isolate::expire(conn, &e.pipeline, room)
                }
            },
            &|room| versions::expire(conn, &e.pipeline, &e.letters_before, room),
            // Like its stages: the pipeline back, it finds what its sinks
            // hold until then.
            &|room| {
                if e.keep_last {
                    Ok(0)
                } else {
                    unchanged::expire(conn, &e.pipeline, room)
                }
            },
        ];
        for (kind, forget) in forgets.into_iter().enumerate() {
            let forgotten = forget(room)?;
            expired[kind] += forgotten;
            room -= forgotten;
            if room == 0 {
                return Ok((expired, true));
            }
        }
    }
    Ok((expired, false))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_backlog_is_forgotten_a_chunk_per_transaction_and_the_last_run_kept() {
        let dir = tempfile::tempdir().unwrap();
        let conn = crate::db::open(&dir.path().join("db")).unwrap();
        for _ in 0..7 {
            let run = history::start_run(&conn, "p", "schedule").unwrap();
            history::finish_run(&conn, run, "ok", None).unwrap();
        }
        // Of 18 records: a record's letters replace one another.
        for i in 0..18 {
            let record = crate::bindings::Record {
                stream: "contacts".into(),
                key: format!("c-{i}"),
                op: crate::bindings::Op::Upsert,
                data: "{}".into(),
                source_timestamp: None,
            };
            dlq::insert(
                &conn,
                "p",
                ("sink", dlq::Stage::Sink),
                &record,
                None,
                "no",
                None,
            )
            .unwrap();
        }
        for key in ["a", "b", "c"] {
            conn.execute(
                "INSERT INTO sink_stuck (pipeline, sink, stream, key, budgets, updated_at)
                 VALUES ('p', 'sink', 'contacts', ?1, 2, '2020-01-01T00:00:00Z')",
                [key],
            )
            .unwrap();
        }
        versions::remember(
            &conn,
            "p",
            &[versions::Versioned {
                stream: "contacts".into(),
                key: "a".into(),
                at: 1,
            }],
        )
        .unwrap();
        conn.execute(
            "UPDATE record_version SET updated_at = '2020-01-01T00:00:00Z'",
            [],
        )
        .unwrap();
        // A pipeline configured with no retention at all: everything is
        // past it, but its newest run.
        let none = Retention {
            runs: Duration::ZERO,
            runs_keep: usize::MAX,
            letters: Duration::ZERO,
        };
        let retention = BTreeMap::from([("p".to_string(), none)]);
        let expiries = expiries(&conn, &retention).unwrap();
        let mut chunks = Vec::new();
        loop {
            let (expired, more) = expire_some(&conn, &expiries, 10).unwrap();
            chunks.push(expired);
            if !more {
                break;
            }
        }
        assert_eq!(
            chunks,
            [
                [6, 4, 0, 0, 0, 0, 0],
                [0, 10, 0, 0, 0, 0, 0],
                [0, 4, 0, 3, 0, 1, 0]
            ]
        );
        let left: (i64, i64, i64, i64) = conn
            .query_row(
                "SELECT (SELECT COUNT(*) FROM pipeline_run), (SELECT COUNT(*) FROM dead_letter),
                     (SELECT COUNT(*) FROM sink_stuck), (SELECT COUNT(*) FROM record_version)",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )
            .unwrap();
        assert_eq!(left, (1, 0, 0, 0));
    }

    #[test]
    fn a_removed_pipeline_forgets_its_proven_stages_and_what_its_sinks_hold_with_its_last_run() {
        let dir = tempfile::tempdir().unwrap();
        let conn = crate::db::open(&dir.path().join("db")).unwrap();
        let proven = |pipeline: &str| -> i64 {
            conn.query_row(
                "SELECT COUNT(*) FROM stage_proven WHERE pipeline = ?1",
                [pipeline],
                |r| r.get(0),
            )
            .unwrap()
        };
        for pipeline in ["kept", "removed", "removed-recently"] {
            let run = history::start_run(&conn, pipeline, "schedule").unwrap();
            history::finish_run(&conn, run, "ok", None).unwrap();
            let stages = isolate::Proven::default();
            stages.took("a#1");
            stages.took("b#2");
            stages.changes().save(&conn, pipeline).unwrap();
            let wrote = unchanged::Writes {
                sink: "sink".into(),
                since: crate::audit::now(),
                written: vec![("s".into(), "k".into(), Some([0; 16]))],
                unsure: Vec::new(),
            };
            unchanged::remember(&conn, pipeline, &[wrote]).unwrap();
        }
        let held = |pipeline: &str| -> i64 {
            conn.query_row(
                "SELECT COUNT(*) FROM sink_written WHERE pipeline = ?1",
                [pipeline],
                |r| r.get(0),
            )
            .unwrap()
        };
        // The runs of "kept" and "removed" are past any retention.
        conn.execute(
            "UPDATE pipeline_run SET started_at = '2020-01-01T00:00:00Z',
                 finished_at = '2020-01-01T00:00:01Z' WHERE pipeline != 'removed-recently'",
            [],
        )
        .unwrap();
        let short = Retention {
            runs: Duration::from_secs(3600),
            runs_keep: usize::MAX,
            letters: Duration::from_secs(3600),
        };
        let retention = BTreeMap::from([("kept".to_string(), short)]);
        let expiries = expiries(&conn, &retention).unwrap();
        let (expired, more) = expire_some(&conn, &expiries, 100).unwrap();
        assert_eq!((expired, more), ([1, 0, 0, 0, 2, 0, 1], false));
        // Configured, it keeps its last run and its stages; removed, its
        // stages go with its last run, and not before.
        assert_eq!(
            [
                proven("kept"),
                proven("removed"),
                proven("removed-recently")
            ],
            [2, 0, 2]
        );
        assert_eq!(
            [held("kept"), held("removed"), held("removed-recently")],
            [1, 0, 1]
        );
    }
}
