//! `POST <a pipeline's webhook path>`: a webhook delivery, verified on the
//! raw body (401 and an audit row if it is not), stored in the inbox of
//! every pipeline at that path before the answer (202; 200 for a delivery
//! id every one of them already stored; 200 and no body either way with
//! `answer = "empty"`), 413 over the size limit, 503 if it could not be
//! stored (the sender retries). A token or a login the sender proved itself
//! with is not stored. Stored deliveries are always audited, a row per
//! pipeline; refusals at the bounded rate of [`super::Refusals`].
//!
//! `GET` on a path whose scheme is `token` or `basic`: a sender checking
//! the URL, answered 200 once its token or login is right, nothing stored.
//! The handshakes of Slack, Zoom (a `POST`, signed), Meta and Dropbox (a
//! `GET`) are answered as [`handshake`] says, nothing stored either; those
//! a sender proves itself in are audited.

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
use crate::webhook::{handshake, inbox, verify};

/// The id a delivery is deduplicated by: the sender's, or else its body's
/// digest, so a retry of the same event is recognised. An empty body is no
/// event to recognise: a sender whose news is all in its headers (Google
/// Calendar's "something changed", without an `id-header`) would otherwise
/// see every delivery after its first dropped as a duplicate. Each gets an
/// id of its own.
fn delivery_id(sent: Option<String>, body: &[u8]) -> String {
    if let Some(id) = sent {
        return id;
    }
    if !body.is_empty() {
        return crate::plugin::digest(body);
    }
    use ring::rand::SecureRandom as _;
    let mut nonce = [0u8; 16];
    if ring::rand::SystemRandom::new().fill(&mut nonce).is_err() {
        // No randomness: the time, which a retry does not share either.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        nonce = nanos.to_be_bytes();
    }
    format!(
        "empty-{}",
        nonce.iter().map(|b| format!("{b:02x}")).collect::<String>()
    )
}

/// A webhook delivery to one of the pipelines' paths.
pub(super) async fn webhook(
    State(state): State<Arc<AppState>>,
    peer: Option<axum::Extension<axum::extract::ConnectInfo<std::net::SocketAddr>>>,
    method: axum::http::Method,
    uri: axum::http::Uri,
    headers: axum::http::HeaderMap,
    body: axum::body::Body,
) -> Response {
    let snapshot = state.live.snapshot();
    // Every pipeline at this path gets the delivery: a sender with room for
    // one URL can feed a pipeline per sink. Their triggers are the same
    // (`causeway.toml` is refused otherwise), so it is verified once.
    let sharing: Vec<(&String, &crate::pipeline::PipelineConfig)> = snapshot
        .config
        .pipelines
        .iter()
        .filter(|(_, p)| p.webhook.as_ref().is_some_and(|w| w.path == uri.path()))
        .collect();
    let Some(trigger) = sharing.first().and_then(|(_, p)| p.webhook.as_ref()) else {
        return error(
            StatusCode::NOT_FOUND,
            "not-found",
            format!("nothing at {}", uri.path()),
        );
    };
    let names: Vec<&str> = sharing.iter().map(|(name, _)| name.as_str()).collect();
    let pipelines = names.join(", ");
    let verifying = trigger.method();
    // A sender that checks the URL before it saves it (Mailchimp) sends a
    // GET: answered once its token or login is, and nothing stored. The
    // schemes that sign a body have none to sign, but Meta's and Dropbox's
    // senders check the URL with a GET of their own.
    let get = method == axum::http::Method::GET;
    let probe = get && verifying.sends_secret();
    let checked_by_get = get && handshake::checks_by_get(trigger.scheme);
    if method != axum::http::Method::POST && !probe && !checked_by_get {
        return error(
            StatusCode::METHOD_NOT_ALLOWED,
            "method-not-allowed",
            format!("{} takes POST", uri.path()),
        );
    }
    // Deliveries stored are always audited; refusals at the bounded rate.
    // A row per pipeline: each is its own source plugin's.
    let audit = |only: Option<&str>, decision: Decision, detail: String| {
        let mut recorded = false;
        for (name, pipeline) in sharing
            .iter()
            .filter(|(n, _)| only.is_none_or(|o| o == n.as_str()))
        {
            let plugin = snapshot.registry.get(&pipeline.source.plugin);
            let (version, digest) = plugin
                .map(|p| {
                    (
                        p.plugin.info.version.as_str(),
                        p.plugin.info.digest.as_str(),
                    )
                })
                .unwrap_or(("-", "-"));
            // Capped as every event is: the delivery id is the sender's.
            let event = AuditEvent::by(
                (&pipeline.source.plugin, version, digest),
                "webhook",
                method.as_str(),
                &format!("pipeline {name} {}", trigger.path),
                decision,
                detail.clone(),
            );
            recorded |= match decision {
                Decision::Allowed => {
                    state.db.audit(event);
                    true
                }
                Decision::Denied => state.refusals.record(event),
            };
        }
        recorded
    };
    let all_stats = state.pipelines.stats();
    let count = |only: Option<&str>, what: &str| {
        for name in names.iter().filter(|n| only.is_none_or(|o| o == **n)) {
            all_stats.get(name).delivery(what);
        }
    };
    let refuse = |refused: verify::Refused| {
        count(None, "bad-signature");
        if audit(None, Decision::Denied, format!("refused: {refused}")) {
            tracing::warn!(pipeline = %pipelines, "webhook refused: {refused}");
        }
        let mut answer = error(
            StatusCode::UNAUTHORIZED,
            "bad-signature",
            refused.to_string(),
        );
        // A client that logs in only when asked is asked.
        if trigger.scheme == verify::Scheme::Basic {
            answer.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Basic realm=\"causeway webhook\""),
            );
        }
        answer
    };
    let misconfigured = |e: String| {
        tracing::error!(pipeline = %pipelines, "the webhook secret cannot be used: {e}");
        count(None, "misconfigured");
        error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "misconfigured",
            "the webhook secret is not available; the operator has been told".into(),
        )
    };
    // A sender checking the URL: answered, nothing stored. Anyone may ask
    // Dropbox's, so only those proven are audited (as deliveries are).
    let answered = |handshake: handshake::Answered, proven: &str| {
        count(None, "handshake");
        if handshake.proven {
            audit(
                None,
                Decision::Allowed,
                format!("{} answered; nothing stored{proven}", handshake.what),
            );
            tracing::info!(pipeline = %pipelines, "webhook: {} answered", handshake.what);
        }
        match handshake.reply {
            handshake::Reply::Json(value) => Json(value).into_response(),
            handshake::Reply::Text(text) => (
                [
                    (
                        axum::http::header::CONTENT_TYPE,
                        "text/plain; charset=utf-8",
                    ),
                    (axum::http::header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
                ],
                text,
            )
                .into_response(),
            handshake::Reply::Empty => StatusCode::OK.into_response(),
        }
    };
    // Before anything is read: a sender from elsewhere gets no further.
    if let Some(networks) = &trigger.allow_from {
        let peer = peer.map(|axum::Extension(axum::extract::ConnectInfo(peer))| peer.ip());
        if !peer.is_some_and(|peer| networks.iter().any(|n| n.contains(peer))) {
            let from = peer.map_or_else(|| "an unknown address".to_string(), |p| p.to_string());
            count(None, "not-allowed");
            if audit(
                None,
                Decision::Denied,
                format!("refused: from {from}, which allow-from does not name"),
            ) {
                tracing::warn!(pipeline = %pipelines, "webhook refused: from {from}, which allow-from does not name");
            }
            return error(
                StatusCode::FORBIDDEN,
                "not-allowed",
                format!(
                    "{} takes deliveries from the networks its pipeline names only",
                    uri.path()
                ),
            );
        }
    }
    if checked_by_get {
        let token = match trigger
            .verify_token
            .as_ref()
            .map(|r| state.secrets.resolve(r))
            .transpose()
        {
            Ok(token) => token,
            Err(e) => return misconfigured(e),
        };
        let query = uri.query().unwrap_or_default();
        let token = token.as_ref().map(|t| t.expose().as_bytes());
        return match handshake::on_get(trigger.scheme, query, token) {
            Ok(handshake) => answered(handshake, ""),
            Err(refused) => refuse(refused),
        };
    }
    // A body sent a byte at a time would hold the connection for as long
    // as the sender liked.
    let read = tokio::time::timeout(
        serve::BODY_TIMEOUT,
        axum::body::to_bytes(body, trigger.max_body_bytes),
    )
    .await;
    let Ok(read) = read else {
        count(None, "too-slow");
        audit(
            None,
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
        count(None, "too-large");
        audit(
            None,
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
        Err(e) => return misconfigured(e),
    };
    // During a rotation, the secret before it, until the sender has moved
    // on; one the host cannot use leaves the new one working.
    let previous = trigger.previous_secret.as_ref().and_then(|reference| {
        verify::key(&state.secrets, trigger.scheme, reference)
            .inspect_err(|e| {
                tracing::error!(pipeline = %pipelines, "the webhook's previous-secret cannot be used: {e}");
            })
            .ok()
    });
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or_default();
    // The request line too, for the schemes that sign it (HubSpot's).
    let target = uri.path_and_query().map_or("/", |p| p.as_str());
    let header = |name: &str| match name {
        ":method" => Some(method.as_str()),
        ":path" => Some(target),
        name => headers.get(name).and_then(|v| v.to_str().ok()),
    };
    let tolerance = trigger.tolerance();
    let (verified, key, by_previous) =
        match verify::verify(verifying, &key, header, &body, now, tolerance) {
            Ok(verified) => (verified, key, false),
            // Only a signature or secret that does not match may be the
            // previous one's; a stale or malformed delivery is that anyway.
            Err(refused @ (verify::Refused::BadSignature | verify::Refused::Mismatch(_))) => {
                let before = previous.and_then(|previous| {
                    verify::verify(verifying, &previous, header, &body, now, tolerance)
                        .ok()
                        .map(|verified| (verified, previous, true))
                });
                match before {
                    Some(verified) => verified,
                    None => return refuse(refused),
                }
            }
            Err(refused) => return refuse(refused),
        };
    // Said in every row, so the operator sees when the sender moved on.
    let proven = if by_previous {
        " (proven with previous-secret: the sender has not moved to the new secret yet)"
    } else {
        ""
    };
    if probe {
        return answered(
            handshake::Answered {
                reply: handshake::Reply::Json(json!({ "status": "ready" })),
                what: "a URL check",
                proven: true,
            },
            proven,
        );
    }
    if let Some(handshake) = handshake::on_delivery(trigger.scheme, &key, &body) {
        return match handshake {
            Ok(handshake) => answered(handshake, proven),
            Err(refused) => refuse(refused),
        };
    }
    let id = delivery_id(verified.id, &body);
    // A token or a login is the secret itself: neither stored nor handed
    // to the plugin (whose sandbox no secret enters).
    let secret_header = verifying.secret_header();
    let query = uri.query().unwrap_or_default();
    let request = IncomingRequest {
        method: method.to_string(),
        path: uri.path().to_string(),
        query: match verifying.secret_query() {
            Some(name) => verify::query_without(query, name),
            None => query.to_string(),
        },
        headers: headers
            .iter()
            .filter(|(n, _)| secret_header != Some(n.as_str()))
            .filter_map(|(n, v)| Some((n.as_str().to_string(), v.to_str().ok()?.to_string())))
            .collect(),
        body: body.to_vec(),
    };
    // In one transaction: stored for every pipeline, or for none (the
    // sender sends it again).
    let stored = {
        let (names, id): (Vec<String>, String) =
            (names.iter().map(|n| n.to_string()).collect(), id.clone());
        state
            .db
            .transact(move |conn| {
                let mut new = Vec::new();
                for name in names {
                    if inbox::insert(conn, &name, &id, &request)? {
                        new.push(name);
                    }
                }
                Ok::<_, db::DbError>(new)
            })
            .await
    };
    match stored {
        Ok(new) => {
            for name in &names {
                if new.iter().any(|n| n == name) {
                    count(Some(name), "accepted");
                    audit(
                        Some(name),
                        Decision::Allowed,
                        format!("delivery {id} stored{proven}"),
                    );
                    state.pipelines.delivered(name);
                } else {
                    count(Some(name), "duplicate");
                    audit(
                        Some(name),
                        Decision::Allowed,
                        format!("delivery {id} already stored: not processed again{proven}"),
                    );
                }
            }
            use crate::pipeline::config::{Answer, SALESFORCE_ACK};
            let answer = trigger.answer();
            if answer == Answer::Empty {
                StatusCode::OK.into_response()
            } else if answer == Answer::SalesforceAck {
                (
                    [(axum::http::header::CONTENT_TYPE, "text/xml; charset=utf-8")],
                    SALESFORCE_ACK,
                )
                    .into_response()
            } else if new.is_empty() {
                Json(json!({ "status": "duplicate", "id": id })).into_response()
            } else {
                (
                    StatusCode::ACCEPTED,
                    Json(json!({ "status": "accepted", "id": id })),
                )
                    .into_response()
            }
        }
        Err(e) => {
            count(None, "unavailable");
            tracing::error!(pipeline = %pipelines, "webhook delivery {id} not stored: {e}");
            error(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "the delivery could not be stored; send it again".into(),
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::delivery_id;

    #[test]
    fn a_delivery_is_known_by_its_senders_id_its_body_or_else_as_itself() {
        assert_eq!(delivery_id(Some("evt_1".into()), b"{}"), "evt_1");
        assert_eq!(
            delivery_id(None, b"{\"a\":1}"),
            delivery_id(None, b"{\"a\":1}")
        );
        assert_ne!(
            delivery_id(None, b"{\"a\":1}"),
            delivery_id(None, b"{\"a\":2}")
        );
        let (one, two) = (delivery_id(None, b""), delivery_id(None, b""));
        assert_ne!(one, two, "empty bodies are never one another's duplicates");
        assert!(
            one.starts_with("empty-") && one.len() == "empty-".len() + 32,
            "{one}"
        );
    }
}
