//! `storage`: the plugin's private key-value namespace, allowed only by a
//! storage grant. Every call is audited (keys and counts, never values).

use serde::{Deserialize, Serialize};

use crate::audit::{AuditEvent, Decision};
use crate::bindings::causeway::plugin::storage::{Host, StorageError, Write};
use crate::sandbox::StoreState;

/// A storage grant and its quota.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct StorageGrant {
    /// The most bytes (keys and values) the plugin may keep.
    #[serde(default = "default_quota_bytes")]
    pub quota_bytes: u64,
    /// The most keys the plugin may keep.
    #[serde(default = "default_quota_keys")]
    pub quota_keys: u64,
}

fn default_quota_bytes() -> u64 {
    10 * 1024 * 1024
}

fn default_quota_keys() -> u64 {
    10_000
}

impl StoreState {
    /// The storage choke point: checks the grant and audits the use.
    fn storage_access(&self, action: &str, target: &str) -> Result<(), StorageError> {
        let (decision, detail) = match &self.policy.storage {
            Some(_) => (Decision::Allowed, String::new()),
            None => (
                Decision::Denied,
                format!(
                    "plugin {} has no storage grant: add [plugins.{}.storage] to grants.toml (and request storage in the manifest)",
                    self.plugin.name, self.plugin.name
                ),
            ),
        };
        self.audit.record(AuditEvent::new(
            &self.plugin,
            "storage",
            action,
            target,
            decision,
            detail.clone(),
        ));
        match decision {
            Decision::Allowed => Err(StorageError::Unavailable(
                "storage is granted, but this host build has no storage backend yet".to_string(),
            )),
            Decision::Denied => Err(StorageError::Denied(detail)),
        }
    }
}

impl Host for StoreState {
    async fn get(
        &mut self,
        key: String,
    ) -> wasmtime::Result<Result<Option<Vec<u8>>, StorageError>> {
        Ok(self.storage_access("get", &key).map(|()| None))
    }

    async fn set(
        &mut self,
        key: String,
        _value: Vec<u8>,
    ) -> wasmtime::Result<Result<(), StorageError>> {
        Ok(self.storage_access("set", &key))
    }

    async fn delete(&mut self, key: String) -> wasmtime::Result<Result<(), StorageError>> {
        Ok(self.storage_access("delete", &key))
    }

    async fn list_keys(
        &mut self,
        prefix: String,
    ) -> wasmtime::Result<Result<Vec<String>, StorageError>> {
        Ok(self
            .storage_access("list-keys", &prefix)
            .map(|()| Vec::new()))
    }

    async fn batch(&mut self, writes: Vec<Write>) -> wasmtime::Result<Result<(), StorageError>> {
        Ok(self.storage_access("batch", &format!("{} writes", writes.len())))
    }
}
