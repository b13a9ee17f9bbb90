//! Source checkpoints, owned by the host: where each pipeline's read of each
//! stream stands. A commit runs in one transaction with whatever bookkeeping
//! the caller passes, so the two are all-or-nothing, and answers only once
//! durable. The pipeline runner commits a checkpoint only after every sink
//! acknowledged the page it ends.

use std::collections::HashSet;
use std::hash::{BuildHasher, RandomState};

use rusqlite::{Connection, OptionalExtension, params};

use crate::bindings::Page;
use crate::db::{DbError, WriterHandle};

/// Why a checkpoint was not committed.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// The database failed or is gone; nothing was committed.
    #[error(transparent)]
    Db(#[from] DbError),
    /// A query failed; nothing was committed.
    #[error("database error: {0}")]
    Sqlite(rusqlite::Error),
    /// The caller's bookkeeping failed; nothing was committed.
    #[error("bookkeeping failed: {0}")]
    Bookkeeping(String),
}

// Not `#[from]`: the message already carries the error (see DbError).
impl From<rusqlite::Error> for CheckpointError {
    fn from(e: rusqlite::Error) -> Self {
        CheckpointError::Sqlite(e)
    }
}

/// The checkpoints one read of a stream has started from, so that a source
/// sending the next read back to one of them (keeping the checkpoint, or
/// going round a circle) is caught instead of read forever. Kept as hashes,
/// with keys of its own so a source cannot aim for a collision: a run may
/// read millions of pages.
#[derive(Debug, Default)]
pub struct Visited {
    seen: HashSet<u64>,
    keys: RandomState,
}

impl Visited {
    /// Notes that a read starts from `from`.
    pub fn start(&mut self, from: Option<&str>) {
        self.seen.insert(self.keys.hash_one(from));
    }

    /// When `page`, read from `from`, says more follows but the next read
    /// would start from a checkpoint already read from (the contract's
    /// `none` keeps `from`): what it did, for the operator.
    pub fn loops(&self, from: Option<&str>, page: &Page) -> Option<String> {
        let next = page.checkpoint.as_deref().or(from);
        if !page.has_more || !self.seen.contains(&self.keys.hash_one(next)) {
            return None;
        }
        let next_text = crate::contract::shown_checkpoint(next);
        Some(if next == from {
            format!("the page says more follows but keeps the checkpoint {next_text}")
        } else {
            format!(
                "the page says more follows but sends the next read back to checkpoint {next_text}, read from before"
            )
        })
    }
}

/// The committed checkpoint of `stream` in `pipeline`, if any.
pub fn read(conn: &Connection, pipeline: &str, stream: &str) -> rusqlite::Result<Option<String>> {
    conn.query_row(
        "SELECT checkpoint FROM checkpoint WHERE pipeline = ?1 AND stream = ?2",
        params![pipeline, stream],
        |row| row.get(0),
    )
    .optional()
}

/// Commits `checkpoint` for `stream` in `pipeline` together with
/// `bookkeeping`, in one transaction: both or neither.
pub async fn commit<F>(
    db: &WriterHandle,
    pipeline: &str,
    stream: &str,
    checkpoint: &str,
    bookkeeping: F,
) -> Result<(), CheckpointError>
where
    F: FnOnce(&Connection) -> Result<(), String> + Send + 'static,
{
    let (pipeline, stream, checkpoint) = (
        pipeline.to_string(),
        stream.to_string(),
        checkpoint.to_string(),
    );
    db.transact(move |conn| {
        bookkeeping(conn).map_err(CheckpointError::Bookkeeping)?;
        conn.execute(
            "INSERT INTO checkpoint (pipeline, stream, checkpoint, updated_at) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (pipeline, stream) DO UPDATE SET checkpoint = excluded.checkpoint, updated_at = excluded.updated_at",
            params![pipeline, stream, checkpoint, crate::audit::now()],
        )?;
        Ok(())
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page(checkpoint: Option<&str>, has_more: bool) -> Page {
        Page {
            records: Vec::new(),
            checkpoint: checkpoint.map(str::to_string),
            has_more,
        }
    }

    /// Reads from each of `from` in turn, each page naming the next as its
    /// checkpoint, and the last page answering `last`.
    fn pages(from: &[Option<&str>], last: Page) -> Option<String> {
        let mut visited = Visited::default();
        for pair in from.windows(2) {
            visited.start(pair[0]);
            assert_eq!(visited.loops(pair[0], &page(pair[1], true)), None);
        }
        let at = from.last().copied().flatten();
        visited.start(at);
        visited.loops(at, &last)
    }

    #[test]
    fn a_page_announcing_more_must_send_the_next_read_somewhere_new() {
        // Kept: the same checkpoint, or `none`, which keeps it.
        let kept = Some("the page says more follows but keeps the checkpoint a".to_string());
        assert_eq!(pages(&[None, Some("a")], page(Some("a"), true)), kept);
        assert_eq!(pages(&[None, Some("a")], page(None, true)), kept);
        assert!(
            pages(&[None], page(None, true))
                .unwrap()
                .ends_with("(none)")
        );
        // Round a circle: back to where an earlier read started.
        let back = pages(&[Some("a"), Some("b"), Some("c")], page(Some("a"), true));
        assert_eq!(
            back.as_deref(),
            Some(
                "the page says more follows but sends the next read back to checkpoint a, read from before"
            )
        );
        // A long checkpoint is cut in the message.
        let long = "é".repeat(300);
        let cut = pages(&[Some(&long)], page(None, true)).unwrap();
        assert!(
            cut.ends_with(&format!("{}… (600 bytes)", "é".repeat(200))),
            "{cut}"
        );
        // Moving on, or at the end.
        assert_eq!(pages(&[None, Some("a")], page(Some("b"), true)), None);
        assert_eq!(pages(&[None, Some("a")], page(None, false)), None);
        assert_eq!(pages(&[Some("a"), Some("b")], page(Some("a"), false)), None);
    }

    #[tokio::test]
    async fn a_failing_bookkeeping_leaves_the_checkpoint_where_it_was() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        let writer = crate::db::Writer::start(
            &path,
            crate::audit::Chain::open(&dir.path().join("k"), &dir.path().join("h")).unwrap(),
        )
        .unwrap();
        let db = writer.handle();
        commit(&db, "p", "contacts", "1", |_| Ok(())).await.unwrap();
        let err = commit(&db, "p", "contacts", "2", |conn| {
            conn.execute(
                "INSERT INTO checkpoint VALUES ('p', 'other', 'x', 'now')",
                [],
            )
            .map_err(|e| e.to_string())?;
            Err("the sink bookkeeping failed".to_string())
        })
        .await
        .unwrap_err();
        assert!(err.to_string().contains("the sink bookkeeping failed"));
        let conn = crate::db::open(&path).unwrap();
        assert_eq!(read(&conn, "p", "contacts").unwrap().as_deref(), Some("1"));
        assert_eq!(
            read(&conn, "p", "other").unwrap(),
            None,
            "the bookkeeping's own write was rolled back too"
        );
    }
}
