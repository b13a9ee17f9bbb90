//! The fake CRM: contacts listed incrementally by `(updated_at, id)`.
//!
//! - `GET /v1/contacts?updated_after=MS&after_id=ID&limit=N` →
//!   `{"contacts": [...], "has_more": bool}`, contacts after the cursor in
//!   `(updated_at, id)` order;
//! - `POST /v1/contacts` with a contact's fields creates one (201, the
//!   contact); `PUT /v1/contacts/{id}` updates one.
//!
//! Every request needs `Authorization: Bearer TOKEN`. Timestamps come from a
//! clock that never repeats, so two changes never share an `updated_at`
//! unless a test sets it.
//!
//! Like a real CRM it can also push: after [`FakeCrm::send_webhooks`], every
//! change is posted as `{"event": "contact.created" | "contact.updated",
//! "contact": {...}}`, signed the Standard Webhooks way.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::{Faults, Serving, authorized, unauthorized};

/// One contact, as the CRM lists it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Contact {
    /// The CRM's id.
    pub id: String,
    /// Milliseconds since the epoch of the last change.
    pub updated_at: i64,
    /// The other fields (`firstName`, `lastName`, `email`, …).
    #[serde(flatten)]
    pub fields: Map<String, Value>,
}

#[derive(Default)]
struct Store {
    contacts: BTreeMap<String, Contact>,
    next_id: u64,
    clock: i64,
}

impl Store {
    fn tick(&mut self) -> i64 {
        let now = epoch_ms();
        self.clock = now.max(self.clock + 1);
        self.clock
    }
}

fn epoch_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default()
}

struct Shared {
    token: String,
    store: Mutex<Store>,
    hooks: Mutex<Option<Hooks>>,
}

/// Where and how the CRM posts its events.
struct Hooks {
    url: String,
    key: Vec<u8>,
    client: reqwest::Client,
    runtime: tokio::runtime::Handle,
    sent: u64,
}

impl Shared {
    /// Posts `event` about `contact` to the webhook URL, if one is set.
    fn push(&self, event: &str, contact: &Contact) {
        let mut hooks = self.hooks.lock().unwrap_or_else(|p| p.into_inner());
        let Some(hooks) = hooks.as_mut() else {
            return;
        };
        hooks.sent += 1;
        let id = format!("evt_{:06}", hooks.sent);
        let body = json!({ "event": event, "contact": contact }).to_string();
        let timestamp = epoch_ms() / 1000;
        let signature =
            crate::webhook::verify::sign_standard(&hooks.key, &id, timestamp, body.as_bytes());
        let request = hooks
            .client
            .post(&hooks.url)
            .header("content-type", "application/json")
            .header("webhook-id", id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature)
            .body(body);
        hooks.runtime.spawn(async move {
            if let Err(e) = request.send().await {
                tracing::warn!("the fake CRM could not deliver a webhook: {e}");
            }
        });
    }
}

impl Shared {
    fn store(&self) -> std::sync::MutexGuard<'_, Store> {
        self.store.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn create(&self, fields: Map<String, Value>) -> Contact {
        let id = {
            let mut store = self.store();
            store.next_id += 1;
            format!("c{:06}", store.next_id)
        };
        self.create_as(id, fields)
    }

    fn create_as(&self, id: String, fields: Map<String, Value>) -> Contact {
        let mut store = self.store();
        let contact = Contact {
            id: id.clone(),
            updated_at: store.tick(),
            fields,
        };
        store.contacts.insert(id, contact.clone());
        contact
    }

    fn update(&self, id: &str, fields: Map<String, Value>) -> Option<Contact> {
        let mut store = self.store();
        let now = store.tick();
        let contact = store.contacts.get_mut(id)?;
        contact.fields.extend(fields);
        contact.updated_at = now;
        Some(contact.clone())
    }
}

/// A running fake CRM.
pub struct FakeCrm {
    shared: Arc<Shared>,
    faults: Arc<Faults>,
    serving: Serving,
}

impl FakeCrm {
    /// Starts a CRM on 127.0.0.1:`port` (0: any) accepting `token`.
    pub fn start(token: &str, port: u16) -> std::io::Result<FakeCrm> {
        let shared = Arc::new(Shared {
            token: token.to_string(),
            store: Mutex::new(Store::default()),
            hooks: Mutex::new(None),
        });
        let app = Router::new()
            .route("/v1/contacts", get(list).post(create))
            .route("/v1/contacts/{id}", put(update))
            .with_state(shared.clone());
        let (faults, serving) = Serving::with_faults(app, port)?;
        Ok(FakeCrm {
            shared,
            faults,
            serving,
        })
    }

    /// Its address.
    pub fn addr(&self) -> SocketAddr {
        self.serving.addr
    }

    /// Its base URL, as `crm-source`'s `base_url`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.serving.addr)
    }

    /// Its failure switches.
    pub fn faults(&self) -> &Faults {
        &self.faults
    }

    /// From now on, posts every change to `url`, signed with `key` (the
    /// Standard Webhooks way).
    pub fn send_webhooks(&self, url: &str, key: &[u8]) -> Result<(), String> {
        let client = reqwest::Client::builder()
            .no_proxy()
            .build()
            .map_err(|e| format!("cannot build the webhook client: {e}"))?;
        *self.shared.hooks.lock().unwrap_or_else(|p| p.into_inner()) = Some(Hooks {
            url: url.to_string(),
            key: key.to_vec(),
            client,
            runtime: self.serving.handle.clone(),
            sent: 0,
        });
        Ok(())
    }

    /// Creates a contact with `fields`; its id is `c` and a zero-padded
    /// sequence number, so ids sort in creation order.
    pub fn create(&self, fields: Map<String, Value>) -> Contact {
        let contact = self.shared.create(fields);
        self.shared.push("contact.created", &contact);
        contact
    }

    /// Creates a contact under an id of the caller's choosing: a CRM whose
    /// ids are not what a connector expects (`..`, say).
    pub fn create_with_id(&self, id: &str, fields: Map<String, Value>) -> Contact {
        let contact = self.shared.create_as(id.to_string(), fields);
        self.shared.push("contact.created", &contact);
        contact
    }

    /// Changes some fields of a contact; `None` when there is no such id.
    pub fn update(&self, id: &str, fields: Map<String, Value>) -> Option<Contact> {
        let contact = self.shared.update(id, fields)?;
        self.shared.push("contact.updated", &contact);
        Some(contact)
    }

    /// Every contact, by id.
    pub fn contacts(&self) -> Vec<Contact> {
        self.shared.store().contacts.values().cloned().collect()
    }
}

#[derive(Deserialize)]
struct ListQuery {
    #[serde(default)]
    updated_after: i64,
    #[serde(default)]
    after_id: String,
    limit: Option<usize>,
}

async fn list(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Query(query): Query<ListQuery>,
) -> Response {
    if !authorized(&headers, &shared.token) {
        return unauthorized();
    }
    let limit = query.limit.unwrap_or(100).clamp(1, 1000);
    let store = shared.store();
    let mut after: Vec<&Contact> = store
        .contacts
        .values()
        .filter(|c| (c.updated_at, c.id.as_str()) > (query.updated_after, query.after_id.as_str()))
        .collect();
    after.sort_by(|a, b| (a.updated_at, &a.id).cmp(&(b.updated_at, &b.id)));
    let has_more = after.len() > limit;
    after.truncate(limit);
    Json(json!({ "contacts": after, "has_more": has_more })).into_response()
}

async fn create(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Json(fields): Json<Map<String, Value>>,
) -> Response {
    if !authorized(&headers, &shared.token) {
        return unauthorized();
    }
    let contact = shared.create(fields);
    shared.push("contact.created", &contact);
    (StatusCode::CREATED, Json(contact)).into_response()
}

async fn update(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Json(fields): Json<Map<String, Value>>,
) -> Response {
    if !authorized(&headers, &shared.token) {
        return unauthorized();
    }
    match shared.update(&id, fields) {
        None => (
            StatusCode::NOT_FOUND,
            Json(json!({ "error": "no such contact" })),
        )
            .into_response(),
        Some(contact) => {
            shared.push("contact.updated", &contact);
            Json(contact).into_response()
        }
    }
}
