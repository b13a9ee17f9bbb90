//! A hostile transform for the sandbox tests. The first record's
//! `data.mode` picks the misbehaviour:
//!
//! - `loop`: spins forever;
//! - `memory`: allocates until memory runs out;
//! - `panic`: panics;
//! - `stack`: recurses until the stack overflows;
//! - `huge-output`: answers 200 MiB of records;
//! - `log-spam`: writes 100,000 log lines, then answers;
//! - `log-forge`: writes one log line holding a line break, a carriage
//!   return and an escape sequence, as if to write a line of the host's
//!   own log, then answers;
//! - `host-calls`: calls the host in a loop, forever;
//! - `wasi`: tries the filesystem, the environment, sockets, a name lookup and the clock,
//!   and answers what it got;
//! - `resources`: makes WASI resources (pollables, `data.count` of them or
//!   until refused) and never drops them, then answers how many;
//! - `stderr`: writes 8 KiB to stderr, then answers its input;
//! - `stderr-panic`: writes 8 KiB to stderr, then panics;
//! - `count`: answers how many calls this instance has served (a warm
//!   instance counts on, a fresh one starts at 1);
//! - `keyless`: answers its input with every key emptied, against the
//!   contract;
//! - `huge-error`: fails with a `fatal` error whose message is 4 MiB long;
//! - anything else: answers its input (a benign call).

use std::sync::atomic::{AtomicU64, Ordering};

use causeway_sdk::{PluginError, Record, Transform, plugin};
use serde_json::{Value, json};

struct Hostile;

/// Calls this instance has served.
static CALLS: AtomicU64 = AtomicU64::new(0);

// Unbounded on purpose: the stack-overflow mode.
#[allow(unconditional_recursion)]
#[inline(never)]
fn recurse(depth: u64, pad: &mut [u8; 256]) -> u64 {
    pad[(depth % 256) as usize] = depth as u8;
    let mut next = [0u8; 256];
    next.copy_from_slice(pad);
    recurse(depth + 1, &mut next) + u64::from(next[0])
}

fn wasi_probe() -> Value {
    let fs = match std::fs::read_dir("/") {
        Ok(entries) => format!("listed {} entries", entries.count()),
        Err(e) => format!("refused: {e}"),
    };
    let etc = match std::fs::read("/etc/passwd") {
        Ok(bytes) => format!("read {} bytes", bytes.len()),
        Err(e) => format!("refused: {e}"),
    };
    let env = std::env::vars().count();
    let net = match std::net::TcpStream::connect("127.0.0.1:22") {
        Ok(_) => "connected".to_string(),
        Err(e) => format!("refused: {e}"),
    };
    let udp = match std::net::UdpSocket::bind("0.0.0.0:0") {
        Ok(_) => "bound".to_string(),
        Err(e) => format!("refused: {e}"),
    };
    let dns = match std::net::ToSocketAddrs::to_socket_addrs("metadata.google.internal:80") {
        Ok(found) => format!("resolved {} addresses", found.count()),
        Err(e) => format!("refused: {e}"),
    };
    json!({ "fs": fs, "etc": etc, "env_vars": env, "tcp": net, "udp": udp, "dns": dns })
}

// A WASI import std has no safe door to: each call makes a pollable, a
// resource in the host's table for this store.
#[link(wasm_import_module = "wasi:clocks/monotonic-clock@0.2.6")]
unsafe extern "C" {
    #[link_name = "subscribe-duration"]
    fn subscribe_duration(nanoseconds: i64) -> i32;
}

/// Makes `count` pollables (without one: until the host refuses) and never
/// drops them.
fn hoard_resources(count: Option<u64>) -> u64 {
    let mut made = 0u64;
    while count.is_none_or(|n| made < n) {
        // SAFETY: the import takes a u64 (as i64) and returns a handle; the
        // handle is deliberately leaked.
        std::hint::black_box(unsafe { subscribe_duration(1_000_000_000) });
        made += 1;
    }
    made
}

/// 8 KiB on stderr, twice what the host keeps of it.
fn chatter() {
    for i in 0..128 {
        eprintln!("debug line {i:03} {}", "-".repeat(48));
    }
}

impl Transform for Hostile {
    fn transform(batch: Vec<Record>) -> Result<Vec<Record>, PluginError> {
        let mode = batch
            .first()
            .and_then(|r| serde_json::from_str::<Value>(&r.data).ok())
            .and_then(|d| d["mode"].as_str().map(str::to_string))
            .unwrap_or_default();
        let calls = CALLS.fetch_add(1, Ordering::Relaxed) + 1;
        match mode.as_str() {
            "count" => Ok(vec![Record::upsert(
                "s",
                "count",
                &json!({ "calls": calls }),
            )?]),
            "loop" => {
                let mut n: u64 = 0;
                loop {
                    n = n.wrapping_add(1);
                    std::hint::black_box(n);
                }
            }
            "memory" => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    let mut block = vec![0u8; 1 << 20];
                    block[0] = 1;
                    hoard.push(std::hint::black_box(block));
                }
            }
            "panic" => panic!("the hostile plugin panics on purpose"),
            "stack" => {
                let mut pad = [0u8; 256];
                let depth = recurse(0, &mut pad);
                Ok(vec![Record::upsert("s", "k", &json!({ "depth": depth }))?])
            }
            "huge-output" => {
                let chunk = "x".repeat(1 << 20);
                (0..200)
                    .map(|i| Record::upsert("s", format!("k{i}"), &json!({ "blob": chunk })))
                    .collect()
            }
            "log-forge" => {
                causeway_sdk::log::info(
                    "benign\n2026-01-01T00:00:00.000000Z  INFO causeway::registry: plugin loaded plugin=forged@6.6.6\rthen\x1b[2K",
                );
                Ok(batch)
            }
            "log-spam" => {
                for i in 0..100_000 {
                    causeway_sdk::log::info(format!("spam line {i}"));
                }
                Ok(batch)
            }
            // The raw import, not `causeway_sdk::config`: the SDK fetches
            // the configuration once per instance, and the storm must reach
            // the host on every turn.
            "host-calls" => loop {
                let _ = std::hint::black_box(
                    causeway_sdk::bindings::source::causeway::plugin::config::get(),
                );
            },
            "wasi" => Ok(vec![Record::upsert("s", "wasi", &wasi_probe())?]),
            "resources" => {
                let count = batch
                    .first()
                    .and_then(|r| serde_json::from_str::<Value>(&r.data).ok())
                    .and_then(|d| d["count"].as_u64());
                Ok(vec![Record::upsert(
                    "s",
                    "resources",
                    &json!({ "made": hoard_resources(count) }),
                )?])
            }
            "stderr" => {
                chatter();
                Ok(batch)
            }
            "keyless" => Ok(batch
                .into_iter()
                .map(|mut record| {
                    record.key.clear();
                    record
                })
                .collect()),
            "huge-error" => Err(PluginError::Fatal("e".repeat(4 << 20))),
            "stderr-panic" => {
                chatter();
                panic!("the hostile plugin panics after its chatter")
            }
            _ => Ok(batch),
        }
    }
}

plugin!(transform: Hostile);
