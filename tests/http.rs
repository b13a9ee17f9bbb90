//! The `http` capability through the real host, against real servers on
//! 127.0.0.1: grants, addresses, redirects, limits, proxies, credentials.

use crate::support;

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::{Answer, FakeServer, Scratch, audit_rows, run};

const SECRET: &str = "s3cr3t-v4lue-9f2a";

/// Grants test-fetch GET on `/api/` of the server at `port`, by the explicit
/// address 127.0.0.1, with its credential bound to that host.
fn grant(port: &str, extra: &str) -> String {
    format!(
        r#"
[[plugins.test-fetch.http]]
scheme = "http"
host = "127.0.0.1"
port = {port}
methods = ["GET"]
path-prefix = "/api/"

[plugins.test-fetch.credentials.token]
secret = "env:CAUSEWAY_TEST_TOKEN"
hosts = ["127.0.0.1"]
{extra}
"#
    )
}

fn port(server: &FakeServer) -> String {
    server.addr.rsplit(':').next().unwrap().to_string()
}

/// Runs one probe; the answer record's data, or the error line.
fn probe(scratch: &Scratch, request: Value) -> Result<Value, String> {
    let input = scratch.path().join("probe.json");
    std::fs::write(&input, json!({ "stream": request.to_string() }).to_string()).unwrap();
    let out = run(scratch
        .causeway()
        .env("CAUSEWAY_TEST_TOKEN", SECRET)
        .env("CAUSEWAY_LOG", "info")
        .args(["invoke", "test-fetch", "read", "--input"])
        .arg(&input));
    out.assert_hides(SECRET, "probe");
    if out.success {
        let page: Value = serde_json::from_str(&out.stdout).unwrap();
        Ok(page["records"][0]["data"].clone())
    } else {
        Err(out
            .stderr
            .lines()
            .rfind(|l| l.starts_with("error:"))
            .unwrap_or_default()
            .to_string())
    }
}

fn setup(grants: &str) -> Scratch {
    let scratch = Scratch::new();
    scratch.install("test-fetch", "fetch.wasm");
    scratch.grants(grants);
    scratch
}

#[test]
fn an_allowed_request_succeeds_and_is_audited() {
    let server = FakeServer::start(|_| Answer::ok(r#"{"hello":"world"}"#));
    let scratch = setup(&grant(&port(&server), ""));
    let answer = probe(
        &scratch,
        json!({"method": "GET", "url": format!("http://{}/api/x?page=2", server.addr)}),
    )
    .unwrap();
    assert_eq!(answer["status"], 200);
    assert_eq!(answer["body"], r#"{"hello":"world"}"#);
    let rows = audit_rows(&scratch.path().join("causeway-data"));
    assert_eq!(rows.len(), 1, "{rows:#?}");
    assert_eq!(rows[0].4, "allowed");
    assert_eq!(rows[0].3, format!("http://{}/api/x?page=…", server.addr));
    assert!(
        rows[0]
            .5
            .starts_with("status 200, 0 bytes out, 17 bytes in"),
        "{}",
        rows[0].5
    );
}

#[test]
fn a_denied_host_method_path_port_and_scheme_each_fail_with_the_rule_to_add_and_an_audit_row() {
    let server = FakeServer::start(|_| Answer::ok("{}"));
    let scratch = setup(&grant(&port(&server), ""));
    let other = FakeServer::start(|_| Answer::ok("{}"));
    let cases = [
        ("GET", format!("http://localhost:{}/api/x", port(&server))),
        ("POST", format!("http://{}/api/x", server.addr)),
        ("GET", format!("http://{}/other", server.addr)),
        ("GET", format!("http://{}/api/x", other.addr)),
        ("GET", format!("https://{}/api/x", server.addr)),
    ];
    for (method, url) in &cases {
        let error = probe(&scratch, json!({"method": method, "url": url})).unwrap_err();
        assert!(
            error.contains("denied: plugin test-fetch may not"),
            "{url}: {error}"
        );
        // Outside the grants: the rule to add; outside the manifest (POST,
        // https): a grant alone cannot allow it, and the message says so.
        assert!(
            error.contains("add to grants.toml [[plugins.test-fetch.http]]")
                || error.contains("its manifest does not request it"),
            "{url}: {error}"
        );
    }
    assert!(
        server.received().is_empty() && other.received().is_empty(),
        "a denied request reached a server"
    );
    let rows = audit_rows(&scratch.path().join("causeway-data"));
    assert_eq!(
        rows.iter().filter(|r| r.4 == "denied").count(),
        cases.len(),
        "{rows:#?}"
    );
}

#[test]
fn a_malformed_request_is_refused_reaches_no_server_and_is_audited() {
    let server = FakeServer::start(|_| Answer::ok("{}"));
    let scratch = setup(&grant(&port(&server), ""));
    let api = format!("http://{}/api/x", server.addr);
    let cases = [
        (
            json!({"method": "GET", "url": api, "headers": [["Authorization", "Bearer mine"]]}),
            format!("http://{}/api/x", server.addr),
            "header \"Authorization\" is set by the host",
        ),
        (
            json!({"method": "GET", "url": format!("ftp://{}/api/x", server.addr)}),
            format!("ftp://{}/api/x", server.addr),
            "scheme \"ftp\" is not http or https",
        ),
        (
            json!({"method": "GET", "url": format!("http://me:pw@{}/api/x", server.addr)}),
            format!("http://{}/api/x", server.addr),
            "credentials in the URL are refused",
        ),
        (
            json!({"method": "GET", "url": api, "credential": "other"}),
            format!("http://{}/api/x", server.addr),
            "credential \"other\" is not requested in the manifest",
        ),
        // Within /api/ to the grant's check; a server that decodes the
        // slash, or strips the `;`, reads them as /admin.
        (
            json!({"method": "GET", "url": format!("http://{}/api/..%2Fadmin", server.addr)}),
            format!("http://{}/api/..%2Fadmin", server.addr),
            "holds the segment \"..%2Fadmin\", which a server may read as \"..\"",
        ),
        (
            json!({"method": "GET", "url": format!("http://{}/api/..;/admin", server.addr)}),
            format!("http://{}/api/..;/admin", server.addr),
            "holds the segment \"..;\", which a server may read as \"..\"",
        ),
        // Within the grant once resolved, but not where the plugin asked
        // to go: a record's id of ".." put in the path.
        (
            json!({"method": "GET", "url": format!("http://{}/api/contacts/%2E%2E", server.addr)}),
            format!("http://{}/api/", server.addr),
            "holds the segment \"%2E%2E\", which the URL parser resolves, so the request would go to /api/ instead",
        ),
    ];
    for (request, _, says) in &cases {
        let error = probe(&scratch, request.clone()).unwrap_err();
        assert!(error.contains(says), "{request}: {error}");
    }
    assert!(server.received().is_empty(), "a refused request was sent");
    let rows = audit_rows(&scratch.path().join("causeway-data"));
    assert_eq!(rows.len(), cases.len(), "{rows:#?}");
    for (row, (_, shown, says)) in rows.iter().zip(&cases) {
        assert_eq!((row.3.as_str(), row.4.as_str()), (shown.as_str(), "denied"));
        assert!(row.5.contains(says), "{row:?}");
        assert!(!row.3.contains("pw"), "the URL's password is not kept");
    }
}

#[test]
fn a_redirect_to_a_denied_host_is_refused_with_an_audit_row_per_hop() {
    let elsewhere = FakeServer::start(|_| Answer::ok("{}"));
    let target = format!("http://localhost:{}/api/x", port(&elsewhere));
    let server = FakeServer::start(move |_| Answer {
        status: 302,
        headers: vec![("location".into(), target.clone())],
        body: Vec::new(),
        delay: Duration::ZERO,
    });
    let scratch = setup(&grant(&port(&server), ""));
    let error = probe(
        &scratch,
        json!({"method": "GET", "url": format!("http://{}/api/go", server.addr)}),
    )
    .unwrap_err();
    assert!(
        error.contains("denied:") && error.contains("localhost"),
        "{error}"
    );
    assert!(elsewhere.received().is_empty());
    let rows = audit_rows(&scratch.path().join("causeway-data"));
    assert_eq!(rows.len(), 2, "{rows:#?}");
    assert_eq!(
        (rows[0].4.as_str(), rows[1].4.as_str()),
        ("allowed", "denied")
    );
    assert!(
        rows[0].5.starts_with("status 302, redirect"),
        "{}",
        rows[0].5
    );
}

/// Loopback, link-local and other non-public addresses in every spelling are
/// refused unless a grant names them; here only `localhost` is granted.
#[test]
fn ip_literals_in_every_spelling_and_metadata_addresses_are_refused_without_an_explicit_grant() {
    let server = FakeServer::start(|_| Answer::ok("{}"));
    let p = port(&server);
    let scratch = setup(&String::from(
        "[[plugins.test-fetch.http]]\nscheme = \"http\"\nhost = \"localhost\"\nmethods = [\"GET\"]\n\n[plugins.test-fetch.credentials.token]\nsecret = \"env:X\"\nhosts = [\"localhost\"]\n",
    ));
    for url in [
        format!("http://127.0.0.1:{p}/api/x"),
        format!("http://127.1:{p}/api/x"),
        format!("http://0x7f000001:{p}/api/x"),
        format!("http://2130706433:{p}/api/x"),
        format!("http://[::ffff:127.0.0.1]:{p}/api/x"),
        format!("http://[::1]:{p}/api/x"),
        "http://169.254.169.254/latest/meta-data/".to_string(),
        "http://0.0.0.0/".to_string(),
    ] {
        let error = probe(&scratch, json!({"method": "GET", "url": url})).unwrap_err();
        assert!(error.contains("denied:"), "{url}: {error}");
    }
    assert!(
        server.received().is_empty(),
        "an address literal reached the server"
    );
    // The name granted explicitly reaches the same server.
    let answer = probe(
        &scratch,
        json!({"method": "GET", "url": format!("http://localhost:{p}/api/x")}),
    )
    .unwrap();
    assert_eq!(answer["status"], 200);
}

/// An API behind a private certificate authority: refused while only the
/// bundled roots are trusted, reached once `ca-file` in causeway.toml names
/// its authority; a `ca-file` holding no certificate stops the command,
/// naming it.
#[test]
fn an_api_behind_a_private_ca_is_reached_once_ca_file_names_it() {
    let server = FakeServer::start_tls(|_| Answer::ok(r#"{"behind":"a private CA"}"#));
    let p = port(&server);
    let scratch = fetch_for_any_scheme();
    scratch.grants(&format!(
        "[[plugins.test-fetch.http]]\nscheme = \"https\"\nhost = \"127.0.0.1\"\nport = {p}\nmethods = [\"GET\"]\npath-prefix = \"/api/\"\n\n[plugins.test-fetch.credentials.token]\nsecret = \"env:CAUSEWAY_TEST_TOKEN\"\nhosts = [\"127.0.0.1\"]\n"
    ));
    let url = format!("https://{}/api/x", server.addr);
    let error = probe(&scratch, json!({"method": "GET", "url": url})).unwrap_err();
    assert!(
        error.contains("network:") && error.contains("certificate"),
        "{error}"
    );
    let config = scratch.path().join("causeway.toml");
    std::fs::write(&config, "ca-file = \"ca.pem\"\n").unwrap();
    std::fs::copy(
        support::repo_root().join("tests/fixtures/tls/ca.pem"),
        scratch.path().join("ca.pem"),
    )
    .unwrap();
    let answer = probe(&scratch, json!({"method": "GET", "url": url})).unwrap();
    assert_eq!(answer["status"], 200);
    assert_eq!(answer["body"], r#"{"behind":"a private CA"}"#);
    assert_eq!(
        server.received().len(),
        1,
        "the refused handshake sent no request"
    );

    std::fs::write(scratch.path().join("ca.pem"), "not a certificate\n").unwrap();
    refused_at_start(
        &scratch,
        &["ca.pem: holds no certificate", "(ca-file in causeway.toml)"],
    );
}

/// Writes `text` as the scratch's secrets file, `secrets.toml`, private
/// (0600) and whole at once (renamed into place, as a rotation is), and
/// returns its path.
fn write_secrets(scratch: &Scratch, text: &str) -> std::path::PathBuf {
    let (next, secrets) = (
        scratch.path().join("secrets.next"),
        scratch.path().join("secrets.toml"),
    );
    std::fs::write(&next, text).unwrap();
    std::fs::set_permissions(&next, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    std::fs::rename(&next, &secrets).unwrap();
    secrets
}

/// A scratch with test-fetch installed, its manifest (which asks for http)
/// patched to ask for the scheme granted.
fn fetch_for_any_scheme() -> Scratch {
    let scratch = Scratch::new();
    let fetch = std::fs::read(support::built("test-fetch")).unwrap();
    scratch.write(
        "test-fetch.wasm",
        support::patched(&fetch, "scheme = \"http\"", "scheme = \"*\"   "),
    );
    scratch
}

/// `causeway check` fails saying each of `says`; what it said.
fn check_refuses(scratch: &Scratch, says: &[&str]) -> String {
    let out = run(scratch.causeway().arg("check"));
    assert!(!out.success);
    let said = format!("{}{}", out.stdout, out.stderr);
    assert!(says.iter().all(|s| said.contains(s)), "{says:?}: {said}");
    said
}

/// `causeway check` fails saying each of `says`, and the host does not
/// start, saying the first (bounded: a host that started anyway would
/// otherwise hang the test).
fn refused_at_start(scratch: &Scratch, says: &[&str]) {
    check_refuses(scratch, says);
    let out = support::run_within(
        scratch.causeway().args(["run", "--listen", "127.0.0.1:0"]),
        30,
    );
    assert!(!out.success);
    assert!(out.stderr.contains(says[0]), "{}", out.stderr);
}

/// A network whose only way out is a proxy: a name only the proxy's side
/// resolves is out of reach until `[proxy]` in causeway.toml names it; then
/// plain requests are forwarded through it and HTTPS ones tunnelled, each
/// with its login, the hosts in `direct` are reached without it, and a
/// request the grants refuse reaches neither. A login that cannot be read,
/// or a password written in clear, stops the command without showing it.
#[test]
fn a_network_whose_only_way_out_is_a_proxy_is_reached_through_it() {
    let server = FakeServer::start(|r| Answer::ok(format!(r#"{{"at":"{}"}}"#, r.target)));
    let tls = FakeServer::start_tls(|_| Answer::ok(r#"{"at":"tls"}"#));
    // `causeway:s3cret`, as Basic authentication writes it.
    let proxy = support::FakeProxy::start(Some("Basic Y2F1c2V3YXk6czNjcmV0"));
    let (p, tp) = (port(&server), port(&tls));
    let scratch = fetch_for_any_scheme();
    scratch.grants(&format!(
        "[[plugins.test-fetch.http]]\nscheme = \"http\"\nhost = \"crm.corp.test\"\nport = {p}\nmethods = [\"GET\"]\npath-prefix = \"/api/\"\n\n\
         [[plugins.test-fetch.http]]\nscheme = \"http\"\nhost = \"127.0.0.1\"\nport = {p}\nmethods = [\"GET\"]\npath-prefix = \"/api/\"\n\n\
         [[plugins.test-fetch.http]]\nhost = \"localhost\"\nport = {tp}\nmethods = [\"GET\"]\n\n\
         [plugins.test-fetch.credentials.token]\nsecret = \"env:CAUSEWAY_TEST_TOKEN\"\nhosts = [\"127.0.0.1\"]\n"
    ));
    let crm = format!("http://crm.corp.test:{p}/api/contacts?page=2");
    let error = probe(&scratch, json!({"method": "GET", "url": crm})).unwrap_err();
    assert!(error.contains("network:"), "{error}");
    assert!(proxy.asked().is_empty());

    std::fs::copy(
        support::repo_root().join("tests/fixtures/tls/ca.pem"),
        scratch.path().join("ca.pem"),
    )
    .unwrap();
    write_secrets(&scratch, "proxy = \"s3cret\"\n");
    let config = |password: &str| {
        std::fs::write(
            scratch.path().join("causeway.toml"),
            format!(
                "ca-file = \"ca.pem\"\nsecrets-file = \"secrets.toml\"\n\n[proxy]\nurl = \"http://{}\"\ndirect = [\"127.0.0.1\"]\nuser = \"causeway\"\npassword = {password:?}\n",
                proxy.addr
            ),
        )
        .unwrap()
    };
    config("file:proxy");
    // The security team sees where every plugin's requests go.
    let out = run(scratch.causeway().arg("grants"));
    assert!(out.success, "{}", out.stderr);
    assert!(
        out.stdout.contains(&format!(
            "outbound proxy: http://{} as causeway (directly: 127.0.0.1)\n",
            proxy.addr
        )) && out
            .stdout
            .contains("outbound HTTPS also trusts: ./ca.pem (1 certificate)\n"),
        "{}",
        out.stdout
    );
    // And a script, in --json: the password by its reference only.
    let view = support::run_json(scratch.causeway().args(["grants", "--json"]));
    assert_eq!(
        view["proxy"],
        json!({
            "url": format!("http://{}/", proxy.addr),
            "direct": ["127.0.0.1"],
            "user": "causeway",
            "password": "file:proxy",
        })
    );
    assert_eq!(
        view["ca-file"],
        json!({ "file": "./ca.pem", "certificates": 1 })
    );
    let answer = probe(&scratch, json!({"method": "GET", "url": crm})).unwrap();
    assert_eq!(answer["status"], 200);
    assert_eq!(answer["body"], r#"{"at":"/api/contacts?page=2"}"#);
    let answer = probe(
        &scratch,
        json!({"method": "GET", "url": format!("https://localhost:{tp}/x")}),
    )
    .unwrap();
    assert_eq!(answer["body"], r#"{"at":"tls"}"#);
    let login = "Basic Y2F1c2V3YXk6czNjcmV0".to_string();
    assert_eq!(
        proxy.asked(),
        [
            support::Proxied {
                line: format!("GET {crm}"),
                authorization: login.clone(),
            },
            support::Proxied {
                line: format!("CONNECT localhost:{tp}"),
                authorization: login,
            },
        ]
    );
    // Directly: the proxy is not asked.
    let answer = probe(
        &scratch,
        json!({"method": "GET", "url": format!("http://127.0.0.1:{p}/api/direct")}),
    )
    .unwrap();
    assert_eq!(answer["body"], r#"{"at":"/api/direct"}"#);
    // Refused by the grants before anything is sent.
    for url in [
        format!("http://crm.corp.test:{p}/admin"),
        format!("http://elsewhere.corp.test:{p}/api/x"),
    ] {
        let error = probe(&scratch, json!({"method": "GET", "url": url})).unwrap_err();
        assert!(error.contains("denied:"), "{url}: {error}");
    }
    assert_eq!(proxy.asked().len(), 2, "{:?}", proxy.asked());
    assert_eq!(
        server
            .received()
            .iter()
            .map(|r| r.target.as_str())
            .collect::<Vec<_>>(),
        ["/api/contacts?page=2", "/api/direct"]
    );
    // The proxy's refusal is said to be the proxy's, not the API's.
    write_secrets(&scratch, "proxy = \"not-it\"\n");
    let error = probe(&scratch, json!({"method": "GET", "url": crm})).unwrap_err();
    assert!(
        error.contains("network:")
            && error.contains(&format!(
                "the proxy http://{} refused its login (407)",
                proxy.addr
            )),
        "{error}"
    );
    assert_eq!(server.received().len(), 2);

    // A login that cannot be read stops `check` and the host, naming it.
    config("file:proxy-password");
    refused_at_start(
        &scratch,
        &[
            "proxy.password: secret file:proxy-password",
            "has no key \"proxy-password\"",
        ],
    );
    // A password in clear is refused where it is written, and not shown.
    config("hunter2");
    let said = check_refuses(&scratch, &["causeway.toml line", "never the value itself"]);
    assert!(!said.contains("hunter2"), "{said}");
}

/// The proxy's password rotated in the secrets file is taken by the running
/// host at the next request, as a credential's is: no restart.
#[test]
fn a_proxy_password_rotated_in_the_secrets_file_is_taken_without_a_restart() {
    let server = FakeServer::start(|_| Answer::ok(r#"{"via":"proxy"}"#));
    let proxy = support::FakeProxy::start(Some("Basic Y2F1c2V3YXk6czNjcmV0"));
    let p = port(&server);
    let scratch = setup(&format!(
        "[[plugins.test-fetch.http]]\nscheme = \"http\"\nhost = \"crm.corp.test\"\nport = {p}\nmethods = [\"GET\"]\n\n\
         [plugins.test-fetch.credentials.token]\nsecret = \"env:CAUSEWAY_TEST_TOKEN\"\nhosts = [\"127.0.0.1\"]\n"
    ));
    write_secrets(&scratch, "proxy = \"s3cret\"\n");
    std::fs::write(
        scratch.path().join("causeway.toml"),
        format!(
            "secrets-file = \"secrets.toml\"\n\n[proxy]\nurl = \"http://{}\"\nuser = \"causeway\"\npassword = \"file:proxy\"\n",
            proxy.addr
        ),
    )
    .unwrap();
    let host = serve(&scratch);
    let url = format!("http://crm.corp.test:{p}/x");
    let (status, body) = invoke_fetch(&host, &url);
    assert_eq!(status, 200, "{body}");
    // The proxy's administrators rotate the password; so does the operator.
    proxy.set_login(Some("Basic Y2F1c2V3YXk6czNjcmV0LTI="));
    let (status, body) = invoke_fetch(&host, &url);
    assert_ne!(status, 200, "the old password still passed: {body}");
    assert!(body.contains("refused its login (407)"), "{body}");
    write_secrets(&scratch, "proxy = \"s3cret-2\"\n");
    support::wait_until("the new password used", Duration::from_secs(10), || {
        (invoke_fetch(&host, &url).0 == 200).then_some(())
    });
    assert_eq!(
        proxy.asked().last().map(|a| a.authorization.as_str()),
        Some("Basic Y2F1c2V3YXk6czNjcmV0LTI=")
    );
    let logs = host.logs();
    assert!(!logs.contains("s3cret"), "{logs}");
}

#[test]
fn proxy_variables_change_nothing() {
    let proxy = FakeServer::start(|_| Answer::ok(r#"{"via":"proxy"}"#));
    let server = FakeServer::start(|_| Answer::ok(r#"{"via":"direct"}"#));
    let scratch = setup(&grant(&port(&server), ""));
    let input = scratch.path().join("probe.json");
    let request = json!({"method": "GET", "url": format!("http://{}/api/x", server.addr)});
    std::fs::write(&input, json!({ "stream": request.to_string() }).to_string()).unwrap();
    let proxy_url = format!("http://{}", proxy.addr);
    let out = run(scratch
        .causeway()
        .env("HTTP_PROXY", &proxy_url)
        .env("http_proxy", &proxy_url)
        .env("ALL_PROXY", &proxy_url)
        .args(["invoke", "test-fetch", "read", "--input"])
        .arg(&input));
    assert!(out.success, "{}", out.stderr);
    assert!(
        out.stdout.contains(r#"\"via\":\"direct\""#),
        "{}",
        out.stdout
    );
    assert!(
        proxy.received().is_empty(),
        "the request went through the proxy"
    );
}

#[test]
fn an_oversized_response_is_cut_off() {
    let server = FakeServer::start(|_| Answer::ok(vec![b'x'; 200_000]));
    let scratch = setup(&grant(
        &port(&server),
        "[plugins.test-fetch.http-limits]\nmax-response-bytes = 1000\n",
    ));
    let error = probe(
        &scratch,
        json!({"method": "GET", "url": format!("http://{}/api/big", server.addr)}),
    )
    .unwrap_err();
    assert!(
        error.contains("too-large:") && error.contains("limit of 1000 bytes"),
        "{error}"
    );
}

#[test]
fn a_slow_server_times_out_within_the_bound() {
    let server = FakeServer::start(|_| Answer {
        delay: Duration::from_secs(10),
        ..Answer::ok("{}")
    });
    let scratch = setup(&grant(
        &port(&server),
        "[plugins.test-fetch.http-limits]\ntimeout = \"500ms\"\n",
    ));
    let started = Instant::now();
    let error = probe(
        &scratch,
        json!({"method": "GET", "url": format!("http://{}/api/slow", server.addr)}),
    )
    .unwrap_err();
    assert!(error.contains("timeout:"), "{error}");
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "took {:?}",
        started.elapsed()
    );
}

/// A plugin that tries everything to learn its credential never sees it:
/// not echoed back, not carried across a redirect, not in an error, not in
/// its logs, not in the host's logs or audit log.
#[test]
fn a_request_whose_credentials_secret_is_missing_is_not_sent_and_is_audited_naming_its_source() {
    let server = FakeServer::start(|_| Answer::ok("{}"));
    let scratch = setup(&grant(&port(&server), ""));
    let input = scratch.path().join("probe.json");
    let request = json!({"method": "GET", "url": format!("http://{}/api/x", server.addr), "credential": "token"});
    std::fs::write(&input, json!({ "stream": request.to_string() }).to_string()).unwrap();
    let out = run(scratch
        .causeway()
        .env_remove("CAUSEWAY_TEST_TOKEN")
        .args(["invoke", "test-fetch", "read", "--input"])
        .arg(&input));
    assert!(!out.success, "{}", out.stdout);
    let says = "credential \"token\": secret env:CAUSEWAY_TEST_TOKEN: the environment variable CAUSEWAY_TEST_TOKEN is not set";
    assert!(out.stderr.contains(says), "{}", out.stderr);
    assert!(server.received().is_empty());
    let rows = audit_rows(&scratch.path().join("causeway-data"));
    assert_eq!(rows.len(), 1, "{rows:#?}");
    assert_eq!(rows[0].4, "denied");
    assert_eq!(rows[0].5, says);
}

#[test]
fn a_plugin_never_learns_its_credential() {
    let elsewhere = FakeServer::start(|_| Answer::ok("{}"));
    let hop = format!("http://localhost:{}/api/landed", port(&elsewhere));
    let server = FakeServer::start(move |request| {
        let auth = request.header("authorization");
        if request.target.starts_with("/api/redirect") {
            return Answer {
                status: 307,
                headers: vec![("location".into(), hop.clone())],
                body: Vec::new(),
                delay: Duration::ZERO,
            };
        }
        Answer {
            headers: vec![("x-echo-authorization".into(), auth.clone())],
            ..Answer::ok(json!({ "you_sent": auth }).to_string())
        }
    });
    let localhost = format!(
        "[[plugins.test-fetch.http]]\nscheme = \"http\"\nhost = \"localhost\"\nport = {}\nmethods = [\"GET\"]\n",
        port(&elsewhere)
    );
    let scratch = setup(&grant(&port(&server), &localhost));

    // The echo: the server got the secret, the plugin sees it redacted.
    let answer = probe(
        &scratch,
        json!({"method": "GET", "url": format!("http://{}/api/echo", server.addr), "credential": "token"}),
    )
    .unwrap();
    assert!(
        server.received()[0]
            .headers
            .contains(&("authorization".into(), format!("Bearer {SECRET}")))
    );
    assert!(
        answer["body"]
            .as_str()
            .unwrap()
            .contains("Bearer [redacted]"),
        "{answer}"
    );
    assert!(answer.to_string().contains("[redacted]") && !answer.to_string().contains(SECRET));

    // A redirect to a host the credential is not bound to: it is not carried.
    probe(
        &scratch,
        json!({"method": "GET", "url": format!("http://{}/api/redirect", server.addr), "credential": "token"}),
    )
    .unwrap();
    let landed = elsewhere.received();
    assert_eq!(landed.len(), 1);
    assert!(
        landed[0]
            .headers
            .iter()
            .all(|(n, v)| n != "authorization" && !v.contains(SECRET)),
        "{landed:?}"
    );

    // Asking for it towards an unbound host is an error that does not name it.
    let error = probe(
        &scratch,
        json!({"method": "GET", "url": format!("http://localhost:{}/api/x", port(&elsewhere)), "credential": "token"}),
    )
    .unwrap_err();
    assert!(error.contains("is not bound to host localhost"), "{error}");

    // `probe` checked stdout and stderr of every call; the audit log too.
    let rows = audit_rows(&scratch.path().join("causeway-data"));
    assert!(
        !format!("{rows:?}").contains(SECRET),
        "the secret is in the audit log"
    );
}

/// An API that takes its key in the JSON body (Mailchimp Transactional's
/// `"key"`): the host sets the field in the object the plugin wrote, only
/// towards the hosts the credential is bound to; an echo of it comes back
/// redacted, and a body that is no JSON object is refused unsent.
#[test]
fn a_key_an_api_takes_in_its_json_body_is_put_there_by_the_host() {
    let server = FakeServer::start(|request| {
        Answer::ok(String::from_utf8_lossy(&request.body).into_owned())
    });
    // test-fetch as a build that sends bodies would ask (PUT, where it
    // asks GET: the same length, so the component stays whole).
    let scratch = Scratch::new();
    let bytes = std::fs::read(support::built("test-fetch")).unwrap();
    scratch.write(
        "fetch.wasm",
        support::patched(&bytes, r#"methods = ["GET"]"#, r#"methods = ["PUT"]"#),
    );
    let granted = grant(&port(&server), "inject = \"json:key\"\n")
        .replace(r#"methods = ["GET"]"#, r#"methods = ["PUT"]"#);
    scratch.grants(&granted);
    let send = |body: &str| {
        probe(
            &scratch,
            json!({
                "method": "PUT",
                "url": format!("http://{}/api/messages/send", server.addr),
                "credential": "token",
                "headers": [["content-type", "application/json"]],
                "body": body,
            }),
        )
    };
    let answer = send(r#"{"key":"the plugin's guess","message":{"to":"a@example.com"}}"#).unwrap();
    let sent: Value = serde_json::from_slice(&server.received()[0].body).unwrap();
    assert_eq!(
        sent,
        json!({ "key": SECRET, "message": { "to": "a@example.com" } })
    );
    assert!(
        server.received()[0].header("authorization").is_empty(),
        "{:?}",
        server.received()[0]
    );
    // The server echoed the body: the plugin sees the key redacted.
    let echoed: Value = serde_json::from_str(answer["body"].as_str().unwrap()).unwrap();
    assert_eq!(echoed["key"], "[redacted]", "{answer}");
    let error = send("key=form-encoded").unwrap_err();
    assert!(
        error.contains("credential \"token\" goes in the body's \"key\" field, and the body is not a JSON object"),
        "{error}"
    );
    assert_eq!(server.received().len(), 1, "the refused one was not sent");
    let rows = audit_rows(&scratch.path().join("causeway-data"));
    assert!(!format!("{rows:?}").contains(SECRET), "{rows:#?}");
}

/// Starts `causeway run` for a scratch set up by [`setup`], with the secret.
fn serve(scratch: &Scratch) -> support::RunningHost {
    support::RunningHost::start(scratch.causeway().env("CAUSEWAY_TEST_TOKEN", SECRET).args([
        "run",
        "--listen",
        "127.0.0.1:0",
    ]))
}

/// One `read` of test-fetch through the running host's invoke endpoint.
fn invoke_fetch(host: &support::RunningHost, url: &str) -> (u16, String) {
    let stream = json!({ "method": "GET", "url": url }).to_string();
    let body = json!({ "operation": "read", "input": { "stream": stream } }).to_string();
    host.api("POST", "/api/plugins/test-fetch/invoke", Some(&body))
}

#[test]
fn requests_in_flight_never_exceed_the_plugins_concurrency_limit() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let in_flight = Arc::new(AtomicUsize::new(0));
    let most = Arc::new(AtomicUsize::new(0));
    let (now, peak) = (in_flight.clone(), most.clone());
    // Each answer takes 300 ms, counted while the request is being served.
    let server = FakeServer::start(move |_| {
        let current = now.fetch_add(1, Ordering::SeqCst) + 1;
        peak.fetch_max(current, Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(300));
        now.fetch_sub(1, Ordering::SeqCst);
        Answer::ok("{}")
    });
    let scratch = setup(&grant(
        &port(&server),
        "[plugins.test-fetch.http-limits]\nmax-concurrent = 2\n",
    ));
    let host = Arc::new(serve(&scratch));
    let url = format!("http://{}/api/slow", server.addr);
    let callers: Vec<_> = (0..6)
        .map(|_| {
            let (host, url) = (host.clone(), url.clone());
            std::thread::spawn(move || invoke_fetch(&host, &url))
        })
        .collect();
    for caller in callers {
        let (status, body) = caller.join().unwrap();
        assert_eq!(status, 200, "{body}");
    }
    assert_eq!(server.received().len(), 6);
    assert_eq!(
        most.load(Ordering::SeqCst),
        2,
        "six concurrent calls must be served two at a time"
    );
}

#[test]
fn requests_over_the_rate_limit_wait_their_turn_and_fail_only_past_the_deadline() {
    let arrivals = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = arrivals.clone();
    let server = FakeServer::start(move |_| {
        log.lock().unwrap().push(Instant::now());
        Answer::ok("{}")
    });
    let scratch = setup(&grant(
        &port(&server),
        "[plugins.test-fetch.http-limits]\nrequests-per-second = 4\nburst = 1\n",
    ));
    let host = serve(&scratch);
    let url = format!("http://{}/api/x", server.addr);
    for _ in 0..5 {
        let (status, body) = invoke_fetch(&host, &url);
        assert_eq!(status, 200, "{body}");
    }
    let arrivals = arrivals.lock().unwrap().clone();
    assert_eq!(arrivals.len(), 5);
    for pair in arrivals.windows(2) {
        let gap = pair[1] - pair[0];
        // 4 per second is 250 ms apart; the margin covers delivery jitter.
        assert!(
            gap >= Duration::from_millis(200),
            "requests went {gap:?} apart, faster than 4 per second"
        );
    }
    drop(host);

    // A wait that cannot fit in the request's time is refused before
    // anything is sent, as a timeout naming the limit, and audited.
    let scratch = setup(&grant(
        &port(&server),
        "[plugins.test-fetch.http-limits]\nrequests-per-second = 1\nburst = 1\ntimeout = \"300ms\"\n",
    ));
    let mut host = serve(&scratch);
    let before = server.received().len();
    let (first, _) = invoke_fetch(&host, &url);
    assert_eq!(first, 200);
    let (status, body) = invoke_fetch(&host, &url);
    assert_eq!(status, 502, "{body}");
    assert!(body.contains("requests-per-second"), "{body}");
    assert_eq!(
        server.received().len(),
        before + 1,
        "the throttled request was sent"
    );
    // A clean stop flushes the audit log before it is read.
    host.terminate();
    assert!(host.wait_exit(30));
    let rows = audit_rows(&scratch.path().join("causeway-data"));
    assert!(
        rows.iter()
            .any(|r| r.4 == "denied" && r.5.starts_with("throttled:")),
        "{rows:#?}"
    );
}

/// An API that takes only OAuth 2.0 access tokens: the host, never the
/// plugin, fetches one from the token endpoint with the client secret,
/// keeps it across calls, injects it and redacts it when echoed, sends a
/// request the API refuses (401) again once with another, and audits each
/// fetch; a refusal by the token endpoint is a denial naming the binding.
#[test]
fn an_oauth2_credential_is_fetched_kept_and_renewed_by_the_host() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let issued = Arc::new(AtomicUsize::new(0));
    let count = issued.clone();
    let tokens = FakeServer::start(move |r| {
        let mut form: std::collections::BTreeMap<String, String> =
            url::form_urlencoded::parse(&r.body).into_owned().collect();
        // Or the client in an `Authorization: Basic` header, each part
        // form-encoded (client_secret_basic).
        if let Some(basic) = r.header("authorization").strip_prefix("Basic ") {
            use base64::Engine as _;
            let pair = base64::engine::general_purpose::STANDARD
                .decode(basic)
                .unwrap();
            let pair = format!("client_id={}", String::from_utf8(pair).unwrap()).replacen(
                ':',
                "&client_secret=",
                1,
            );
            form.extend(url::form_urlencoded::parse(pair.as_bytes()).into_owned());
        }
        if form.get("client_id").map(String::as_str) != Some("causeway-test") {
            // Its words echo what it was sent, as some servers' do.
            let said = json!({
                "error": "invalid_client",
                "error_description": format!("no client for secret {}", form["client_secret"]),
            });
            return Answer {
                status: 401,
                ..Answer::ok(said.to_string())
            };
        }
        let n = count.fetch_add(1, Ordering::SeqCst) + 1;
        match form.get("grant_type").map(String::as_str) {
            // Short-lived, and a new refresh token each time (rotated).
            Some("refresh_token") => Answer::ok(format!(
                r#"{{"access_token":"tok-{n}-x9","expires_in":"1","refresh_token":"r-{n}-x9"}}"#
            )),
            _ => Answer::ok(format!(
                r#"{{"access_token":"tok-{n}-x9","token_type":"Bearer","expires_in":3600}}"#
            )),
        }
    });
    // It echoes the header it was sent, no longer takes the first token
    // once it is revoked, and never takes any for `/api/forbidden`.
    let api = FakeServer::start(|r| {
        let authorization = r.header("authorization");
        if (r.target.contains("revoked") && authorization == "Bearer tok-1-x9")
            || r.target.contains("forbidden")
        {
            return Answer {
                status: 401,
                ..Answer::ok(r#"{"error":"token revoked"}"#)
            };
        }
        Answer::ok(json!({ "authorization": authorization }).to_string())
    });
    let scratch = Scratch::new();
    scratch.install("test-fetch", "fetch.wasm");
    let oauth = |client: &str, refresh: &str| {
        format!(
            "[[plugins.test-fetch.http]]\nscheme = \"http\"\nhost = \"127.0.0.1\"\nport = {}\nmethods = [\"GET\"]\npath-prefix = \"/api/\"\n\n\
             [plugins.test-fetch.credentials.token]\nsecret = \"env:CAUSEWAY_TEST_TOKEN\"\nhosts = [\"127.0.0.1\"]\n\
             oauth2 = {{ token-url = \"http://{}/oauth2/token\", client-id = \"{client}\", scopes = [\"contacts.read\", \"contacts.write\"]{refresh} }}\n",
            port(&api),
            tokens.addr
        )
    };
    scratch.grants(&oauth("causeway-test", ""));
    let host = serve(&scratch);
    let fetch = |host: &support::RunningHost, path: &str| {
        let stream = json!({
            "method": "GET",
            "url": format!("http://{}/api/{path}", api.addr),
            "credential": "token",
        });
        let body = json!({ "operation": "read", "input": { "stream": stream.to_string() } });
        let (status, answer) = host.api(
            "POST",
            "/api/plugins/test-fetch/invoke",
            Some(&body.to_string()),
        );
        assert_eq!(status, 200, "{answer}");
        let answer: Value = serde_json::from_str(&answer).unwrap();
        answer["records"][0]["data"].clone()
    };
    let first = fetch(&host, "contacts");
    assert_eq!(first["status"], 200, "{first}");
    assert_eq!(first["body"], r#"{"authorization":"Bearer [redacted]"}"#);
    assert_eq!(fetch(&host, "contacts")["status"], 200);
    // One token for both, asked for with the client secret.
    let asked = tokens.received();
    assert_eq!(asked.len(), 1);
    assert_eq!(asked[0].method, "POST");
    assert_eq!(
        asked[0].header("content-type"),
        "application/x-www-form-urlencoded"
    );
    let form: std::collections::BTreeMap<String, String> =
        url::form_urlencoded::parse(&asked[0].body)
            .into_owned()
            .collect();
    assert_eq!(form["grant_type"], "client_credentials");
    assert_eq!(form["client_id"], "causeway-test");
    assert_eq!(form["client_secret"], SECRET);
    assert_eq!(form["scope"], "contacts.read contacts.write");
    // The token refused by the API (401): the host gets another and sends
    // the request again, once; the plugin sees the answer to that.
    assert_eq!(fetch(&host, "revoked")["status"], 200);
    assert_eq!(tokens.received().len(), 2);
    // Refused whatever the token: the plugin sees the 401 (an `auth` error
    // for the SDK), after one renewal.
    assert_eq!(fetch(&host, "forbidden")["status"], 401);
    assert_eq!(tokens.received().len(), 3);
    let sent: Vec<String> = api
        .received()
        .iter()
        .map(|r| r.header("authorization"))
        .collect();
    assert_eq!(
        sent,
        [
            "Bearer tok-1-x9",
            "Bearer tok-1-x9",
            "Bearer tok-1-x9",
            "Bearer tok-2-x9",
            "Bearer tok-2-x9",
            "Bearer tok-3-x9"
        ]
    );
    // Each fetch is audited, as the host's request for the plugin; no
    // secret or token anywhere.
    let data = scratch.path().join("causeway-data");
    let fetches = support::wait_until("the fetches audited", Duration::from_secs(10), || {
        let rows: Vec<_> = audit_rows(&data)
            .into_iter()
            .filter(|r| r.3.ends_with("/oauth2/token"))
            .collect();
        (rows.len() == 3).then_some(rows)
    });
    for row in &fetches {
        assert_eq!(
            (row.1.as_str(), row.2.as_str()),
            ("http", "POST"),
            "{row:?}"
        );
        assert!(
            row.5
                .starts_with("OAuth2 token for credential token: status 200, valid 3600 s"),
            "{row:?}"
        );
    }
    let rows = format!("{:?}", audit_rows(&data));
    let logs = host.logs();
    for said in [&rows, &logs] {
        assert!(!said.contains(SECRET) && !said.contains("-x9"), "{said}");
    }
    drop(host);

    // The refresh-token grant: the token it gives expires within a second,
    // and the next is asked for with the refresh token the server rotated.
    let secrets = write_secrets(&scratch, "refresh = \"r-0-x9\"\n");
    std::fs::write(
        scratch.path().join("causeway.toml"),
        "secrets-file = \"secrets.toml\"\n",
    )
    .unwrap();
    scratch.grants(&oauth(
        "causeway-test",
        ", refresh-token = \"file:refresh\"",
    ));
    let host = serve(&scratch);
    assert_eq!(fetch(&host, "contacts")["status"], 200);
    support::wait_until(
        "a token asked for again once the first expired",
        Duration::from_secs(10),
        || {
            assert_eq!(fetch(&host, "contacts")["status"], 200);
            (tokens.received().len() == 5).then_some(())
        },
    );
    let refreshes: Vec<(String, String)> = tokens.received()[3..]
        .iter()
        .map(|r| {
            let form: std::collections::BTreeMap<String, String> =
                url::form_urlencoded::parse(&r.body).into_owned().collect();
            (form["grant_type"].clone(), form["refresh_token"].clone())
        })
        .collect();
    assert_eq!(
        refreshes,
        [
            ("refresh_token".to_string(), "r-0-x9".to_string()),
            ("refresh_token".to_string(), "r-4-x9".to_string())
        ]
    );
    let logs = host.logs();
    assert!(!logs.contains("-x9"), "{logs}");
    drop(host);
    // Each rotated one was kept in the secrets file (a server may revoke
    // the one it replaced), which stays private: a restart sends the last.
    let kept = std::fs::read_to_string(&secrets).unwrap();
    assert_eq!(kept, "refresh = \"r-5-x9\"\n");
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&secrets).unwrap().permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);
    let host = serve(&scratch);
    assert_eq!(fetch(&host, "contacts")["status"], 200);
    let last = tokens.received().last().cloned().unwrap();
    let form: std::collections::BTreeMap<String, String> = url::form_urlencoded::parse(&last.body)
        .into_owned()
        .collect();
    assert_eq!(form["refresh_token"], "r-5-x9");
    let rotated = support::wait_until("the rotation audited", Duration::from_secs(10), || {
        let rows = audit_rows(&data);
        rows.iter()
            .find(|r| r.5.contains("refresh token rotated"))
            .map(|r| r.5.clone())
    });
    assert!(
        rotated.contains("refresh token rotated, kept in ")
            && rotated.contains("secrets.toml as refresh"),
        "{rotated}"
    );
    drop(host);
    std::fs::remove_file(scratch.path().join("causeway.toml")).unwrap();
    scratch.grants(&oauth("causeway-test", ""));

    // `causeway grants` says where the token comes from.
    let out = run(scratch.causeway().arg("grants"));
    assert!(
        out.stdout.contains(&format!(
            "env:CAUSEWAY_TEST_TOKEN to 127.0.0.1 (bearer: an OAuth2 client-credentials token from http://{}/oauth2/token as client causeway-test, scopes contacts.read contacts.write; the secret is its client secret)",
            tokens.addr
        )),
        "{}",
        out.stdout
    );
    // client_secret_basic: the client in the header, not in the form.
    scratch.grants(&oauth("causeway-test", ", client-auth = \"basic\""));
    let answer = probe(
        &scratch,
        json!({"method": "GET", "url": format!("http://{}/api/x", api.addr), "credential": "token"}),
    )
    .unwrap();
    assert_eq!(answer["status"], 200);
    let last = tokens.received().last().cloned().unwrap();
    use base64::Engine as _;
    assert_eq!(
        last.header("authorization"),
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("causeway-test:{SECRET}"))
        )
    );
    let form: std::collections::BTreeMap<String, String> = url::form_urlencoded::parse(&last.body)
        .into_owned()
        .collect();
    assert!(
        !form.contains_key("client_id") && !form.contains_key("client_secret"),
        "{form:?}"
    );
    // A client the token endpoint does not know: denied, naming the binding.
    scratch.grants(&oauth("someone-else", ""));
    let before = api.received().len();
    let error = probe(
        &scratch,
        json!({"method": "GET", "url": format!("http://{}/api/x", api.addr), "credential": "token"}),
    )
    .unwrap_err();
    assert!(
        error.contains("denied: credential \"token\": the token endpoint answered 401: invalid_client: no client for secret [redacted]: check its oauth2 binding in grants.toml and its client secret env:CAUSEWAY_TEST_TOKEN"),
        "{error}"
    );
    assert_eq!(
        api.received().len(),
        before,
        "nothing was sent without a token"
    );
    // A token endpoint in plain http elsewhere than this machine is refused
    // where it is written.
    scratch.grants(&oauth("causeway-test", "").replace(
        &format!("http://{}/oauth2/token", tokens.addr),
        "http://login.example.com/oauth2/token",
    ));
    check_refuses(
        &scratch,
        &[
            "grants.toml line 11: oauth2.token-url",
            "must be https (the client secret is sent to it",
        ],
    );
    // A refresh token that does not resolve is named by `check`.
    scratch.grants(&oauth(
        "causeway-test",
        ", refresh-token = \"env:CAUSEWAY_NO_SUCH_REFRESH\"",
    ));
    check_refuses(
        &scratch,
        &[
            "plugins.test-fetch.credentials.token.oauth2.refresh-token: secret env:CAUSEWAY_NO_SUCH_REFRESH: the environment variable CAUSEWAY_NO_SUCH_REFRESH is not set",
        ],
    );
}

/// The JWT-bearer grant (Salesforce's and Google's service accounts): the
/// host signs an assertion with the private key the binding's secret holds
/// (tests/fixtures/oauth, a 2048-bit RSA key made for these tests), and the
/// token endpoint verifies it with the public key before it answers.
#[test]
fn a_jwt_bearer_credential_gets_its_token_with_an_assertion_the_host_signs() {
    use base64::Engine as _;
    let fixtures = support::repo_root().join("tests/fixtures/oauth");
    let public = std::fs::read(fixtures.join("service-account.public.der")).unwrap();
    let tokens = FakeServer::start(move |r| {
        let form: std::collections::BTreeMap<String, String> =
            url::form_urlencoded::parse(&r.body).into_owned().collect();
        let url64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        // The JWT-bearer grant's assertion, or a client's (private_key_jwt)
        // with the client-credentials grant.
        let (assertion, expected) = match form["grant_type"].as_str() {
            "urn:ietf:params:oauth:grant-type:jwt-bearer" => (
                form.get("assertion"),
                ("integration@acme.example", "jwt-tok-x9"),
            ),
            "client_credentials"
                if form.get("client_assertion_type").map(String::as_str)
                    == Some("urn:ietf:params:oauth:client-assertion-type:jwt-bearer")
                    && !form.contains_key("client_secret") =>
            {
                (
                    form.get("client_assertion"),
                    ("sa@example.test", "pkj-tok-x9"),
                )
            }
            _ => (None, ("", "")),
        };
        let claims = assertion
            .and_then(|a| a.rsplit_once('.'))
            .filter(|(signed, signature)| {
                let signature = url64.decode(signature).unwrap_or_default();
                ring::signature::UnparsedPublicKey::new(
                    &ring::signature::RSA_PKCS1_2048_8192_SHA256,
                    &public,
                )
                .verify(signed.as_bytes(), &signature)
                .is_ok()
            })
            .and_then(|(signed, _)| url64.decode(signed.split_once('.')?.1).ok())
            .and_then(|claims| serde_json::from_slice::<Value>(&claims).ok());
        match claims {
            Some(c) if c["iss"] == "sa@example.test" && c["sub"] == expected.0 => {
                Answer::ok(json!({ "access_token": expected.1, "expires_in": 3600 }).to_string())
            }
            _ => Answer {
                status: 400,
                ..Answer::ok(r#"{"error":"invalid_grant"}"#)
            },
        }
    });
    let api = FakeServer::start(|r| {
        Answer::ok(json!({ "authorization": r.header("authorization") }).to_string())
    });
    let scratch = Scratch::new();
    scratch.install("test-fetch", "fetch.wasm");
    let key = std::fs::read_to_string(fixtures.join("service-account.pem")).unwrap();
    write_secrets(&scratch, &format!("sa-key = \"\"\"\n{key}\"\"\"\n"));
    std::fs::write(
        scratch.path().join("causeway.toml"),
        "secrets-file = \"secrets.toml\"\n",
    )
    .unwrap();
    // Signed with the key in sa-key, as `how` says; the answer to one probe.
    let signed_by_key = |how: &str| {
        scratch.grants(&format!(
            "[[plugins.test-fetch.http]]\nscheme = \"http\"\nhost = \"127.0.0.1\"\nport = {}\nmethods = [\"GET\"]\n\n\
             [plugins.test-fetch.credentials.token]\nsecret = \"file:sa-key\"\nhosts = [\"127.0.0.1\"]\n\
             oauth2 = {{ token-url = \"http://{}/services/oauth2/token\", client-id = \"sa@example.test\", {how} }}\n",
            port(&api),
            tokens.addr
        ));
        let answer = probe(
            &scratch,
            json!({"method": "GET", "url": format!("http://{}/x", api.addr), "credential": "token"}),
        )
        .unwrap();
        assert_eq!(answer["status"], 200, "{answer}");
        answer
    };
    let answer = signed_by_key("grant = \"jwt-bearer\", subject = \"integration@acme.example\"");
    assert_eq!(answer["body"], r#"{"authorization":"Bearer [redacted]"}"#);
    assert_eq!(
        api.received()[0].header("authorization"),
        "Bearer jwt-tok-x9"
    );
    assert_eq!(tokens.received().len(), 1);
    let out = run(scratch.causeway().arg("grants"));
    assert!(
        out.stdout.contains("(bearer: an OAuth2 jwt-bearer token from ")
            && out.stdout.contains(
                "as client sa@example.test (an assertion signed with the secret, for integration@acme.example); the secret is its private key)"
            ),
        "{}",
        out.stdout
    );
    // The same key as the client's credential (private_key_jwt), with the
    // client-credentials grant: no secret is sent.
    signed_by_key("client-auth = \"private-key-jwt\", key-id = \"k1\"");
    assert_eq!(
        api.received()[1].header("authorization"),
        "Bearer pkj-tok-x9"
    );
    // Nothing of the key anywhere it could be read.
    let rows = format!("{:?}", audit_rows(&scratch.path().join("causeway-data")));
    let body_line = key.lines().nth(3).unwrap();
    assert!(!rows.contains(body_line) && !out.stdout.contains(body_line));
    // A key that is not one is named by `check`, before any request.
    let out = run(scratch.causeway().arg("check"));
    assert!(out.success, "{}{}", out.stdout, out.stderr);
    write_secrets(
        &scratch,
        &format!("sa-key = \"\"\"\n{}\"\"\"\n", key.replace(body_line, "")),
    );
    let said = check_refuses(
        &scratch,
        &[
            "plugins.test-fetch.credentials.token: the binding's secret is not an RSA private key in PEM",
        ],
    );
    assert!(!said.contains(key.lines().nth(4).unwrap()));
}

/// Calls that need a token while one is being fetched wait for it: six at
/// once against a slow token endpoint make one fetch, and all six are sent
/// with its token.
#[test]
fn concurrent_calls_share_one_token_fetch() {
    use std::sync::Arc;
    let tokens = FakeServer::start(|_| Answer {
        delay: Duration::from_millis(300),
        ..Answer::ok(r#"{"access_token":"shared-x9","expires_in":3600}"#)
    });
    let api = FakeServer::start(|_| Answer::ok("{}"));
    let scratch = Scratch::new();
    scratch.install("test-fetch", "fetch.wasm");
    scratch.grants(&format!(
        "[[plugins.test-fetch.http]]\nscheme = \"http\"\nhost = \"127.0.0.1\"\nport = {}\nmethods = [\"GET\"]\n\n\
         [plugins.test-fetch.credentials.token]\nsecret = \"env:CAUSEWAY_TEST_TOKEN\"\nhosts = [\"127.0.0.1\"]\n\
         oauth2 = {{ token-url = \"http://{}/token\", client-id = \"c\" }}\n",
        port(&api),
        tokens.addr
    ));
    let host = Arc::new(serve(&scratch));
    let url = format!("http://{}/x", api.addr);
    let callers: Vec<_> = (0..6)
        .map(|_| {
            let (host, url) = (host.clone(), url.clone());
            std::thread::spawn(move || {
                let stream = json!({ "method": "GET", "url": url, "credential": "token" });
                let body =
                    json!({ "operation": "read", "input": { "stream": stream.to_string() } });
                host.api(
                    "POST",
                    "/api/plugins/test-fetch/invoke",
                    Some(&body.to_string()),
                )
            })
        })
        .collect();
    for caller in callers {
        let (status, body) = caller.join().unwrap();
        assert_eq!(status, 200, "{body}");
    }
    assert_eq!(tokens.received().len(), 1, "one fetch for all six");
    let sent: Vec<String> = api
        .received()
        .iter()
        .map(|r| r.header("authorization"))
        .collect();
    assert_eq!(sent, vec!["Bearer shared-x9".to_string(); 6]);
}
