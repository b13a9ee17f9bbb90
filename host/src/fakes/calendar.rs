//! The fake calendar API: each calendar's directory of attendees, the people
//! a meeting can be sent to, written one request per attendee (as most
//! calendar and contact APIs are, unlike the mailer's batches).
//!
//! - `PUT /v2/calendars/{calendar}/attendees/{id}` with `{"displayName",
//!   "email", "organization"?}` → 201 when created, 200 when replaced; 422
//!   when `email` has no `@` or `displayName` is empty;
//! - `DELETE /v2/calendars/{calendar}/attendees/{id}` → 204, or 404 when
//!   there is no such attendee;
//! - `GET /v2/calendars/{calendar}` → `{"id", "attendees": N}`, 404 for a
//!   calendar that does not exist;
//! - `GET /v2/calendars/{calendar}/attendees` → `{"attendees": {ID: {...}}}`.
//!
//! Every request needs `X-Api-Key: KEY`, or `Authorization: Bearer TOKEN`
//! with a token it issued that has not expired (401 otherwise); a malformed
//! body is a 400. The calendars exist from the start ([`FakeCalendar::start`]).
//!
//! - `POST /oauth2/token`, form-encoded `grant_type=client_credentials`,
//!   `client_id` (any) and `client_secret=KEY` → `{"access_token",
//!   "token_type": "Bearer", "expires_in"}` (an OAuth 2.0 token endpoint,
//!   as calendar APIs have); 401 `invalid_client` for another secret, 400
//!   `unsupported_grant_type` for another grant.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{Faults, Serving, unauthorized};

/// The header the calendar reads its API key from.
pub const API_KEY_HEADER: &str = "x-api-key";

/// How long a token it issues lives: short, so a demo sees the host renew one.
pub const TOKEN_LIFETIME: std::time::Duration = std::time::Duration::from_secs(10);

/// An attendee as the calendar holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Attendee {
    /// The name a meeting invitation shows.
    pub display_name: String,
    /// Where invitations go.
    pub email: String,
    /// The attendee's organization, if known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub organization: Option<String>,
}

struct Shared {
    key: String,
    /// The tokens issued, and when each expires.
    tokens: Mutex<BTreeMap<String, std::time::Instant>>,
    /// Attendees by calendar, then id; a calendar not here does not exist.
    calendars: Mutex<BTreeMap<String, BTreeMap<String, Attendee>>>,
}

impl Shared {
    fn tokens(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, std::time::Instant>> {
        self.tokens.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn calendars(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, BTreeMap<String, Attendee>>> {
        self.calendars.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A running fake calendar.
pub struct FakeCalendar {
    shared: Arc<Shared>,
    faults: Arc<Faults>,
    serving: Serving,
}

impl FakeCalendar {
    /// Starts a calendar API on 127.0.0.1:`port` (0: any) accepting API
    /// `key`, holding the empty `calendars`.
    pub fn start(key: &str, calendars: &[&str], port: u16) -> std::io::Result<FakeCalendar> {
        let shared = Arc::new(Shared {
            key: key.to_string(),
            tokens: Mutex::new(BTreeMap::new()),
            calendars: Mutex::new(
                calendars
                    .iter()
                    .map(|c| (c.to_string(), BTreeMap::new()))
                    .collect(),
            ),
        });
        let app = Router::new()
            .route("/oauth2/token", post(token))
            .route("/v2/calendars/{calendar}", get(calendar))
            .route("/v2/calendars/{calendar}/attendees", get(attendees))
            .route(
                "/v2/calendars/{calendar}/attendees/{id}",
                put(put_attendee).delete(delete_attendee),
            )
            .with_state(shared.clone());
        let (faults, serving) = Serving::with_faults(app, port)?;
        Ok(FakeCalendar {
            shared,
            faults,
            serving,
        })
    }

    /// Its address.
    pub fn addr(&self) -> SocketAddr {
        self.serving.addr
    }

    /// Its base URL, as `calendar-sink`'s `base_url`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.serving.addr)
    }

    /// Its failure switches.
    pub fn faults(&self) -> &Faults {
        &self.faults
    }

    /// How many OAuth 2.0 access tokens it issued.
    pub fn tokens_issued(&self) -> usize {
        self.shared.tokens().len()
    }

    /// The attendees of `calendar`, by id.
    pub fn attendees(&self, calendar: &str) -> BTreeMap<String, Attendee> {
        self.shared
            .calendars()
            .get(calendar)
            .cloned()
            .unwrap_or_default()
    }
}

/// Whether the request carries the API key, or a token issued that has
/// not expired.
fn authorized(headers: &HeaderMap, shared: &Shared) -> bool {
    let header = |name| headers.get(name).and_then(|v| v.to_str().ok());
    if header(API_KEY_HEADER).is_some_and(|v| v == shared.key) {
        return true;
    }
    header(axum::http::header::AUTHORIZATION.as_str())
        .and_then(|v| v.strip_prefix("Bearer "))
        .and_then(|token| shared.tokens().get(token).copied())
        .is_some_and(|expires| std::time::Instant::now() < expires)
}

/// The token endpoint: client credentials, the API key as client secret.
async fn token(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    let form: BTreeMap<String, String> = url::form_urlencoded::parse(&body).into_owned().collect();
    let oauth_error =
        |status, error: &str| (status, Json(json!({ "error": error }))).into_response();
    if form.get("grant_type").map(String::as_str) != Some("client_credentials") {
        return oauth_error(StatusCode::BAD_REQUEST, "unsupported_grant_type");
    }
    if form.get("client_id").is_none_or(String::is_empty)
        || form.get("client_secret") != Some(&shared.key)
    {
        return oauth_error(StatusCode::UNAUTHORIZED, "invalid_client");
    }
    let mut tokens = shared.tokens();
    let token = format!("cal-{}-{:016x}", tokens.len() + 1, rand_token());
    tokens.insert(token.clone(), std::time::Instant::now() + TOKEN_LIFETIME);
    Json(json!({
        "access_token": token,
        "token_type": "Bearer",
        "expires_in": TOKEN_LIFETIME.as_secs(),
    }))
    .into_response()
}

/// Bits that keep a token from being guessed from its number (which keeps
/// it unique): the clock's nanoseconds, hashed with a random key.
fn rand_token() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    hasher.finish()
}

fn error(status: StatusCode, message: String) -> Response {
    (status, Json(json!({ "error": message }))).into_response()
}

fn no_calendar(calendar: &str) -> Response {
    error(
        StatusCode::NOT_FOUND,
        format!("there is no calendar {calendar:?}"),
    )
}

/// `answer` of `calendar`'s attendees, once the key is checked; 404 for a
/// calendar that does not exist.
fn reading(
    shared: &Shared,
    headers: &HeaderMap,
    calendar: &str,
    answer: impl FnOnce(&BTreeMap<String, Attendee>) -> serde_json::Value,
) -> Response {
    if !authorized(headers, shared) {
        return unauthorized();
    }
    match shared.calendars().get(calendar) {
        Some(attendees) => Json(answer(attendees)).into_response(),
        None => no_calendar(calendar),
    }
}

async fn calendar(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Path(calendar): Path<String>,
) -> Response {
    reading(
        &shared,
        &headers,
        &calendar,
        |attendees| json!({ "id": calendar, "attendees": attendees.len() }),
    )
}

async fn attendees(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Path(calendar): Path<String>,
) -> Response {
    reading(
        &shared,
        &headers,
        &calendar,
        |attendees| json!({ "attendees": attendees }),
    )
}

async fn put_attendee(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Path((calendar, id)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    if !authorized(&headers, &shared) {
        return unauthorized();
    }
    let attendee: Attendee = match serde_json::from_slice(&body) {
        Ok(attendee) => attendee,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("the body is not an attendee: {e}"),
            );
        }
    };
    if !attendee.email.contains('@') {
        return error(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("{:?} is not an email address", attendee.email),
        );
    }
    if attendee.display_name.trim().is_empty() {
        return error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "an attendee needs a displayName".to_string(),
        );
    }
    let mut calendars = shared.calendars();
    let Some(attendees) = calendars.get_mut(&calendar) else {
        return no_calendar(&calendar);
    };
    let status = match attendees.insert(id, attendee.clone()) {
        None => StatusCode::CREATED,
        Some(_) => StatusCode::OK,
    };
    (status, Json(attendee)).into_response()
}

async fn delete_attendee(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Path((calendar, id)): Path<(String, String)>,
) -> Response {
    if !authorized(&headers, &shared) {
        return unauthorized();
    }
    let mut calendars = shared.calendars();
    let Some(attendees) = calendars.get_mut(&calendar) else {
        return no_calendar(&calendar);
    };
    match attendees.remove(&id) {
        Some(_) => StatusCode::NO_CONTENT.into_response(),
        None => error(
            StatusCode::NOT_FOUND,
            format!("there is no attendee {id:?}"),
        ),
    }
}
