//! `storage`: the plugin's private key-value namespace, allowed only by a
//! storage grant.
//!
//! A namespace is a (plugin, pipeline) pair kept in separate columns, never
//! a joined string, so no key, prefix or name can reach another namespace.
//! Every call goes through the database's single writer, runs in a savepoint
//! (a failing batch writes nothing) and answers only once committed. Quotas
//! (bytes of keys and values, and keys) hold per plugin across its
//! pipelines. Calls are audited with keys and counts, never values.

use rusqlite::{Connection, OptionalExtension, params};
use serde::{Deserialize, Serialize};

use crate::audit::{AuditEvent, Decision};
use crate::bindings::causeway::plugin::storage::{Host, StorageError, Write};
use crate::db::DbError;
use crate::sandbox::StoreState;

/// The longest key, in bytes.
pub const MAX_KEY_BYTES: usize = 1024;

/// A storage grant and its quota.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(
    deny_unknown_fields,
    rename_all = "kebab-case",
    expecting = "a table such as { quota-bytes = 10485760, quota-keys = 10000 } (or {} for the defaults)"
)]
pub struct StorageGrant {
    /// The most bytes (keys and values) the plugin may keep.
    #[serde(default = "default_quota_bytes", deserialize_with = "quota_bytes")]
    pub quota_bytes: u64,
    /// The most keys the plugin may keep.
    #[serde(default = "default_quota_keys", deserialize_with = "quota_keys")]
    pub quota_keys: u64,
}

fn quota_bytes<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    crate::config::range::at_least_one(d, "quota-bytes", "nothing could be stored")
}

fn quota_keys<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    crate::config::range::at_least_one(d, "quota-keys", "no key could be stored")
}

impl Default for StorageGrant {
    /// The quotas a grant without numbers gets.
    fn default() -> StorageGrant {
        StorageGrant {
            quota_bytes: default_quota_bytes(),
            quota_keys: default_quota_keys(),
        }
    }
}

fn default_quota_bytes() -> u64 {
    10 * 1024 * 1024
}

fn default_quota_keys() -> u64 {
    10_000
}

/// Where a plugin's keys live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Namespace {
    /// The plugin's name.
    pub plugin: String,
    /// The pipeline it runs in; empty outside pipelines.
    pub pipeline: String,
}

/// A storage failure, as the guest sees it.
#[derive(Debug)]
pub struct Failure(pub StorageError);

impl From<DbError> for Failure {
    fn from(e: DbError) -> Failure {
        Failure(StorageError::Unavailable(e.to_string()))
    }
}

impl From<rusqlite::Error> for Failure {
    fn from(e: rusqlite::Error) -> Failure {
        Failure(StorageError::Unavailable(format!("database error: {e}")))
    }
}

fn check_key(key: &str) -> Result<(), StorageError> {
    if key.is_empty() {
        return Err(StorageError::InvalidKey("a key must not be empty".into()));
    }
    if key.len() > MAX_KEY_BYTES {
        return Err(StorageError::InvalidKey(format!(
            "a key must be at most {MAX_KEY_BYTES} bytes; this one is {}",
            key.len()
        )));
    }
    Ok(())
}

/// Reads a key.
pub fn get(conn: &Connection, ns: &Namespace, key: &str) -> rusqlite::Result<Option<Vec<u8>>> {
    conn.prepare_cached(
        "SELECT value FROM storage WHERE plugin = ?1 AND pipeline = ?2 AND key = ?3",
    )?
    .query_row(params![ns.plugin, ns.pipeline, key.as_bytes()], |row| {
        row.get(0)
    })
    .optional()
}

/// The keys starting with `prefix`, in byte order, with their value sizes.
pub fn list(
    conn: &Connection,
    ns: &Namespace,
    prefix: &str,
) -> rusqlite::Result<Vec<(String, u64)>> {
    let mut stmt = conn.prepare_cached(
        "SELECT key, length(value) FROM storage
         WHERE plugin = ?1 AND pipeline = ?2 AND substr(key, 1, ?4) = ?3
         ORDER BY key",
    )?;
    let prefix = prefix.as_bytes();
    let rows = stmt.query_map(
        params![ns.plugin, ns.pipeline, prefix, prefix.len() as i64],
        |row| {
            let key: Vec<u8> = row.get(0)?;
            Ok((
                String::from_utf8_lossy(&key).into_owned(),
                row.get::<_, i64>(1)? as u64,
            ))
        },
    )?;
    rows.collect()
}

/// Applies writes, then checks the plugin's quota; over quota is an error
/// (the caller's savepoint then discards every write of the batch).
pub fn apply(
    conn: &Connection,
    ns: &Namespace,
    writes: &[Write],
    quota: &StorageGrant,
) -> Result<(), Failure> {
    for write in writes {
        match write {
            Write::Set((key, value)) => {
                conn.prepare_cached(
                    "INSERT INTO storage (plugin, pipeline, key, value) VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT (plugin, pipeline, key) DO UPDATE SET value = excluded.value",
                )?
                .execute(params![
                    ns.plugin,
                    ns.pipeline,
                    key.as_bytes(),
                    value
                ])?;
            }
            Write::Delete(key) => {
                conn.prepare_cached(
                    "DELETE FROM storage WHERE plugin = ?1 AND pipeline = ?2 AND key = ?3",
                )?
                .execute(params![ns.plugin, ns.pipeline, key.as_bytes()])?;
            }
        }
    }
    let (keys, bytes): (i64, i64) = conn
        .prepare_cached("SELECT count(*), coalesce(sum(length(key) + length(value)), 0) FROM storage WHERE plugin = ?1")?
        .query_row(params![ns.plugin], |row| Ok((row.get(0)?, row.get(1)?)))?;
    if keys as u64 > quota.quota_keys || bytes as u64 > quota.quota_bytes {
        return Err(Failure(StorageError::QuotaExceeded(format!(
            "plugin {} would keep {keys} keys and {bytes} bytes; its quota is {} keys and {} bytes: nothing of this write was stored",
            ns.plugin, quota.quota_keys, quota.quota_bytes
        ))));
    }
    Ok(())
}

impl StoreState {
    /// The storage choke point: checks the grant and the keys, audits the
    /// use, and hands back the namespace and quota to work in.
    fn storage_access(
        &self,
        action: &str,
        target: &str,
        keys: &[&str],
    ) -> Result<(Namespace, StorageGrant), StorageError> {
        let checked = match &self.policy.storage {
            None => Err(StorageError::Denied(format!(
                "plugin {} has no storage grant: request storage in its manifest, and add [plugins.{}.storage] to grants.toml",
                self.plugin.name, self.plugin.name
            ))),
            Some(grant) => keys
                .iter()
                .try_for_each(|k| check_key(k))
                .map(|()| grant.clone()),
        };
        let (decision, detail) = match &checked {
            Ok(_) => (Decision::Allowed, String::new()),
            Err(e) => (Decision::Denied, format!("{e:?}")),
        };
        self.audit.record(AuditEvent::new(
            &self.plugin,
            "storage",
            action,
            target,
            decision,
            detail,
        ));
        let grant = checked?;
        Ok((
            Namespace {
                plugin: self.plugin.name.clone(),
                pipeline: self.pipeline.clone(),
            },
            grant,
        ))
    }

    async fn storage_write(
        &mut self,
        action: &str,
        writes: Vec<Write>,
    ) -> Result<(), StorageError> {
        let keys: Vec<&str> = writes
            .iter()
            .map(|w| match w {
                Write::Set((key, _)) => key.as_str(),
                Write::Delete(key) => key.as_str(),
            })
            .collect();
        let target = match keys.as_slice() {
            [one] => one.to_string(),
            many => format!("{} keys: {}", many.len(), many.join(", ")),
        };
        let (ns, quota) = self.storage_access(action, &target, &keys)?;
        self.db
            .transact(move |conn| apply(conn, &ns, &writes, &quota))
            .await
            .map_err(|Failure(e)| e)
    }
}

impl Host for StoreState {
    async fn get(
        &mut self,
        key: String,
    ) -> wasmtime::Result<Result<Option<Vec<u8>>, StorageError>> {
        let (ns, _) = match self.storage_access("get", &key, &[&key]) {
            Ok(access) => access,
            Err(e) => return Ok(Err(e)),
        };
        Ok(self
            .db
            .transact(move |conn| get(conn, &ns, &key).map_err(Failure::from))
            .await
            .map_err(|Failure(e)| e))
    }

    async fn set(
        &mut self,
        key: String,
        value: Vec<u8>,
    ) -> wasmtime::Result<Result<(), StorageError>> {
        Ok(self
            .storage_write("set", vec![Write::Set((key, value))])
            .await)
    }

    async fn delete(&mut self, key: String) -> wasmtime::Result<Result<(), StorageError>> {
        Ok(self.storage_write("delete", vec![Write::Delete(key)]).await)
    }

    async fn list_keys(
        &mut self,
        prefix: String,
    ) -> wasmtime::Result<Result<Vec<String>, StorageError>> {
        // An empty prefix lists everything: only the grant is checked.
        let (ns, _) = match self.storage_access("list-keys", &prefix, &[]) {
            Ok(access) => access,
            Err(e) => return Ok(Err(e)),
        };
        Ok(self
            .db
            .transact(move |conn| {
                list(conn, &ns, &prefix)
                    .map(|rows| rows.into_iter().map(|(k, _)| k).collect())
                    .map_err(Failure::from)
            })
            .await
            .map_err(|Failure(e)| e))
    }

    async fn batch(&mut self, writes: Vec<Write>) -> wasmtime::Result<Result<(), StorageError>> {
        Ok(self.storage_write("batch", writes).await)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ns(plugin: &str, pipeline: &str) -> Namespace {
        Namespace {
            plugin: plugin.into(),
            pipeline: pipeline.into(),
        }
    }

    fn quota(keys: u64) -> StorageGrant {
        StorageGrant {
            quota_bytes: 1 << 20,
            quota_keys: keys,
        }
    }

    fn set(key: &str, value: &str) -> Write {
        Write::Set((key.to_string(), value.as_bytes().to_vec()))
    }

    /// No plugin name, pipeline name or key, however spelled, reaches
    /// another namespace: they are separate columns.
    #[test]
    fn namespaces_never_meet_whatever_the_names_and_keys() {
        let dir = tempfile::tempdir().unwrap();
        let conn = crate::db::open(&dir.path().join("db")).unwrap();
        let spaces = [
            ns("a", ""),
            ns("a:b", ""),
            ns("a", "b"),
            ns("a", ":b"),
            ns("a%", ""),
        ];
        let keys = ["k", "b:k", ":k", "%", "/k", "k\0x", "a\0"];
        for (i, space) in spaces.iter().enumerate() {
            let writes: Vec<Write> = keys.iter().map(|k| set(k, &format!("{i}"))).collect();
            apply(&conn, space, &writes, &quota(100)).unwrap();
        }
        for (i, space) in spaces.iter().enumerate() {
            for key in keys {
                assert_eq!(
                    get(&conn, space, key).unwrap(),
                    Some(format!("{i}").into_bytes()),
                    "{space:?} {key:?}"
                );
            }
            let listed = list(&conn, space, "").unwrap();
            assert_eq!(listed.len(), keys.len(), "{space:?}: {listed:?}");
            assert_eq!(
                list(&conn, space, "%").unwrap().len(),
                1,
                "% is not a wildcard"
            );
            assert_eq!(list(&conn, space, "k").unwrap().len(), 2, "k and k\\0x");
        }
    }

    #[test]
    fn a_batch_over_quota_is_an_error_naming_the_quota() {
        let dir = tempfile::tempdir().unwrap();
        let conn = crate::db::open(&dir.path().join("db")).unwrap();
        let space = ns("p", "");
        apply(&conn, &space, &[set("a", "1"), set("b", "2")], &quota(3)).unwrap();
        let Err(Failure(StorageError::QuotaExceeded(message))) =
            apply(&conn, &space, &[set("c", "3"), set("d", "4")], &quota(3))
        else {
            panic!("expected quota-exceeded");
        };
        assert!(message.contains("quota is 3 keys"), "{message}");
    }

    #[test]
    fn keys_are_checked() {
        assert!(check_key("").is_err());
        assert!(check_key(&"k".repeat(MAX_KEY_BYTES + 1)).is_err());
        assert!(check_key("a/b:c%\0").is_ok());
    }
}
