//! Causeway: a WebAssembly plugin host that connects third-party systems
//! through sandboxed connector and transform plugins.
//!
//! A reader finds a room by its name: [`engine`] (wasmtime configuration),
//! [`manifest`] and [`contract`] (what a plugin says and what it may be),
//! [`plugin`] and [`registry`] (loading and the installed set), [`sandbox`]
//! (limits and call errors), [`caps`] (one module per capability),
//! [`operation`] (calling a plugin), [`server`] and [`metrics`] (what a
//! running host answers), [`cli`] (one module per subcommand).

#![deny(missing_docs)]

pub mod audit;
pub mod backup;
pub mod bindings;
pub mod caps;
pub mod checkpoint;
pub mod cli;
pub mod config;
pub mod conformance;
pub mod contract;
pub mod db;
pub mod der;
pub mod engine;
pub mod fakes;
pub mod files;
pub mod grants;
pub mod host;
pub mod keyfile;
pub mod live;
pub mod manifest;
pub mod metrics;
pub mod operation;
pub mod pipeline;
pub mod plugin;
pub mod registry;
pub mod reload;
pub mod sandbox;
pub mod scaffold;
pub mod schema;
pub mod secrets;
pub mod server;
pub mod warm;
pub mod webhook;
