//! Plugins beyond Rust: the Python (componentize-py) and JavaScript
//! (componentize-js) ports of map-fullname, built by scripts/guest-plugins.sh
//! (which installs their toolchains), load like any plugin, pass `causeway
//! test`, and answer exactly what the Rust plugin answers; crm-source-js, a
//! JavaScript connector reading with `fetch` (wasi:http), is held to the same
//! grants, credentials and audit as the Rust crm-source; mailer-sink-js,
//! writing with `fetch` (a POST with a body), sends what mailer-sink sends.
//!
//! Their runtimes are large (an interpreter each): every command here shares
//! one compiled-artifact cache, so each is compiled once per machine.

use crate::support;

use std::sync::Mutex;

use serde_json::{Value, json};
use support::{
    Answer, FakeServer, Scratch, Throttle, audit_rows, guest_plugins, repo_root, run, run_json,
    target,
};

/// One compile at a time: the first test to need a runtime compiles it into
/// the shared cache, the others load it from there.
static CACHE: Mutex<()> = Mutex::new(());

/// Copies a guest plugin and its sidecar manifest into the scratch's plugins.
fn install_guest(scratch: &Scratch, name: &str) {
    for ext in ["wasm", "toml"] {
        std::fs::copy(
            guest_plugins().join(format!("{name}.{ext}")),
            scratch.plugins().join(format!("{name}.{ext}")),
        )
        .expect("install a guest plugin");
    }
}

/// A scratch host sharing the artifact cache of every test here.
fn shared_cache_host() -> Scratch {
    let scratch = Scratch::new();
    let cache = target().join("guest-plugins").join("cache");
    std::fs::write(
        scratch.path().join("causeway.toml"),
        format!("cache-dir = {:?}\n", cache.display().to_string()),
    )
    .expect("write causeway.toml");
    scratch
}

/// A scratch host with map-fullname and its Python and JavaScript ports
/// installed, sharing the artifact cache.
fn host() -> Scratch {
    let scratch = shared_cache_host();
    scratch.install("map-fullname", "map-fullname.wasm");
    for name in ["map-fullname-py", "map-fullname-js"] {
        install_guest(&scratch, name);
    }
    scratch
}

#[test]
fn python_and_javascript_transforms_pass_causeway_test() {
    let scratch = host();
    let fixtures = repo_root().join("plugins/map-fullname/fixtures");
    for name in ["map-fullname-py", "map-fullname-js"] {
        let _one = CACHE.lock().unwrap_or_else(|e| e.into_inner());
        let out = run(scratch
            .causeway()
            .args(["test", name, "--json", "--fixtures"])
            .arg(&fixtures));
        let report: Value = serde_json::from_str(&out.stdout)
            .unwrap_or_else(|e| panic!("{name}: not a report ({e}): {}{}", out.stdout, out.stderr));
        assert!(out.success, "{name}: {report:#}");
        let rules: Vec<(&str, &str)> = report["findings"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| (f["rule"].as_str().unwrap(), f["verdict"].as_str().unwrap()))
            .collect();
        assert_eq!(
            rules,
            [
                ("manifest-valid", "pass"),
                ("config-matches-schema", "pass"),
                ("records-valid", "pass"),
                ("transform-deterministic", "pass"),
                ("transform-keeps-keys", "pass"),
                ("transform-record-wise", "pass"),
            ],
            "{name}"
        );
    }
}

#[test]
fn python_and_javascript_transforms_answer_what_the_rust_one_does() {
    let scratch = host();
    let plugins = run_json(scratch.causeway().args(["plugins", "--json"]));
    let active = plugins
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["state"] == "active")
        .count();
    assert_eq!(active, 3, "{plugins:#}");

    // The sample, plus what trips ports up: non-ASCII, stray spaces, a
    // missing or empty part, an empty company, a configured stream.
    let input = scratch.path().join("input.json");
    std::fs::write(
        &input,
        r#"[
  {"stream": "contacts", "key": "c-1", "data": {"firstName": "Zoë", "lastName": " Ørsted ", "email": " zoe@example.com ", "company": "Ünïcode & Co"}},
  {"stream": "contacts", "key": "c-2", "data": {"firstName": "", "lastName": "Hopper", "email": "grace@example.com", "company": "  "}},
  {"stream": "contacts", "key": "c-3", "data": {"firstName": "No", "lastName": "Mail", "email": "   "}},
  {"stream": "contacts", "key": "c-4", "data": {"lastName": "Solo", "email": "solo@example.com"}, "source_timestamp": 1700000000000},
  {"stream": "contacts", "key": "c-5", "op": "delete", "source_timestamp": 5}
]"#,
    )
    .unwrap();
    let config = scratch.path().join("config.json");
    std::fs::write(&config, r#"{"target_stream": "members"}"#).unwrap();
    for (file, config) in [
        (repo_root().join("examples/contacts.json"), None),
        (input, Some(&config)),
    ] {
        let answer = |name: &str| {
            let _one = CACHE.lock().unwrap_or_else(|e| e.into_inner());
            let mut command = scratch.causeway();
            command
                .args(["invoke", name, "transform", "--input"])
                .arg(&file);
            if let Some(config) = config {
                command.arg("--config").arg(config);
            }
            run_json(&mut command)
        };
        let rust = answer("map-fullname");
        assert!(!rust.as_array().unwrap().is_empty());
        assert_eq!(
            answer("map-fullname-py"),
            rust,
            "Python differs on {}",
            file.display()
        );
        assert_eq!(
            answer("map-fullname-js"),
            rust,
            "JavaScript differs on {}",
            file.display()
        );
    }
}

const SECRET: &str = "crm-s3cret-7c1e";

/// A host sharing the artifact cache with the Rust plugin `rust` and its
/// JavaScript port `js` installed, each granted `grant` (one plugin's TOML,
/// `{name}` standing for its name).
fn rust_and_javascript(rust: &str, js: &str, grant: &str) -> Scratch {
    let scratch = shared_cache_host();
    scratch.install(rust, &format!("{rust}.wasm"));
    install_guest(&scratch, js);
    let grants: String = [rust, js]
        .iter()
        .map(|name| grant.replace("{name}", name))
        .collect();
    scratch.grants(&grants);
    scratch
}

/// The Rust crm-source and its JavaScript port, which reads with `fetch`
/// (wasi:http), both granted GET /v1/contacts on the server at `port` by
/// its address, with the crm-token credential bound to it.
fn connectors(port: &str) -> Scratch {
    let grant = format!(
        r#"
[[plugins.{{name}}.http]]
scheme = "http"
host = "127.0.0.1"
port = {port}
methods = ["GET"]
path-prefix = "/v1/contacts"

[plugins.{{name}}.credentials.crm-token]
secret = "env:CAUSEWAY_TEST_TOKEN"
hosts = ["127.0.0.1"]
"#
    );
    rust_and_javascript("crm-source", "crm-source-js", &grant)
}

/// `causeway invoke PLUGIN OPERATION` with `config` and `input`, the test
/// token in the environment (and nowhere in the output): the answer, or the
/// error output.
fn invoke(
    scratch: &Scratch,
    plugin: &str,
    operation: &str,
    config: &Value,
    input: &Value,
) -> Result<Value, String> {
    let config_file = scratch.path().join("config.json");
    std::fs::write(&config_file, config.to_string()).unwrap();
    let input_file = scratch.path().join("input.json");
    std::fs::write(&input_file, input.to_string()).unwrap();
    let _one = CACHE.lock().unwrap_or_else(|e| e.into_inner());
    let out = run(scratch
        .causeway()
        .env("CAUSEWAY_TEST_TOKEN", SECRET)
        .args(["invoke", plugin, operation, "--config"])
        .arg(&config_file)
        .arg("--input")
        .arg(&input_file));
    out.assert_hides(SECRET, plugin);
    if out.success {
        Ok(serde_json::from_str(&out.stdout).unwrap())
    } else {
        Err(out.stderr)
    }
}

/// Reads one page of contacts from `base_url` with `plugin`.
fn read_contacts(scratch: &Scratch, plugin: &str, base_url: &str) -> Result<Value, String> {
    let config = json!({ "base_url": base_url });
    invoke(
        scratch,
        plugin,
        "read",
        &config,
        &json!({ "stream": "contacts" }),
    )
}

#[test]
fn a_javascript_connector_using_fetch_is_held_to_the_same_grants_as_a_rust_one() {
    // The CRM echoes the authorization it got inside the contact: what the
    // plugin sees of it must be redacted.
    let server = FakeServer::start(|request| {
        let auth = request.header("authorization");
        Answer::ok(
            json!({
                "contacts": [{"id": 7, "updated_at": 1700000000000_i64, "email": "ada@example.com", "seen": auth}],
                "has_more": false
            })
            .to_string(),
        )
    });
    let port = server.addr.rsplit(':').next().unwrap().to_string();
    let scratch = connectors(&port);
    let granted = format!("http://{}", server.addr);
    let ungranted = format!("http://localhost:{port}");

    let mut rows_of = Vec::new();
    for plugin in ["crm-source", "crm-source-js"] {
        let before = server.received().len();
        let page = read_contacts(&scratch, plugin, &granted)
            .unwrap_or_else(|e| panic!("{plugin} on a granted host: {e}"));
        let record = &page["records"][0];
        assert_eq!(record["key"], "7", "{plugin}: {page:#}");
        assert_eq!(record["data"]["seen"], "Bearer [redacted]", "{plugin}");
        let received = server.received();
        assert_eq!(received.len(), before + 1, "{plugin}");
        let sent = &received[before].headers;
        assert!(
            sent.contains(&("authorization".into(), format!("Bearer {SECRET}"))),
            "{plugin}: the credential was not injected: {sent:?}"
        );
        assert!(
            sent.iter().all(|(n, _)| n != "x-causeway-credential"),
            "{plugin}: the credential header left the host: {sent:?}"
        );

        let error = read_contacts(&scratch, plugin, &ungranted).unwrap_err();
        assert!(error.contains("error:"), "{plugin}: {error}");
        assert_eq!(
            server.received().len(),
            before + 1,
            "{plugin}: a denied request reached the server"
        );

        let rows: Vec<_> = audit_rows(&scratch.path().join("causeway-data"))
            .into_iter()
            .filter(|row| row.0 == plugin && row.1 == "http")
            .collect();
        rows_of.push(rows);
    }

    // The same rows, allowed then denied, for the same requests and reasons;
    // the JavaScript ones say which door they came by.
    let (rust, js) = (&rows_of[0], &rows_of[1]);
    assert_eq!(rust.len(), 2, "{rust:#?}");
    assert_eq!(js.len(), 2, "{js:#?}");
    for (r, j) in rust.iter().zip(js) {
        assert_eq!((&r.2, &r.3, &r.4), (&j.2, &j.3, &j.4), "{rust:#?}\n{js:#?}");
        assert!(j.5.ends_with(" (wasi:http)"), "{}", j.5);
    }
    assert_eq!(
        (rust[0].4.as_str(), rust[1].4.as_str()),
        ("allowed", "denied")
    );
    assert_eq!(
        rust[1].5.replace("crm-source", "PLUGIN"),
        js[1]
            .5
            .trim_end_matches(" (wasi:http)")
            .replace("crm-source-js", "PLUGIN"),
    );
    assert!(
        js[1].3.starts_with(&format!("{ungranted}/v1/contacts?")),
        "{js:#?}"
    );
}

/// The Rust mailer-sink and its JavaScript port, which writes with `fetch`
/// (a POST with a body, through wasi:http), both granted POST /v1/lists/ on
/// the server at `port`, with the mailer-key credential bound to it and
/// request bodies limited to `max_request_bytes`.
fn sinks(port: &str, max_request_bytes: usize) -> Scratch {
    let grant = format!(
        r#"
[[plugins.{{name}}.http]]
scheme = "http"
host = "127.0.0.1"
port = {port}
methods = ["POST"]
path-prefix = "/v1/lists/"

[plugins.{{name}}.credentials.mailer-key]
secret = "env:CAUSEWAY_TEST_TOKEN"
hosts = ["127.0.0.1"]

[plugins.{{name}}.http-limits]
max-request-bytes = {max_request_bytes}
"#
    );
    rust_and_javascript("mailer-sink", "mailer-sink-js", &grant)
}

/// Writes `batch` to the mailer at `base_url` with `plugin`.
fn write_batch(
    scratch: &Scratch,
    plugin: &str,
    base_url: &str,
    batch: &Value,
) -> Result<Value, String> {
    let config = json!({ "base_url": base_url, "list_id": "news" });
    invoke(scratch, plugin, "write", &config, batch)
}

#[test]
fn a_javascript_sink_posting_with_fetch_sends_what_the_rust_one_sends() {
    // Answers one result per operation: keys starting with "bad" rejected.
    let server = FakeServer::start(|request| {
        let body: Value = serde_json::from_slice(&request.body).unwrap_or(Value::Null);
        let results: Vec<Value> = body["operations"]
            .as_array()
            .map(|ops| {
                ops.iter()
                    .map(|op| match op["key"].as_str() {
                        Some(k) if k.starts_with("bad") => {
                            json!({"status": "rejected", "reason": "no such address"})
                        }
                        _ => json!({"status": "ok"}),
                    })
                    .collect()
            })
            .unwrap_or_default();
        Answer::ok(json!({ "results": results }).to_string())
    });
    let port = server.addr.rsplit(':').next().unwrap().to_string();
    let scratch = sinks(&port, 4096);
    let base_url = format!("http://{}", server.addr);
    let batch = json!([
        {"stream": "subscribers", "key": "c-1", "data": {"email": "ada@example.com", "fullName": "Ada Lovelace"}},
        {"stream": "subscribers", "key": "bad-2", "data": {"email": "nobody", "fullName": "Ünïcode Ñame"}},
        {"stream": "subscribers", "key": "c-3", "op": "delete", "data": {}},
    ]);

    let mut sent = Vec::new();
    for plugin in ["mailer-sink", "mailer-sink-js"] {
        let before = server.received().len();
        let outcomes = write_batch(&scratch, plugin, &base_url, &batch)
            .unwrap_or_else(|e| panic!("{plugin}: {e}"));
        assert_eq!(
            outcomes,
            json!([
                {"key": "c-1", "outcome": "ok"},
                {"key": "bad-2", "outcome": "rejected", "reason": "no such address"},
                {"key": "c-3", "outcome": "ok"},
            ]),
            "{plugin}"
        );
        let received = server.received();
        assert_eq!(received.len(), before + 1, "{plugin}");
        let request = &received[before];
        assert_eq!(
            (request.method.as_str(), request.target.as_str()),
            ("POST", "/v1/lists/news/subscribers/batch"),
            "{plugin}"
        );
        assert_eq!(
            request.header("authorization"),
            format!("Bearer {SECRET}"),
            "{plugin}"
        );
        assert_eq!(request.header("x-causeway-credential"), "", "{plugin}");
        sent.push(serde_json::from_slice::<Value>(&request.body).expect("a JSON body"));
    }
    // The same operations, whichever language wrote them.
    assert_eq!(sent[0], sent[1]);
    assert_eq!(
        sent[1]["operations"][1]["subscriber"]["fullName"],
        "Ünïcode Ñame"
    );

    // A body over the grant's limit never leaves the host, by either door.
    let big = json!([{"stream": "subscribers", "key": "c-9", "data": {"note": "x".repeat(5000)}}]);
    let before = server.received().len();
    for plugin in ["mailer-sink", "mailer-sink-js"] {
        let error = write_batch(&scratch, plugin, &base_url, &big).unwrap_err();
        assert!(
            error.contains("over the limit of 4096 bytes") || error.contains("the limit is 4096"),
            "{plugin}: {error}"
        );
    }
    assert_eq!(
        server.received().len(),
        before,
        "an oversized body reached the server"
    );

    let rows: Vec<_> = audit_rows(&scratch.path().join("causeway-data"))
        .into_iter()
        .filter(|row| row.1 == "http")
        .collect();
    let allowed = |plugin: &str| {
        rows.iter()
            .filter(|r| r.0 == plugin && r.4 == "allowed")
            .count()
    };
    assert_eq!(
        (allowed("mailer-sink"), allowed("mailer-sink-js")),
        (1, 1),
        "{rows:#?}"
    );
    // The oversized ones are refused, and audited, at either door.
    let refused: Vec<(&str, &str)> = rows
        .iter()
        .filter(|r| r.4 == "denied")
        .map(|r| (r.0.as_str(), r.5.as_str()))
        .collect();
    assert!(
        matches!(
            refused.as_slice(),
            [("mailer-sink", rust), ("mailer-sink-js", js)]
                if rust.starts_with("the request body is ") && rust.ends_with(" bytes; the limit is 4096")
                    && *js == "the request body is over the limit of 4096 bytes (http-limits max-request-bytes) (wasi:http)"
        ),
        "{refused:#?}"
    );
}

/// mailer-sink-js fails its batch as `transient` on a 429 (reading the
/// `Retry-After` from `fetch` is left to each plugin, and it does not):
/// the host reads the header itself, at the wasi:http door, and retries
/// the batch when it says, not on the pipeline's quicker backoff: no batch
/// comes before the `Retry-After` has passed, and the log says the wait.
#[test]
fn a_javascript_sink_failing_on_a_429_is_retried_when_its_retry_after_says() {
    use std::sync::Arc;

    #[derive(Default)]
    struct Mailer {
        throttle: Throttle,
        written: usize,
    }
    let mailer = Arc::new(Mutex::new(Mailer::default()));
    let server = FakeServer::start({
        let mailer = mailer.clone();
        move |request| {
            let mut m = mailer.lock().unwrap();
            m.throttle.arrived();
            if m.throttle.refused < 2 {
                return m.throttle.refuse(1);
            }
            let body: Value = serde_json::from_slice(&request.body).unwrap_or(Value::Null);
            let operations = body["operations"].as_array().map_or(0, Vec::len);
            m.written += operations;
            let results = vec![json!({"status": "ok"}); operations];
            Answer::ok(json!({ "results": results }).to_string())
        }
    });
    let crm = causeway::fakes::FakeCrm::start(SECRET, 0).expect("start the fake CRM");
    for i in 0..3 {
        let mut contact = serde_json::Map::new();
        contact.insert("email".into(), json!(format!("p{i}@example.com")));
        crm.create(contact);
    }
    let port = server.addr.rsplit(':').next().unwrap().to_string();
    let scratch = sinks(&port, 1 << 20);
    scratch.install("crm-source", "crm-source.wasm");
    let grants = std::fs::read_to_string(scratch.path().join("grants.toml")).unwrap();
    scratch.grants(&format!(
        "{grants}\n[[plugins.crm-source.http]]\nscheme = \"http\"\nhost = \"127.0.0.1\"\nport = {}\nmethods = [\"GET\"]\npath-prefix = \"/v1/contacts\"\n\n[plugins.crm-source.credentials.crm-token]\nsecret = \"env:CAUSEWAY_TEST_TOKEN\"\nhosts = [\"127.0.0.1\"]\n",
        crm.addr().port()
    ));
    let config = scratch.path().join("causeway.toml");
    let cache = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        format!(
            r#"{cache}
[plugins.crm-source.config]
base_url = "{}"

[pipelines.contacts-to-js]
every = "1h"
source = {{ plugin = "crm-source", stream = "contacts" }}
sinks = [{{ plugin = "mailer-sink-js", config = {{ base_url = "http://{}", list_id = "news" }} }}]

[pipelines.contacts-to-js.retry]
initial = "10ms"
max = "20ms"
budget = "50ms"
"#,
            crm.base_url(),
            server.addr
        ),
    )
    .unwrap();
    let _one = CACHE.lock().unwrap_or_else(|e| e.into_inner());
    let out = run(scratch.causeway().env("CAUSEWAY_TEST_TOKEN", SECRET).args([
        "pipeline",
        "run-now",
        "contacts-to-js",
    ]));
    assert!(out.success, "{}{}", out.stdout, out.stderr);
    assert!(
        out.stderr.contains("retry after 1000 ms"),
        "the wait asked, in the log: {}",
        out.stderr
    );
    let m = mailer.lock().unwrap();
    assert_eq!((m.throttle.refused, m.written), (2, 3));
    assert_eq!(
        m.throttle.early, 0,
        "batches sent before the Retry-After passed"
    );
}

#[test]
fn the_javascript_connector_passes_causeway_test_on_crm_sources_recordings() {
    // crm-source's recorded CRM answers, replayed at the network leg of the
    // one policy both doors share: fetch gets them through wasi:http.
    let scratch = shared_cache_host();
    install_guest(&scratch, "crm-source-js");
    let _one = CACHE.lock().unwrap_or_else(|e| e.into_inner());
    let out = run(scratch
        .causeway()
        .args(["test", "crm-source-js", "--json", "--fixtures"])
        .arg(repo_root().join("plugins/crm-source/fixtures")));
    let report: Value = serde_json::from_str(&out.stdout)
        .unwrap_or_else(|e| panic!("not a report ({e}): {}{}", out.stdout, out.stderr));
    assert!(out.success, "{report:#}");
    let passed: Vec<&str> = report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["verdict"] == "pass")
        .map(|f| f["rule"].as_str().unwrap())
        .collect();
    for rule in ["check-accepts-config", "read-completes", "read-resumes"] {
        assert!(passed.contains(&rule), "{rule}: {report:#}");
    }
}
