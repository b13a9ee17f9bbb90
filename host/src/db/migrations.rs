//! The schema: versioned migrations, each run once, in order, when the
//! database is opened (`PRAGMA user_version` counts those applied).

/// The schema version this build writes; migration `i` brings a database
/// from version `i` to `i + 1`.
pub(super) const MIGRATIONS: &[&str] = &[
    // 1: plugin states as the running host sees them, and the audit log.
    "CREATE TABLE plugin_state (
        file        TEXT PRIMARY KEY,
        name        TEXT NOT NULL,
        version     TEXT,
        digest      TEXT,
        worlds      TEXT NOT NULL,
        state       TEXT NOT NULL,
        error       TEXT,
        not_granted TEXT NOT NULL,
        updated_at  TEXT NOT NULL
    );
    CREATE TABLE host_status (
        id          INTEGER PRIMARY KEY CHECK (id = 1),
        pid         INTEGER NOT NULL,
        listen      TEXT NOT NULL,
        started_at  TEXT NOT NULL,
        stopped_at  TEXT
    );
    CREATE TABLE audit (
        seq         INTEGER PRIMARY KEY AUTOINCREMENT,
        time        TEXT NOT NULL,
        plugin      TEXT NOT NULL,
        version     TEXT NOT NULL,
        digest      TEXT NOT NULL,
        capability  TEXT NOT NULL,
        action      TEXT NOT NULL,
        target      TEXT NOT NULL,
        decision    TEXT NOT NULL,
        detail      TEXT NOT NULL,
        run_id      TEXT
    );
    CREATE INDEX audit_plugin_time ON audit (plugin, time);",
    // 2: plugin storage, namespaced by separate columns; source checkpoints.
    "CREATE TABLE storage (
        plugin      TEXT NOT NULL,
        pipeline    TEXT NOT NULL,
        key         BLOB NOT NULL,
        value       BLOB NOT NULL,
        PRIMARY KEY (plugin, pipeline, key)
    ) WITHOUT ROWID;
    CREATE TABLE checkpoint (
        pipeline    TEXT NOT NULL,
        stream      TEXT NOT NULL,
        checkpoint  TEXT NOT NULL,
        updated_at  TEXT NOT NULL,
        PRIMARY KEY (pipeline, stream)
    ) WITHOUT ROWID;",
    // 3: during an upgrade one file has two rows (the version still serving
    // and the new one held back), so the file is no longer the key. The rows
    // are rewritten whole by every running host: nothing to copy.
    "DROP TABLE plugin_state;
    CREATE TABLE plugin_state (
        file        TEXT NOT NULL,
        name        TEXT NOT NULL,
        version     TEXT,
        digest      TEXT,
        worlds      TEXT NOT NULL,
        state       TEXT NOT NULL,
        error       TEXT,
        not_granted TEXT NOT NULL,
        updated_at  TEXT NOT NULL
    );",
    // 4: pipelines: their state, run history and dead letters.
    "CREATE TABLE pipeline_state (
        pipeline     TEXT PRIMARY KEY,
        paused       INTEGER NOT NULL DEFAULT 0,
        state        TEXT NOT NULL,
        reason       TEXT,
        circuit_until TEXT,
        updated_at   TEXT NOT NULL
    ) WITHOUT ROWID;
    CREATE TABLE pipeline_run (
        id          INTEGER PRIMARY KEY AUTOINCREMENT,
        pipeline    TEXT NOT NULL,
        trigger     TEXT NOT NULL,
        started_at  TEXT NOT NULL,
        finished_at TEXT,
        read        INTEGER NOT NULL DEFAULT 0,
        written     INTEGER NOT NULL DEFAULT 0,
        rejected    INTEGER NOT NULL DEFAULT 0,
        outcome     TEXT NOT NULL,
        error       TEXT
    );
    CREATE INDEX pipeline_run_pipeline ON pipeline_run (pipeline, id);
    CREATE TABLE dead_letter (
        id          INTEGER PRIMARY KEY AUTOINCREMENT,
        pipeline    TEXT NOT NULL,
        sink        TEXT NOT NULL,
        stream      TEXT NOT NULL,
        key         TEXT NOT NULL,
        op          TEXT NOT NULL,
        data        TEXT NOT NULL,
        source_timestamp INTEGER,
        reason      TEXT NOT NULL,
        run_id      INTEGER,
        created_at  TEXT NOT NULL,
        attempts    INTEGER NOT NULL DEFAULT 1
    );
    CREATE INDEX dead_letter_pipeline ON dead_letter (pipeline, id);",
    // 5: the webhook inbox: every verified delivery, before its 2xx.
    "CREATE TABLE webhook_inbox (
        id          INTEGER PRIMARY KEY AUTOINCREMENT,
        pipeline    TEXT NOT NULL,
        delivery_id TEXT NOT NULL,
        received_at TEXT NOT NULL,
        method      TEXT NOT NULL,
        path        TEXT NOT NULL,
        query       TEXT NOT NULL,
        headers     TEXT NOT NULL,
        body        BLOB NOT NULL,
        state       TEXT NOT NULL,
        error       TEXT,
        processed_at TEXT,
        UNIQUE (pipeline, delivery_id)
    );
    CREATE INDEX webhook_inbox_pending ON webhook_inbox (pipeline, state, id);",
    // 6: the audit chain (rows written before are chained by the next
    // writer to start), and the grants last recorded in the audit log.
    "ALTER TABLE audit ADD COLUMN hash TEXT;
    CREATE INDEX audit_time ON audit (time);
    CREATE TABLE grants_seen (
        plugin      TEXT PRIMARY KEY,
        grant       TEXT NOT NULL
    ) WITHOUT ROWID;",
    // 7: every writer looks for unchained rows at start: keep that instant
    // however long the log.
    "CREATE INDEX audit_unchained ON audit (seq) WHERE hash IS NULL;",
    // 8: dead letters a transform set aside, beside those of sinks.
    "ALTER TABLE dead_letter ADD COLUMN stage TEXT NOT NULL DEFAULT 'sink';",
    // 9: the stages that took batches (pipeline::isolate::Proven), across
    // restarts.
    "CREATE TABLE stage_proven (
        pipeline     TEXT NOT NULL,
        stage        TEXT NOT NULL,
        failed_alone INTEGER NOT NULL,
        updated_at   TEXT NOT NULL,
        PRIMARY KEY (pipeline, stage)
    ) WITHOUT ROWID;",
    // 10: the records a sink will not take, counted across restarts
    // (pipeline::stuck::Stuck).
    "CREATE TABLE sink_stuck (
        pipeline     TEXT NOT NULL,
        sink         TEXT NOT NULL,
        stream       TEXT NOT NULL,
        key          TEXT NOT NULL,
        budgets      INTEGER NOT NULL,
        updated_at   TEXT NOT NULL,
        PRIMARY KEY (pipeline, sink, stream, key)
    ) WITHOUT ROWID;",
    // 11: a record's letters, found by key (pipeline::dlq::insert and
    // supersede) when a stage sets it aside again or takes a newer version.
    "CREATE INDEX dead_letter_key ON dead_letter (pipeline, key);",
    // 12: the source's stream of the record each letter is a version of
    // (pipeline::dlq::Origins). A source's own letters know it; a later
    // stage's cannot tell from what was stored.
    "ALTER TABLE dead_letter ADD COLUMN origin TEXT;
    UPDATE dead_letter SET origin = stream WHERE stage = 'source';",
    // 13: the newest version of each record a webhook pipeline let through
    // (pipeline::versions), so a late delivery cannot write an older one.
    "CREATE TABLE record_version (
        pipeline         TEXT NOT NULL,
        stream           TEXT NOT NULL,
        key              TEXT NOT NULL,
        source_timestamp INTEGER NOT NULL,
        updated_at       TEXT NOT NULL,
        PRIMARY KEY (pipeline, stream, key)
    ) WITHOUT ROWID;",
    // 14: what a run read and did not write or set aside: records skipped
    // as late (pipeline::versions) and dropped by a transform, so a run's
    // counts add up. NULL for the runs before: they were not counted.
    "ALTER TABLE pipeline_run ADD COLUMN skipped INTEGER;
    ALTER TABLE pipeline_run ADD COLUMN dropped INTEGER;",
    // 15: what a pipeline that skips unchanged records last wrote to each
    // sink (pipeline::unchanged), keyed by record first so a replay finds
    // a record's rows at every sink; and the records a run skipped so.
    "CREATE TABLE sink_written (
        pipeline     TEXT NOT NULL,
        key          TEXT NOT NULL,
        sink         TEXT NOT NULL,
        stream       TEXT NOT NULL,
        digest       BLOB NOT NULL,
        updated_at   TEXT NOT NULL,
        PRIMARY KEY (pipeline, key, sink, stream)
    ) WITHOUT ROWID;
    ALTER TABLE pipeline_run ADD COLUMN unchanged INTEGER;",
    // 16: whether a pipeline's recorded circuit, stop or wait holds its
    // source's reads only (webhook deliveries go on), and until when a run
    // waits as an API asked (Retry-After), so a restarted host holds them
    // as the one before did.
    "ALTER TABLE pipeline_state ADD COLUMN reads_only INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE pipeline_state ADD COLUMN asked_until TEXT;",
    // 17: when a dead-letter replay last wrote a record past the runner
    // (pipeline::unchanged): a page that began before does not save what
    // it wrote of it, which may be older than what the replay wrote.
    "CREATE TABLE sink_replayed (
        pipeline     TEXT NOT NULL,
        key          TEXT NOT NULL,
        at           TEXT NOT NULL,
        PRIMARY KEY (pipeline, key)
    ) WITHOUT ROWID;",
];

/// The schema version of a fully migrated database.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

#[cfg(test)]
mod tests {
    use std::path::Path;

    use rusqlite::Connection;

    use super::MIGRATIONS;
    use crate::db::open;

    /// A database at `path` as a Causeway of schema `version` left it,
    /// with `rows` (SQL) written into it; then opened (migrated) by this
    /// one.
    fn upgraded(path: &Path, version: usize, rows: &str) -> Connection {
        {
            let conn = Connection::open(path).unwrap();
            for sql in &MIGRATIONS[..version] {
                conn.execute_batch(sql).unwrap();
            }
            conn.pragma_update(None, "user_version", version as i64)
                .unwrap();
            conn.execute_batch(rows).unwrap();
        }
        open(path).unwrap()
    }

    /// The runs of pipeline `p`, newest first, after one more is started.
    fn runs_after_a_new_one(conn: &Connection) -> (i64, Vec<crate::pipeline::history::RunRow>) {
        let run = crate::pipeline::history::start_run(conn, "p", "schedule").unwrap();
        (
            run,
            crate::pipeline::history::runs(conn, Some("p"), 10).unwrap(),
        )
    }

    #[test]
    fn runs_from_before_schema_14_have_no_count_of_skipped_or_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let conn = upgraded(
            &dir.path().join("causeway.db"),
            13,
            "INSERT INTO pipeline_run (pipeline, trigger, started_at, outcome, read, written)
             VALUES ('p', 'schedule', 'then', 'ok', 3, 2)",
        );
        let (run, runs) = runs_after_a_new_one(&conn);
        let counted: Vec<_> = runs.iter().map(|r| (r.id, r.skipped, r.dropped)).collect();
        // Unknown for the old one, not 0; counted from 0 for the new one.
        assert_eq!(counted, [(run, Some(0), Some(0)), (1, None, None)]);
    }

    #[test]
    fn a_circuit_recorded_before_schema_16_holds_the_whole_pipeline() {
        let dir = tempfile::tempdir().unwrap();
        let conn = upgraded(
            &dir.path().join("causeway.db"),
            15,
            "INSERT INTO pipeline_state (pipeline, state, reason, circuit_until, updated_at)
             VALUES ('p', 'circuit-open', 'the API failed', '2026-12-06T12:00:00Z', 'then')",
        );
        let row = crate::pipeline::history::state(&conn, "p")
            .unwrap()
            .unwrap();
        let recorded = (row.state.as_str(), row.reads_only, row.asked_until);
        assert_eq!(recorded, ("circuit-open", false, None));
    }

    #[test]
    fn runs_from_before_schema_15_have_no_count_of_unchanged() {
        let dir = tempfile::tempdir().unwrap();
        let conn = upgraded(
            &dir.path().join("causeway.db"),
            14,
            "INSERT INTO pipeline_run (pipeline, trigger, started_at, outcome, read, written,
                                       skipped, dropped)
             VALUES ('p', 'schedule', 'then', 'ok', 3, 3, 0, 0)",
        );
        let (run, runs) = runs_after_a_new_one(&conn);
        let counted: Vec<_> = runs.iter().map(|r| (r.id, r.unchanged)).collect();
        assert_eq!(counted, [(run, Some(0)), (1, None)]);
    }

    #[test]
    fn letters_set_aside_before_schema_12_know_their_origin_where_it_was_stored() {
        let dir = tempfile::tempdir().unwrap();
        let conn = upgraded(
            &dir.path().join("causeway.db"),
            11,
            "INSERT INTO dead_letter (pipeline, sink, stream, key, op, data, reason, created_at, stage)
             VALUES ('p', 'x', 'contacts', 'c1', 'upsert', '{}', 'no', 'now', 'source'),
                    ('p', 'x', 'subscribers', 'c1', 'upsert', '{}', 'no', 'now', 'sink')",
        );
        let letters = crate::pipeline::dlq::list(&conn, None).unwrap();
        let origins: Vec<Option<&str>> = letters.iter().map(|l| l.origin.as_deref()).collect();
        // A source's letter is in the source's stream; a sink's may not be.
        assert_eq!(origins, [Some("contacts"), None]);
    }
}
