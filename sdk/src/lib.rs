//! Write Causeway plugins in plain Rust.
//!
//! A plugin is a type implementing one or more of [`Transform`], [`Source`],
//! [`Sink`] and [`Webhook`], exported with one [`plugin!`] line. The macro
//! embeds the plugin's manifest (`plugin.toml`, kept beside `Cargo.toml`) and
//! the contract version this SDK was built against; build with
//! `cargo build --release --target wasm32-wasip2` and drop the `.wasm` into a
//! Causeway plugins folder.
//!
//! ```ignore
//! use causeway_sdk::{plugin, PluginError, Record, Transform};
//!
//! struct Upper;
//! impl Transform for Upper {
//!     fn transform(batch: Vec<Record>) -> Result<Vec<Record>, PluginError> {
//!         Ok(batch)
//!     }
//! }
//! plugin!(transform: Upper);
//! ```

#![deny(missing_docs)]

extern crate self as causeway_sdk;

#[doc(hidden)]
pub mod adapters;
// Unit-tested natively; installed only where the static below is.
#[cfg_attr(
    not(all(
        feature = "allocator",
        target_arch = "wasm32",
        not(target_feature = "atomics")
    )),
    allow(dead_code)
)]
mod allocator;
pub mod bindings;
pub mod http;
pub mod log;
pub mod paging;
mod record;
pub mod storage;

#[doc(hidden)]
pub use wit_bindgen as __wit_bindgen;

pub use bindings::source::causeway::plugin::types::{
    IncomingRequest, Op, Page, PluginError, RateLimit, Record, StreamInfo, WriteOutcome,
};

// The SDK's allocator serves the many small blocks a batch needs (one per
// string lowered into the guest) from free lists: docs/performance.md §1.
#[cfg(all(
    feature = "allocator",
    target_arch = "wasm32",
    not(target_feature = "atomics")
))]
#[global_allocator]
static ALLOCATOR: allocator::SizeClasses = allocator::SizeClasses::new();

/// The version of the `causeway:plugin` WIT package this SDK implements; the
/// [`plugin!`] macro stamps it into every plugin's manifest.
pub const CONTRACT_VERSION: &str = "0.1.0";

/// A transform: a batch of records in, records out. Zero out filters, several
/// out splits. It must be deterministic.
pub trait Transform {
    /// Maps one batch.
    fn transform(batch: Vec<Record>) -> Result<Vec<Record>, PluginError>;
}

/// A source connector: reads pages of records from a checkpoint.
pub trait Source {
    /// Checks the configuration and the connection.
    fn check() -> Result<(), PluginError> {
        Ok(())
    }
    /// Lists the streams this source reads. Must be stable across calls.
    fn discover() -> Result<Vec<StreamInfo>, PluginError>;
    /// Reads the page of `stream` after `checkpoint` (`None`: from the start).
    fn read(stream: String, checkpoint: Option<String>) -> Result<Page, PluginError>;
}

/// A sink connector: writes batches and answers once per record.
pub trait Sink {
    /// Checks the configuration and the connection.
    fn check() -> Result<(), PluginError> {
        Ok(())
    }
    /// Writes a batch; the answer has one outcome per record, in order.
    fn write(batch: Vec<Record>) -> Result<Vec<WriteOutcome>, PluginError>;
}

/// A webhook connector: one verified incoming request in, records out.
pub trait Webhook {
    /// Handles one request.
    fn handle(request: IncomingRequest) -> Result<Vec<Record>, PluginError>;
}

/// Reads this plugin's configuration (given by the operator) into `T`.
///
/// An instance's configuration never changes (the host reuses an instance
/// only for the same configuration), so the text crosses from the host once
/// per instance, not once per call.
pub fn config<T: serde::de::DeserializeOwned>() -> Result<T, PluginError> {
    static TEXT: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let text = TEXT.get_or_init(bindings::source::causeway::plugin::config::get);
    serde_json::from_str(text)
        .map_err(|e| PluginError::Config(format!("the plugin's configuration is invalid: {e}")))
}

/// Exports a plugin type for the worlds it implements and embeds its manifest.
///
/// The type must implement the traits the worlds need: `transform` needs
/// [`Transform`]; `source`, `sink` and `webhook` need [`Source`], [`Sink`] and
/// [`Webhook`]. Combinations: `source + sink`, `source + webhook`,
/// `source + sink + webhook`.
/// Call it once, at the crate root. The manifest comes from `plugin.toml`
/// beside the crate's `Cargo.toml`; `name` and `version` come from Cargo.
#[macro_export]
macro_rules! plugin {
    (transform: $ty:ty) => {
        $crate::__export_worlds!($ty; transform);
        $crate::__embed_manifest!("\"transform\"");
    };
    (source: $ty:ty) => {
        $crate::__export_worlds!($ty; source);
        $crate::__embed_manifest!("\"source\"");
    };
    (sink: $ty:ty) => {
        $crate::__export_worlds!($ty; sink);
        $crate::__embed_manifest!("\"sink\"");
    };
    (webhook: $ty:ty) => {
        $crate::__export_worlds!($ty; webhook);
        $crate::__embed_manifest!("\"webhook\"");
    };
    (source + sink: $ty:ty) => {
        $crate::__export_worlds!($ty; source sink);
        $crate::__embed_manifest!("\"source\", \"sink\"");
    };
    (source + webhook: $ty:ty) => {
        $crate::__export_worlds!($ty; source webhook);
        $crate::__embed_manifest!("\"source\", \"webhook\"");
    };
    (source + sink + webhook: $ty:ty) => {
        $crate::__export_worlds!($ty; source sink webhook);
        $crate::__embed_manifest!("\"source\", \"sink\", \"webhook\"");
    };
}

/// Invokes each world's generated export macro for the plugin type.
#[doc(hidden)]
#[macro_export]
macro_rules! __export_worlds {
    ($ty:ty; $($world:ident)+) => {
        // Only a wasm build exports: natively the export names (which hold
        // `:` and `@`) cannot be linked into a cdylib, and a native build of
        // a plugin crate is for its unit tests and benchmarks, which call
        // its functions directly.
        #[cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]
        type __CausewayPlugin = $crate::adapters::Export<$ty>;
        $(
            #[cfg(target_arch = "wasm32")]
            $crate::__export_world!($world);
        )+
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __export_world {
    (source) => { $crate::bindings::source::__export_source!(__CausewayPlugin with_types_in $crate::bindings::source); };
    (sink) => { $crate::bindings::sink::__export_sink!(__CausewayPlugin with_types_in $crate::bindings::sink); };
    (webhook) => { $crate::bindings::webhook::__export_webhook!(__CausewayPlugin with_types_in $crate::bindings::webhook); };
    (transform) => {
        $crate::bindings::transform::__export_transform!(__CausewayPlugin with_types_in $crate::bindings::transform);
    };
}

/// The manifest text the [`plugin!`] macro embeds: the stamped keys first (top
/// level TOML keys must precede the author's tables), then `plugin.toml`.
#[doc(hidden)]
#[macro_export]
macro_rules! __manifest_text {
    ($worlds:literal) => {
        concat!(
            "contract = \"0.1.0\"\nname = \"",
            env!("CARGO_PKG_NAME"),
            "\"\nversion = \"",
            env!("CARGO_PKG_VERSION"),
            "\"\nworlds = [",
            $worlds,
            "]\n",
            include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/plugin.toml"))
        )
    };
}

/// Writes the manifest into the `causeway:manifest` custom section, where the
/// host reads it without running the plugin.
#[doc(hidden)]
#[macro_export]
macro_rules! __embed_manifest {
    ($worlds:literal) => {
        const __CAUSEWAY_MANIFEST_TEXT: &str = $crate::__manifest_text!($worlds);
        #[used]
        #[unsafe(link_section = "causeway:manifest")]
        static __CAUSEWAY_MANIFEST: [u8; __CAUSEWAY_MANIFEST_TEXT.len()] =
            $crate::__bytes::<{ __CAUSEWAY_MANIFEST_TEXT.len() }>(__CAUSEWAY_MANIFEST_TEXT);
    };
}

/// Copies a string into a fixed-size array at compile time (a custom section
/// must be a static array).
#[doc(hidden)]
pub const fn __bytes<const N: usize>(text: &str) -> [u8; N] {
    let bytes = text.as_bytes();
    let mut out = [0u8; N];
    let mut i = 0;
    while i < N {
        out[i] = bytes[i];
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifest_text_stamps_the_contract_version_this_sdk_implements() {
        // `plugin.toml` beside this crate's Cargo.toml is the SDK's own test manifest.
        let text = __manifest_text!("\"transform\"");
        let first = text.lines().next().unwrap_or_default();
        assert_eq!(first, format!("contract = \"{CONTRACT_VERSION}\""));
        assert!(text.contains("name = \"causeway-sdk\""));
        assert!(text.contains("worlds = [\"transform\"]"));
    }

    #[test]
    fn bytes_copies_the_whole_text() {
        const TEXT: &str = "abc";
        let out: [u8; 3] = __bytes::<3>(TEXT);
        assert_eq!(&out, b"abc");
    }
}
