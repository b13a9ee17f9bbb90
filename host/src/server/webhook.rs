//! `POST <a pipeline's webhook path>`: a webhook delivery, verified on the
//! raw body (401 and an audit row if it is not), stored in the inbox before
//! the answer (202; 200 for a delivery id already stored), 413 over the
//! size limit, 503 if it could not be stored (the sender retries). Stored
//! deliveries are always audited; refusals at the bounded rate of
//! [`super::Refusals`].

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::{AppState, error, serve};
use crate::audit::{AuditEvent, Decision};
use crate::bindings::IncomingRequest;
use crate::db;
use crate::webhook::{inbox, verify};

/// A webhook delivery to one of the pipelines' paths.
pub(super) async fn webhook(
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
    // Deliveries stored are always audited; refusals at the bounded rate.
    let audit = |decision: Decision, detail: String| {
        let plugin = snapshot.registry.get(&pipeline.source.plugin);
        let event = AuditEvent {
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
        };
        match decision {
            Decision::Allowed => {
                state.db.audit(event);
                true
            }
            Decision::Denied => state.refusals.record(event),
        }
    };
    let stats = state.pipelines.stats().get(name);
    // A body sent a byte at a time would hold the connection for as long
    // as the sender liked.
    let read = tokio::time::timeout(
        serve::BODY_TIMEOUT,
        axum::body::to_bytes(body, trigger.max_body_bytes),
    )
    .await;
    let Ok(read) = read else {
        stats.delivery("too-slow");
        audit(
            Decision::Denied,
            format!(
                "refused: the body did not arrive within {:?}",
                serve::BODY_TIMEOUT
            ),
        );
        return error(
            StatusCode::REQUEST_TIMEOUT,
            "too-slow",
            format!("the body did not arrive within {:?}", serve::BODY_TIMEOUT),
        );
    };
    let Ok(body) = read else {
        stats.delivery("too-large");
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
    let key = match verify::key(&state.secrets, trigger.scheme, &trigger.secret) {
        Ok(key) => key,
        Err(e) => {
            tracing::error!(pipeline = %name, "the webhook secret cannot be used: {e}");
            stats.delivery("misconfigured");
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
            stats.delivery("bad-signature");
            if audit(Decision::Denied, format!("refused: {refused}")) {
                tracing::warn!(pipeline = %name, "webhook refused: {refused}");
            }
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
            stats.delivery("accepted");
            audit(Decision::Allowed, format!("delivery {id} stored"));
            state.pipelines.delivered(name);
            (
                StatusCode::ACCEPTED,
                Json(json!({ "status": "accepted", "id": id })),
            )
                .into_response()
        }
        Ok(false) => {
            stats.delivery("duplicate");
            audit(
                Decision::Allowed,
                format!("delivery {id} already stored: not processed again"),
            );
            Json(json!({ "status": "duplicate", "id": id })).into_response()
        }
        Err(e) => {
            stats.delivery("unavailable");
            tracing::error!(pipeline = %name, "webhook delivery {id} not stored: {e}");
            error(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "the delivery could not be stored; send it again".into(),
            )
        }
    }
}
