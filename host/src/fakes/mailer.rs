//! The fake email-marketing API: lists of subscribers written in batches.
//!
//! - `POST /v1/lists/{list}/subscribers/batch` with `{"operations": [{"op":
//!   "upsert", "key", "subscriber"} | {"op": "delete", "key"}]}` →
//!   `{"results": [{"status": "ok" | "rejected" | "retry", "reason"?}]}`, one per
//!   operation, in order; the key makes a repeated upsert harmless;
//! - `GET /v1/lists/{list}/subscribers` → `{"subscribers": {KEY: {...}}}`.
//!
//! A subscriber without an `email` containing `@` is rejected, as is any key
//! a test marks with [`FakeMailer::reject_key`]; a key marked with
//! [`FakeMailer::fail_key`] is answered `retry`, every time. Every request needs
//! `Authorization: Bearer KEY`; a malformed body is a 400.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{Faults, Serving, authorized, unauthorized};

#[derive(Default)]
struct Lists {
    subscribers: BTreeMap<String, BTreeMap<String, Value>>,
    rejected_keys: BTreeSet<String>,
    failing_keys: BTreeSet<String>,
    /// At most this many operations taken per batch; the rest answered
    /// `retry`.
    per_batch: Option<usize>,
    batches: Vec<usize>,
}

struct Shared {
    key: String,
    lists: Mutex<Lists>,
}

impl Shared {
    fn lists(&self) -> std::sync::MutexGuard<'_, Lists> {
        self.lists.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A running fake mailer.
pub struct FakeMailer {
    shared: Arc<Shared>,
    faults: Arc<Faults>,
    serving: Serving,
}

impl FakeMailer {
    /// Starts a mailer on 127.0.0.1:`port` (0: any) accepting API `key`.
    pub fn start(key: &str, port: u16) -> std::io::Result<FakeMailer> {
        let shared = Arc::new(Shared {
            key: key.to_string(),
            lists: Mutex::new(Lists::default()),
        });
        let app = Router::new()
            .route("/v1/lists/{list}/subscribers/batch", post(batch))
            .route("/v1/lists/{list}/subscribers", get(subscribers))
            .with_state(shared.clone());
        let (faults, serving) = Serving::with_faults(app, port)?;
        Ok(FakeMailer {
            shared,
            faults,
            serving,
        })
    }

    /// Its address.
    pub fn addr(&self) -> SocketAddr {
        self.serving.addr
    }

    /// Its base URL, as `mailer-sink`'s `base_url`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.serving.addr)
    }

    /// Its failure switches.
    pub fn faults(&self) -> &Faults {
        &self.faults
    }

    /// The subscribers of `list`, by key.
    pub fn subscribers(&self, list: &str) -> BTreeMap<String, Value> {
        self.shared
            .lists()
            .subscribers
            .get(list)
            .cloned()
            .unwrap_or_default()
    }

    /// Rejects every operation on `key` until [`FakeMailer::accept_key`].
    pub fn reject_key(&self, key: &str) {
        self.shared.lists().rejected_keys.insert(key.to_string());
    }

    /// Stops rejecting or failing `key`.
    pub fn accept_key(&self, key: &str) {
        let mut lists = self.shared.lists();
        lists.rejected_keys.remove(key);
        lists.failing_keys.remove(key);
    }

    /// Takes at most `n` operations of each batch (`None`: all) and answers
    /// `retry` for the rest, as a system with a per-request quota would.
    pub fn take_at_most(&self, n: Option<usize>) {
        self.shared.lists().per_batch = n;
    }

    /// Answers `retry` for every operation on `key` (a record the system
    /// fails on each time, as with a 500) until [`FakeMailer::accept_key`].
    pub fn fail_key(&self, key: &str) {
        self.shared.lists().failing_keys.insert(key.to_string());
    }

    /// The size of every batch accepted so far, in order.
    pub fn batches(&self) -> Vec<usize> {
        self.shared.lists().batches.clone()
    }
}

#[derive(Deserialize)]
#[serde(tag = "op", rename_all = "lowercase")]
enum Operation {
    Upsert { key: String, subscriber: Value },
    Delete { key: String },
}

#[derive(Deserialize)]
struct Batch {
    operations: Vec<Operation>,
}

fn bad_request(message: String) -> Response {
    (StatusCode::BAD_REQUEST, Json(json!({ "error": message }))).into_response()
}

async fn batch(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Path(list): Path<String>,
    body: Bytes,
) -> Response {
    if !authorized(&headers, &shared.key) {
        return unauthorized();
    }
    let batch: Batch = match serde_json::from_slice(&body) {
        Ok(batch) => batch,
        Err(e) => return bad_request(format!("the body is not a batch of operations: {e}")),
    };
    let mut lists = shared.lists();
    let mut results = Vec::with_capacity(batch.operations.len());
    lists.batches.push(batch.operations.len());
    let quota = lists.per_batch.unwrap_or(usize::MAX);
    for (taken, operation) in batch.operations.into_iter().enumerate() {
        if taken >= quota {
            results.push(json!({ "status": "retry", "reason": "over this request's quota" }));
            continue;
        }
        let key = match &operation {
            Operation::Upsert { key, .. } | Operation::Delete { key } => key.clone(),
        };
        if lists.rejected_keys.contains(&key) {
            results.push(
                json!({ "status": "rejected", "reason": format!("subscriber {key} is blocked") }),
            );
            continue;
        }
        if lists.failing_keys.contains(&key) {
            results.push(json!({
                "status": "retry",
                "reason": format!("subscriber {key}: internal error, try again later")
            }));
            continue;
        }
        match operation {
            Operation::Upsert { key, subscriber } => {
                let email_ok = subscriber
                    .get("email")
                    .and_then(Value::as_str)
                    .is_some_and(|e| e.contains('@'));
                if !email_ok {
                    results
                        .push(json!({ "status": "rejected", "reason": "invalid email address" }));
                    continue;
                }
                lists
                    .subscribers
                    .entry(list.clone())
                    .or_default()
                    .insert(key, subscriber);
            }
            Operation::Delete { key } => {
                if let Some(subscribers) = lists.subscribers.get_mut(&list) {
                    subscribers.remove(&key);
                }
            }
        }
        results.push(json!({ "status": "ok" }));
    }
    Json(json!({ "results": results })).into_response()
}

async fn subscribers(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Path(list): Path<String>,
) -> Response {
    if !authorized(&headers, &shared.key) {
        return unauthorized();
    }
    let lists = shared.lists();
    let subscribers = lists.subscribers.get(&list).cloned().unwrap_or_default();
    Json(json!({ "subscribers": subscribers })).into_response()
}
