//! The capabilities the host provides to plugins, one module each.
//!
//! Each has the same shape: the host implementation of its WIT interface on
//! [`crate::sandbox::StoreState`], which checks the plugin's grant first and
//! answers a denial as an error value naming the grant to add (never a trap).

pub mod config;
pub mod http;
pub mod log;
pub mod rate;
pub mod sockets;
pub mod storage;

use wasmtime::component::{HasSelf, Linker};

use crate::bindings::{PluginHost, causeway};
use crate::sandbox::StoreState;

impl causeway::plugin::types::Host for StoreState {}

/// A linker with the fixed WASI set, wasi:http and every contract capability.
pub fn linker(engine: &wasmtime::Engine) -> wasmtime::Result<Linker<StoreState>> {
    let mut linker = Linker::new(engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
    sockets::refuse_in(&mut linker)?;
    // Linked for every plugin; the contract refuses it to transforms at load.
    wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)?;
    PluginHost::add_to_linker::<StoreState, HasSelf<StoreState>>(&mut linker, |state| state)?;
    Ok(linker)
}
