//! Shared helpers for the black-box tests: the real `causeway` binary, the
//! real plugins built by host/build.rs, and a scratch folder per test.

#![allow(dead_code)]

pub mod connectors;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use tempfile::TempDir;

/// The folder the plugins workspace was built into.
pub const BUILT_PLUGINS: &str = env!("CAUSEWAY_BUILT_PLUGINS");

/// The built component of the plugin crate `crate_name` (e.g. `map-fullname`).
pub fn built(crate_name: &str) -> PathBuf {
    let path = Path::new(BUILT_PLUGINS).join(format!("{}.wasm", crate_name.replace('-', "_")));
    assert!(
        path.is_file(),
        "plugin {crate_name} was not built: {} is missing",
        path.display()
    );
    path
}

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A scratch folder with a plugins folder inside.
pub struct Scratch {
    dir: TempDir,
}

impl Scratch {
    /// A new, empty scratch folder with an empty `plugins/`.
    pub fn new() -> Scratch {
        let dir = tempfile::tempdir().expect("a temporary folder");
        std::fs::create_dir(dir.path().join("plugins")).expect("create plugins/");
        Scratch { dir }
    }

    /// The scratch folder.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Its plugins folder.
    pub fn plugins(&self) -> PathBuf {
        self.dir.path().join("plugins")
    }

    /// Copies the built plugin `crate_name` into the plugins folder as `file`.
    pub fn install(&self, crate_name: &str, file: &str) -> PathBuf {
        let to = self.plugins().join(file);
        std::fs::copy(built(crate_name), &to).expect("copy plugin");
        to
    }

    /// Writes `contents` to `file` inside the plugins folder.
    pub fn write(&self, file: &str, contents: impl AsRef<[u8]>) -> PathBuf {
        let to = self.plugins().join(file);
        std::fs::write(&to, contents).expect("write file");
        to
    }

    /// `causeway` with this scratch's plugins folder, run in the scratch folder.
    pub fn causeway(&self) -> Command {
        let mut command = causeway();
        command
            .current_dir(self.path())
            .arg("--plugins")
            .arg(self.plugins());
        command
    }
}

/// The real `causeway` binary, with no inherited Causeway settings.
pub fn causeway() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_causeway"));
    command
        .env_remove("CAUSEWAY_PLUGINS")
        .env_remove("CAUSEWAY_LOG");
    command
}

/// A finished command's outcome, with its output as text.
pub struct Run {
    /// Whether it exited 0.
    pub success: bool,
    /// Its stdout.
    pub stdout: String,
    /// Its stderr.
    pub stderr: String,
}

impl Run {
    /// Asserts `secret` appears in neither stdout nor stderr.
    pub fn assert_hides(&self, secret: &str, what: &str) {
        assert!(
            !self.stdout.contains(secret) && !self.stderr.contains(secret),
            "{what}: the secret leaked:\n{}\n{}",
            self.stdout,
            self.stderr
        );
    }
}

/// Runs `command` to completion.
pub fn run(command: &mut Command) -> Run {
    Run::from(command.output().expect("run causeway"))
}

impl From<Output> for Run {
    fn from(output: Output) -> Run {
        Run {
            success: output.status.success(),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }
}

/// Runs `command` like [`run`], for one that must end by itself: past
/// `seconds` it is killed and the test fails, instead of waiting for ever.
pub fn run_within(command: &mut Command, seconds: u64) -> Run {
    let child = command
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start causeway");
    wait_within(child, seconds)
}

/// Waits for `child` to end and reads what it printed (what was not taken
/// from it); past `seconds` it is killed and the test fails.
pub fn wait_within(child: std::process::Child, seconds: u64) -> Run {
    let pid = child.id();
    let (done, wait) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = done.send(child.wait_with_output());
    });
    match wait.recv_timeout(std::time::Duration::from_secs(seconds)) {
        Ok(output) => Run::from(output.expect("wait for causeway")),
        Err(_) => {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
            panic!("causeway (pid {pid}) was still running after {seconds} s");
        }
    }
}

/// Runs `command`, asserts it succeeded, and parses its stdout as JSON.
pub fn run_json(command: &mut Command) -> serde_json::Value {
    let run = run(command);
    assert!(
        run.success,
        "command failed:\nstdout: {}\nstderr: {}",
        run.stdout, run.stderr
    );
    serde_json::from_str(&run.stdout)
        .unwrap_or_else(|e| panic!("stdout is not JSON ({e}):\n{}", run.stdout))
}

/// Sends one HTTP/1.1 request to `addr` and returns the status and body.
pub fn http(addr: &str, method: &str, path: &str, body: Option<&str>) -> (u16, String) {
    try_http(addr, method, path, body).unwrap_or_else(|e| panic!("{method} {path} on {addr}: {e}"))
}

/// [`http`], with a failed exchange (refused, reset, not HTTP) as an error.
pub fn try_http(
    addr: &str,
    method: &str,
    path: &str,
    body: Option<&str>,
) -> std::io::Result<(u16, String)> {
    let headers = [("content-type", "application/json")];
    try_http_with(addr, method, path, &headers, body.unwrap_or("").as_bytes())
}

/// One HTTP/1.1 request with `headers` and a raw `body`: the status and body.
pub fn try_http_with(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<(u16, String)> {
    try_http_answer(addr, method, path, headers, body).map(|(status, _, body)| (status, body))
}

/// [`try_http_with`], with the answer's head too: status, head, body.
pub fn try_http_answer(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<(u16, String, String)> {
    let mut stream = std::net::TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(std::time::Duration::from_secs(60)))?;
    exchange(&mut stream, addr, method, path, headers, body)
}

/// One HTTPS request to `addr` (as `localhost`), trusting only the PEM
/// certificates of `roots`: the status, the body and the certificate the
/// server presented (DER).
pub fn try_https(
    addr: &str,
    roots: &[&Path],
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<(u16, String, Vec<u8>)> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let mut store = rustls::RootCertStore::empty();
    for root in roots {
        for cert in CertificateDer::pem_file_iter(root).expect("a PEM file") {
            store.add(cert.expect("a certificate")).expect("a root");
        }
    }
    let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("TLS versions")
    .with_root_certificates(store)
    .with_no_client_auth();
    let name = "localhost".try_into().expect("a server name");
    let session = rustls::ClientConnection::new(std::sync::Arc::new(config), name)
        .map_err(std::io::Error::other)?;
    let tcp = std::net::TcpStream::connect(addr)?;
    tcp.set_read_timeout(Some(std::time::Duration::from_secs(60)))?;
    let mut stream = rustls::StreamOwned::new(session, tcp);
    let (status, _, body) = exchange(&mut stream, "localhost", method, path, headers, body)?;
    let presented = stream
        .conn
        .peer_certificates()
        .and_then(|chain| chain.first())
        .map(|cert| cert.to_vec())
        .unwrap_or_default();
    Ok((status, body, presented))
}

/// One HTTP/1.1 exchange on `stream` (`Connection: close`): status, head,
/// body.
fn exchange(
    stream: &mut (impl std::io::Read + std::io::Write),
    host: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<(u16, String, String)> {
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes())?;
    stream.write_all(body)?;
    let mut response = Vec::new();
    // A TLS server that closes without close_notify ends the answer too.
    match stream.read_to_end(&mut response) {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !response.is_empty() => {}
        Err(e) => return Err(e),
    }
    let response = String::from_utf8(response)
        .map_err(|e| std::io::Error::other(format!("not UTF-8: {e}")))?;
    let status = response
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("not an HTTP response: {response:?}")))?;
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    Ok((status, head.to_string(), body.to_string()))
}

/// A client of a host's operator API: its address and the token it needs.
#[derive(Clone)]
pub struct Api {
    addr: String,
    bearer: String,
}

impl Api {
    /// One operator request, with the token: the status and body.
    pub fn call(&self, method: &str, path: &str, body: Option<&str>) -> (u16, String) {
        self.try_call(method, path, body)
            .unwrap_or_else(|e| panic!("{method} {path} on {}: {e}", self.addr))
    }

    /// [`Api::call`], with a failed exchange as an error.
    pub fn try_call(
        &self,
        method: &str,
        path: &str,
        body: Option<&str>,
    ) -> std::io::Result<(u16, String)> {
        let headers = [
            ("content-type", "application/json"),
            ("authorization", self.bearer.as_str()),
        ];
        try_http_with(
            &self.addr,
            method,
            path,
            &headers,
            body.unwrap_or("").as_bytes(),
        )
    }
}

/// A running `causeway run`, its stderr collected line by line.
pub struct RunningHost {
    child: std::process::Child,
    /// `127.0.0.1:PORT`.
    pub addr: String,
    /// Its data folder (`causeway-data` in the command's folder, or the
    /// `--data-dir` it was given).
    pub data_dir: PathBuf,
    stderr: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    // Reads stderr until the process closes it: joined once it has exited,
    // so `logs` then holds its last lines too.
    stderr_reader: Option<std::thread::JoinHandle<()>>,
    /// The lines it printed after the first.
    stdout: std::sync::Mutex<std::sync::mpsc::Receiver<String>>,
}

impl RunningHost {
    /// Starts `command` (a `causeway ... run --listen 127.0.0.1:0`) and waits,
    /// up to 60 s, for it to say where it listens.
    pub fn start(command: &mut Command) -> RunningHost {
        use std::io::BufRead;
        let folder = command
            .get_current_dir()
            .map_or_else(|| PathBuf::from("."), Path::to_path_buf);
        let args: Vec<_> = command.get_args().collect();
        let data_dir = args
            .iter()
            .position(|a| *a == "--data-dir")
            .and_then(|i| args.get(i + 1))
            .map_or_else(|| folder.join("causeway-data"), |d| folder.join(d));
        let mut child = command
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("start causeway run");
        let stderr = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let lines = stderr.clone();
        let err = child.stderr.take().expect("stderr");
        let stderr_reader = std::thread::spawn(move || {
            for line in std::io::BufReader::new(err).lines().map_while(Result::ok) {
                lines.lock().expect("lines").push(line);
            }
        });
        let out = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let line = rx
            .recv_timeout(std::time::Duration::from_secs(60))
            .unwrap_or_else(|_| {
                panic!(
                    "the host did not start: {:?}",
                    stderr.lock().map(|l| l.join("\n"))
                )
            });
        let addr = line
            .rsplit("http://")
            .next()
            .expect("an address")
            .trim()
            .to_string();
        RunningHost {
            child,
            addr,
            data_dir,
            stderr,
            stderr_reader: Some(stderr_reader),
            stdout: std::sync::Mutex::new(rx),
        }
    }

    /// The next line it prints on stdout, waited for up to `seconds`.
    pub fn stdout_line(&self, seconds: u64) -> String {
        self.stdout
            .lock()
            .expect("stdout")
            .recv_timeout(std::time::Duration::from_secs(seconds))
            .unwrap_or_else(|_| panic!("no line on stdout within {seconds} s:\n{}", self.logs()))
    }

    /// A client of its operator API, with the token the host made.
    pub fn api_client(&self) -> Api {
        let file = self.data_dir.join("operator.token");
        let token = std::fs::read_to_string(&file)
            .unwrap_or_else(|e| panic!("the operator token {}: {e}", file.display()));
        Api {
            addr: self.addr.clone(),
            bearer: format!("Bearer {}", token.trim()),
        }
    }

    /// One operator request (`/api/...`, `/metrics`), with the token.
    pub fn api(&self, method: &str, path: &str, body: Option<&str>) -> (u16, String) {
        self.api_client().call(method, path, body)
    }

    /// [`RunningHost::api`], with a failed exchange as an error.
    pub fn try_api(
        &self,
        method: &str,
        path: &str,
        body: Option<&str>,
    ) -> std::io::Result<(u16, String)> {
        self.api_client().try_call(method, path, body)
    }

    /// Waits up to `seconds` for a stderr line containing `needle`.
    pub fn wait_for_log(&self, needle: &str, seconds: u64) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(seconds);
        while std::time::Instant::now() < deadline {
            if self
                .stderr
                .lock()
                .expect("lines")
                .iter()
                .any(|l| l.contains(needle))
            {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        panic!(
            "no log line with {needle:?} within {seconds} s:\n{}",
            self.logs()
        );
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything it wrote to stderr so far.
    pub fn logs(&self) -> String {
        self.stderr.lock().expect("lines").join("\n")
    }

    /// Sends SIGTERM.
    pub fn terminate(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success());
    }

    /// Kills it with SIGKILL, mid-work, and reaps it.
    pub fn kill(&mut self) {
        self.child.kill().expect("SIGKILL the host");
        self.child.wait().expect("reap the host");
    }

    /// Waits up to `seconds` for it to exit, and for the last of its
    /// stderr; returns whether it exited 0.
    pub fn wait_exit(&mut self, seconds: u64) -> bool {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(seconds);
        while std::time::Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().expect("wait") {
                if let Some(reader) = self.stderr_reader.take() {
                    reader.join().expect("the stderr reader");
                }
                return status.success();
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        panic!("the host did not exit within {seconds} s:\n{}", self.logs());
    }
}

impl Drop for RunningHost {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The capability uses in the audit log under `data_dir` but a plugin's
/// reads of its configuration and its calls' log rows
/// ([`config_and_log_rows`]), the grants changes and the host's own
/// events. Oldest first, as
/// `(plugin, capability, action, target, decision, detail)`.
pub fn audit_rows(data_dir: &Path) -> Vec<(String, String, String, String, String, String)> {
    capability_rows(data_dir, "capability NOT IN ('grants', 'config', 'log')")
}

/// The plugins' reads of their configuration and their calls' log rows,
/// as [`audit_rows`] has them.
pub fn config_and_log_rows(
    data_dir: &Path,
) -> Vec<(String, String, String, String, String, String)> {
    capability_rows(data_dir, "capability IN ('config', 'log')")
}

fn capability_rows(
    data_dir: &Path,
    capabilities: &str,
) -> Vec<(String, String, String, String, String, String)> {
    let conn = rusqlite::Connection::open(data_dir.join("causeway.db")).expect("open the database");
    let mut stmt = conn
        .prepare(&format!(
            "SELECT plugin, capability, action, target, decision, detail FROM audit
             WHERE {capabilities} AND plugin <> 'causeway' ORDER BY seq"
        ))
        .expect("query audit");
    stmt.query_map([], |r| {
        Ok((
            r.get(0)?,
            r.get(1)?,
            r.get(2)?,
            r.get(3)?,
            r.get(4)?,
            r.get(5)?,
        ))
    })
    .expect("rows")
    .collect::<Result<_, _>>()
    .expect("rows")
}

/// A scratch with crm-source installed and granted its CRM, but configured
/// for another host: each read is one denied, audited request.
pub fn crm_source_pointed_elsewhere() -> Scratch {
    let scratch = Scratch::new();
    scratch.install("crm-source", "crm-source.wasm");
    scratch.grants(EXAMPLE_GRANTS);
    std::fs::write(
        scratch.path().join("causeway.toml"),
        "[plugins.crm-source.config]\nbase_url = \"https://elsewhere.example\"\n",
    )
    .expect("write causeway.toml");
    scratch
}

/// Grants the example connectors what their manifests request, so they load
/// as active.
pub const EXAMPLE_GRANTS: &str = r#"
[[plugins.crm-source.http]]
host = "crm.example.com"
methods = ["GET"]

[plugins.crm-source.credentials.crm-token]
secret = "env:CRM_TOKEN"
hosts = ["crm.example.com"]

[[plugins.mailer-sink.http]]
host = "api.mailer.example"
methods = ["POST"]

[plugins.mailer-sink.credentials.mailer-key]
secret = "env:MAILER_KEY"
hosts = ["api.mailer.example"]
"#;

impl Scratch {
    /// Writes `grants.toml` beside the (default) config.
    pub fn grants(&self, text: &str) {
        std::fs::write(self.path().join("grants.toml"), text).expect("write grants.toml");
    }
}

/// One request a [`FakeServer`] received.
#[derive(Debug, Clone)]
pub struct Received {
    /// The method.
    pub method: String,
    /// The path with its query.
    pub target: String,
    /// The headers, names lower case.
    pub headers: Vec<(String, String)>,
    /// The body (as long as its content-length said).
    pub body: Vec<u8>,
}

impl Received {
    /// The value of header `name` (lower case), or "" when absent.
    pub fn header(&self, name: &str) -> String {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    }
}

/// What a [`FakeServer`] answers: status, headers, body, and a delay first.
pub struct Answer {
    /// The status code.
    pub status: u16,
    /// Extra headers.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
    /// How long to wait before answering.
    pub delay: std::time::Duration,
}

impl Answer {
    /// A 200 with `body`.
    pub fn ok(body: impl Into<Vec<u8>>) -> Answer {
        Answer {
            status: 200,
            headers: vec![("content-type".into(), "application/json".into())],
            body: body.into(),
            delay: std::time::Duration::ZERO,
        }
    }
}

/// A fake API's 429s (or 503s): how many it answered, and how many
/// requests came before the `Retry-After` of the last one had passed.
#[derive(Debug, Default)]
pub struct Throttle {
    /// 429s (or 503s) answered.
    pub refused: u32,
    /// Requests that came too early.
    pub early: u32,
    blocked_until: Option<std::time::Instant>,
}

impl Throttle {
    /// Notes a request arriving now.
    pub fn arrived(&mut self) {
        if self
            .blocked_until
            .is_some_and(|until| std::time::Instant::now() < until)
        {
            self.early += 1;
        }
    }

    /// A 429 asking to retry after `seconds`.
    pub fn refuse(&mut self, seconds: u64) -> Answer {
        self.refuse_as(429, seconds, r#"{"error": "over quota"}"#)
    }

    /// A 503 (down for maintenance) asking to come back after `seconds`.
    pub fn unavailable(&mut self, seconds: u64) -> Answer {
        self.refuse_as(503, seconds, r#"{"error": "down for maintenance"}"#)
    }

    fn refuse_as(&mut self, status: u16, seconds: u64, body: &str) -> Answer {
        self.refused += 1;
        self.blocked_until =
            Some(std::time::Instant::now() + std::time::Duration::from_secs(seconds));
        Answer {
            status,
            headers: vec![("retry-after".into(), seconds.to_string())],
            body: body.as_bytes().to_vec(),
            delay: std::time::Duration::ZERO,
        }
    }
}

type Handler = dyn Fn(&Received) -> Answer + Send + Sync;

/// An HTTP/1.1 server on 127.0.0.1 for tests: answers with `handler` and
/// records every request. It stops when dropped.
pub struct FakeServer {
    /// `127.0.0.1:PORT`.
    pub addr: String,
    received: std::sync::Arc<std::sync::Mutex<Vec<Received>>>,
}

impl FakeServer {
    /// Starts a server answering every request with `handler`.
    pub fn start(handler: impl Fn(&Received) -> Answer + Send + Sync + 'static) -> FakeServer {
        FakeServer::serve(handler, None)
    }

    /// [`FakeServer::start`] over TLS, with the certificate for 127.0.0.1
    /// and `localhost` in `tests/fixtures/tls`, issued by its `ca.pem`:
    /// an API behind a private certificate authority.
    pub fn start_tls(handler: impl Fn(&Received) -> Answer + Send + Sync + 'static) -> FakeServer {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let tls = repo_root().join("tests/fixtures/tls");
        let chain: Vec<CertificateDer<'static>> =
            CertificateDer::pem_file_iter(tls.join("server.pem"))
                .expect("the test server's certificate")
                .collect::<Result<_, _>>()
                .expect("the test server's certificate");
        let key = PrivateKeyDer::from_pem_file(tls.join("server.key")).expect("its key");
        let config = rustls::ServerConfig::builder_with_provider(std::sync::Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .expect("the test server's TLS configuration");
        FakeServer::serve(handler, Some(std::sync::Arc::new(config)))
    }

    fn serve(
        handler: impl Fn(&Received) -> Answer + Send + Sync + 'static,
        tls: Option<std::sync::Arc<rustls::ServerConfig>>,
    ) -> FakeServer {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a fake server");
        let addr = listener.local_addr().expect("its address").to_string();
        let received = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let log = received.clone();
        let handler: std::sync::Arc<Handler> = std::sync::Arc::new(handler);
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { return };
                let log = log.clone();
                let handler = handler.clone();
                let tls = tls.clone();
                std::thread::spawn(move || match tls {
                    None => answer_one(stream, &log, &*handler),
                    Some(config) => {
                        let Ok(session) = rustls::ServerConnection::new(config) else {
                            return;
                        };
                        answer_one(rustls::StreamOwned::new(session, stream), &log, &*handler);
                    }
                });
            }
        });
        FakeServer { addr, received }
    }

    /// Every request received so far.
    pub fn received(&self) -> Vec<Received> {
        self.received.lock().expect("log").clone()
    }
}

/// What a [`FakeProxy`] was asked: the request line's method and target
/// (`GET http://crm.test:80/x`, `CONNECT localhost:443`), and the
/// `Proxy-Authorization` it came with ("" when none).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proxied {
    /// `METHOD TARGET`.
    pub line: String,
    /// The `Proxy-Authorization` header.
    pub authorization: String,
}

/// A company's egress proxy on 127.0.0.1, for tests: a plain request (in
/// absolute form) is forwarded, `CONNECT` is tunnelled, and every host name
/// is 127.0.0.1 to it (its network's names, which the machine behind it
/// cannot resolve). With a `login`, a request without that
/// `Proxy-Authorization` is answered 407. It records what it was asked, and
/// stops when dropped.
pub struct FakeProxy {
    /// `127.0.0.1:PORT`.
    pub addr: String,
    asked: std::sync::Arc<std::sync::Mutex<Vec<Proxied>>>,
    login: std::sync::Arc<std::sync::Mutex<Option<String>>>,
}

impl FakeProxy {
    /// Starts a proxy; `login` is the `Proxy-Authorization` it requires.
    pub fn start(login: Option<&str>) -> FakeProxy {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a fake proxy");
        let addr = listener.local_addr().expect("its address").to_string();
        let asked = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let log = asked.clone();
        let login = std::sync::Arc::new(std::sync::Mutex::new(login.map(str::to_string)));
        let required = login.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { return };
                let log = log.clone();
                let login = required.lock().expect("login").clone();
                std::thread::spawn(move || proxy_one(stream, &log, login.as_deref()));
            }
        });
        FakeProxy { addr, asked, login }
    }

    /// Requires `login` from the next connection on (a password rotated).
    pub fn set_login(&self, login: Option<&str>) {
        *self.login.lock().expect("login") = login.map(str::to_string);
    }

    /// Everything asked so far.
    pub fn asked(&self) -> Vec<Proxied> {
        self.asked.lock().expect("log").clone()
    }
}

/// One connection to a [`FakeProxy`].
fn proxy_one(
    client: std::net::TcpStream,
    log: &std::sync::Mutex<Vec<Proxied>>,
    login: Option<&str>,
) {
    use std::io::{BufRead, Write};
    let Ok(writer) = client.try_clone() else {
        return;
    };
    let mut reader = std::io::BufReader::new(client);
    let mut head = Vec::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).is_err() || line.is_empty() {
            return;
        }
        if line.trim().is_empty() {
            break;
        }
        head.push(line.trim_end().to_string());
    }
    let Some(request) = head.first().cloned() else {
        return;
    };
    let mut parts = request.split_whitespace();
    let (method, target, version) = (
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or("HTTP/1.1"),
    );
    let authorization = head[1..]
        .iter()
        .filter_map(|h| h.split_once(':'))
        .find(|(n, _)| n.eq_ignore_ascii_case("proxy-authorization"))
        .map(|(_, v)| v.trim().to_string())
        .unwrap_or_default();
    log.lock().expect("log").push(Proxied {
        line: format!("{method} {target}"),
        authorization: authorization.clone(),
    });
    let mut writer = writer;
    if login.is_some_and(|l| l != authorization) {
        let _ = writer.write_all(
            b"HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic realm=\"test\"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        );
        return;
    }
    // Every name is 127.0.0.1 here: only the port is kept.
    let (authority, path) = match method {
        "CONNECT" => (target, ""),
        _ => {
            let rest = target.strip_prefix("http://").unwrap_or(target);
            rest.split_at(rest.find('/').unwrap_or(rest.len()))
        }
    };
    let port = authority
        .rsplit_once(':')
        .and_then(|(_, p)| p.parse::<u16>().ok())
        .unwrap_or(80);
    let Ok(mut upstream) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        let _ = writer.write_all(
            b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        );
        return;
    };
    if method == "CONNECT" {
        let _ = writer.write_all(b"HTTP/1.1 200 Connection Established\r\n\r\n");
    } else {
        let path = if path.is_empty() { "/" } else { path };
        let mut forwarded = format!("{method} {path} {version}\r\n");
        for header in head[1..]
            .iter()
            .filter(|h| !h.to_ascii_lowercase().starts_with("proxy-"))
        {
            forwarded.push_str(header);
            forwarded.push_str("\r\n");
        }
        forwarded.push_str("\r\n");
        if upstream.write_all(forwarded.as_bytes()).is_err() {
            return;
        }
    }
    // What the client sent past the head, then both ways until either
    // side closes.
    if upstream.write_all(reader.buffer()).is_err() {
        return;
    }
    let (Ok(mut up), Ok(mut back)) = (upstream.try_clone(), writer.try_clone()) else {
        return;
    };
    let mut from_client = reader.into_inner();
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut from_client, &mut upstream);
        let _ = upstream.shutdown(std::net::Shutdown::Write);
    });
    let _ = std::io::copy(&mut up, &mut back);
    let _ = back.shutdown(std::net::Shutdown::Both);
}

/// Polls `probe` every 20 ms until it returns `Some`, for at most `within`;
/// panics naming `what` when it never does.
pub fn wait_until<T>(
    what: &str,
    within: std::time::Duration,
    mut probe: impl FnMut() -> Option<T>,
) -> T {
    let deadline = std::time::Instant::now() + within;
    loop {
        if let Some(value) = probe() {
            return value;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{what}: not within {within:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// A component holding one core module of `functions` functions of type
/// `() -> ()`, each a body of `body_bytes` bytes (no locals, `nop`s, `end`):
/// what a plugin file that asks the compiler for much looks like. It
/// exports nothing.
pub fn component_of_functions(functions: usize, body_bytes: usize) -> Vec<u8> {
    fn leb(mut n: usize, out: &mut Vec<u8>) {
        loop {
            let byte = (n & 0x7f) as u8;
            n >>= 7;
            if n == 0 {
                out.push(byte);
                return;
            }
            out.push(byte | 0x80);
        }
    }
    fn section(id: u8, payload: &[u8], out: &mut Vec<u8>) {
        out.push(id);
        leb(payload.len(), out);
        out.extend_from_slice(payload);
    }
    assert!(body_bytes >= 2, "a body holds its locals and its end");
    let mut body = vec![0x00];
    body.resize(body_bytes - 1, 0x01);
    body.push(0x0b);
    let (mut types, mut declared, mut code) = (Vec::new(), Vec::new(), Vec::new());
    leb(1, &mut types);
    types.extend_from_slice(&[0x60, 0x00, 0x00]);
    leb(functions, &mut declared);
    declared.resize(declared.len() + functions, 0x00);
    leb(functions, &mut code);
    for _ in 0..functions {
        leb(body.len(), &mut code);
        code.extend_from_slice(&body);
    }
    let mut module = b"\0asm\x01\0\0\0".to_vec();
    section(1, &types, &mut module);
    section(3, &declared, &mut module);
    section(10, &code, &mut module);
    let mut component = b"\0asm\x0d\0\x01\0".to_vec();
    section(1, &module, &mut component);
    component
}

/// `bytes` with every occurrence of `from` replaced by `to` (same length,
/// so a component stays a valid component).
pub fn patched(bytes: &[u8], from: &str, to: &str) -> Vec<u8> {
    assert_eq!(from.len(), to.len());
    let mut out = bytes.to_vec();
    let mut found = 0;
    let mut i = 0;
    while i + from.len() <= out.len() {
        if &out[i..i + from.len()] == from.as_bytes() {
            out[i..i + from.len()].copy_from_slice(to.as_bytes());
            found += 1;
            i += from.len();
        } else {
            i += 1;
        }
    }
    assert!(found > 0, "{from:?} is not in the plugin");
    out
}

/// The marker the `test-version` plugin answers with, as built.
pub const TEST_VERSION_BUILD: &str = "build-aaaa";

/// The `test-version` plugin answering `marker` (10 bytes), as a second
/// build would.
pub fn test_version(marker: &str) -> Vec<u8> {
    let bytes = std::fs::read(built("test-version")).expect("read the built test-version");
    if marker == TEST_VERSION_BUILD {
        bytes
    } else {
        patched(&bytes, TEST_VERSION_BUILD, marker)
    }
}

/// A `/metrics` page, parsed: each sample's name, labels and value.
pub struct Metrics {
    /// The page as served.
    pub page: String,
    samples: Vec<Sample>,
}

/// A sample's name, labels and value.
type Sample = (String, Vec<(String, String)>, f64);

impl Metrics {
    /// Scrapes `GET /metrics` on `host` and parses it, checking the format on
    /// the way: every sample follows its family's `# TYPE` line, each family
    /// is declared once, and labels are `name="value"` pairs.
    pub fn scrape(host: &RunningHost) -> Metrics {
        let (status, page) = host.api("GET", "/metrics", None);
        assert_eq!(status, 200, "{page}");
        let mut samples = Vec::new();
        let mut family: Option<(String, String)> = None;
        let mut declared = std::collections::BTreeSet::new();
        for line in page.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').expect("# TYPE name kind");
                assert!(declared.insert(name.to_string()), "{name} declared twice");
                family = Some((name.to_string(), kind.to_string()));
                continue;
            }
            if line.starts_with('#') || line.is_empty() {
                continue;
            }
            let (series, value) = line.rsplit_once(' ').expect("a sample: series value");
            let value: f64 = match value {
                "+Inf" => f64::INFINITY,
                v => v.parse().unwrap_or_else(|e| panic!("{line}: {e}")),
            };
            let (name, labels) = match series.split_once('{') {
                Some((name, labels)) => {
                    (name, labels.strip_suffix('}').expect("labels end with }"))
                }
                None => (series, ""),
            };
            let labels: Vec<(String, String)> = labels
                .split(',')
                .filter(|l| !l.is_empty())
                .map(|l| {
                    let (k, v) = l.split_once("=\"").expect("label=\"value\"");
                    (
                        k.to_string(),
                        v.strip_suffix('"').expect("a closing quote").to_string(),
                    )
                })
                .collect();
            let (declared_name, kind) = family
                .as_ref()
                .unwrap_or_else(|| panic!("{line} before any # TYPE"));
            let base = match kind.as_str() {
                "histogram" => ["_bucket", "_sum", "_count"]
                    .iter()
                    .find_map(|s| name.strip_suffix(s))
                    .unwrap_or(name),
                _ => name,
            };
            assert_eq!(
                base, declared_name,
                "{line} is not of the family declared before it"
            );
            samples.push((name.to_string(), labels, value));
        }
        Metrics { page, samples }
    }

    /// The sum of the samples named `name` carrying every label in `labels`
    /// (`None` when there is none).
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let matching: Vec<f64> = self
            .samples
            .iter()
            .filter(|(n, l, _)| {
                n == name
                    && labels
                        .iter()
                        .all(|(k, v)| l.iter().any(|(lk, lv)| lk == k && lv == v))
            })
            .map(|(_, _, v)| *v)
            .collect();
        (!matching.is_empty()).then(|| matching.iter().sum())
    }
}

/// The target folder (BUILT_PLUGINS is TARGET/plugins/wasm32-wasip2/release).
pub fn target() -> PathBuf {
    Path::new(BUILT_PLUGINS)
        .ancestors()
        .nth(3)
        .expect("the target folder")
        .to_path_buf()
}

/// Builds the guest-language plugins once for this test binary; a missing
/// toolchain fails the tests, with the script's own message.
pub fn guest_plugins() -> &'static Path {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT.get_or_init(|| {
        let out = target().join("guest-plugins");
        let result = Command::new("bash")
            .arg(repo_root().join("scripts/guest-plugins.sh"))
            .arg(&out)
            .env("CARGO_TARGET_DIR", target())
            .output()
            .expect("run scripts/guest-plugins.sh");
        assert!(
            result.status.success(),
            "scripts/guest-plugins.sh failed:\n{}{}",
            String::from_utf8_lossy(&result.stdout),
            String::from_utf8_lossy(&result.stderr)
        );
        out
    })
}

/// Reads one request from `stream`, records it in `log`, and answers it
/// with `handler`'s answer.
fn answer_one<S: std::io::Read + std::io::Write>(
    stream: S,
    log: &std::sync::Mutex<Vec<Received>>,
    handler: &Handler,
) {
    use std::io::{BufRead, Read};
    let mut reader = std::io::BufReader::new(stream);
    let mut line = String::new();
    if reader.read_line(&mut line).is_err() || line.is_empty() {
        return;
    }
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or_default().to_string();
    let target = parts.next().unwrap_or_default().to_string();
    let mut headers = Vec::new();
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header).is_err() || header.trim().is_empty() {
            break;
        }
        if let Some((n, v)) = header.split_once(':') {
            headers.push((n.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
    }
    let length: usize = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; length];
    let _ = reader.read_exact(&mut body);
    let request = Received {
        method,
        target,
        headers,
        body,
    };
    log.lock().expect("log").push(request.clone());
    let answer = handler(&request);
    std::thread::sleep(answer.delay);
    let mut head = format!(
        "HTTP/1.1 {} X\r\nContent-Length: {}\r\nConnection: close\r\n",
        answer.status,
        answer.body.len()
    );
    for (n, v) in &answer.headers {
        head.push_str(&format!("{n}: {v}\r\n"));
    }
    head.push_str("\r\n");
    let _ = reader.get_mut().write_all(head.as_bytes());
    let _ = reader.get_mut().write_all(&answer.body);
    let _ = reader.get_mut().flush();
}
