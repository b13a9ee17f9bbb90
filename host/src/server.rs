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

use std::path::PathBuf;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

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
}

/// The router.
pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/api/plugins", get(plugins))
        .route("/api/plugins/{name}/invoke", post(invoke))
        .route("/api/pipelines/{name}/run-now", post(run_now))
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
                CallError::OutOfMemory { .. } | CallError::Trap { .. } => {
                    StatusCode::INTERNAL_SERVER_ERROR
                }
            };
            error(status, e.kind(), e.to_string())
        }
    }
}
