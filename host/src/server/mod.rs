//! The host's HTTP server: health, the status API, and the operator's invoke
//! endpoint. It listens on the configured address (loopback by default).
//! Webhooks must be reachable by third parties, so an operator may listen on
//! a public address; the operator API (`/api/...` and `/metrics`) still
//! answers only clients on this machine (loopback peers: 403 and an audit
//! row for any other) that send the operator token ([`token`]: 401 and an
//! audit row without it). Serve [`router`] with [`serve()`], which gives
//! handlers the peer and bounds what a slow client can hold.
//! Refused requests (those, and webhook deliveries that fail verification)
//! come from outside, so they are audited at a bounded rate ([`Refusals`]):
//! a flood is recorded as a count, not a row per request.
//!
//! - `GET /healthz`: `{"status": "ok"}` while the host serves; 503 and
//!   `"failing"` while its database refuses writes.
//! - `GET /api/plugins`: the plugin states of the snapshot serving now, as
//!   the rows `causeway plugins` reads once they are recorded.
//! - `POST /api/plugins/{name}/invoke` with `{"operation", "input"?}`: one
//!   call, exactly as `causeway invoke` makes it, with the plugin's
//!   configuration from causeway.toml (a caller cannot supply one).
//! - `POST /api/pipelines/{name}/run-now`: 202 once the pipeline is asked to
//!   run (even if paused or stopped), 404 for an unknown one.
//! - `GET /metrics`: [`crate::metrics`] in Prometheus' text format (an
//!   operator route, like `/api`).
//! - `POST <a pipeline's webhook path>`: a webhook delivery (`webhook`),
//!   verified on the raw body (401 and an audit row if it is not), stored in
//!   the inbox before the answer (202; 200 for a delivery id already
//!   stored), 413 over the size limit, 503 if it could not be stored (the
//!   sender retries).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use axum::extract::rejection::JsonRejection;
use axum::extract::{ConnectInfo, Path, Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

pub mod serve;
pub mod tls;
pub mod token;
mod webhook;
pub use serve::serve;
pub use token::OperatorToken;

use crate::audit::{AuditEvent, Decision};
use crate::caps::rate::Admission;
use crate::db::{self, WriterHandle};
use crate::engine::Runtime;
use crate::live::Live;
use crate::operation::Operation;
use crate::registry::{NotCallable, PluginStatus};
use crate::sandbox::CallError;
use crate::secrets::Secrets;

/// What the handlers share.
pub struct AppState {
    /// The engine and linker.
    pub runtime: Arc<Runtime>,
    /// The secrets the host resolves.
    pub secrets: Arc<Secrets>,
    /// Configuration, grants and plugins, as the reloader last swapped them.
    pub live: Arc<Live>,
    /// The pipelines the host drives.
    pub pipelines: crate::pipeline::Control,
    /// The database's writer: storage and the audit log.
    pub db: WriterHandle,
    /// The database file the status API reads.
    pub database: PathBuf,
    /// Where refused requests are recorded, at a bounded rate.
    pub refusals: Refusals,
    /// The token operator requests must carry.
    pub token: Arc<OperatorToken>,
    /// The certificate the `[tls]` listener serves, if there is one.
    pub certificate: Option<Arc<tls::Certificate>>,
}

/// Refused requests audited one by one per second, sustained.
pub const REFUSALS_PER_SECOND: u32 = 10;

/// Refused requests audited one by one at once after a quiet spell.
pub const REFUSALS_BURST: u32 = 100;

/// The audit trail of refused requests: anyone who can reach the listen
/// address can be refused, so beyond [`REFUSALS_PER_SECOND`] (bursts of
/// [`REFUSALS_BURST`]) refusals are counted, and the next row recorded says
/// how many were not.
#[derive(Clone)]
pub struct Refusals {
    db: WriterHandle,
    admission: Arc<Admission>,
}

impl Refusals {
    /// Refusals recorded through `db`.
    pub fn new(db: WriterHandle) -> Refusals {
        Refusals::at_rate(db, REFUSALS_PER_SECOND, REFUSALS_BURST)
    }

    fn at_rate(db: WriterHandle, rate: u32, burst: u32) -> Refusals {
        Refusals {
            db,
            admission: Arc::new(Admission::new(rate, burst)),
        }
    }

    /// Audits `event` unless refusals come faster than the rate; `false`
    /// when it was only counted (the caller then logs nothing either).
    fn record(&self, event: AuditEvent) -> bool {
        self.record_at(event, Instant::now())
    }

    /// [`Refusals::record`] at `now` (tests give the time).
    fn record_at(&self, mut event: AuditEvent, now: Instant) -> bool {
        let Some(unrecorded) = self.admission.admit(now) else {
            return false;
        };
        if unrecorded > 0 {
            event.detail.push_str(&format!(
                " ({unrecorded} more refused requests since the last row were counted, not recorded)"
            ));
        }
        self.db.audit(event);
        true
    }
}

/// The router.
pub fn router(state: Arc<AppState>) -> Router {
    let operator = Router::new()
        .route("/api/plugins", get(plugins))
        .route("/api/plugins/{name}/invoke", post(invoke))
        .route("/api/pipelines/{name}/run-now", post(run_now))
        .route("/metrics", get(metrics))
        .route_layer(middleware::from_fn_with_state(
            Operators {
                refusals: state.refusals.clone(),
                token: state.token.clone(),
            },
            operators_only,
        ));
    Router::new()
        .route("/healthz", get(healthz))
        .merge(operator)
        .method_not_allowed_fallback(method_not_allowed)
        .fallback(webhook::webhook)
        .with_state(state)
}

/// The router of the TLS listener (`[tls]`): the webhook paths and
/// `/healthz`, nothing of the operator API (`/api/...` and `/metrics` are
/// no webhook's, so they answer 404), which stays on the loopback listener.
pub fn public_router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .method_not_allowed_fallback(method_not_allowed)
        .fallback(webhook::webhook)
        .with_state(state)
}

/// A known path asked with a method it does not take: said in the same JSON
/// shape as every other answer.
async fn method_not_allowed(request: Request) -> Response {
    error(
        StatusCode::METHOD_NOT_ALLOWED,
        "method-not-allowed",
        format!(
            "{} does not take {}",
            request.uri().path(),
            request.method()
        ),
    )
}

/// Who the operator API answers, for [`operators_only`].
#[derive(Clone)]
struct Operators {
    refusals: Refusals,
    token: Arc<OperatorToken>,
}

/// Lets operator API requests through from loopback peers that send the
/// operator token. A request whose peer is unknown (a server other than
/// [`serve`]) is refused too: the guard fails closed.
async fn operators_only(
    State(operators): State<Operators>,
    request: Request,
    next: Next,
) -> Response {
    let peer = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(peer)| *peer);
    let target = format!("{} {}", request.method(), request.uri().path());
    let Some(peer) = peer.filter(|p| is_local(*p)) else {
        let peer = peer.map_or("an unknown peer".to_string(), |p| p.ip().to_string());
        let recorded = operators.refusals.record(AuditEvent::host(
            "api",
            "remote-call",
            &target,
            Decision::Denied,
            format!("refused {peer}: the operator API answers only clients on this machine"),
        ));
        if recorded {
            tracing::warn!(%peer, %target, "operator API refused: not a loopback client");
        }
        return error(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!(
                "the operator API answers only clients on the host's own machine (loopback), not {peer}; \
                 call it there, or through an SSH tunnel to it"
            ),
        );
    };
    let sent = request.headers().get(axum::http::header::AUTHORIZATION);
    if sent.is_some_and(|value| operators.token.admits(value.as_bytes())) {
        return next.run(request).await;
    }
    let how = if sent.is_some() {
        "a wrong operator token"
    } else {
        "no operator token"
    };
    let recorded = operators.refusals.record(AuditEvent::host(
        "api",
        "unauthorized",
        &target,
        Decision::Denied,
        format!("refused {}: {how}", peer.ip()),
    ));
    if recorded {
        tracing::warn!(peer = %peer.ip(), %target, "operator API refused: {how}");
    }
    let mut answer = error(
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        format!(
            "the operator API needs the token in {}, sent as `Authorization: Bearer TOKEN`; this request had {how}",
            operators.token.path().display()
        ),
    );
    answer.headers_mut().insert(
        axum::http::header::WWW_AUTHENTICATE,
        axum::http::HeaderValue::from_static("Bearer realm=\"causeway\""),
    );
    answer
}

/// A loopback peer, including IPv4 loopback mapped into IPv6.
fn is_local(peer: SocketAddr) -> bool {
    match peer.ip() {
        std::net::IpAddr::V4(ip) => ip.is_loopback(),
        std::net::IpAddr::V6(ip) => {
            ip.is_loopback() || ip.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
    }
}

/// `ok` while the host serves and its database takes writes; 503 while
/// audit events wait for a database that refuses them (a full disk), so a
/// monitor or a load balancer sees what the log says.
async fn healthz(State(state): State<Arc<AppState>>) -> Response {
    match state.db.stats().failing() {
        None => Json(json!({ "status": "ok" })).into_response(),
        Some((since, error)) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({
                "status": "failing",
                "database": format!("refusing writes since {since}: {error}; audit events wait to be written"),
            })),
        )
            .into_response(),
    }
}

fn error(status: StatusCode, kind: &str, message: String) -> Response {
    (status, Json(json!({ "error": kind, "message": message }))).into_response()
}

/// The plugins of the snapshot serving now: the rows the database records
/// are committed a moment after each swap. Shown through those rows, so the
/// answer is exactly what `causeway plugins --json` reads once they are.
async fn plugins(State(state): State<Arc<AppState>>) -> Response {
    let statuses: Vec<PluginStatus> = state
        .live
        .snapshot()
        .registry
        .statuses()
        .iter()
        .map(|s| PluginStatus::from_row(s.to_row()))
        .collect();
    Json(statuses).into_response()
}

/// The Prometheus page: the counters, and the states read now.
async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    let snapshot = state.live.snapshot();
    let pipelines: Vec<String> = snapshot.config.pipelines.keys().cloned().collect();
    let database = state.database.clone();
    let now = tokio::task::spawn_blocking(move || -> Result<_, String> {
        let Some(conn) = db::open_read_only(&database).map_err(|e| e.to_string())? else {
            return Ok(Vec::new());
        };
        crate::metrics::pipelines_now(&conn, &pipelines).map_err(|e| e.to_string())
    })
    .await;
    let now = match now {
        Ok(Ok(now)) => now,
        Ok(Err(e)) => return error(StatusCode::INTERNAL_SERVER_ERROR, "database", e),
        Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()),
    };
    let page = crate::metrics::render(&crate::metrics::Scrape {
        registry: &snapshot.registry,
        pipelines: state.pipelines.stats(),
        now: &now,
        writer: state.db.stats(),
        tls_expires: state.certificate.as_ref().map(|c| c.expires()),
    });
    (
        [(
            axum::http::header::CONTENT_TYPE,
            crate::metrics::CONTENT_TYPE,
        )],
        page,
    )
        .into_response()
}

async fn run_now(State(state): State<Arc<AppState>>, Path(name): Path<String>) -> Response {
    if state.pipelines.run_now(&name) {
        (
            StatusCode::ACCEPTED,
            Json(json!({ "status": "started", "pipeline": name })),
        )
            .into_response()
    } else {
        error(
            StatusCode::NOT_FOUND,
            "unknown-pipeline",
            format!("no pipeline named {name:?} in the configuration (see `causeway pipelines`)"),
        )
    }
}

/// The body of an invoke request.
#[derive(Debug, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "an object such as {\"operation\": \"transform\", \"input\": [...]}"
)]
pub struct InvokeRequest {
    /// The operation, as for `causeway invoke`.
    pub operation: String,
    /// Its input.
    #[serde(default)]
    pub input: Option<Value>,
}

async fn invoke(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
    request: Result<Json<InvokeRequest>, JsonRejection>,
) -> Response {
    // A body that is not the request's JSON gets the same JSON error shape
    // as every other answer (not the framework's plain text).
    let Json(request) = match request {
        Ok(request) => request,
        Err(rejection) => {
            return error(rejection.status(), "invalid-request", rejection.body_text());
        }
    };
    // The call keeps this snapshot to its end: a reload meanwhile does not
    // change the version it runs on.
    let snapshot = state.live.snapshot();
    let installed = match snapshot.registry.callable(&name) {
        Ok(installed) => installed,
        Err(e @ NotCallable::Unknown { .. }) => {
            return error(StatusCode::NOT_FOUND, "unknown-plugin", e.to_string());
        }
        Err(e @ NotCallable::PendingApproval { .. }) => {
            return error(StatusCode::CONFLICT, "pending-approval", e.to_string());
        }
    };
    let plugin = installed.plugin.clone();
    let operation = match Operation::parse(&plugin, &request.operation, request.input) {
        Ok(operation) => operation,
        Err(e) => return error(StatusCode::UNPROCESSABLE_ENTITY, e.kind(), e.to_string()),
    };
    let context = installed.call_context(
        &snapshot.config.plugin_config(&name),
        &state.db,
        &state.secrets,
        "",
    );
    match plugin
        .call(&state.runtime.engine, operation, &context)
        .await
    {
        Ok(answer) => Json(answer).into_response(),
        Err(e) => {
            let status = match &e {
                CallError::Timeout { .. } => StatusCode::GATEWAY_TIMEOUT,
                CallError::Invalid(_) => StatusCode::UNPROCESSABLE_ENTITY,
                CallError::Plugin { .. } | CallError::BrokenAnswer { .. } => {
                    StatusCode::BAD_GATEWAY
                }
                CallError::Busy { .. } => StatusCode::SERVICE_UNAVAILABLE,
                CallError::OutOfMemory { .. }
                | CallError::OutOfFuel { .. }
                | CallError::ResourceLimit { .. }
                | CallError::Trap { .. } => StatusCode::INTERNAL_SERVER_ERROR,
            };
            error(status, e.kind(), e.to_string())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::Chain;
    use crate::audit::query::{Filter, query};
    use axum::body::Body;
    use tower::ServiceExt;

    /// The operator guard in front of one route, as [`router`] puts it.
    fn guarded(refusals: Refusals, token: Arc<OperatorToken>) -> Router {
        Router::new()
            .route("/api/plugins", get(|| async { "the plugins" }))
            .route_layer(middleware::from_fn_with_state(
                Operators { refusals, token },
                operators_only,
            ))
    }

    fn scratch_writer(dir: &std::path::Path) -> db::Writer {
        let chain = Chain::open(&dir.join("k"), &dir.join("h")).unwrap();
        db::Writer::start(&dir.join("db"), chain).unwrap()
    }

    fn scratch_token(dir: &std::path::Path) -> Arc<OperatorToken> {
        Arc::new(OperatorToken::load_or_create(dir).unwrap())
    }

    fn refused_rows(dir: &std::path::Path) -> Vec<crate::audit::query::StoredEvent> {
        let conn = rusqlite::Connection::open(dir.join("db")).unwrap();
        query(&conn, &Filter::default())
            .unwrap()
            .into_iter()
            .filter(|r| r.event.decision == Decision::Denied)
            .collect()
    }

    /// `GET /api/plugins` from `peer` with `authorization`: its answer.
    async fn answer_to(app: &Router, peer: Option<&str>, authorization: Option<&str>) -> Response {
        let mut request = axum::http::Request::get("/api/plugins");
        if let Some(value) = authorization {
            request = request.header("authorization", value);
        }
        let mut request = request.body(Body::empty()).unwrap();
        if let Some(peer) = peer {
            request
                .extensions_mut()
                .insert(ConnectInfo(peer.parse::<SocketAddr>().unwrap()));
        }
        app.clone().oneshot(request).await.unwrap()
    }

    async fn status_from(app: &Router, peer: Option<&str>, authorization: &str) -> StatusCode {
        answer_to(app, peer, Some(authorization)).await.status()
    }

    #[tokio::test]
    async fn the_operator_api_answers_loopback_peers_only_and_audits_the_others() {
        let dir = tempfile::tempdir().unwrap();
        let writer = scratch_writer(dir.path());
        let token = scratch_token(dir.path());
        let bearer = token.bearer();
        let app = guarded(Refusals::new(writer.handle()), token);

        for local in [
            "127.0.0.1:5000",
            "127.8.9.10:1",
            "[::1]:5000",
            "[::ffff:127.0.0.1]:80",
        ] {
            assert_eq!(
                status_from(&app, Some(local), &bearer).await,
                StatusCode::OK,
                "{local}"
            );
        }
        // The token does not open the API to other machines.
        for remote in [
            "192.0.2.7:5000",
            "[2001:db8::1]:443",
            "[::ffff:192.0.2.7]:80",
        ] {
            assert_eq!(
                status_from(&app, Some(remote), &bearer).await,
                StatusCode::FORBIDDEN,
                "{remote}"
            );
        }
        // Served without the peer (not through `app`): refused, not opened.
        assert_eq!(
            status_from(&app, None, &bearer).await,
            StatusCode::FORBIDDEN
        );
        writer.close();

        let refused: Vec<String> = refused_rows(dir.path())
            .into_iter()
            .map(|r| {
                assert_eq!(r.event.capability, "api");
                assert_eq!(r.event.action, "remote-call");
                assert_eq!(r.event.target, "GET /api/plugins");
                r.event.detail
            })
            .collect();
        assert_eq!(refused.len(), 4, "one row per refused request: {refused:?}");
        assert!(refused[0].contains("192.0.2.7"), "{}", refused[0]);
        assert!(refused[3].contains("unknown peer"), "{}", refused[3]);
    }

    #[tokio::test]
    async fn a_loopback_request_without_the_token_is_refused_and_audited() {
        let dir = tempfile::tempdir().unwrap();
        let writer = scratch_writer(dir.path());
        let token = scratch_token(dir.path());
        let bearer = token.bearer();
        let app = guarded(Refusals::new(writer.handle()), token.clone());
        let local = Some("127.0.0.1:5000");

        let answer = answer_to(&app, local, None).await;
        assert_eq!(answer.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(
            answer.headers()["www-authenticate"],
            "Bearer realm=\"causeway\""
        );
        let body = axum::body::to_bytes(answer.into_body(), usize::MAX)
            .await
            .unwrap();
        let body: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(body["error"], "unauthorized");
        let message = body["message"].as_str().unwrap();
        assert!(
            message.contains(&token.path().display().to_string())
                && message.contains("Authorization: Bearer"),
            "the answer says where the token is and how to send it: {message}"
        );
        let (kept, last) = bearer.split_at(bearer.len() - 1);
        for wrong in [
            format!("{kept}{}", if last == "0" { "1" } else { "0" }),
            bearer["Bearer ".len()..].to_string(),
            "Bearer ".to_string(),
        ] {
            assert_eq!(
                status_from(&app, local, &wrong).await,
                StatusCode::UNAUTHORIZED,
                "{wrong}"
            );
        }
        assert_eq!(status_from(&app, local, &bearer).await, StatusCode::OK);
        writer.close();

        let refused = refused_rows(dir.path());
        let details: Vec<&str> = refused.iter().map(|r| r.event.detail.as_str()).collect();
        assert_eq!(refused.len(), 4, "one row per refused request: {details:?}");
        assert!(refused.iter().all(|r| r.event.action == "unauthorized"));
        assert_eq!(details[0], "refused 127.0.0.1: no operator token");
        assert_eq!(details[1], "refused 127.0.0.1: a wrong operator token");
        let rows = format!("{refused:?}");
        assert!(
            !rows.contains(&bearer["Bearer ".len()..]),
            "the token reached the audit log"
        );
    }

    /// The real router over an empty host in `dir`, and its pipelines (to
    /// stop).
    fn real_app(
        dir: &std::path::Path,
        writer: &db::Writer,
        token: Arc<OperatorToken>,
    ) -> (Router, crate::pipeline::Pipelines) {
        real_app_with(
            dir,
            writer,
            token,
            crate::config::Config::load(None).unwrap(),
        )
    }

    /// [`real_app`] with `config`.
    fn real_app_with(
        dir: &std::path::Path,
        writer: &db::Writer,
        token: Arc<OperatorToken>,
        config: crate::config::Config,
    ) -> (Router, crate::pipeline::Pipelines) {
        let grants = crate::grants::Grants::default();
        let live = Arc::new(Live::new(crate::live::Snapshot {
            config,
            registry: crate::registry::Registry::empty(dir, &grants),
            grants,
        }));
        let runtime = Arc::new(Runtime::new().unwrap());
        let secrets = Arc::new(Secrets::load(None).unwrap());
        let pipelines = crate::pipeline::Pipelines::start(
            live.clone(),
            runtime.clone(),
            secrets.clone(),
            writer.handle(),
        );
        let app = router(Arc::new(AppState {
            runtime,
            secrets,
            live,
            pipelines: pipelines.control(),
            db: writer.handle(),
            database: dir.join("db"),
            refusals: Refusals::new(writer.handle()),
            token,
            certificate: None,
        }));
        (app, pipelines)
    }

    /// A request body that never comes.
    struct Trickle;

    impl hyper::body::Body for Trickle {
        type Data = bytes::Bytes;
        type Error = std::convert::Infallible;

        fn poll_frame(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Option<Result<hyper::body::Frame<bytes::Bytes>, Self::Error>>>
        {
            std::task::Poll::Pending
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_webhook_body_that_does_not_arrive_in_time_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("causeway.toml");
        std::fs::write(
            &file,
            "[pipelines.p]\nwebhook = { path = \"/hooks/crm\", scheme = \"github\", secret = \"env:NOPE\" }\nsource = { plugin = \"s\", stream = \"c\" }\nsinks = [{ plugin = \"k\" }]\n",
        )
        .unwrap();
        let config = crate::config::Config::load(Some(&file)).unwrap();
        let writer = scratch_writer(dir.path());
        let (app, pipelines) =
            real_app_with(dir.path(), &writer, scratch_token(dir.path()), config);
        let request = axum::http::Request::post("/hooks/crm")
            .body(Body::new(Trickle))
            .unwrap();
        let started = tokio::time::Instant::now();
        // Bounded, so a handler that waits forever fails the test.
        let answer = tokio::time::timeout(serve::BODY_TIMEOUT * 4, app.oneshot(request))
            .await
            .expect("an answer, not an endless wait")
            .unwrap();
        assert_eq!(answer.status(), StatusCode::REQUEST_TIMEOUT);
        let waited = started.elapsed();
        assert!(
            waited >= serve::BODY_TIMEOUT && waited < serve::BODY_TIMEOUT * 2,
            "on the clock, not before: {waited:?}"
        );
        pipelines.stop(std::time::Duration::from_secs(5)).await;
        writer.close();
        let refused = refused_rows(dir.path());
        assert!(
            refused.iter().any(|r| r
                .event
                .detail
                .contains("the body did not arrive within 30s")),
            "{refused:?}"
        );
    }

    #[tokio::test]
    async fn health_says_failing_while_the_database_refuses_writes() {
        let dir = tempfile::tempdir().unwrap();
        let writer = scratch_writer(dir.path());
        let token = scratch_token(dir.path());
        let (app, pipelines) = real_app(dir.path(), &writer, token.clone());
        let failing_gauge = || async {
            let mut request = axum::http::Request::get("/metrics")
                .header("authorization", token.bearer())
                .body(Body::empty())
                .unwrap();
            request
                .extensions_mut()
                .insert(ConnectInfo("127.0.0.1:5000".parse::<SocketAddr>().unwrap()));
            let answer = app.clone().oneshot(request).await.unwrap();
            let page = axum::body::to_bytes(answer.into_body(), usize::MAX)
                .await
                .unwrap();
            String::from_utf8(page.to_vec())
                .unwrap()
                .lines()
                .find_map(|l| {
                    l.strip_prefix("causeway_database_failing ")
                        .map(str::to_string)
                })
        };
        assert_eq!(failing_gauge().await.as_deref(), Some("0"));
        let health = || async {
            let answer = app
                .clone()
                .oneshot(
                    axum::http::Request::get("/healthz")
                        .body(Body::empty())
                        .unwrap(),
                )
                .await
                .unwrap();
            let status = answer.status();
            let body = axum::body::to_bytes(answer.into_body(), usize::MAX)
                .await
                .unwrap();
            (status, serde_json::from_slice::<Value>(&body).unwrap())
        };
        assert_eq!(health().await.0, StatusCode::OK);
        let handle = writer.handle();
        let room = |pages: Option<i64>| {
            handle.transact(move |conn| Ok::<_, db::DbError>(db::cap_pages(conn, pages)?))
        };
        // Full: an audited use cannot be written.
        room(None).await.unwrap();
        let event = AuditEvent::host("api", "t", "", Decision::Allowed, "x".repeat(8192));
        handle.audit(event);
        handle.flush().await.unwrap();
        let (status, body) = health().await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
        assert_eq!(body["status"], "failing");
        let database = body["database"].as_str().unwrap();
        assert!(
            database.contains("full") && database.contains("audit events wait"),
            "{database}"
        );
        assert_eq!(failing_gauge().await.as_deref(), Some("1"));
        // Room again: written, and healthy.
        room(Some(1 << 20)).await.unwrap();
        handle.flush().await.unwrap();
        assert_eq!(health().await.0, StatusCode::OK);
        assert_eq!(failing_gauge().await.as_deref(), Some("0"));
        pipelines.stop(std::time::Duration::from_secs(5)).await;
        writer.close();
    }

    #[tokio::test]
    async fn every_operator_route_of_the_real_router_is_for_loopback_peers_with_the_token() {
        let dir = tempfile::tempdir().unwrap();
        let writer = scratch_writer(dir.path());
        let token = scratch_token(dir.path());
        let (app, pipelines) = real_app(dir.path(), &writer, token.clone());
        let call = |method: &str, path: &str, peer: &str| {
            let mut request = axum::http::Request::builder()
                .method(method)
                .uri(path)
                .header("content-type", "application/json")
                .header("authorization", token.bearer())
                .body(Body::from("{\"operation\": \"check\"}"))
                .unwrap();
            request
                .extensions_mut()
                .insert(ConnectInfo(peer.parse::<SocketAddr>().unwrap()));
            app.clone().oneshot(request)
        };
        let operator = [
            ("GET", "/api/plugins"),
            ("POST", "/api/plugins/x/invoke"),
            ("POST", "/api/pipelines/x/run-now"),
            ("GET", "/metrics"),
        ];
        for (method, path) in operator {
            let answer = call(method, path, "192.0.2.7:5000").await.unwrap();
            assert_eq!(answer.status(), StatusCode::FORBIDDEN, "{method} {path}");
        }
        let answer = call("GET", "/healthz", "192.0.2.7:5000").await.unwrap();
        assert_eq!(answer.status(), StatusCode::OK, "health is public");
        let without_token = operator
            .iter()
            .map(|&(m, p)| (m, p, StatusCode::UNAUTHORIZED));
        for (method, path, status) in without_token.chain([("GET", "/healthz", StatusCode::OK)]) {
            let mut request = axum::http::Request::builder()
                .method(method)
                .uri(path)
                .body(Body::empty())
                .unwrap();
            request
                .extensions_mut()
                .insert(ConnectInfo("127.0.0.1:5000".parse::<SocketAddr>().unwrap()));
            let answer = app.clone().oneshot(request).await.unwrap();
            assert_eq!(answer.status(), status, "{method} {path} without the token");
        }

        let answer = call("GET", "/metrics", "127.0.0.1:5000").await.unwrap();
        assert_eq!(answer.status(), StatusCode::OK);
        assert_eq!(
            answer.headers()["content-type"],
            crate::metrics::CONTENT_TYPE
        );
        let page = axum::body::to_bytes(answer.into_body(), usize::MAX)
            .await
            .unwrap();
        let page = String::from_utf8(page.to_vec()).unwrap();
        assert!(
            page.contains("# TYPE causeway_plugin_calls_total counter\n"),
            "{page}"
        );
        pipelines.stop(std::time::Duration::from_secs(5)).await;
        writer.close();
    }

    #[tokio::test]
    async fn a_flood_of_refusals_is_audited_as_a_count() {
        let dir = tempfile::tempdir().unwrap();
        let writer = scratch_writer(dir.path());
        // Three at once, then one a second.
        let refusals = Refusals::at_rate(writer.handle(), 1, 3);
        let token = scratch_token(dir.path());
        let bearer = token.bearer();
        let app = guarded(refusals.clone(), token);
        for _ in 0..20 {
            assert_eq!(
                status_from(&app, Some("192.0.2.7:5000"), &bearer).await,
                StatusCode::FORBIDDEN,
                "refused whether recorded or counted"
            );
        }
        // The next one recorded, once the rate allows, gives the count.
        let later = Instant::now() + std::time::Duration::from_secs(2);
        let event = AuditEvent::host(
            "api",
            "remote-call",
            "GET /api/plugins",
            Decision::Denied,
            "refused 192.0.2.7".into(),
        );
        assert!(refusals.record_at(event, later));
        writer.close();

        let rows = refused_rows(dir.path());
        assert_eq!(rows.len(), 4, "the burst, then one row for the rest");
        assert!(
            rows[3].event.detail.ends_with(
                "(17 more refused requests since the last row were counted, not recorded)"
            ),
            "{}",
            rows[3].event.detail
        );
    }
}
