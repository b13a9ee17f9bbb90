//! Reading the audit log back: filtered queries for `causeway audit` and a
//! full export for a SIEM.

use rusqlite::Connection;
use serde::Serialize;

use super::{AuditEvent, Decision};

/// One stored row: its place in the chain, the event, and its hash.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StoredEvent {
    /// The sequence number.
    pub seq: i64,
    /// The event.
    #[serde(flatten)]
    pub event: AuditEvent,
    /// The chain hash (HMAC-SHA256, hex).
    pub hash: Option<String>,
}

/// Which rows to read.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Only this plugin's (or `causeway` for the host's own events).
    pub plugin: Option<String>,
    /// Only uses of this capability (`http`, `storage`, `config`, `log`,
    /// or one of the host's: `grants`, `pipeline`, …).
    pub capability: Option<String>,
    /// Only uses made in this pipeline run (`PIPELINE#ID`).
    pub run: Option<String>,
    /// Only rows at or after this time (RFC 3339, as stored).
    pub since: Option<String>,
    /// Only denied uses.
    pub denied: bool,
    /// At most this many, the latest.
    pub limit: Option<u64>,
}

/// The distinct values of `column` (`plugin` or `capability`) in the log,
/// sorted: what a filter that matched nothing could have meant.
pub fn distinct(conn: &Connection, column: Distinct) -> rusqlite::Result<Vec<String>> {
    let column = match column {
        Distinct::Plugin => "plugin",
        Distinct::Capability => "capability",
    };
    let mut stmt = conn.prepare(&format!("SELECT DISTINCT {column} FROM audit ORDER BY 1"))?;
    let values = stmt.query_map([], |row| row.get(0))?;
    values.collect()
}

/// A column [`distinct`] lists.
#[derive(Debug, Clone, Copy)]
pub enum Distinct {
    /// Who made the use.
    Plugin,
    /// What was used.
    Capability,
}

/// The rows `filter` selects, oldest first.
pub fn query(conn: &Connection, filter: &Filter) -> rusqlite::Result<Vec<StoredEvent>> {
    let mut sql = format!("SELECT {COLUMNS} FROM audit WHERE 1 = 1");
    let mut params: Vec<Box<dyn rusqlite::ToSql>> = Vec::new();
    if let Some(plugin) = &filter.plugin {
        params.push(Box::new(plugin.clone()));
        sql.push_str(&format!(" AND plugin = ?{}", params.len()));
    }
    if let Some(capability) = &filter.capability {
        params.push(Box::new(capability.clone()));
        sql.push_str(&format!(" AND capability = ?{}", params.len()));
    }
    if let Some(run) = &filter.run {
        params.push(Box::new(run.clone()));
        sql.push_str(&format!(" AND run_id = ?{}", params.len()));
    }
    if let Some(since) = &filter.since {
        params.push(Box::new(since.clone()));
        sql.push_str(&format!(" AND time >= ?{}", params.len()));
    }
    if filter.denied {
        sql.push_str(" AND decision = 'denied'");
    }
    sql.push_str(" ORDER BY seq DESC");
    if let Some(limit) = filter.limit {
        sql.push_str(&format!(" LIMIT {limit}"));
    }
    let mut stmt = conn.prepare(&sql)?;
    let mut rows = stmt
        .query_map(rusqlite::params_from_iter(params.iter()), |r| {
            from_row(r).map(|(stored, _)| stored)
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    rows.reverse();
    Ok(rows)
}

/// The columns [`from_row`] reads, in its order.
pub(crate) const COLUMNS: &str = "seq, time, plugin, version, digest, capability, action, target, decision, detail, run_id, hash";

/// A row selected with [`COLUMNS`], and its decision exactly as stored (the
/// chain hashes that, not what it parses to).
pub(crate) fn from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<(StoredEvent, String)> {
    let decision: String = r.get(8)?;
    let stored = StoredEvent {
        seq: r.get(0)?,
        event: AuditEvent {
            time: r.get(1)?,
            plugin: r.get(2)?,
            version: r.get(3)?,
            digest: r.get(4)?,
            capability: r.get(5)?,
            action: r.get(6)?,
            target: r.get(7)?,
            decision: Decision::parse(&decision),
            detail: r.get(9)?,
            run_id: r.get(10)?,
        },
        hash: r.get(11)?,
    };
    Ok((stored, decision))
}

/// `text` as a stored time: RFC 3339 (normalised to the stored form), or a
/// duration meaning that long ago (`15m`, `2h`, `7d`).
pub fn parse_since(text: &str) -> Result<String, String> {
    if let Ok(at) = humantime::parse_rfc3339_weak(text) {
        return Ok(humantime::format_rfc3339_micros(at).to_string());
    }
    let ago = humantime::parse_duration(text).map_err(|_| {
        format!(
            "--since {text:?} is neither a time like 2026-11-24T09:00:00Z nor a duration like 2h"
        )
    })?;
    Ok(super::ago(ago))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_takes_times_and_durations_in_the_stored_form() {
        assert_eq!(
            parse_since("2026-11-24T09:00:00Z").unwrap(),
            "2026-11-24T09:00:00.000000Z"
        );
        let ago = parse_since("1h").unwrap();
        assert!(ago < super::super::now(), "{ago}");
        assert!(parse_since("yesterday").unwrap_err().contains("--since"));
        // Before the epoch, and so before every stored time.
        assert_eq!(parse_since("100y").unwrap(), "1970-01-01T00:00:00.000000Z");
        assert_eq!(
            super::super::ago(std::time::Duration::MAX),
            "1970-01-01T00:00:00.000000Z"
        );
    }
}
