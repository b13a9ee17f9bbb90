//! The `http` capability's cost: a GET through the host's implementation
//! (grant check, address check, credential injection, redaction, audit
//! event, limits) against the same GET with reqwest called directly, both to
//! one axum server on 127.0.0.1 with keep-alive connections.
//!
//! Last, the ratio of the two paired round by round (`common::paired`).
//!
//! `cargo bench -p causeway --bench http` (`-- paired`: the ratio alone);
//! results in docs/performance.md.

#[path = "common.rs"]
mod common;
#[path = "../tests/support/mod.rs"]
mod support;

use std::hint::black_box;
use std::time::{Duration, Instant};

use causeway::bindings::causeway::plugin::http::{Host, Request};
use causeway::grants::Grants;
use common::Bench;
use criterion::{Criterion, criterion_group, criterion_main};

/// Serves `GET /v1/ping` on 127.0.0.1 from its own thread; the address.
fn server() -> std::net::SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("address");
    listener.set_nonblocking(true).expect("nonblocking");
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        runtime.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
            let app =
                axum::Router::new().route("/v1/ping", axum::routing::get(|| async { "pong" }));
            axum::serve(listener, app).await.expect("serve");
        });
    });
    addr
}

fn http(c: &mut Criterion) {
    let addr = server();
    let bench = Bench::new(Some("token = \"s3cret-value\"\n"));
    let grants = Grants::parse(
        &format!(
            "[[plugins.test-fetch.http]]\nscheme = \"http\"\nhost = \"127.0.0.1\"\nport = {}\nmethods = [\"GET\"]\n\
             [plugins.test-fetch.http-limits]\nrequests-per-second = 1000000\nburst = 1000000\n\
             [plugins.test-fetch.credentials.token]\nsecret = \"file:token\"\nhosts = [\"127.0.0.1\"]\n",
            addr.port()
        ),
        std::path::Path::new("grants.toml"),
    )
    .expect("grants");
    let installed = bench.install("test-fetch", &grants);
    assert!(
        installed.not_granted.is_empty(),
        "{:?}",
        installed.not_granted
    );
    let context = bench.context(&installed);
    let (runtime, tokio) = (&bench.runtime, &bench.tokio);
    let url = format!("http://{addr}/v1/ping");
    let request = || Request {
        method: "GET".into(),
        url: url.clone(),
        headers: vec![],
        body: None,
        credential: Some("token".into()),
        timeout_ms: None,
    };

    // A block of `n` requests each way, timed. A store per block: each
    // carries the call deadline it was made with. `flush`: the block ends
    // when the writer has committed its audit events (timed with it).
    let client = reqwest::Client::new();
    let writer = bench.writer.handle();
    let directly = |n: u64| {
        tokio.block_on(async {
            let started = Instant::now();
            for _ in 0..n {
                get_directly(&client, &url).await;
            }
            started.elapsed()
        })
    };
    let through = |n: u64, flush: bool| {
        let mut store =
            causeway::sandbox::new_store(&runtime.engine, installed.plugin.info.clone(), &context);
        tokio.block_on(async {
            let started = Instant::now();
            for _ in 0..n {
                get_through(&mut store, request()).await;
            }
            if flush {
                writer.flush().await.expect("the writer commits");
            }
            started.elapsed()
        })
    };

    let mut group = c.benchmark_group("http GET on 127.0.0.1");
    group.bench_function("reqwest directly", |b| b.iter_custom(directly));
    group.bench_function("through the http capability", |b| {
        b.iter_custom(|iters| through(iters, false))
    });
    group.finish();

    // The ratio the target is about, paired (common::paired): rounds of
    // 3000 requests each way. The capability's block ends with a flush: the
    // next block must not pay for its audit events, and the capability must.
    if !common::measuring() {
        return;
    }
    let ratio = common::paired(
        PAIRED_ROUNDS,
        || directly(PAIRED_BLOCK),
        || through(PAIRED_BLOCK, true),
    );
    common::print_ratio(
        &format!(
            "http GET on 127.0.0.1/capability ÷ reqwest, paired ({PAIRED_ROUNDS} rounds of {PAIRED_BLOCK} each)"
        ),
        &ratio,
    );
}

/// One GET with reqwest, as a plugin author's native code would send it.
async fn get_directly(client: &reqwest::Client, url: &str) {
    let response = client
        .get(url)
        .bearer_auth("s3cret-value")
        .send()
        .await
        .expect("send");
    black_box(response.bytes().await.expect("body"));
}

/// One GET through the `http` capability, as a guest's call reaches it.
async fn get_through(store: &mut wasmtime::Store<causeway::sandbox::StoreState>, request: Request) {
    let answer = store.data_mut().send(request).await.expect("send");
    let response = answer.expect("allowed");
    assert_eq!(response.status, 200);
    black_box(response);
}

/// Rounds of the paired measurement, and requests each way per round.
const PAIRED_ROUNDS: usize = 30;
const PAIRED_BLOCK: u64 = 3000;

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(5));
    targets = http
}
criterion_main!(benches);
