//! `causeway backup` and `causeway restore`: the data folder's state copied
//! while a host runs, put back with an audit log that still verifies, and a
//! backup that does not verify refused without touching anything.

use crate::support;

use std::path::Path;
use std::time::Duration;

use serde_json::Value;
use support::{RunningHost, Scratch, audit_rows, run, run_json, wait_until};

/// crm-source pointed at a host it may not reach, and its read's input.
fn setup() -> Scratch {
    let scratch = support::crm_source_pointed_elsewhere();
    std::fs::write(
        scratch.path().join("read.json"),
        r#"{"stream": "contacts"}"#,
    )
    .unwrap();
    scratch
}

/// One denied read through `causeway invoke`.
fn denied_read(scratch: &Scratch) {
    let out =
        run(scratch
            .causeway()
            .args(["invoke", "crm-source", "read", "--input", "read.json"]));
    assert!(out.stderr.contains("no grant allows it"), "{}", out.stderr);
}

/// One denied read through the running host's API.
fn denied_read_via(host: &RunningHost) {
    let (status, body) = host.api(
        "POST",
        "/api/plugins/crm-source/invoke",
        Some(r#"{"operation": "read", "input": {"stream": "contacts"}}"#),
    );
    assert_eq!(status, 502, "{body}");
}

/// The databases a restore moved aside in `data` (not their logs).
fn set_aside(data: &Path) -> Vec<std::path::PathBuf> {
    std::fs::read_dir(data)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let name = p.file_name().unwrap().to_string_lossy().to_string();
            name.starts_with("causeway.db.replaced-") && !name.ends_with("-wal")
        })
        .collect()
}

fn verify(scratch: &Scratch) -> support::Run {
    run(scratch.causeway().args(["audit", "verify"]))
}

/// The denied http rows in the database `file`.
fn denied_http_rows(file: &Path) -> i64 {
    let conn = rusqlite::Connection::open(file).unwrap();
    conn.query_row(
        "SELECT COUNT(*) FROM audit WHERE capability = 'http' AND decision = 'denied'",
        [],
        |r| r.get(0),
    )
    .unwrap()
}

#[test]
fn a_backup_made_while_the_host_runs_restores_with_an_audit_log_that_verifies() {
    let scratch = setup();
    let data = scratch.path().join("causeway-data");
    denied_read(&scratch);
    denied_read(&scratch);
    let mut host = RunningHost::start(scratch.causeway().args(["run", "--listen", "127.0.0.1:0"]));
    denied_read_via(&host);
    // The host commits audit rows a moment after the use.
    wait_until("the host's row committed", Duration::from_secs(10), || {
        (audit_rows(&data).len() == 3).then_some(())
    });

    let out = run(scratch.causeway().args(["backup", "bk"]));
    assert!(out.success, "{}", out.stderr);
    assert!(out.stdout.contains("audit log intact"), "{}", out.stdout);
    assert!(out.stdout.contains("keep a copy of"), "{}", out.stdout);
    let bk = scratch.path().join("bk");
    assert!(bk.join("causeway.db").is_file() && bk.join("audit.head").is_file());
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&bk).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700, "a backup holds records: owner-only");
    }
    assert!(
        !bk.join("audit.key").exists(),
        "the key stays out of backups"
    );
    assert_eq!(denied_http_rows(&bk.join("causeway.db")), 3);

    // Life goes on after the backup; a restore waits for the host to stop.
    denied_read_via(&host);
    denied_read_via(&host);
    let out = run(scratch.causeway().args(["restore", "bk"]));
    assert!(!out.success);
    assert!(out.stderr.contains("is in use"), "{}", out.stderr);
    host.terminate();
    assert!(host.wait_exit(30), "{}", host.logs());
    assert_eq!(
        audit_rows(&data).len(),
        5,
        "the refused restore changed nothing"
    );

    let out = run(scratch.causeway().args(["backup", "bk"]));
    assert!(!out.success);
    assert!(
        out.stderr.contains("already holds a backup"),
        "{}",
        out.stderr
    );

    let out = run(scratch.causeway().args(["restore", "bk"]));
    assert!(out.success, "{}", out.stderr);
    assert!(
        out.stdout.contains("its audit log verifies") && out.stdout.contains("replaced-"),
        "{}",
        out.stdout
    );
    let out = verify(&scratch);
    assert!(out.success, "{}{}", out.stdout, out.stderr);
    assert_eq!(
        audit_rows(&data).len(),
        3,
        "the uses recorded when the backup was made"
    );
    // What the restore replaced is kept whole: SQLite reads it with the
    // write-ahead log moved beside it.
    let aside = set_aside(&data);
    assert_eq!(aside.len(), 1, "{aside:?}");
    assert_eq!(denied_http_rows(&aside[0]), 5);
    // The backup is on the record of the log it was made from (after the
    // copy); the restore on the restored one, naming the backup.
    let host_rows = |db: &Path| -> Vec<(String, String)> {
        let conn = rusqlite::Connection::open(db).unwrap();
        let mut stmt = conn
            .prepare("SELECT action, target FROM audit WHERE capability = 'database' ORDER BY seq")
            .unwrap();
        stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    };
    let bk_named = bk.canonicalize().unwrap().display().to_string();
    assert_eq!(
        host_rows(&aside[0]),
        [("backup".to_string(), bk_named.clone())]
    );
    assert_eq!(
        host_rows(&data.join("causeway.db")),
        [("restore".to_string(), bk_named)]
    );

    // A host runs on the restored folder, and its log goes on verifiably.
    let mut host = RunningHost::start(scratch.causeway().args(["run", "--listen", "127.0.0.1:0"]));
    denied_read_via(&host);
    host.terminate();
    assert!(host.wait_exit(30), "{}", host.logs());
    let out = verify(&scratch);
    assert!(out.success, "{}{}", out.stdout, out.stderr);
    assert_eq!(audit_rows(&data).len(), 4);
}

#[test]
fn a_backup_whose_audit_log_was_altered_is_not_restored_and_nothing_changes() {
    let scratch = setup();
    let data = scratch.path().join("causeway-data");
    let out = run(scratch.causeway().args(["backup", "bk"]));
    assert!(!out.success);
    assert!(
        out.stderr.contains("there is no database") && out.stderr.contains("nothing to back up"),
        "{}",
        out.stderr
    );
    let out = run(scratch.causeway().args(["restore", "plugins"]));
    assert!(!out.success);
    assert!(out.stderr.contains("holds no backup"), "{}", out.stderr);

    denied_read(&scratch);
    denied_read(&scratch);
    let out = run(scratch.causeway().args(["backup", "bk"]));
    assert!(out.success, "{}", out.stderr);
    let copy = rusqlite::Connection::open(scratch.path().join("bk/causeway.db")).unwrap();
    let seq: i64 = copy
        .query_row(
            "SELECT MIN(seq) FROM audit WHERE capability = 'http'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    copy.execute(
        "UPDATE audit SET detail = 'nothing to see' WHERE seq = ?1",
        [seq],
    )
    .unwrap();
    drop(copy);
    denied_read(&scratch);

    let out = run(scratch.causeway().args(["restore", "bk"]));
    assert!(!out.success, "{}", out.stdout);
    assert!(
        out.stderr.contains("was not restored, nothing was changed")
            && out
                .stderr
                .contains(&format!("audit log broken at row {seq}")),
        "{}",
        out.stderr
    );
    assert!(verify(&scratch).success);
    assert_eq!(audit_rows(&data).len(), 3);
    let replaced = std::fs::read_dir(&data)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .contains("replaced-")
        })
        .count();
    assert_eq!(replaced, 0, "nothing was moved aside");
}

#[test]
fn backup_json_says_what_it_wrote() {
    let scratch = setup();
    denied_read(&scratch);
    let out: Value = run_json(scratch.causeway().args(["backup", "bk", "--json"]));
    assert!(out["bytes"].as_u64().unwrap() > 0, "{out}");
    assert_eq!(out["audit"]["ok"], true, "{out}");
    assert_eq!(
        out["audit"]["report"]["rows"], out["audit"]["report"]["last"],
        "{out}"
    );
}

#[test]
fn a_corrupt_database_is_replaced_by_its_backup_and_kept_aside() {
    let scratch = setup();
    let data = scratch.path().join("causeway-data");
    denied_read(&scratch);
    assert!(run(scratch.causeway().args(["backup", "bk"])).success);
    let garbage = b"this is not a database, not any more".repeat(200);
    // The file itself broken (its log, which may hold every page, gone).
    for log in ["causeway.db-wal", "causeway.db-shm"] {
        let _ = std::fs::remove_file(data.join(log));
    }
    std::fs::write(data.join("causeway.db"), &garbage).unwrap();
    let out = verify(&scratch);
    assert!(!out.success, "the corruption is seen");

    let out = run(scratch.causeway().args(["restore", "bk"]));
    assert!(out.success, "{}", out.stderr);
    let out = verify(&scratch);
    assert!(out.success, "{}{}", out.stdout, out.stderr);
    assert_eq!(audit_rows(&data).len(), 1);
    let aside = set_aside(&data);
    assert_eq!(aside.len(), 1, "{aside:?}");
    let kept = std::fs::read(&aside[0]).unwrap();
    assert!(
        kept == garbage,
        "kept as it was: {} bytes, not {}",
        kept.len(),
        garbage.len()
    );
}
