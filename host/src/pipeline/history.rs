//! What the database remembers of pipelines: each one's state (paused, and
//! why it is not running) and the history of its runs.

use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;

/// A pipeline's recorded state.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PipelineRow {
    /// The pipeline.
    pub pipeline: String,
    /// Paused by an operator (survives restarts).
    pub paused: bool,
    /// `idle`, `running`, `circuit-open`, `stopped`, or `removed` (no
    /// longer configured).
    pub state: String,
    /// Why it is not running normally.
    pub reason: Option<String>,
    /// While the circuit is open: when it probes next.
    pub circuit_until: Option<String>,
    /// The open circuit, the stop or the wait holds the source's reads
    /// only: webhook deliveries go on.
    pub reads_only: bool,
    /// While a run waits as an API asked (`Retry-After`), and once the host
    /// stopped during such a wait: until when. A restarted host waits too.
    pub asked_until: Option<String>,
    /// When this row last changed.
    pub updated_at: String,
}

/// One run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunRow {
    /// Its id.
    pub id: i64,
    /// The pipeline.
    pub pipeline: String,
    /// `schedule`, `run-now`, `webhook`.
    pub trigger: String,
    /// When it started.
    pub started_at: String,
    /// When it ended; `None` while it runs (or if the host died mid-run).
    pub finished_at: Option<String>,
    /// Records read from the source.
    pub read: i64,
    /// Records every sink acknowledged.
    pub written: i64,
    /// Records a stage set aside (to the dead-letter queue).
    pub rejected: i64,
    /// Records skipped: older than a version let through before
    /// (`pipeline::versions`). `None` for a run from before schema 14,
    /// which did not count them.
    pub skipped: Option<i64>,
    /// Records a transform dropped: answered nothing for, and did not set
    /// aside. `None` as `skipped` is.
    pub dropped: Option<i64>,
    /// Records no sink was given, each having written them as they are
    /// (`pipeline::unchanged`). `None` for a run from before schema 15.
    pub unchanged: Option<i64>,
    /// `running`, `ok`, `failed`, `stopped`.
    pub outcome: String,
    /// Why it failed or stopped.
    pub error: Option<String>,
}

/// `at` as the state records a time the pipeline waits until (RFC 3339, to
/// the second): rounded up, so a wait recorded, and held again by a
/// restarted host, is never cut short.
pub fn until_text(at: std::time::SystemTime) -> String {
    let past_second = at
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| since.subsec_nanos());
    let at = match past_second {
        0 => at,
        nanos => at + std::time::Duration::from_nanos(1_000_000_000 - u64::from(nanos)),
    };
    humantime::format_rfc3339_seconds(at).to_string()
}

/// Sets the state of `pipeline` (a circuit or a stop of the whole
/// pipeline), keeping its paused flag.
pub fn set_state(
    conn: &Connection,
    pipeline: &str,
    state: &str,
    reason: Option<&str>,
    circuit_until: Option<&str>,
) -> rusqlite::Result<()> {
    set(conn, pipeline, (state, false), reason, circuit_until)
}

/// Sets the state of `pipeline` as one that holds its source's reads only
/// (an open circuit, a stop), keeping its paused flag.
pub fn set_reads_held(
    conn: &Connection,
    pipeline: &str,
    state: &str,
    reason: Option<&str>,
    circuit_until: Option<&str>,
) -> rusqlite::Result<()> {
    set(conn, pipeline, (state, true), reason, circuit_until)
}

fn set(
    conn: &Connection,
    pipeline: &str,
    (state, reads_only): (&str, bool),
    reason: Option<&str>,
    circuit_until: Option<&str>,
) -> rusqlite::Result<()> {
    conn.execute(
        "INSERT INTO pipeline_state (pipeline, paused, state, reason, circuit_until, reads_only, updated_at)
         VALUES (?1, 0, ?2, ?3, ?4, ?5, ?6)
         ON CONFLICT (pipeline) DO UPDATE SET state = excluded.state, reason = excluded.reason,
             circuit_until = excluded.circuit_until, reads_only = excluded.reads_only,
             asked_until = NULL, updated_at = excluded.updated_at",
        params![pipeline, state, reason, circuit_until, reads_only, crate::audit::now()],
    )?;
    Ok(())
}

/// Records `pipeline` running. A run of webhook deliveries leaves an open
/// circuit or a stop as it is: it holds the source's reads (no deliveries
/// are handled while one holds the whole pipeline), and still does. It
/// leaves a poll's read waiting as its API asked recorded too: deliveries
/// are handled during that wait.
pub fn set_running(conn: &Connection, pipeline: &str, deliveries: bool) -> rusqlite::Result<()> {
    conn.execute(
        "INSERT INTO pipeline_state (pipeline, paused, state, updated_at) VALUES (?1, 0, 'running', ?2)
         ON CONFLICT (pipeline) DO UPDATE SET state = 'running', reason = NULL,
             circuit_until = NULL, reads_only = 0, asked_until = NULL,
             updated_at = excluded.updated_at
         WHERE NOT (?3 AND (pipeline_state.state IN ('circuit-open', 'stopped')
             OR (pipeline_state.state = 'running' AND pipeline_state.asked_until IS NOT NULL)))",
        params![pipeline, crate::audit::now(), deliveries],
    )?;
    Ok(())
}

/// A run waiting, as recorded: as an API asked, or backing off.
#[derive(Debug, Clone)]
pub struct Waiting {
    /// Why, as the operator reads it.
    pub reason: String,
    /// Until when the API asked (RFC 3339), which a host restarted
    /// meanwhile waits out too; `None` for the pipeline's own backoff.
    pub until: Option<String>,
    /// It is the source's read that waits: webhook deliveries go on.
    pub reads_only: bool,
}

/// Says why a running `pipeline` is waiting, and until when (`None`: it no
/// longer is). Only a running pipeline's reason changes: a run of
/// deliveries under an open circuit leaves the circuit's.
pub fn note_waiting(
    conn: &Connection,
    pipeline: &str,
    waiting: Option<&Waiting>,
) -> rusqlite::Result<()> {
    conn.execute(
        "UPDATE pipeline_state SET reason = ?2, asked_until = ?3, reads_only = ?4, updated_at = ?5
         WHERE pipeline = ?1 AND state = 'running'",
        params![
            pipeline,
            waiting.map(|w| &w.reason),
            waiting.and_then(|w| w.until.as_ref()),
            waiting.is_some_and(|w| w.reads_only),
            crate::audit::now()
        ],
    )?;
    Ok(())
}

/// Records `pipeline` idle because the host stopped during its run,
/// keeping a wait the run was in as an API asked, and why, for the next
/// host; and an open circuit or a stop on the reads that a run of
/// deliveries went on under, as it is.
pub fn host_stopped(conn: &Connection, pipeline: &str) -> rusqlite::Result<()> {
    conn.execute(
        "INSERT INTO pipeline_state (pipeline, paused, state, reason, updated_at)
         VALUES (?1, 0, 'idle', 'the host stopped', ?2)
         ON CONFLICT (pipeline) DO UPDATE SET state = 'idle',
             reason = CASE WHEN asked_until IS NULL THEN excluded.reason
                 ELSE reason || ' (the host stopped)' END,
             circuit_until = NULL, updated_at = excluded.updated_at
         WHERE pipeline_state.state NOT IN ('circuit-open', 'stopped')",
        params![pipeline, crate::audit::now()],
    )?;
    Ok(())
}

/// Pauses or resumes `pipeline`.
pub fn set_paused(conn: &Connection, pipeline: &str, paused: bool) -> rusqlite::Result<()> {
    conn.execute(
        "INSERT INTO pipeline_state (pipeline, paused, state, updated_at) VALUES (?1, ?2, 'idle', ?3)
         ON CONFLICT (pipeline) DO UPDATE SET paused = excluded.paused, updated_at = excluded.updated_at",
        params![pipeline, paused, crate::audit::now()],
    )?;
    Ok(())
}

/// Resumes `pipeline`: not paused, and a stop or an open circuit cleared.
pub fn resume(conn: &Connection, pipeline: &str) -> rusqlite::Result<()> {
    conn.execute(
        "INSERT INTO pipeline_state (pipeline, paused, state, updated_at) VALUES (?1, 0, 'idle', ?2)
         ON CONFLICT (pipeline) DO UPDATE SET paused = 0,
             state = CASE WHEN state IN ('stopped', 'circuit-open') THEN 'idle' ELSE state END,
             reason = CASE WHEN state IN ('stopped', 'circuit-open') THEN NULL ELSE reason END,
             circuit_until = NULL, reads_only = 0, asked_until = NULL,
             updated_at = excluded.updated_at",
        params![pipeline, crate::audit::now()],
    )?;
    Ok(())
}

/// Forgets where `pipeline` stands in its source: the next run starts
/// over, and takes what it reads as it comes (the versions let through are
/// forgotten too: [`super::versions`]), and writes it all again (what the
/// sinks hold is forgotten: [`super::unchanged`]).
pub fn reset(conn: &Connection, pipeline: &str) -> rusqlite::Result<usize> {
    super::versions::forget(conn, pipeline)?;
    super::unchanged::forget(conn, pipeline)?;
    conn.execute(
        "DELETE FROM checkpoint WHERE pipeline = ?1",
        params![pipeline],
    )
}

/// The recorded state of `pipeline`, if any.
pub fn state(conn: &Connection, pipeline: &str) -> rusqlite::Result<Option<PipelineRow>> {
    conn.query_row(
        "SELECT pipeline, paused, state, reason, circuit_until, reads_only, asked_until,
             updated_at
         FROM pipeline_state WHERE pipeline = ?1",
        params![pipeline],
        |row| {
            Ok(PipelineRow {
                pipeline: row.get(0)?,
                paused: row.get(1)?,
                state: row.get(2)?,
                reason: row.get(3)?,
                circuit_until: row.get(4)?,
                reads_only: row.get(5)?,
                asked_until: row.get(6)?,
                updated_at: row.get(7)?,
            })
        },
    )
    .optional()
}

/// Whether an operator paused `pipeline`.
pub fn paused(conn: &Connection, pipeline: &str) -> rusqlite::Result<bool> {
    Ok(state(conn, pipeline)?.is_some_and(|r| r.paused))
}

/// Starts a run; its id.
pub fn start_run(conn: &Connection, pipeline: &str, trigger: &str) -> rusqlite::Result<i64> {
    conn.execute(
        "INSERT INTO pipeline_run (pipeline, trigger, started_at, outcome, skipped, dropped,
                                   unchanged)
         VALUES (?1, ?2, ?3, 'running', 0, 0, 0)",
        params![pipeline, trigger, crate::audit::now()],
    )?;
    Ok(conn.last_insert_rowid())
}

/// Adds a page's counts to its run's (inside the checkpoint's
/// transaction).
pub fn count(conn: &Connection, run_id: i64, page: Moved) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "UPDATE pipeline_run SET read = read + ?2, written = written + ?3,
         rejected = rejected + ?4, skipped = ifnull(skipped, 0) + ?5,
         dropped = ifnull(dropped, 0) + ?6, unchanged = ifnull(unchanged, 0) + ?7
         WHERE id = ?1",
    )?
    .execute(params![
        run_id,
        page.read,
        page.written,
        page.rejected,
        page.skipped,
        page.dropped,
        page.unchanged
    ])?;
    Ok(())
}

/// What a run (or a page of it) moved. A record read is written, rejected,
/// skipped, dropped or unchanged; a transform that answers several records for one
/// writes more than it read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Moved {
    /// Read from the source (or the deliveries).
    pub read: i64,
    /// Acknowledged by every sink.
    pub written: i64,
    /// Refused by a stage: dead letters, though of several versions of
    /// one record in a batch only the newest is kept as one.
    pub rejected: i64,
    /// Older than a version let through before (`pipeline::versions`).
    pub skipped: i64,
    /// Answered nothing for by a transform (a filter).
    pub dropped: i64,
    /// Given to no sink: each had written it as it is
    /// (`pipeline::unchanged`).
    pub unchanged: i64,
}

/// Ends a run with `outcome` and, if it did not succeed, why; what it
/// moved (nothing for a run not on record).
pub fn finish_run(
    conn: &Connection,
    run_id: i64,
    outcome: &str,
    error: Option<&str>,
) -> rusqlite::Result<Moved> {
    conn.query_row(
        "UPDATE pipeline_run SET finished_at = ?2, outcome = ?3, error = ?4 WHERE id = ?1
         RETURNING read, written, rejected, ifnull(skipped, 0), ifnull(dropped, 0),
                   ifnull(unchanged, 0)",
        params![run_id, crate::audit::now(), outcome, error],
        |row| {
            Ok(Moved {
                read: row.get(0)?,
                written: row.get(1)?,
                rejected: row.get(2)?,
                skipped: row.get(3)?,
                dropped: row.get(4)?,
                unchanged: row.get(5)?,
            })
        },
    )
    .optional()
    .map(Option::unwrap_or_default)
}

/// Marks runs a dead host left `running` as `interrupted`.
pub fn interrupt_unfinished(conn: &Connection) -> rusqlite::Result<usize> {
    conn.execute(
        "UPDATE pipeline_run SET outcome = 'interrupted', error = 'the host stopped during the run' WHERE outcome = 'running'",
        [],
    )
}

/// Marks `pipeline`'s runs left `running` as `interrupted`, for `why`
/// (its task ended while the host goes on).
pub fn interrupt_unfinished_of(
    conn: &Connection,
    pipeline: &str,
    why: &str,
) -> rusqlite::Result<usize> {
    conn.execute(
        "UPDATE pipeline_run SET outcome = 'interrupted', error = ?2, finished_at = ?3 WHERE pipeline = ?1 AND outcome = 'running'",
        params![pipeline, why, crate::audit::now()],
    )
}

/// Forgets `pipeline`'s finished runs that started before `cutoff` (RFC
/// 3339) or are older than its newest `keep`, at most `limit` of them. A
/// configured pipeline (`keep_last`) keeps its newest run and its newest run
/// that ended `ok`, whatever their age and however many: what `causeway
/// pipelines` shows as the last run and counts the lag from.
pub fn expire_runs(
    conn: &Connection,
    pipeline: &str,
    cutoff: &str,
    keep: usize,
    keep_last: bool,
    limit: usize,
) -> rusqlite::Result<usize> {
    conn.execute(
        "DELETE FROM pipeline_run WHERE id IN (SELECT id FROM pipeline_run
             WHERE pipeline = ?1 AND finished_at IS NOT NULL
             AND (started_at < ?2 OR id <= (SELECT id FROM pipeline_run WHERE pipeline = ?1
                 ORDER BY id DESC LIMIT 1 OFFSET ?5))
             AND (NOT ?3 OR (id < (SELECT max(id) FROM pipeline_run WHERE pipeline = ?1)
                 AND id IS NOT (SELECT max(id) FROM pipeline_run WHERE pipeline = ?1 AND outcome = 'ok')))
             ORDER BY id LIMIT ?4)",
        params![
            pipeline,
            cutoff,
            keep_last,
            i64::try_from(limit).unwrap_or(i64::MAX),
            i64::try_from(keep).unwrap_or(i64::MAX),
        ],
    )
}

/// The pipelines with runs, dead letters, webhook deliveries, counts of
/// records a sink will not take, stages proven or versions let through on
/// record, configured or not.
pub fn pipelines_on_record(conn: &Connection) -> rusqlite::Result<Vec<String>> {
    let mut stmt = conn.prepare(
        "SELECT pipeline FROM pipeline_run UNION SELECT pipeline FROM dead_letter
         UNION SELECT pipeline FROM webhook_inbox UNION SELECT pipeline FROM sink_stuck
         UNION SELECT pipeline FROM stage_proven UNION SELECT pipeline FROM record_version
         UNION SELECT pipeline FROM sink_written",
    )?;
    let names = stmt.query_map([], |row| row.get(0))?;
    names.collect()
}

/// Whether run `id` of `pipeline` is on record.
pub fn run_of(conn: &Connection, pipeline: &str, id: i64) -> rusqlite::Result<bool> {
    conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM pipeline_run WHERE id = ?1 AND pipeline = ?2)",
        params![id, pipeline],
        |r| r.get(0),
    )
}

/// When a run of `pipeline` last ended `ok`: how far behind its source it
/// may be (`causeway pipelines`, `/metrics`). Walks the pipeline's runs
/// back from the newest to the first good one.
pub fn last_ok_at(conn: &Connection, pipeline: &str) -> rusqlite::Result<Option<String>> {
    Ok(conn
        .prepare_cached(
            "SELECT finished_at FROM pipeline_run WHERE pipeline = ?1 AND outcome = 'ok'
             ORDER BY id DESC LIMIT 1",
        )?
        .query_row(params![pipeline], |r| r.get(0))
        .optional()?
        .flatten())
}

/// The runs, newest first; of one pipeline, or all; at most `limit`.
pub fn runs(
    conn: &Connection,
    pipeline: Option<&str>,
    limit: usize,
) -> rusqlite::Result<Vec<RunRow>> {
    let mut stmt = conn.prepare(
        "SELECT id, pipeline, trigger, started_at, finished_at, read, written, rejected, skipped,
                dropped, outcome, error, unchanged
         FROM pipeline_run WHERE ?1 IS NULL OR pipeline = ?1 ORDER BY id DESC LIMIT ?2",
    )?;
    let rows = stmt.query_map(params![pipeline, limit as i64], |row| {
        Ok(RunRow {
            id: row.get(0)?,
            pipeline: row.get(1)?,
            trigger: row.get(2)?,
            started_at: row.get(3)?,
            finished_at: row.get(4)?,
            read: row.get(5)?,
            written: row.get(6)?,
            rejected: row.get(7)?,
            skipped: row.get(8)?,
            dropped: row.get(9)?,
            outcome: row.get(10)?,
            error: row.get(11)?,
            unchanged: row.get(12)?,
        })
    })?;
    rows.collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn add(conn: &Connection, pipeline: &str, started_at: &str, outcome: &str) -> i64 {
        let finished = (outcome != "running").then_some(started_at);
        conn.execute(
            "INSERT INTO pipeline_run (pipeline, trigger, started_at, finished_at, outcome) VALUES (?1, 'schedule', ?2, ?3, ?4)",
            params![pipeline, started_at, finished, outcome],
        )
        .unwrap();
        conn.last_insert_rowid()
    }

    fn ids(conn: &Connection, pipeline: &str) -> Vec<i64> {
        runs(conn, Some(pipeline), 100)
            .unwrap()
            .into_iter()
            .rev()
            .map(|r| r.id)
            .collect()
    }

    #[test]
    fn a_finished_run_tells_what_it_moved() {
        let dir = tempfile::tempdir().unwrap();
        let conn = crate::db::open(&dir.path().join("db")).unwrap();
        let run = start_run(&conn, "p", "schedule").unwrap();
        let page = |read, written, rejected, skipped, dropped, unchanged| Moved {
            read,
            written,
            rejected,
            skipped,
            dropped,
            unchanged,
        };
        count(&conn, run, page(9, 4, 1, 1, 2, 1)).unwrap();
        count(&conn, run, page(2, 2, 0, 0, 0, 0)).unwrap();
        let moved = finish_run(&conn, run, "ok", None).unwrap();
        assert_eq!(moved, page(11, 6, 1, 1, 2, 1));
        let row = &runs(&conn, Some("p"), 1).unwrap()[0];
        assert_eq!(row.outcome, "ok");
        let listed = (
            row.read,
            row.written,
            row.rejected,
            row.skipped,
            row.dropped,
            row.unchanged,
        );
        assert_eq!(listed, (11, 6, 1, Some(1), Some(2), Some(1)));
        assert_eq!(
            finish_run(&conn, run + 1, "ok", None).unwrap(),
            Moved::default()
        );
    }

    #[test]
    fn a_wait_is_noted_on_a_running_pipeline_only() {
        let dir = tempfile::tempdir().unwrap();
        let conn = crate::db::open(&dir.path().join("db")).unwrap();
        let reason = |conn: &Connection| state(conn, "p").unwrap().unwrap().reason;
        let waiting = Waiting {
            reason: "waiting until T".into(),
            until: Some("T".into()),
            reads_only: true,
        };
        set_running(&conn, "p", false).unwrap();
        note_waiting(&conn, "p", Some(&waiting)).unwrap();
        assert_eq!(reason(&conn).as_deref(), Some("waiting until T"));
        note_waiting(&conn, "p", None).unwrap();
        assert_eq!(reason(&conn), None);
        // Under an open circuit, a run of deliveries leaves its reason.
        set_state(&conn, "p", "circuit-open", Some("read failed"), None).unwrap();
        note_waiting(&conn, "p", Some(&waiting)).unwrap();
        assert_eq!(reason(&conn).as_deref(), Some("read failed"));
        note_waiting(&conn, "p", None).unwrap();
        assert_eq!(reason(&conn).as_deref(), Some("read failed"));
    }

    #[test]
    fn a_wait_as_asked_outlasts_a_run_of_deliveries_and_the_host_stopping_and_no_more() {
        let dir = tempfile::tempdir().unwrap();
        let conn = crate::db::open(&dir.path().join("db")).unwrap();
        let asked = |conn: &Connection| {
            let row = state(conn, "p").unwrap().unwrap();
            (row.state, row.reason, row.asked_until, row.reads_only)
        };
        let waiting = Waiting {
            reason: "read s: waiting until T".into(),
            until: Some("T".into()),
            reads_only: true,
        };
        let recorded = (
            "running".to_string(),
            Some(waiting.reason.clone()),
            Some("T".to_string()),
            true,
        );
        set_running(&conn, "p", false).unwrap();
        note_waiting(&conn, "p", Some(&waiting)).unwrap();
        assert_eq!(asked(&conn), recorded);
        // Deliveries handled while the read waits.
        set_running(&conn, "p", true).unwrap();
        assert_eq!(asked(&conn), recorded);
        host_stopped(&conn, "p").unwrap();
        let stopped = (
            "idle".into(),
            Some("read s: waiting until T (the host stopped)".into()),
            Some("T".into()),
            true,
        );
        assert_eq!(asked(&conn), stopped);
        // Stopped during deliveries under a circuit on the reads: it stays.
        let until = Some("2026-01-01T00:00:30Z");
        set_reads_held(&conn, "p", "circuit-open", Some("read failed"), until).unwrap();
        set_running(&conn, "p", true).unwrap();
        host_stopped(&conn, "p").unwrap();
        let row = state(&conn, "p").unwrap().unwrap();
        let held = (
            row.state.as_str(),
            row.circuit_until.as_deref(),
            row.reads_only,
        );
        assert_eq!(held, ("circuit-open", until, true));
        // A run, a state recorded, a resume: the wait is over.
        for end in [
            |c: &Connection| set_running(c, "p", false),
            |c: &Connection| set_state(c, "p", "idle", None, None),
            |c: &Connection| resume(c, "p"),
        ] {
            set_running(&conn, "p", false).unwrap();
            note_waiting(&conn, "p", Some(&waiting)).unwrap();
            host_stopped(&conn, "p").unwrap();
            end(&conn).unwrap();
            assert_eq!(asked(&conn).2, None);
        }
    }

    #[test]
    fn a_run_of_deliveries_leaves_what_holds_the_reads_recorded_and_a_poll_does_not() {
        let dir = tempfile::tempdir().unwrap();
        let conn = crate::db::open(&dir.path().join("db")).unwrap();
        let recorded = |conn: &Connection| {
            let row = state(conn, "p").unwrap().unwrap();
            (row.state, row.reason, row.circuit_until)
        };
        set_running(&conn, "p", true).unwrap();
        assert_eq!(recorded(&conn).0, "running", "a first run");
        let until = "2026-01-01T00:00:30Z";
        set_state(&conn, "p", "circuit-open", Some("read failed"), Some(until)).unwrap();
        set_running(&conn, "p", true).unwrap();
        assert_eq!(
            recorded(&conn),
            (
                "circuit-open".to_string(),
                Some("read failed".to_string()),
                Some(until.to_string())
            )
        );
        set_running(&conn, "p", false).unwrap();
        assert_eq!(recorded(&conn), ("running".to_string(), None, None));
        set_state(&conn, "p", "stopped", Some("auth"), None).unwrap();
        set_running(&conn, "p", true).unwrap();
        assert_eq!(
            recorded(&conn),
            ("stopped".to_string(), Some("auth".to_string()), None)
        );
        set_state(&conn, "p", "idle", None, None).unwrap();
        set_running(&conn, "p", true).unwrap();
        assert_eq!(recorded(&conn).0, "running");
    }

    #[test]
    fn a_time_waited_until_is_recorded_rounded_up_to_the_second() {
        let at = |text| humantime::parse_rfc3339(text).unwrap();
        assert_eq!(
            until_text(at("2026-12-06T12:00:06.001Z")),
            "2026-12-06T12:00:07Z"
        );
        assert_eq!(
            until_text(at("2026-12-06T12:00:06.999999999Z")),
            "2026-12-06T12:00:07Z"
        );
        assert_eq!(
            until_text(at("2026-12-06T12:00:06Z")),
            "2026-12-06T12:00:06Z"
        );
    }

    #[test]
    fn a_hold_on_the_reads_only_is_recorded_as_one_until_it_is_lifted() {
        let dir = tempfile::tempdir().unwrap();
        let conn = crate::db::open(&dir.path().join("db")).unwrap();
        let reads_only = |conn: &Connection| state(conn, "p").unwrap().unwrap().reads_only;
        let until = Some("2026-01-01T00:00:30Z");
        set_reads_held(&conn, "p", "circuit-open", Some("read failed"), until).unwrap();
        assert!(reads_only(&conn));
        // Deliveries run under it and leave it; a poll lifts it.
        set_running(&conn, "p", true).unwrap();
        assert!(reads_only(&conn));
        set_running(&conn, "p", false).unwrap();
        assert!(!reads_only(&conn));
        // A circuit of the whole pipeline recorded over it.
        set_reads_held(&conn, "p", "stopped", Some("auth"), None).unwrap();
        set_state(&conn, "p", "circuit-open", Some("sink failed"), until).unwrap();
        assert!(!reads_only(&conn));
        // An operator's resume.
        set_reads_held(&conn, "p", "stopped", Some("auth"), None).unwrap();
        resume(&conn, "p").unwrap();
        let row = state(&conn, "p").unwrap().unwrap();
        assert_eq!((row.state.as_str(), row.reads_only), ("idle", false));
    }

    #[test]
    fn one_pipelines_unfinished_runs_are_marked_interrupted_and_no_other() {
        let dir = tempfile::tempdir().unwrap();
        let conn = crate::db::open(&dir.path().join("db")).unwrap();
        let t = "2026-01-01T00:00:00Z";
        let (mine, done, other) = (
            add(&conn, "p", t, "running"),
            add(&conn, "p", t, "ok"),
            add(&conn, "q", t, "running"),
        );
        assert_eq!(
            interrupt_unfinished_of(&conn, "p", "its task failed").unwrap(),
            1
        );
        let outcome = |id: i64| -> (String, Option<String>) {
            conn.query_row(
                "SELECT outcome, error FROM pipeline_run WHERE id = ?1",
                [id],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap()
        };
        assert_eq!(
            outcome(mine),
            ("interrupted".into(), Some("its task failed".into()))
        );
        assert_eq!(outcome(done).0, "ok");
        assert_eq!(outcome(other).0, "running");
    }

    /// No limit on how many rows go at once.
    const ALL: usize = usize::MAX;

    #[test]
    fn old_runs_are_forgotten_but_the_newest_and_the_newest_good_one_are_kept() {
        let dir = tempfile::tempdir().unwrap();
        let conn = crate::db::open(&dir.path().join("db")).unwrap();
        let (old, cutoff, new) = (
            "2020-01-01T00:00:00Z",
            "2020-06-01T00:00:00Z",
            "2021-01-01T00:00:00Z",
        );
        let good = add(&conn, "p", old, "ok");
        add(&conn, "p", old, "failed");
        let unfinished = add(&conn, "p", old, "running");
        let newest = add(&conn, "p", old, "failed");
        let other = add(&conn, "q", old, "ok");
        add(&conn, "q", old, "ok");

        assert_eq!(expire_runs(&conn, "p", cutoff, ALL, true, ALL).unwrap(), 1);
        assert_eq!(ids(&conn, "p"), [good, unfinished, newest]);
        assert_eq!(last_ok_at(&conn, "p").unwrap().as_deref(), Some(old));

        // A newer good run: the old ones all go, the unfinished one stays.
        let recent = add(&conn, "p", new, "ok");
        assert_eq!(expire_runs(&conn, "p", cutoff, ALL, true, ALL).unwrap(), 2);
        assert_eq!(ids(&conn, "p"), [unfinished, recent]);
        assert_eq!(ids(&conn, "q").len(), 2, "another pipeline's runs stay");
        assert_eq!(expire_runs(&conn, "q", cutoff, ALL, true, ALL).unwrap(), 1);
        assert_eq!(ids(&conn, "q").len(), 1);
        assert_ne!(ids(&conn, "q"), [other], "the newest is kept");
        assert_eq!(pipelines_on_record(&conn).unwrap().len(), 2);
        // A pipeline no longer configured keeps nothing old.
        assert_eq!(expire_runs(&conn, "q", cutoff, ALL, false, ALL).unwrap(), 1);
        assert_eq!(pipelines_on_record(&conn).unwrap(), ["p"]);
    }

    #[test]
    fn runs_past_the_newest_kept_are_forgotten_whatever_their_age() {
        let dir = tempfile::tempdir().unwrap();
        let conn = crate::db::open(&dir.path().join("db")).unwrap();
        let (cutoff, recent) = ("2020-06-01T00:00:00Z", "2099-01-01T00:00:00Z");
        let good = add(&conn, "p", recent, "ok");
        let older: Vec<i64> = (0..3).map(|_| add(&conn, "p", recent, "failed")).collect();
        let unfinished = add(&conn, "p", recent, "running");
        let newest: Vec<i64> = (0..2).map(|_| add(&conn, "p", recent, "failed")).collect();
        let other: Vec<i64> = (0..5).map(|_| add(&conn, "q", recent, "failed")).collect();

        // The newest 3: the unfinished run and the two after it; the good
        // run stays as the newest good one, the failed ones between go.
        assert_eq!(expire_runs(&conn, "p", cutoff, 3, true, ALL).unwrap(), 3);
        assert_eq!(
            ids(&conn, "p"),
            [vec![good, unfinished], newest.clone()].concat()
        );
        assert!(older.iter().all(|id| !ids(&conn, "p").contains(id)));
        assert_eq!(ids(&conn, "q"), other, "another pipeline's runs stay");
        // At most `limit` at a time, the oldest first.
        assert_eq!(expire_runs(&conn, "q", cutoff, 1, true, 2).unwrap(), 2);
        assert_eq!(ids(&conn, "q"), other[2..]);
        // A pipeline no longer configured keeps no good run beyond the
        // count; a run not finished is never forgotten.
        assert_eq!(expire_runs(&conn, "p", cutoff, 2, false, ALL).unwrap(), 1);
        assert_eq!(ids(&conn, "p"), [vec![unfinished], newest].concat());
    }
}
