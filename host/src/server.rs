//! The host's HTTP server: health, the status API, and the operator's invoke
//! endpoint. It listens on the configured address (loopback by default).
//!
//! - `GET /healthz`: `{"status": "ok"}` while the host serves.
//! - `GET /api/plugins`: the plugin states the host recorded in the database,
//!   the same rows `causeway plugins` reads.
//! - `POST /api/plugins/{name}/invoke` with `{"operation", "input"?}`: one
//!   call, exactly as `causeway invoke` makes it, with the plugin's
//!   configuration from causeway.toml (a caller cannot supply one).
//! - `POST /api/pipelines/{name}/run-now`: 202 once the pipeline is asked to
//!   run (even if paused or stopped), 404 for an unknown one.
//! - `POST <a pipeline's webhook path>`: a webhook delivery, verified on the
//!   raw body (401 and an audit row if it is not), stored in the inbox
//!   before the answer (202; 200 for a delivery id already stored), 413 over
//!   the size limit, 503 if it could not be stored (the sender retries).

use std::path::PathBuf;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::audit::{AuditEvent, Decision};
use crate::bindings::IncomingRequest;
use crate::db::{self, WriterHandle};
use crate::engine::Runtime;
use crate::live::Live;
use crate::operation::Operation;
use crate::registry::{NotCallable, PluginStatus};
use crate::sandbox::CallError;
use crate::secrets::Secrets;
use crate::webhook::inbox;
use crate::webhook::verify::{self, Scheme};

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
}

/// The router.
pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/api/plugins", get(plugins))
        .route("/api/plugins/{name}/invoke", post(invoke))
        .route("/api/pipelines/{name}/run-now", post(run_now))
        .fallback(webhook)
        .with_state(state)
}

async fn healthz() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

fn error(status: StatusCode, kind: &str, message: String) -> Response {
    (status, Json(json!({ "error": kind, "message": message }))).into_response()
}

async fn plugins(State(state): State<Arc<AppState>>) -> Response {
    let database = state.database.clone();
    let rows = tokio::task::spawn_blocking(move || db::running_host_states(&database)).await;
    match rows {
        Ok(Ok(rows)) => {
            let statuses: Vec<PluginStatus> = rows
                .unwrap_or_default()
                .into_iter()
                .map(PluginStatus::from_row)
                .collect();
            Json(statuses).into_response()
        }
        Ok(Err(e)) => error(StatusCode::INTERNAL_SERVER_ERROR, "database", e.to_string()),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()),
    }
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

/// A webhook delivery to one of the pipelines' paths.
async fn webhook(
    State(state): State<Arc<AppState>>,
    method: axum::http::Method,
    uri: axum::http::Uri,
    headers: axum::http::HeaderMap,
    body: axum::body::Body,
) -> Response {
    let snapshot = state.live.snapshot();
    let Some((name, pipeline)) = snapshot
        .config
        .pipelines
        .iter()
        .find(|(_, p)| p.webhook.as_ref().is_some_and(|w| w.path == uri.path()))
    else {
        return error(
            StatusCode::NOT_FOUND,
            "not-found",
            format!("nothing at {}", uri.path()),
        );
    };
    let Some(trigger) = &pipeline.webhook else {
        return error(
            StatusCode::NOT_FOUND,
            "not-found",
            format!("nothing at {}", uri.path()),
        );
    };
    if method != axum::http::Method::POST {
        return error(
            StatusCode::METHOD_NOT_ALLOWED,
            "method-not-allowed",
            format!("{} takes POST", uri.path()),
        );
    }
    let audit = |decision: Decision, detail: String| {
        let plugin = snapshot.registry.get(&pipeline.source.plugin);
        state.db.audit(AuditEvent {
            time: crate::audit::now(),
            plugin: pipeline.source.plugin.clone(),
            version: plugin
                .map(|p| p.plugin.info.version.clone())
                .unwrap_or("-".into()),
            digest: plugin
                .map(|p| p.plugin.info.digest.clone())
                .unwrap_or("-".into()),
            capability: "webhook".into(),
            action: "POST".into(),
            target: format!("pipeline {name} {}", trigger.path),
            decision,
            detail,
            run_id: None,
        });
    };
    let Ok(body) = axum::body::to_bytes(body, trigger.max_body_bytes).await else {
        audit(
            Decision::Denied,
            format!("refused: body over {} bytes", trigger.max_body_bytes),
        );
        return error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too-large",
            format!(
                "the body is over the limit of {} bytes",
                trigger.max_body_bytes
            ),
        );
    };
    let key = state
        .secrets
        .resolve(&trigger.secret)
        .map_err(|e| e.to_string())
        .and_then(|secret| match trigger.scheme {
            Scheme::StandardWebhooks => verify::standard_key(secret.expose()),
            Scheme::Github | Scheme::Stripe => Ok(secret.expose().as_bytes().to_vec()),
        });
    let key = match key {
        Ok(key) => key,
        Err(e) => {
            tracing::error!(pipeline = %name, "the webhook secret {} cannot be used: {e}", trigger.secret);
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "misconfigured",
                "the webhook secret is not available; the operator has been told".into(),
            );
        }
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or_default();
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let verified = match verify::verify(
        trigger.scheme,
        &key,
        header,
        &body,
        now,
        trigger.tolerance.0,
    ) {
        Ok(verified) => verified,
        Err(refused) => {
            tracing::warn!(pipeline = %name, "webhook refused: {refused}");
            audit(Decision::Denied, format!("refused: {refused}"));
            return error(
                StatusCode::UNAUTHORIZED,
                "bad-signature",
                refused.to_string(),
            );
        }
    };
    let id = verified.id.unwrap_or_else(|| crate::plugin::digest(&body));
    let request = IncomingRequest {
        method: method.to_string(),
        path: uri.path().to_string(),
        query: uri.query().unwrap_or_default().to_string(),
        headers: headers
            .iter()
            .filter_map(|(n, v)| Some((n.as_str().to_string(), v.to_str().ok()?.to_string())))
            .collect(),
        body: body.to_vec(),
    };
    let stored = {
        let (name, id) = (name.clone(), id.clone());
        state
            .db
            .transact(move |conn| Ok::<_, db::DbError>(inbox::insert(conn, &name, &id, &request)?))
            .await
    };
    match stored {
        Ok(true) => {
            audit(Decision::Allowed, format!("delivery {id} stored"));
            state.pipelines.delivered(name);
            (
                StatusCode::ACCEPTED,
                Json(json!({ "status": "accepted", "id": id })),
            )
                .into_response()
        }
        Ok(false) => {
            audit(
                Decision::Allowed,
                format!("delivery {id} already stored: not processed again"),
            );
            Json(json!({ "status": "duplicate", "id": id })).into_response()
        }
        Err(e) => {
            tracing::error!(pipeline = %name, "webhook delivery {id} not stored: {e}");
            error(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "the delivery could not be stored; send it again".into(),
            )
        }
    }
}

/// The body of an invoke request.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
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
    Json(request): Json<InvokeRequest>,
) -> Response {
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
                CallError::Plugin { .. } => StatusCode::BAD_GATEWAY,
                CallError::Busy { .. } => StatusCode::SERVICE_UNAVAILABLE,
                CallError::OutOfMemory { .. }
                | CallError::ResourceLimit { .. }
                | CallError::Trap { .. } => StatusCode::INTERNAL_SERVER_ERROR,
            };
            error(status, e.kind(), e.to_string())
        }
    }
}
