//! Source checkpoints, owned by the host: where each pipeline's read of each
//! stream stands. A commit runs in one transaction with whatever bookkeeping
//! the caller passes, so the two are all-or-nothing, and answers only once
//! durable. The pipeline runner commits a checkpoint only after every sink
//! acknowledged the page it ends.

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

/// Whether a page that says more follows leaves the checkpoint where it was
/// read from (the contract's `none` keeps it): read again from there, the
/// source would answer the same page, and a run would never end.
pub fn stuck(read_from: Option<&str>, page: &Page) -> bool {
    page.has_more
        && page
            .checkpoint
            .as_deref()
            .is_none_or(|next| Some(next) == read_from)
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

    #[test]
    fn a_page_announcing_more_must_move_the_checkpoint() {
        // Stuck: more follows, and the next read would start where this one did.
        assert!(stuck(None, &page(None, true)));
        assert!(stuck(Some("a"), &page(None, true)), "`none` keeps `a`");
        assert!(stuck(Some("a"), &page(Some("a"), true)));
        // Moving on, or at the end.
        assert!(!stuck(None, &page(Some("a"), true)));
        assert!(!stuck(Some("a"), &page(Some("b"), true)));
        assert!(!stuck(Some("a"), &page(None, false)));
        assert!(!stuck(Some("a"), &page(Some("a"), false)));
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
