//! Stand-ins for the third-party systems of the demo: a CRM, an
//! email-marketing API and a calendar on 127.0.0.1, speaking the HTTP APIs
//! `crm-source`, `mailer-sink` and `calendar-sink` talk to, with the failures real APIs have (rate limits,
//! outages, slow answers, wrong answers) available on demand.
//!
//! `causeway demo` runs them so the whole story fits on one machine; the
//! black-box tests drive the real binary against them. Each runs on its own
//! thread with its own runtime and stops when its handle is dropped.

mod calendar;
mod crm;
mod mailer;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

pub use calendar::{Attendee, FakeCalendar, TOKEN_LIFETIME};
pub use crm::{Contact, FakeCrm};
pub use mailer::FakeMailer;

/// A failure a fake answers with instead of serving a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// 429 with `Retry-After` in seconds.
    RateLimited {
        /// The `Retry-After` value.
        retry_after_secs: u64,
    },
    /// 503: the system is down.
    Unavailable,
    /// The request is served, but only after this long.
    Slow(Duration),
    /// 200 with this JSON body instead of the real answer: a system that
    /// answers, and answers wrong.
    Lie(&'static str),
}

/// Faults queued for the next requests, and the count of requests seen.
#[derive(Debug, Default)]
pub struct Faults {
    queue: Mutex<VecDeque<Fault>>,
    down: std::sync::atomic::AtomicBool,
    requests: std::sync::atomic::AtomicU64,
}

impl Faults {
    /// Answers the next `times` API requests with `fault`.
    pub fn inject(&self, fault: Fault, times: usize) {
        let mut queue = self.queue.lock().unwrap_or_else(|p| p.into_inner());
        queue.extend(std::iter::repeat_n(fault, times));
    }

    /// Answers every API request with 503 while `down`.
    pub fn set_down(&self, down: bool) {
        self.down.store(down, std::sync::atomic::Ordering::SeqCst);
    }

    /// API requests received so far, faulted or not.
    pub fn requests(&self) -> u64 {
        self.requests.load(std::sync::atomic::Ordering::SeqCst)
    }

    fn next(&self) -> Option<Fault> {
        self.requests
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        if self.down.load(std::sync::atomic::Ordering::SeqCst) {
            return Some(Fault::Unavailable);
        }
        self.queue
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .pop_front()
    }
}

/// Middleware: serve the queued fault, if any, instead of the request.
async fn apply_faults(State(faults): State<Arc<Faults>>, request: Request, next: Next) -> Response {
    match faults.next() {
        None => next.run(request).await,
        Some(Fault::Slow(delay)) => {
            tokio::time::sleep(delay).await;
            next.run(request).await
        }
        Some(Fault::RateLimited { retry_after_secs }) => {
            let mut response = (StatusCode::TOO_MANY_REQUESTS, "slow down").into_response();
            if let Ok(value) = HeaderValue::from_str(&retry_after_secs.to_string()) {
                response.headers_mut().insert("retry-after", value);
            }
            response
        }
        Some(Fault::Unavailable) => {
            (StatusCode::SERVICE_UNAVAILABLE, "down for maintenance").into_response()
        }
        Some(Fault::Lie(body)) => (
            StatusCode::OK,
            [(axum::http::header::CONTENT_TYPE, "application/json")],
            body,
        )
            .into_response(),
    }
}

/// Grants `crm-source` and `mailer-sink` plain http to their fakes, by
/// explicit address, and nothing else; each credential is the secret
/// reference given (`env:NAME` or `file:KEY`), sent only there.
pub fn connector_grants(
    crm: &FakeCrm,
    mailer: &FakeMailer,
    crm_token: &str,
    mailer_key: &str,
) -> String {
    format!(
        r#"[[plugins.crm-source.http]]
scheme = "http"
host = "127.0.0.1"
port = {crm_port}
methods = ["GET"]
path-prefix = "/v1/contacts"

[plugins.crm-source.credentials.crm-token]
secret = "{crm_token}"
hosts = ["127.0.0.1"]

[[plugins.mailer-sink.http]]
scheme = "http"
host = "127.0.0.1"
port = {mailer_port}
methods = ["POST"]
path-prefix = "/v1/lists/"

[plugins.mailer-sink.credentials.mailer-key]
secret = "{mailer_key}"
hosts = ["127.0.0.1"]
"#,
        crm_port = crm.addr().port(),
        mailer_port = mailer.addr().port(),
    )
}

/// The `causeway.toml` sections configuring `crm-source` and `mailer-sink`
/// for their fakes.
pub fn connector_config(crm: &FakeCrm, mailer: &FakeMailer, list: &str, page_size: u32) -> String {
    format!(
        r#"[plugins.crm-source.config]
base_url = "{}"
page_size = {page_size}

[plugins.mailer-sink.config]
base_url = "{}"
list_id = "{list}"
"#,
        crm.base_url(),
        mailer.base_url()
    )
}

/// Grants `calendar-sink` plain http to its fake, by explicit address, and
/// nothing else; its credential is the secret reference given, sent only
/// there, in the calendar's own header.
pub fn calendar_grants(calendar: &FakeCalendar, calendar_key: &str) -> String {
    calendar_grants_with(
        calendar,
        calendar_key,
        &format!("inject = \"header:{}\"", calendar::API_KEY_HEADER),
    )
}

/// [`calendar_grants`], the secret being the calendar's OAuth 2.0 client
/// secret: the host fetches an access token from the calendar's token
/// endpoint and sends it as a bearer token.
pub fn calendar_oauth_grants(calendar: &FakeCalendar, client_secret: &str) -> String {
    calendar_grants_with(
        calendar,
        client_secret,
        &format!(
            "inject = \"bearer\"\noauth2 = {{ token-url = \"{}/oauth2/token\", client-id = \"causeway\" }}",
            calendar.base_url()
        ),
    )
}

/// `calendar-sink`'s grant, its credential bound to `secret` and sent as
/// `how` (the binding's lines after its hosts).
fn calendar_grants_with(calendar: &FakeCalendar, secret: &str, how: &str) -> String {
    format!(
        r#"[[plugins.calendar-sink.http]]
scheme = "http"
host = "127.0.0.1"
port = {port}
methods = ["GET", "PUT", "DELETE"]
path-prefix = "/v2/calendars/"

[plugins.calendar-sink.credentials.calendar-key]
secret = "{secret}"
hosts = ["127.0.0.1"]
{how}
"#,
        port = calendar.addr().port(),
    )
}

/// The `causeway.toml` section configuring `calendar-sink` for its fake.
pub fn calendar_config(calendar: &FakeCalendar, calendar_id: &str) -> String {
    format!(
        r#"[plugins.calendar-sink.config]
base_url = "{}"
calendar_id = "{calendar_id}"
"#,
        calendar.base_url()
    )
}

/// Whether `request` carries `Authorization: Bearer TOKEN`.
fn authorized(headers: &axum::http::HeaderMap, token: &str) -> bool {
    headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|t| t == token)
}

fn unauthorized() -> Response {
    (
        StatusCode::UNAUTHORIZED,
        axum::Json(serde_json::json!({ "error": "missing or wrong API token" })),
    )
        .into_response()
}

/// A running fake: its address, and the thread serving it.
struct Serving {
    addr: SocketAddr,
    /// The fake's runtime, for work it starts itself (webhooks it sends).
    handle: tokio::runtime::Handle,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Serving {
    /// Serves `app` behind a fault switchboard on 127.0.0.1 at `port` (0:
    /// any free port); the switchboard, and the server.
    fn with_faults(app: Router, port: u16) -> std::io::Result<(Arc<Faults>, Serving)> {
        let faults = Arc::new(Faults::default());
        let app = app.layer(axum::middleware::from_fn_with_state(
            faults.clone(),
            apply_faults,
        ));
        Ok((faults, Serving::start(app, port)?))
    }

    /// Serves `app` on 127.0.0.1 at `port` (0: any free port).
    fn start(app: Router, port: u16) -> std::io::Result<Serving> {
        let listener = std::net::TcpListener::bind(("127.0.0.1", port))?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let handle = runtime.handle().clone();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name(format!("fake-{addr}"))
            .spawn(move || {
                runtime.block_on(async move {
                    let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
                        return;
                    };
                    let _ = axum::serve(listener, app)
                        .with_graceful_shutdown(async {
                            let _ = stopped.await;
                        })
                        .await;
                });
            })?;
        Ok(Serving {
            addr,
            handle,
            stop: Some(stop),
            thread: Some(thread),
        })
    }
}

impl Drop for Serving {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
