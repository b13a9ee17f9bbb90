//! Every change of the grants, however it was made (`causeway grants
//! approve|revoke`, or an editor), becomes an audit event: the host compares
//! the grants it loads with the ones last recorded (table `grants_seen`) in
//! the same transaction that writes the events, so each change is recorded
//! once, by whichever process sees it first.

use std::collections::{BTreeMap, BTreeSet};

use rusqlite::params;
use serde::{Deserialize, Serialize};

use super::{Approval, Grants, PluginGrant, Revocation};
use crate::audit::{AuditEvent, Decision};
use crate::db::AuditedJob;

/// What the audit log remembers of one plugin's grant.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct Seen {
    lines: Vec<String>,
    approval: Option<Approval>,
    revocation: Option<Revocation>,
}

/// One line per thing `grant` allows or limits, as the audit log shows it.
pub fn describe(grant: &PluginGrant) -> Vec<String> {
    let mut lines: Vec<String> = grant
        .http
        .iter()
        .map(|r| format!("http {}", r.to_inline_toml()))
        .collect();
    for (name, b) in &grant.credentials {
        lines.push(format!("credential {name}: {}", b.describe()));
    }
    if let Some(s) = &grant.storage {
        lines.push(format!(
            "storage: {} bytes, {} keys",
            s.quota_bytes, s.quota_keys
        ));
    }
    if let Some(limits) = &grant.http_limits {
        lines.push(format!(
            "http-limits: {}",
            serde_json::to_string(limits).unwrap_or_default()
        ));
    }
    if let Some(mb) = grant.limits.memory_mb {
        lines.push(format!("limits: memory-mb = {mb}"));
    }
    if let Some(timeout) = grant.limits.call_timeout {
        lines.push(format!(
            "limits: call-timeout = {}",
            humantime::format_duration(timeout.0)
        ));
    }
    for (key, value) in [
        ("table-elements", grant.limits.table_elements),
        ("instances", grant.limits.instances),
        ("resources", grant.limits.resources),
    ] {
        if let Some(value) = value {
            lines.push(format!("limits: {key} = {value}"));
        }
    }
    if let Some(units) = grant.limits.fuel {
        lines.push(format!("limits: fuel = {units}"));
    }
    lines
}

/// A job recording, as audit events, how `grants` differs from the grants
/// last recorded.
pub fn record(grants: &Grants) -> AuditedJob {
    let file = grants.file.display().to_string();
    let now: BTreeMap<String, Seen> = grants
        .names()
        .filter_map(|(name, _)| {
            let grant = grants.get(name)?;
            Some((
                name.to_string(),
                Seen {
                    lines: describe(grant),
                    approval: grant.approval.clone(),
                    revocation: grant.revocation.clone(),
                },
            ))
        })
        .collect();
    Box::new(move |conn| {
        let mut before = BTreeMap::new();
        {
            let mut stmt = conn.prepare("SELECT plugin, grant FROM grants_seen")?;
            let rows =
                stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
            for row in rows {
                let (plugin, text) = row?;
                // A row this version cannot read counts as nothing granted.
                before.insert(
                    plugin,
                    serde_json::from_str::<Seen>(&text).unwrap_or_default(),
                );
            }
        }
        let mut events = Vec::new();
        let names: BTreeSet<&String> = before.keys().chain(now.keys()).collect();
        for name in names {
            let old = before.get(name);
            let new = now.get(name);
            if old == new {
                continue;
            }
            let empty = Seen::default();
            events.push(event(name, old.unwrap_or(&empty), new, &file));
            match new {
                Some(seen) => conn.execute(
                    "INSERT OR REPLACE INTO grants_seen (plugin, grant) VALUES (?1, ?2)",
                    params![name, serde_json::to_string(seen).unwrap_or_default()],
                )?,
                None => conn.execute("DELETE FROM grants_seen WHERE plugin = ?1", [name])?,
            };
        }
        Ok(events)
    })
}

fn event(name: &str, old: &Seen, new: Option<&Seen>, file: &str) -> AuditEvent {
    let empty = Seen::default();
    let now = new.unwrap_or(&empty);
    let added: Vec<&String> = now
        .lines
        .iter()
        .filter(|l| !old.lines.contains(l))
        .collect();
    let removed: Vec<&String> = old
        .lines
        .iter()
        .filter(|l| !now.lines.contains(l))
        .collect();
    let (action, by) = if now.approval.is_some() && now.approval != old.approval {
        ("approve", now.approval.as_ref().map(|a| a.by.clone()))
    } else if now.revocation.is_some() && now.revocation != old.revocation {
        ("revoke", now.revocation.as_ref().map(|r| r.by.clone()))
    } else if new.is_none() {
        ("revoke", None)
    } else {
        ("change", None)
    };
    let mut detail = format!(
        "by {}",
        by.unwrap_or_else(|| format!("an edit of {file} (no approver recorded)"))
    );
    if let Some(revocation) = now.revocation.as_ref().filter(|_| action == "revoke") {
        detail.push_str(&format!(" ({})", revocation.what));
    }
    for line in &added {
        detail.push_str(&format!("; + {line}"));
    }
    for line in &removed {
        detail.push_str(&format!("; - {line}"));
    }
    if new.is_none() {
        detail.push_str("; section removed");
    }
    AuditEvent {
        time: crate::audit::now(),
        plugin: name.to_string(),
        version: "-".into(),
        digest: now
            .approval
            .as_ref()
            .map(|a| a.digest.clone())
            .unwrap_or_else(|| "-".into()),
        capability: "grants".into(),
        action: action.into(),
        target: file.to_string(),
        decision: Decision::Allowed,
        detail,
        run_id: None,
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::audit::query::{Filter, query};

    fn write(db: &Path, dir: &Path, grants: &str) {
        let chain = crate::audit::Chain::open(&dir.join("k"), &dir.join("h")).unwrap();
        let writer = crate::db::Writer::start(db, chain).unwrap();
        let grants = Grants::parse(grants, Path::new("grants.toml")).unwrap();
        writer.handle().audited(record(&grants));
        writer.close();
    }

    #[test]
    fn each_change_is_recorded_once_with_who_and_what() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("db");
        let first = "[plugins.a]\nstorage = {}\n[[plugins.a.http]]\nhost = \"x.example\"\nmethods = [\"GET\"]\n";
        write(&db, dir.path(), first);
        write(&db, dir.path(), first);
        let approved = "[plugins.a]\nstorage = {}\napproval = { by = \"alice\", at = \"2026-11-24T09:00:00Z\", digest = \"sha256:ab\" }\n[[plugins.a.http]]\nhost = \"x.example\"\nport = 443\nmethods = [\"GET\"]\n";
        write(&db, dir.path(), approved);
        write(&db, dir.path(), "");
        let conn = rusqlite::Connection::open(&db).unwrap();
        let rows = query(&conn, &Filter::default()).unwrap();
        let actions: Vec<(&str, &str)> = rows
            .iter()
            .map(|r| (r.event.action.as_str(), r.event.detail.as_str()))
            .collect();
        assert_eq!(actions.len(), 3, "{actions:?}");
        assert_eq!(actions[0].0, "change");
        assert!(actions[0].1.contains("+ http"), "{actions:?}");
        assert_eq!(actions[1].0, "approve");
        assert!(actions[1].1.starts_with("by alice"), "{actions:?}");
        assert!(actions[1].1.contains("port = 443"), "{actions:?}");
        assert_eq!(rows[1].event.digest, "sha256:ab");
        assert_eq!(actions[2].0, "revoke");
        assert!(actions[2].1.contains("section removed"), "{actions:?}");
        assert!(rows.iter().all(|r| r.event.plugin == "a"));
    }

    #[test]
    fn every_limit_a_grant_raises_is_described() {
        let grants = Grants::parse(
            "[plugins.a]\nlimits = { memory-mb = 8, call-timeout = \"2s\", table-elements = 9, instances = 3, resources = 7, fuel = 5 }\n",
            Path::new("grants.toml"),
        )
        .unwrap();
        let lines = describe(grants.get("a").unwrap());
        for expected in [
            "limits: memory-mb = 8",
            "limits: call-timeout = 2s",
            "limits: table-elements = 9",
            "limits: instances = 3",
            "limits: resources = 7",
            "limits: fuel = 5",
        ] {
            assert!(lines.iter().any(|l| l == expected), "{expected}: {lines:?}");
        }
    }
}
