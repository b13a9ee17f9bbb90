//! Resident memory, from `/proc/self/statm`: before and after loading N
//! plugins (each `map-fullname` compiled anew, as N distinct plugins would
//! be), then holding N live instances, then after each plugin has served a
//! call of 1000 records (the freed slots keep the pages the call dirtied,
//! up to the engine's keep-resident bound). Prints per-plugin and
//! per-instance figures; the target is about an idle loaded plugin beyond
//! its code. Then what upgrades leave behind: versions loaded, called once
//! and dropped, one after another.
//!
//! `cargo bench -p causeway --bench memory`; results in docs/performance.md.

#[path = "common.rs"]
mod common;
#[path = "../tests/support/mod.rs"]
mod support;

use causeway::bindings::{Op, Record};
use causeway::grants::Grants;
use causeway::operation::Operation;
use causeway::registry::Installed;
use common::Bench;

const N: usize = 20;

/// Versions loaded, called and dropped one after another.
const UPGRADES: usize = 150;

/// Resident memory in bytes.
fn resident() -> usize {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("read /proc/self/statm");
    let pages: usize = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .expect("resident pages");
    // 4 KiB pages on the x86-64 and aarch64 Linux machines this runs on.
    pages * 4096
}

fn mib(bytes: f64) -> String {
    format!("{:.3} MiB", bytes / (1024.0 * 1024.0))
}

fn main() {
    let bench = Bench::new(None);
    let (runtime, tokio) = (&bench.runtime, &bench.tokio);
    // Warm up allocator and engine with one plugin and one instance, so the
    // first-use costs do not land on plugin 1.
    let warm = bench.install("map-fullname", &Grants::default());
    let warm_context = bench.context(&warm);
    let _warm_instance = tokio
        .block_on(warm.plugin.instantiate(&runtime.engine, &warm_context))
        .expect("instantiate");

    let before = resident();
    let plugins: Vec<Installed> = (0..N)
        .map(|_| bench.install("map-fullname", &Grants::default()))
        .collect();
    let loaded = resident();
    let code: usize = plugins.iter().map(|p| p.plugin.code_bytes()).sum();
    let contexts: Vec<_> = plugins.iter().map(|p| bench.context(p)).collect();
    let instances: Vec<_> = plugins
        .iter()
        .zip(&contexts)
        .map(|(p, context)| {
            tokio
                .block_on(p.plugin.instantiate(&runtime.engine, context))
                .expect("instantiate")
        })
        .collect();
    let live = resident();
    drop(instances);

    let batch: Vec<Record> = (0..1000)
        .map(|i| Record {
            stream: "contacts".into(),
            key: format!("c-{i}"),
            op: Op::Upsert,
            data: format!(
                r#"{{"firstName":"Ada{i}","lastName":"Lovelace","email":"ada{i}@example.com"}}"#
            ),
            source_timestamp: None,
        })
        .collect();
    for (p, context) in plugins.iter().zip(&contexts) {
        tokio
            .block_on(p.plugin.call_typed(
                &runtime.engine,
                Operation::Transform(batch.clone()),
                context,
            ))
            .expect("a transform call");
    }
    let served = resident();

    let per_plugin = (loaded - before) as f64 / N as f64;
    let per_code = code as f64 / N as f64;
    let per_instance = (live - loaded) as f64 / N as f64;
    let per_served = served.saturating_sub(loaded) as f64 / N as f64;
    println!("memory: {N} plugins (map-fullname, compiled anew each), then one live instance each");
    println!("  resident before loading:        {}", mib(before as f64));
    println!("  resident after loading {N}:      {}", mib(loaded as f64));
    println!("  resident with {N} instances:     {}", mib(live as f64));
    println!("  per loaded plugin:              {}", mib(per_plugin));
    println!("    of which compiled code:       {}", mib(per_code));
    println!(
        "    beyond its compiled code:     {}",
        mib(per_plugin - per_code)
    );
    println!("  per live instance:              {}", mib(per_instance));
    println!("  resident after a call each:     {}", mib(served as f64));
    println!("  per plugin, kept by its slot:   {}", mib(per_served));

    // Upgrades: each a new build of the plugin (a module of its own) that
    // serves a call and is then dropped, as a hot reload replaces a version.
    drop(plugins);
    let mut resident_at = vec![(0, resident())];
    for upgrade in 1..=UPGRADES {
        let version = bench.install("map-fullname", &Grants::default());
        let context = bench.context(&version);
        tokio
            .block_on(version.plugin.call_typed(
                &runtime.engine,
                Operation::Transform(batch.clone()),
                &context,
            ))
            .expect("a transform call");
        if upgrade % (UPGRADES / 3) == 0 {
            resident_at.push((upgrade, resident()));
        }
    }
    println!(
        "memory: {UPGRADES} upgrades, each version serving a call of 1000 records, then dropped"
    );
    for pair in resident_at.windows(2) {
        let ((from, before), (to, after)) = (pair[0], pair[1]);
        println!(
            "  upgrades {from:>3} to {to:>3}: resident {} to {}, {} per upgrade",
            mib(before as f64),
            mib(after as f64),
            mib((after as f64 - before as f64) / (to - from) as f64)
        );
    }
}
