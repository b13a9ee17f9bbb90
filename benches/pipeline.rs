//! End to end: records per second from `crm-source` (paging a fake CRM over
//! HTTP on 127.0.0.1) through `map-fullname` into `mailer-sink` (batches to a
//! fake mailer), each page checkpointed in its own transaction after the
//! sink answered — the production runner, plugins, capabilities and audit.
//!
//! `cargo bench -p causeway --bench pipeline`; results in docs/performance.md.

#[path = "../tests/support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use causeway::fakes::{self, FakeCrm, FakeMailer};
use causeway::pipeline::runner::{RunEnd, Runner, Stop};
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use serde_json::{Map, json};

const CONTACTS: usize = 20_000;
const PAGE: u32 = 1000;

fn pipeline(c: &mut Criterion) {
    let crm = FakeCrm::start("crm-token", 0).expect("the fake CRM");
    let mailer = FakeMailer::start("mailer-key", 0).expect("the fake mailer");
    for i in 0..CONTACTS {
        let mut fields = Map::new();
        fields.insert("firstName".into(), json!(format!("Ada{i}")));
        fields.insert("lastName".into(), json!("Lovelace"));
        fields.insert("email".into(), json!(format!("ada{i}@example.com")));
        crm.create(fields);
    }
    let dir = tempfile::tempdir().expect("a temporary folder");
    let plugins = dir.path().join("plugins");
    std::fs::create_dir(&plugins).expect("plugins folder");
    for plugin in ["crm-source", "map-fullname", "mailer-sink"] {
        std::fs::copy(
            support::built(plugin),
            plugins.join(format!("{plugin}.wasm")),
        )
        .expect("install");
    }
    let secrets = dir.path().join("secrets.toml");
    std::fs::write(&secrets, "crm = \"crm-token\"\nmailer = \"mailer-key\"\n").expect("secrets");
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&secrets, std::fs::Permissions::from_mode(0o600))
            .expect("chmod 600");
    }
    std::fs::write(
        dir.path().join("grants.toml"),
        fakes::connector_grants(&crm, &mailer, "file:crm", "file:mailer")
            + "[plugins.crm-source.http-limits]\nrequests-per-second = 100000\nburst = 100000\n\
               [plugins.mailer-sink.http-limits]\nrequests-per-second = 100000\nburst = 100000\n",
    )
    .expect("grants");
    let config = dir.path().join("causeway.toml");
    std::fs::write(
        &config,
        format!(
            "secrets-file = \"secrets.toml\"\n{}\n\
             [pipelines.contacts]\nevery = \"1h\"\n\
             source = {{ plugin = \"crm-source\", stream = \"contacts\" }}\n\
             transforms = [{{ plugin = \"map-fullname\" }}]\n\
             sinks = [{{ plugin = \"mailer-sink\" }}]\n",
            fakes::connector_config(&crm, &mailer, "newsletter", PAGE)
        ),
    )
    .expect("config");

    let host = causeway::host::Host::load(Some(&config), None).expect("the host");
    let registry = host.registry().expect("the plugins");
    let writer = host.open_database().expect("the database");
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("a runtime");
    let runner = tokio.block_on(Runner::in_process(
        &host,
        "contacts",
        registry,
        writer.handle(),
    ));
    let stop = Stop::never();

    let mut group = c.benchmark_group("pipeline");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(30));
    group.throughput(Throughput::Elements(CONTACTS as u64));
    // Whether a run was measured (a filter on the command line may leave
    // these rows out).
    let ran = std::cell::Cell::new(false);
    let run = |b: &mut criterion::Bencher<'_>| {
        ran.set(true);
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                tokio.block_on(async {
                    // From the start again: the mailer upserts by key.
                    let handle = writer.handle();
                    handle
                        .transact(|c| {
                            c.execute("DELETE FROM checkpoint", [])
                                .map(|_| ())
                                .map_err(causeway::db::DbError::from)
                        })
                        .await
                        .expect("reset the checkpoint");
                    let started = Instant::now();
                    let end = runner.run("bench", &stop).await.expect("run");
                    total += started.elapsed();
                    assert!(matches!(end, RunEnd::Done), "{end:?}");
                });
            }
            total
        })
    };
    group.bench_function(
        "crm-source -> map-fullname -> mailer-sink, 20000 records, pages of 1000",
        run,
    );
    // With a letter in the queue, every stage's records are looked up to
    // forget the letters they supersede (pipeline::dlq::supersede and
    // forget_older).
    tokio
        .block_on(writer.handle().transact(|c| {
            let record = causeway::bindings::Record {
                stream: "contacts".into(),
                key: "elsewhere".into(),
                op: causeway::bindings::Op::Upsert,
                data: "{}".into(),
                source_timestamp: None,
            };
            let stage = ("map-fullname", causeway::pipeline::dlq::Stage::Transform);
            let origin = Some("contacts");
            causeway::pipeline::dlq::insert(c, "contacts", stage, &record, origin, "bench", None)
                .map_err(causeway::db::DbError::from)
        }))
        .expect("a dead letter");
    group.bench_function(
        "crm-source -> map-fullname -> mailer-sink, 20000 records, pages of 1000, a dead letter queued",
        run,
    );
    group.finish();
    if ran.get() {
        assert_eq!(mailer.subscribers("newsletter").len(), CONTACTS);
    }
    writer.close();
}

/// What checking a page against the contract costs (every record a source
/// answers is: `contract::record_problems`), on a page of contacts as
/// crm-source answers them.
fn contract_check(c: &mut Criterion) {
    let page: Vec<causeway::bindings::Record> = (0..PAGE)
        .map(|i| causeway::bindings::Record {
            stream: "contacts".into(),
            key: format!("c{i:06}"),
            op: causeway::bindings::Op::Upsert,
            data: json!({
                "id": format!("c{i:06}"), "updated_at": 1_700_000_000_000i64 + i64::from(i),
                "firstName": format!("Ada{i}"), "lastName": "Lovelace",
                "email": format!("ada{i}@example.com"),
            })
            .to_string(),
            source_timestamp: Some(1_700_000_000_000),
        })
        .collect();
    let mut group = c.benchmark_group("pipeline");
    group.throughput(Throughput::Elements(u64::from(PAGE)));
    group.bench_function("the contract check of a page of 1000 contacts", |b| {
        b.iter(|| {
            page.iter()
                .filter(|r| causeway::contract::record_problems(r).is_empty())
                .count()
        })
    });
    group.finish();
}

/// What a webhook pipeline's memory of versions costs a page of 1000
/// contacts each newer than the version seen before (`pipeline::versions`:
/// each record looked up, compared, and its version written), in a
/// transaction rolled back so every iteration finds the same rows.
fn versions(c: &mut Criterion) {
    use causeway::pipeline::versions;
    let page: Vec<causeway::bindings::Record> = (0..PAGE)
        .map(|i| causeway::bindings::Record {
            stream: "contacts".into(),
            key: format!("c{i:06}"),
            op: causeway::bindings::Op::Upsert,
            data: "{}".into(),
            source_timestamp: Some(1_700_000_000_000 + i64::from(i)),
        })
        .collect();
    let dir = tempfile::tempdir().expect("a temporary folder");
    let conn = causeway::db::open(&dir.path().join("causeway.db")).expect("the database");
    // Each contact seen before, at an older version: every record is looked
    // up and written (a page of versions seen already writes nothing).
    let before: Vec<versions::Versioned> = versions::Versioned::of(&page)
        .into_iter()
        .map(|v| versions::Versioned { at: v.at - 1, ..v })
        .collect();
    versions::remember(&conn, "contacts", &before).expect("remember");
    let mut group = c.benchmark_group("pipeline");
    group.throughput(Throughput::Elements(u64::from(PAGE)));
    group.bench_function(
        "a webhook pipeline's versions of a page of 1000 contacts",
        |b| {
            // The page is the runner's to move: its copy is not measured.
            b.iter_batched(
                || page.clone(),
                |page| {
                    let tx = conn.unchecked_transaction().expect("a transaction");
                    let mut known = versions::known(&tx, "contacts", versions::timestamped(&page))
                        .expect("known");
                    let (through, _) = known.skip_older(page);
                    versions::remember(&tx, "contacts", &known.newer()).expect("remember");
                    tx.rollback().expect("rollback");
                    through.len()
                },
                BatchSize::SmallInput,
            )
        },
    );
    group.finish();
}

criterion_group!(benches, pipeline, contract_check, versions);
criterion_main!(benches);
