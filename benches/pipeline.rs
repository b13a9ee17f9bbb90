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
             sinks = [{{ plugin = \"mailer-sink\" }}]\n\
             [pipelines.skipping]\nevery = \"1h\"\nskip-unchanged = true\n\
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
    let skipping = tokio.block_on(Runner::in_process(
        &host,
        "skipping",
        host.registry().expect("the plugins"),
        writer.handle(),
    ));
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
    let run = measured(&runner, "", &tokio, &writer, &stop, &ran);
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
        measured(&runner, "", &tokio, &writer, &stop, &ran),
    );
    // With `skip-unchanged` (pipeline::unchanged): every record changed
    // since the sink last wrote it (what it was given is forgotten before
    // each run, as a reset does), then none of them (the sink is given
    // nothing: a source read whole with nothing new).
    group.bench_function(
        "crm-source -> map-fullname -> mailer-sink, 20000 records, pages of 1000, skip-unchanged, everything changed",
        measured(
            &skipping,
            "DELETE FROM sink_written",
            &tokio,
            &writer,
            &stop,
            &ran,
        ),
    );
    group.bench_function(
        "crm-source -> map-fullname -> mailer-sink, 20000 records, pages of 1000, skip-unchanged, nothing changed",
        measured(&skipping, "", &tokio, &writer, &stop, &ran),
    );
    group.finish();
    if ran.get() {
        assert_eq!(mailer.subscribers("newsletter").len(), CONTACTS);
    }
    writer.close();
}

/// Measures runs of `runner` from the start (the mailer upserts by key),
/// each after `forget` (SQL, run with the checkpoint's reset, unmeasured).
fn measured<'a>(
    runner: &'a Runner,
    forget: &'static str,
    tokio: &'a tokio::runtime::Runtime,
    writer: &'a causeway::db::Writer,
    stop: &'a Stop,
    ran: &'a std::cell::Cell<bool>,
) -> impl FnMut(&mut criterion::Bencher<'_>) + 'a {
    move |b| {
        ran.set(true);
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                tokio.block_on(async {
                    writer
                        .handle()
                        .transact(move |c| {
                            c.execute_batch(&format!("DELETE FROM checkpoint; {forget}"))
                                .map_err(causeway::db::DbError::from)
                        })
                        .await
                        .expect("reset the checkpoint");
                    let started = Instant::now();
                    let end = runner.run("bench", stop).await.expect("run");
                    total += started.elapsed();
                    assert!(matches!(end, RunEnd::Done), "{end:?}");
                });
            }
            total
        })
    }
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

/// What `skip-unchanged` costs a page of 1000 contacts into one sink
/// (`pipeline::unchanged`): every record digested and looked up, and the
/// sink given nothing (a source read whole, nothing changed), or
/// everything and each record's digest saved (every record changed).
fn unchanged(c: &mut Criterion) {
    use causeway::pipeline::unchanged;
    let page: Vec<causeway::bindings::Record> = (0..PAGE)
        .map(|i| causeway::bindings::Record {
            stream: "contacts".into(),
            key: format!("c{i:06}"),
            op: causeway::bindings::Op::Upsert,
            data: format!(
                r#"{{"email":"ada{i}@example.com","fullName":"Ada{i} Lovelace","list":"newsletter"}}"#
            ),
            source_timestamp: None,
        })
        .collect();
    let ids: Vec<(String, String)> = page
        .iter()
        .map(|r| (r.stream.clone(), r.key.clone()))
        .collect();
    let sinks = ["mailer-sink".to_string()];
    let sink_as = "sha256:0123#sha256:4567";
    let dir = tempfile::tempdir().expect("a temporary folder");
    let conn = causeway::db::open(&dir.path().join("causeway.db")).expect("the database");
    let digests: Vec<unchanged::Digest> =
        page.iter().map(|r| unchanged::digest(sink_as, r)).collect();
    let held = unchanged::Writes::of(("mailer-sink", "9999"), &page, &digests, &[]);
    unchanged::remember(&conn, "contacts", &[held]).expect("remember");
    let mut group = c.benchmark_group("pipeline");
    group.throughput(Throughput::Elements(u64::from(PAGE)));
    for (name, sink_as) in [
        ("nothing changed", sink_as),
        // Another configuration of the sink: every record differs.
        ("everything changed", "sha256:0123#sha256:89ab"),
    ] {
        group.bench_function(
            format!("skip-unchanged on a page of 1000 contacts, {name}"),
            |b| {
                b.iter(|| {
                    let tx = conn.unchecked_transaction().expect("a transaction");
                    let known = unchanged::known(&tx, "contacts", &sinks, &ids).expect("known");
                    let (given, digests, _) = known.split("mailer-sink", sink_as, &page);
                    let writes =
                        unchanged::Writes::of(("mailer-sink", &known.since), &given, &digests, &[]);
                    unchanged::remember(&tx, "contacts", &[writes]).expect("remember");
                    tx.rollback().expect("rollback");
                    given.len()
                })
            },
        );
    }
    group.finish();
}

criterion_group!(benches, pipeline, contract_check, versions, unchanged);
criterion_main!(benches);
