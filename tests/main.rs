//! The black-box tests, one module per concern, in one test binary (see
//! host/Cargo.toml). Run one module with `cargo test --test all pipelines::`.

mod support;

mod approval;
mod backup;
mod check;
mod checkpoint;
mod conformance;
mod connectors;
mod demo;
mod grants;
mod http;
mod invoke;
mod languages;
mod mapping;
mod pipelines;
mod plugins;
mod reload;
mod run;
mod sandbox;
mod scaffold;
mod storage;
mod warm;
