//! `storage`: the plugin's private key-value namespace.
//!
//! Until the storage grant and its database are in place, every call is
//! denied with a message naming the plugin.

use crate::bindings::causeway::plugin::storage::{Host, StorageError, Write};
use crate::sandbox::StoreState;

impl StoreState {
    fn storage_denied(&self) -> StorageError {
        StorageError::Denied(format!(
            "plugin {} has no storage grant: an operator must grant it in grants.toml",
            self.plugin.name
        ))
    }
}

impl Host for StoreState {
    async fn get(
        &mut self,
        _key: String,
    ) -> wasmtime::Result<Result<Option<Vec<u8>>, StorageError>> {
        Ok(Err(self.storage_denied()))
    }

    async fn set(
        &mut self,
        _key: String,
        _value: Vec<u8>,
    ) -> wasmtime::Result<Result<(), StorageError>> {
        Ok(Err(self.storage_denied()))
    }

    async fn delete(&mut self, _key: String) -> wasmtime::Result<Result<(), StorageError>> {
        Ok(Err(self.storage_denied()))
    }

    async fn list_keys(
        &mut self,
        _prefix: String,
    ) -> wasmtime::Result<Result<Vec<String>, StorageError>> {
        Ok(Err(self.storage_denied()))
    }

    async fn batch(&mut self, _writes: Vec<Write>) -> wasmtime::Result<Result<(), StorageError>> {
        Ok(Err(self.storage_denied()))
    }
}
