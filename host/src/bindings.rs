//! The host's bindings to the `causeway:plugin` contract, generated once here;
//! every other module imports from this one. No hand-written impl lives here.
//!
//! Imports are async (capabilities do I/O on tokio) and trappable: a host
//! fault traps the call, while an error the guest should handle is the inner
//! `Result`. Exports are async so a guest call never blocks a runtime thread.

#![allow(missing_docs)]

wasmtime::component::bindgen!({
    world: "causeway:plugin/plugin-host@0.1.0",
    path: "../wit",
    imports: { default: async | trappable },
    exports: { default: async },
    // The conformance suite compares records and answers.
    additional_derives: [PartialEq],
});

pub use self::causeway::plugin::types::{
    IncomingRequest, Op, Page, PluginError, RateLimit, Record, StreamInfo, WriteOutcome,
};
pub use self::exports::causeway::plugin::{sink, source, transform, webhook};
