//! The checkpoint store under SIGKILL: a checkpoint commit and its
//! bookkeeping are all-or-nothing, and an acknowledged commit is durable.
//!
//! The parent test runs this test binary again as a worker (the
//! `checkpoint::checkpoint_worker` test, which does nothing unless its environment
//! variable is set), lets it commit checkpoints through the library, and
//! kills it at random points.

use std::collections::BTreeSet;
use std::io::BufRead;
use std::path::Path;
use std::process::{Command, Stdio};

use causeway::checkpoint;
use causeway::db::{self, Writer};

const WORKER: &str = "CAUSEWAY_CHECKPOINT_WORKER";
/// Bookkeeping rows written with each checkpoint.
const ROWS: usize = 3;

/// The worker: commits checkpoint N with ROWS bookkeeping rows for N, for
/// ever, printing `ack N` once each commit is acknowledged.
#[test]
fn checkpoint_worker() {
    let Ok(path) = std::env::var(WORKER) else {
        return;
    };
    let runtime = tokio::runtime::Runtime::new().expect("a runtime");
    runtime.block_on(async {
        let path = Path::new(&path);
        let start = {
            let conn = db::open(path).expect("open the database");
            checkpoint::read(&conn, "p", "s")
                .expect("read the checkpoint")
                .map_or(1, |c| c.parse::<u64>().expect("a number") + 1)
        };
        let chain = causeway::audit::Chain::open(
            &path.with_extension("key"),
            &path.with_extension("head"),
        )
        .expect("open the audit chain");
        let writer = Writer::start(path, chain).expect("start the writer");
        let handle = writer.handle();
        for n in start.. {
            checkpoint::commit(&handle, "p", "s", &n.to_string(), move |conn| {
                for j in 0..ROWS {
                    conn.execute(
                        "INSERT INTO storage (plugin, pipeline, key, value) VALUES ('bookkeeping', 'p', ?1, x'')",
                        [format!("{n:06}-{j}").into_bytes()],
                    )
                    .map_err(|e| e.to_string())?;
                }
                Ok(())
            })
            .await
            .expect("commit");
            println!("ack {n}");
        }
    });
}

#[test]
fn a_checkpoint_and_its_bookkeeping_survive_sigkill_all_or_nothing() {
    if std::env::var(WORKER).is_ok() {
        return;
    }
    let dir = tempfile::tempdir().expect("a temporary folder");
    let path = dir.path().join("causeway.db");
    let mut seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("time")
        .as_nanos() as u64;
    let mut acknowledged = 0_u64;
    for round in 0..20 {
        let mut worker = Command::new(std::env::current_exe().expect("this test binary"))
            .args([
                "--exact",
                "checkpoint::checkpoint_worker",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(WORKER, &path)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the worker");
        let out = worker.stdout.take().expect("stdout");
        let reader = std::thread::spawn(move || {
            std::io::BufReader::new(out)
                .lines()
                .map_while(Result::ok)
                .filter_map(|l| l.strip_prefix("ack ").and_then(|n| n.parse::<u64>().ok()))
                .max()
        });
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        std::thread::sleep(std::time::Duration::from_millis(100 + (seed >> 33) % 300));
        worker.kill().expect("SIGKILL the worker");
        worker.wait().expect("reap the worker");
        if let Some(last) = reader.join().expect("the reader") {
            acknowledged = acknowledged.max(last);
        }

        let conn = rusqlite::Connection::open(&path).expect("open the database");
        let committed: u64 = checkpoint::read(&conn, "p", "s")
            .expect("read")
            .map_or(0, |c| c.parse().expect("a number"));
        let mut stmt = conn
            .prepare("SELECT key FROM storage WHERE plugin = 'bookkeeping'")
            .expect("query");
        let rows: BTreeSet<String> = stmt
            .query_map([], |r| r.get::<_, Vec<u8>>(0))
            .expect("rows")
            .map(|k| String::from_utf8(k.expect("row")).expect("utf-8"))
            .collect();
        let expected: BTreeSet<String> = (1..=committed)
            .flat_map(|n| (0..ROWS).map(move |j| format!("{n:06}-{j}")))
            .collect();
        assert_eq!(
            rows, expected,
            "round {round}: the bookkeeping does not match checkpoint {committed}"
        );
        assert!(
            committed >= acknowledged,
            "round {round}: checkpoint {committed} is behind the acknowledged {acknowledged}"
        );
    }
    assert!(
        acknowledged >= 20,
        "too few commits to mean anything: {acknowledged}"
    );
}
