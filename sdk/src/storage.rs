//! The plugin's private key-value store, through the host's `storage`
//! capability. Values are bytes; [`get_json`] and [`set_json`] carry serde
//! values.

use serde::Serialize;
use serde::de::DeserializeOwned;

pub use crate::bindings::source::causeway::plugin::storage::{
    StorageError, Write, batch, delete, get, list_keys, set,
};

/// Reads a JSON value stored under `key`.
pub fn get_json<T: DeserializeOwned>(key: &str) -> Result<Option<T>, StorageError> {
    match get(key)? {
        None => Ok(None),
        Some(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| {
            StorageError::Unavailable(format!("value of {key} is not valid JSON: {e}"))
        }),
    }
}

/// Stores a value as JSON under `key`.
pub fn set_json<T: Serialize>(key: &str, value: &T) -> Result<(), StorageError> {
    let bytes = serde_json::to_vec(value).map_err(|e| {
        StorageError::InvalidKey(format!("value for {key} cannot be written as JSON: {e}"))
    })?;
    set(key, &bytes)
}
