//! The webhook inbox: each verified delivery is stored before the sender
//! gets its 2xx, so a crash after the answer loses nothing, and the
//! delivery id is unique per pipeline, so a redelivery (even after a
//! restart) is recognised and not processed twice. Processed deliveries stay
//! (for deduplication) until their retention is over.

use rusqlite::{Connection, params};

use crate::bindings::IncomingRequest;

/// One stored delivery.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// The inbox row.
    pub id: i64,
    /// The sender's delivery id.
    pub delivery_id: String,
    /// The request, as the webhook plugin receives it.
    pub request: IncomingRequest,
}

/// Stores a delivery; `false` if this pipeline already has its id.
pub fn insert(
    conn: &Connection,
    pipeline: &str,
    delivery_id: &str,
    request: &IncomingRequest,
) -> rusqlite::Result<bool> {
    let headers = serde_json::to_string(&request.headers).unwrap_or_else(|_| "[]".into());
    let inserted = conn.execute(
        "INSERT INTO webhook_inbox (pipeline, delivery_id, received_at, method, path, query, headers, body, state)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, 'pending')
         ON CONFLICT (pipeline, delivery_id) DO NOTHING",
        params![
            pipeline,
            delivery_id,
            crate::audit::now(),
            request.method,
            request.path,
            request.query,
            headers,
            request.body,
        ],
    )?;
    Ok(inserted == 1)
}

/// The oldest deliveries of `pipeline` not yet processed, oldest first, of
/// those stored up to id `up_to`: at most `limit`, and no more once their
/// bodies add up to `max_bytes` (the oldest is always taken), so a burst of
/// large bodies is not all loaded at once.
pub fn pending(
    conn: &Connection,
    pipeline: &str,
    up_to: i64,
    limit: usize,
    max_bytes: usize,
) -> rusqlite::Result<Vec<Delivery>> {
    let mut statement = conn.prepare_cached(
        "SELECT id, delivery_id, method, path, query, headers, body FROM webhook_inbox
         WHERE pipeline = ?1 AND state = 'pending' AND id <= ?2 ORDER BY id LIMIT ?3",
    )?;
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let rows = statement.query_map(params![pipeline, up_to, limit], |row| {
        let headers: String = row.get(5)?;
        Ok(Delivery {
            id: row.get(0)?,
            delivery_id: row.get(1)?,
            request: IncomingRequest {
                method: row.get(2)?,
                path: row.get(3)?,
                query: row.get(4)?,
                headers: serde_json::from_str(&headers).unwrap_or_default(),
                body: row.get(6)?,
            },
        })
    })?;
    let mut taken = Vec::new();
    let mut bytes = 0;
    // Rows are read one by one: the bodies left over are never loaded.
    for row in rows {
        let delivery = row?;
        bytes += delivery.request.body.len();
        taken.push(delivery);
        if bytes >= max_bytes {
            break;
        }
    }
    Ok(taken)
}

/// Whether `pipeline` has a delivery not yet processed (nothing loaded).
pub fn has_pending(conn: &Connection, pipeline: &str) -> rusqlite::Result<bool> {
    conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM webhook_inbox WHERE pipeline = ?1 AND state = 'pending')",
        params![pipeline],
        |row| row.get(0),
    )
}

/// The id of `pipeline`'s newest delivery not yet processed, if any: a run
/// takes the deliveries up to it, and those arriving meanwhile are the
/// next run's, so a steady stream never keeps one run going.
pub fn newest_pending(conn: &Connection, pipeline: &str) -> rusqlite::Result<Option<i64>> {
    conn.query_row(
        "SELECT MAX(id) FROM webhook_inbox WHERE pipeline = ?1 AND state = 'pending'",
        params![pipeline],
        |row| row.get(0),
    )
}

/// How many deliveries of `pipeline` wait, and how many were set aside.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Stored and not yet processed.
    pub pending: u64,
    /// Set aside (`failed`): the plugin could not make sense of them.
    pub set_aside: u64,
}

/// `pipeline`'s [`Counts`], each along the inbox's (pipeline, state) index.
pub fn counts(conn: &Connection, pipeline: &str) -> rusqlite::Result<Counts> {
    let mut stmt = conn
        .prepare_cached("SELECT COUNT(*) FROM webhook_inbox WHERE pipeline = ?1 AND state = ?2")?;
    let mut count = |state: &str| stmt.query_row(params![pipeline, state], |row| row.get(0));
    Ok(Counts {
        pending: count("pending")?,
        set_aside: count("failed")?,
    })
}

/// The pipelines `configured` does not know whose deliveries still wait,
/// with how many: they are processed once the pipeline is back.
pub fn stranded(
    conn: &Connection,
    configured: impl Fn(&str) -> bool,
) -> rusqlite::Result<Vec<(String, u64)>> {
    let mut stmt = conn.prepare(
        "SELECT pipeline, COUNT(*) FROM webhook_inbox WHERE state = 'pending' GROUP BY pipeline ORDER BY pipeline",
    )?;
    let waiting = stmt.query_map([], |row| Ok((row.get::<_, String>(0)?, row.get(1)?)))?;
    let mut stranded = Vec::new();
    for row in waiting {
        let (pipeline, count) = row?;
        if !configured(&pipeline) {
            stranded.push((pipeline, count));
        }
    }
    Ok(stranded)
}

/// Puts `pipeline`'s set-aside deliveries back in the queue (a fixed plugin
/// will read them again); how many.
pub fn redeliver(conn: &Connection, pipeline: &str) -> rusqlite::Result<usize> {
    conn.execute(
        "UPDATE webhook_inbox SET state = 'pending', error = NULL, processed_at = NULL
         WHERE pipeline = ?1 AND state = 'failed'",
        params![pipeline],
    )
}

/// Marks a delivery processed (`done`) or given up on (`failed`, with why).
/// A processed delivery keeps only its id, to recognise a redelivery: its
/// body, headers and query go at once (its records are in the sinks), so
/// the inbox holds neither a week of personal data nor its bulk. A failed
/// one keeps them, to be redelivered.
pub fn finish(conn: &Connection, id: i64, error: Option<&str>) -> rusqlite::Result<()> {
    let now = crate::audit::now();
    match error {
        None => conn.execute(
            "UPDATE webhook_inbox SET state = 'done', error = NULL, processed_at = ?2,
                 body = x'', headers = '[]', query = '' WHERE id = ?1",
            params![id, now],
        )?,
        Some(error) => conn.execute(
            "UPDATE webhook_inbox SET state = 'failed', error = ?2, processed_at = ?3 WHERE id = ?1",
            params![id, error, now],
        )?,
    };
    Ok(())
}

/// Drops processed deliveries of `pipeline` received before `cutoff`, at
/// most `limit` of them.
pub fn expire(
    conn: &Connection,
    pipeline: &str,
    cutoff: &str,
    limit: usize,
) -> rusqlite::Result<usize> {
    conn.execute(
        "DELETE FROM webhook_inbox WHERE id IN (SELECT id FROM webhook_inbox
             WHERE pipeline = ?1 AND state != 'pending' AND received_at < ?2 LIMIT ?3)",
        params![pipeline, cutoff, i64::try_from(limit).unwrap_or(i64::MAX)],
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(body: &str) -> IncomingRequest {
        IncomingRequest {
            method: "POST".into(),
            path: "/hooks/crm".into(),
            query: String::new(),
            headers: vec![("content-type".into(), "application/json".into())],
            body: body.as_bytes().to_vec(),
        }
    }

    #[test]
    fn pending_deliveries_come_oldest_first_up_to_the_limit_and_only_the_pipelines_own() {
        let dir = tempfile::tempdir().unwrap();
        let conn = crate::db::open(&dir.path().join("db")).unwrap();
        for (pipeline, id) in [("p", "a"), ("q", "x"), ("p", "b"), ("p", "c")] {
            assert!(insert(&conn, pipeline, id, &request(id)).unwrap());
        }
        assert!(
            !insert(&conn, "p", "a", &request("again")).unwrap(),
            "a redelivery is recognised"
        );
        let ids = |limit| {
            pending(&conn, "p", i64::MAX, limit, usize::MAX)
                .unwrap()
                .into_iter()
                .map(|d| d.delivery_id)
                .collect::<Vec<_>>()
        };
        assert_eq!(ids(2), ["a", "b"]);
        assert_eq!(ids(100), ["a", "b", "c"]);
        // A run takes those stored up to the newest when it began.
        let newest = newest_pending(&conn, "p").unwrap().unwrap();
        assert!(insert(&conn, "p", "d", &request("d")).unwrap());
        let taken: Vec<String> = pending(&conn, "p", newest, 100, usize::MAX)
            .unwrap()
            .into_iter()
            .map(|d| d.delivery_id)
            .collect();
        assert_eq!(taken, ["a", "b", "c"], "not the one stored after");
        assert_eq!(newest_pending(&conn, "none").unwrap(), None);
        let within = |max_bytes| pending(&conn, "p", i64::MAX, 100, max_bytes).unwrap().len();
        assert_eq!(within(0), 1, "the oldest is always taken");
        assert_eq!(within(2), 2, "no more once the bodies reach the budget");

        let oldest = pending(&conn, "p", i64::MAX, 1, usize::MAX)
            .unwrap()
            .remove(0);
        assert_eq!(
            oldest.request.body, b"a",
            "the first body stored, not the redelivery"
        );
        assert_eq!(oldest.request.headers, request("a").headers);
        finish(&conn, oldest.id, None).unwrap();
        let next = pending(&conn, "p", i64::MAX, 1, usize::MAX)
            .unwrap()
            .remove(0);
        finish(&conn, next.id, Some("cannot parse it")).unwrap();
        assert_eq!(
            ids(100),
            ["c", "d"],
            "done and set-aside deliveries are not pending"
        );
        let kept = |id: i64| -> (Vec<u8>, String) {
            conn.query_row(
                "SELECT body, headers FROM webhook_inbox WHERE id = ?1",
                params![id],
                |row| Ok((row.get(0)?, row.get(1)?)),
            )
            .unwrap()
        };
        assert_eq!(kept(oldest.id), (Vec::new(), "[]".to_string()), "done");
        assert_eq!(kept(next.id).0, b"b", "set aside, to be redelivered");
        assert!(has_pending(&conn, "p").unwrap());
        assert!(!has_pending(&conn, "none").unwrap());
        for last in pending(&conn, "p", i64::MAX, 100, usize::MAX).unwrap() {
            finish(&conn, last.id, None).unwrap();
        }
        assert!(!has_pending(&conn, "p").unwrap(), "every delivery is done");
        assert!(
            has_pending(&conn, "q").unwrap(),
            "another pipeline's is its own"
        );
    }
}
