//! `http`: outbound requests, each hop checked against the plugin's
//! effective policy at one choke point ([`decide`]) and audited, allowed or
//! denied. A denial is an error value naming the grant to add, never a trap.
//!
//! Two doors lead to [`Outbound::send`]: the contract's `http` capability
//! and `wasi:http` (the guest language's own client, `wasi.rs`); one policy
//! holds both.
//!
//! The host follows redirects itself, hop by hop, each hop checked again; a
//! credential is injected only into requests to hosts it is bound to, and a
//! secret echoed back is redacted before the guest sees the response.

mod address;
mod client;
mod egress;
mod limiter;
mod oauth2;
mod retry_after;
mod rule;
pub mod tape;
mod wasi;

use std::sync::Arc;
use std::time::{Duration, Instant};

pub use address::is_public;
pub use client::{HttpClient, HttpLimits};
pub use egress::{Egress, ExtraRoots, ProxyConfig, ProxyRoute};
pub use oauth2::{OAuth2, Tokens};
pub use retry_after::{Asked, AskedToWait};
pub use rule::{Denial, HttpPolicy, HttpRule, Target};
pub use tape::{Tape, TapeAnswer, TapeMode};
pub use wasi::{CREDENTIAL_HEADER, WasiHttpDoor};

use crate::audit::AuditLog;
use crate::audit::{AuditEvent, Decision};
use crate::bindings::causeway::plugin::http::{Host, HttpError, Request, Response};
use crate::grants::{CredentialBinding, Injection, Policy};
use crate::plugin::PluginInfo;
use crate::sandbox::StoreState;
use crate::secrets::{Secret, SecretRef, Secrets};

/// Headers a plugin may not set: credentials come from the host, framing
/// from the client.
const FORBIDDEN_HEADERS: &[&str] = &[
    "authorization",
    "proxy-authorization",
    "cookie",
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
];

/// What replaces a secret echoed back by a server.
const REDACTED: &str = "[redacted]";

/// Parses a request's URL and method into the target the policy checks.
pub fn target_of(method: &str, url: &str) -> Result<Target, String> {
    let parsed = url::Url::parse(url)
        .map_err(|e| format!("\"{}\" is not an absolute URL: {e}", shown_url(url)))?;
    target_of_url(method, &parsed)
}

fn target_of_url(method: &str, parsed: &url::Url) -> Result<Target, String> {
    let scheme = parsed.scheme().to_string();
    if scheme != "http" && scheme != "https" {
        return Err(format!("scheme {scheme:?} is not http or https"));
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err("credentials in the URL are refused: name a credential instead".to_string());
    }
    let host = match parsed.host() {
        Some(url::Host::Domain(d)) => d.to_ascii_lowercase(),
        Some(url::Host::Ipv4(ip)) => ip.to_string(),
        Some(url::Host::Ipv6(ip)) => ip.to_string(),
        None => return Err(format!("{} has no host", audit_target(parsed))),
    };
    let port = parsed
        .port_or_known_default()
        .ok_or_else(|| format!("{} has no port", audit_target(parsed)))?;
    let method = method.trim();
    if method.is_empty() || !method.bytes().all(|b| b.is_ascii_alphabetic()) {
        return Err(format!("method {method:?} is not an HTTP method"));
    }
    let path = parsed.path();
    if let Some(segment) = disguised_dot_segment(path) {
        return Err(format!(
            "path {path} holds the segment {segment:?}, which a server may read as \"..\" or \".\" and so step outside the path the grant names: write the path without it"
        ));
    }
    Ok(Target {
        scheme,
        host,
        port,
        method: method.to_ascii_uppercase(),
        path: path.to_string(),
    })
}

/// A segment of a parsed path that is `.` or `..` once a server decodes it.
/// The URL parser already resolves `..`, `.%2e` and the like; what it keeps
/// and servers may still resolve after the grant's check are dots behind an
/// encoded slash or backslash (`..%2Fadmin`) and behind a `;` parameter
/// (`..;`, which Tomcat and Spring strip). Such a path could leave a granted
/// prefix on the server's side, so it is refused; `%2F` alone (GitLab's
/// `group%2Fproject`) and parameters alone (`x;v=1`) are not.
fn disguised_dot_segment(path: &str) -> Option<&str> {
    path.split('/').find(|segment| reads_as_dots(segment))
}

/// A segment of the path as the plugin wrote it that the URL parser
/// resolves (`..`, `.`, `%2e%2e`, with tabs and line breaks dropped as the
/// parser drops them), where the plugin asked for something else: most
/// likely a value put into the path (a record's id of `..` would send a
/// sink's `PUT /v1/contacts/..` to `/v1/`). Escaping cannot help: `%2E` is
/// a dot to the parser too.
fn written_dot_segment(url: &str) -> Option<String> {
    // Copied only when there is something to drop (this runs per request).
    let text: std::borrow::Cow<str> = if url.contains(['\t', '\n', '\r']) {
        url.chars()
            .filter(|c| !matches!(c, '\t' | '\n' | '\r'))
            .collect::<String>()
            .into()
    } else {
        url.into()
    };
    // As the parser reads an http(s) URL: the scheme, any slashes or
    // backslashes (`https:/host`, `https:\\host` are the same URL), the
    // authority, then the path up to a query or fragment.
    let after_scheme = text[text.find(':')? + 1..].trim_start_matches(['/', '\\']);
    let path = &after_scheme[after_scheme.find(['/', '\\', '?', '#'])?..];
    let path = &path[..path.find(['?', '#']).unwrap_or(path.len())];
    path.split(['/', '\\'])
        .find(|segment| {
            let decoded: Vec<u8> = percent_encoding::percent_decode_str(segment).collect();
            decoded == b"." || decoded == b".."
        })
        .map(str::to_string)
}

/// Whether a path segment is `.` or `..` once percent-decoded, split at a
/// decoded slash or backslash, and stripped of a `;` parameter.
fn reads_as_dots(segment: &str) -> bool {
    let decoded: Vec<u8> = percent_encoding::percent_decode_str(segment).collect();
    decoded
        .split(|&b| b == b'/' || b == b'\\')
        .map(|piece| piece.split(|&b| b == b';').next().unwrap_or_default())
        .any(|piece| piece == b"." || piece == b"..")
}

/// The URL as the audit log shows it: query values and any user or
/// password redacted.
fn audit_target(url: &url::Url) -> String {
    let keys: Vec<String> = url.query_pairs().map(|(k, _)| format!("{k}=…")).collect();
    let base = format!(
        "{}{}",
        &url[..url::Position::BeforeUsername],
        &url[url::Position::BeforeHost..url::Position::AfterPath]
    );
    if keys.is_empty() {
        base.to_string()
    } else {
        format!("{base}?{}", keys.join("&"))
    }
}

/// A request's method as the audit log shows it: the plugin's text, with
/// anything unprintable escaped.
fn shown_method(method: &str) -> String {
    method
        .trim()
        .to_ascii_uppercase()
        .escape_debug()
        .to_string()
}

/// A request's URL as the audit log shows it: query values redacted, and
/// for text that is not a URL, the part before any `?`, escaped.
fn shown_url(text: &str) -> String {
    match url::Url::parse(text) {
        Ok(url) => audit_target(&url),
        Err(_) => match text.split_once('?') {
            Some((base, _)) => format!("{}?…", base.escape_debug()),
            None => text.escape_debug().to_string(),
        },
    }
}

/// A request past the checks that need no grant.
struct Prepared {
    url: url::Url,
    method: String,
    /// The plugin's own headers, checked.
    headers: reqwest::header::HeaderMap,
    body: Vec<u8>,
    /// The credential it names, and how it is bound.
    binding: Option<(String, CredentialBinding)>,
    /// The request's own deadline: its timeout, within the call's.
    deadline: Instant,
}

/// The one check every hop passes through, whichever door it came by: the
/// policy, then, for an IP literal that is not public, whether a grant names
/// it.
pub fn decide(plugin: &PluginInfo, policy: &Policy, target: &Target) -> Result<(), String> {
    policy
        .http
        .check(&plugin.name, &policy.requested_http, target)
        .map_err(|d| d.to_string())?;
    if let Ok(ip) = target.host.parse::<std::net::IpAddr>()
        && !is_public(ip)
        && !policy.http.rules.iter().any(|r| r.host == target.host)
    {
        return Err(format!(
            "plugin {} may not reach {}: a non-public address is reachable only when a grant names it explicitly",
            plugin.name, target.host
        ));
    }
    Ok(())
}

/// The way a request came in: both are held to the same policy, and the
/// audit log says which one it was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Door {
    /// The contract's `causeway:plugin/http` capability.
    Capability,
    /// `wasi:http/outgoing-handler`: the guest language's own HTTP client.
    WasiHttp,
}

/// Everything one outbound request is checked and sent with, owned, so a
/// request can run on its own task (wasi:http sends off the store).
#[derive(Clone)]
pub struct Outbound {
    /// Who is asking.
    pub plugin: Arc<PluginInfo>,
    /// What it may do.
    pub policy: Arc<Policy>,
    /// Where each hop is recorded.
    pub audit: AuditLog,
    /// The secrets credentials are resolved from.
    pub secrets: Arc<Secrets>,
    /// The plugin version's client, if it may use HTTP.
    pub client: Option<Arc<HttpClient>>,
    /// When the plugin call's requests must end, a little before the call
    /// itself ([`crate::sandbox::requests_until`]): no request outlives it.
    pub deadline: Instant,
    /// How the request came in.
    pub door: Door,
    /// The longest wait a rate-limit answer (429, or 403 with Retry-After) asked of the call.
    pub asked_to_wait: AskedToWait,
}

/// Replaces every occurrence of each of `secrets` in `text`.
fn redact_text(text: &str, secrets: &[String]) -> String {
    // As bytes: one copy, and none more unless a secret is there (this runs
    // on every response header). A secret is whole UTF-8 characters and the
    // replacement is ASCII, so the result is still UTF-8.
    let redacted = redact_bytes(text.as_bytes().to_vec(), secrets);
    String::from_utf8(redacted)
        .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

/// Where `needle` (not empty) first occurs in `haystack` at or after `from`.
fn find(haystack: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    let last = haystack.len().checked_sub(needle.len())?;
    // Compare whole windows only where the first byte matches: a response
    // is read once per request, and most bytes start no secret.
    (from..=last).find(|&i| haystack[i] == needle[0] && haystack[i..].starts_with(needle))
}

fn redact_bytes(body: Vec<u8>, secrets: &[String]) -> Vec<u8> {
    let mut body = body;
    for secret in secrets.iter().filter(|s| !s.is_empty()) {
        let needle = secret.as_bytes();
        // The usual case, no echo: the body is kept as it is, not copied.
        let Some(mut at) = find(&body, needle, 0) else {
            continue;
        };
        let mut out = Vec::with_capacity(body.len());
        let mut from = 0;
        loop {
            out.extend_from_slice(&body[from..at]);
            out.extend_from_slice(REDACTED.as_bytes());
            from = at + needle.len();
            match find(&body, needle, from) {
                Some(next) => at = next,
                None => break,
            }
        }
        out.extend_from_slice(&body[from..]);
        body = out;
    }
    body
}

/// The forms of a secret a server could echo.
fn secret_forms(binding: &CredentialBinding, secret: &Secret) -> Vec<String> {
    let mut forms = echoed_forms(secret);
    match binding.inject {
        Injection::Basic => forms.insert(1, base64_encode(secret.expose().as_bytes())),
        // As a JSON string writes it (quotes and backslashes escaped).
        Injection::Json(_) => {
            let quoted = serde_json::Value::from(secret.expose()).to_string();
            let escaped = quoted[1..quoted.len() - 1].to_string();
            if escaped != secret.expose() {
                forms.push(escaped);
            }
        }
        _ => {}
    }
    forms
}

/// How a secret sent in a form body could come back: as it is, or
/// URL-encoded.
fn echoed_forms(secret: &Secret) -> Vec<String> {
    vec![
        secret.expose().to_string(),
        url::form_urlencoded::byte_serialize(secret.expose().as_bytes()).collect(),
    ]
}

/// Standard base64 with padding, as `Authorization: Basic` carries it.
fn base64_encode(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// How one hop ended.
enum Exchange {
    /// A redirect to follow.
    Redirect { status: u16, location: String },
    /// The final answer.
    Done(Response),
}

impl Exchange {
    fn to_tape(&self) -> TapeAnswer {
        match self {
            Exchange::Redirect { status, location } => TapeAnswer {
                status: *status,
                headers: vec![("location".to_string(), location.clone())],
                body: Vec::new(),
            },
            Exchange::Done(response) => TapeAnswer {
                status: response.status,
                headers: response.headers.clone(),
                body: response.body.clone(),
            },
        }
    }
}

/// One hop answered from a tape instead of the network.
fn replayed(
    tape: &Tape,
    method: &str,
    url: &url::Url,
    body: &[u8],
    target: &Target,
    max_response_bytes: u64,
) -> Result<Exchange, HopFailure> {
    let Some(answer) = tape.answer(method, url.as_str(), body) else {
        return Err(HopFailure {
            error: HttpError::Network(format!(
                "{target}: {} holds no recorded answer to {method} {url}{}: record the fixtures again (causeway test --record) against the live API",
                tape.file().display(),
                if body.is_empty() {
                    String::new()
                } else {
                    format!(" with this {}-byte body", body.len())
                },
            )),
            detail: "no recorded answer".to_string(),
        });
    };
    if answer.body.len() as u64 > max_response_bytes {
        return Err(HopFailure {
            error: HttpError::TooLarge(format!(
                "{target}: the response is larger than the limit of {max_response_bytes} bytes"
            )),
            detail: format!(
                "status {}, recorded response over {max_response_bytes} bytes",
                answer.status
            ),
        });
    }
    let location = answer
        .headers
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case("location"))
        .map(|(_, value)| value.clone());
    Ok(match location {
        Some(location) if matches!(answer.status, 301 | 302 | 303 | 307 | 308) => {
            Exchange::Redirect {
                status: answer.status,
                location,
            }
        }
        _ => Exchange::Done(Response {
            status: answer.status,
            headers: answer.headers,
            body: answer.body,
        }),
    })
}

/// A failed hop: what the plugin sees, and what the audit log records.
struct HopFailure {
    error: HttpError,
    detail: String,
}

/// A header value that is never logged (reqwest hides sensitive values).
fn sensitive(value: &str, credential: &str) -> Result<reqwest::header::HeaderValue, HttpError> {
    let mut value = reqwest::header::HeaderValue::from_str(value).map_err(|_| {
        HttpError::InvalidRequest(format!(
            "credential {credential:?} is not a valid header value"
        ))
    })?;
    value.set_sensitive(true);
    Ok(value)
}

/// Puts the credential into the request as its binding says; `body` is
/// the plugin's, and the one to send if the credential goes there.
fn inject(
    headers: &mut reqwest::header::HeaderMap,
    url: &mut url::Url,
    body: &mut std::borrow::Cow<'_, [u8]>,
    name: &str,
    binding: &CredentialBinding,
    secret: &Secret,
) -> Result<(), HttpError> {
    use reqwest::header::{AUTHORIZATION, HeaderName};
    match &binding.inject {
        Injection::Bearer => {
            headers.insert(
                AUTHORIZATION,
                sensitive(&format!("Bearer {}", secret.expose()), name)?,
            );
        }
        Injection::Basic => {
            let encoded = base64_encode(secret.expose().as_bytes());
            headers.insert(AUTHORIZATION, sensitive(&format!("Basic {encoded}"), name)?);
        }
        Injection::Header(header) => {
            let header = HeaderName::from_bytes(header.as_bytes()).map_err(|_| {
                HttpError::InvalidRequest(format!("credential {name:?}: bad header name"))
            })?;
            headers.insert(header, sensitive(secret.expose(), name)?);
        }
        Injection::Query(param) => {
            // As for a header: the credential replaces the plugin's own.
            // The other pairs are kept as written (decoded and encoded
            // again, `%20` would become `+`).
            if let Some(query) = url.query() {
                let named = |pair: &&str| {
                    url::form_urlencoded::parse(pair.as_bytes())
                        .next()
                        .is_some_and(|(name, _)| name == param.as_str())
                };
                if query.split('&').any(|pair| named(&pair)) {
                    let kept: Vec<&str> = query.split('&').filter(|p| !named(p)).collect();
                    let kept = kept.join("&");
                    url.set_query((!kept.is_empty()).then_some(kept.as_str()));
                }
            }
            url.query_pairs_mut().append_pair(param, secret.expose());
        }
        Injection::Json(field) => {
            // Set in the object the plugin wrote, replacing a field of that
            // name as a header's credential replaces the plugin's own.
            let mut object: serde_json::Map<String, serde_json::Value> =
                serde_json::from_slice(body).map_err(|_| {
                    HttpError::InvalidRequest(format!(
                        "credential {name:?} goes in the body's {field:?} field, and the body is not a JSON object"
                    ))
                })?;
            object.insert(field.clone(), secret.expose().into());
            *body = std::borrow::Cow::Owned(
                serde_json::to_vec(&object)
                    .map_err(|e| HttpError::InvalidRequest(format!("credential {name:?}: {e}")))?,
            );
        }
    }
    Ok(())
}

/// Sends one hop and reads its answer, within `deadline` and the size limit;
/// `via` the proxy it goes through, if any.
async fn exchange(
    request: reqwest::RequestBuilder,
    target: &Target,
    deadline: Instant,
    max_response_bytes: u64,
    echoes: &[String],
    via: Option<&ProxyRoute>,
) -> Result<Exchange, HopFailure> {
    let network = |e: reqwest::Error| {
        let mut message = redact_text(&error_chain(&e.without_url()), echoes);
        if let Some(proxy) = via {
            message = format!("{message} ({})", proxy.failed(None));
        }
        HopFailure {
            error: HttpError::Network(format!("{target}: {message}")),
            detail: format!("failed: {message}"),
        }
    };
    let timed_out = |what: &str| HopFailure {
        error: HttpError::Timeout(format!("{target}: {what} did not arrive in time")),
        detail: format!("timed out waiting for {what}"),
    };
    let remaining = deadline.saturating_duration_since(Instant::now());
    let mut response = tokio::time::timeout(remaining, request.send())
        .await
        .map_err(|_| timed_out("the answer"))?
        .map_err(network)?;
    let status = response.status().as_u16();
    // The proxy's answer, not the API's: no server answers 407 but one.
    if let Some(proxy) = via
        && status == 407
    {
        let message = proxy.failed(Some(status));
        return Err(HopFailure {
            error: HttpError::Network(format!("{target}: {message}")),
            detail: format!("failed: {message}"),
        });
    }
    if matches!(status, 301 | 302 | 303 | 307 | 308)
        && let Some(location) = response
            .headers()
            .get(reqwest::header::LOCATION)
            .and_then(|v| v.to_str().ok())
    {
        return Ok(Exchange::Redirect {
            status,
            location: location.to_string(),
        });
    }
    let headers: Vec<(String, String)> = response
        .headers()
        .iter()
        .map(|(n, v)| {
            (
                n.as_str().to_string(),
                redact_text(&String::from_utf8_lossy(v.as_bytes()), echoes),
            )
        })
        .collect();
    let mut body = Vec::new();
    loop {
        let remaining = deadline.saturating_duration_since(Instant::now());
        let chunk = tokio::time::timeout(remaining, response.chunk())
            .await
            .map_err(|_| timed_out("the body"))?
            .map_err(network)?;
        let Some(chunk) = chunk else { break };
        if (body.len() + chunk.len()) as u64 > max_response_bytes {
            return Err(HopFailure {
                error: HttpError::TooLarge(format!(
                    "{target}: the response is larger than the limit of {max_response_bytes} bytes"
                )),
                detail: format!(
                    "status {status}, response cut off over {max_response_bytes} bytes"
                ),
            });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Exchange::Done(Response {
        status,
        headers,
        body: redact_bytes(body, echoes),
    }))
}

impl Outbound {
    /// The store's view of outbound HTTP, for a request coming in by `door`.
    pub fn of(state: &StoreState, door: Door) -> Outbound {
        Outbound {
            plugin: state.plugin.clone(),
            policy: state.policy.clone(),
            audit: state.audit.clone(),
            secrets: state.secrets.clone(),
            client: state.http.clone(),
            deadline: state.requests_until,
            door,
            asked_to_wait: state.asked_to_wait.clone(),
        }
    }

    /// The OAuth 2.0 access token of credential `name`: kept, or fetched
    /// now with `client_secret`, the fetch audited as the host's own
    /// request on the plugin's behalf. A refusal by the token endpoint is
    /// `denied` (an operator must act); one that may pass, `network`.
    async fn access_token(
        &self,
        client: &HttpClient,
        name: &str,
        binding: &CredentialBinding,
        oauth: &oauth2::OAuth2,
        client_secret: &Secret,
        deadline: Instant,
    ) -> Result<Secret, HttpError> {
        let refresh = match &oauth.refresh_token {
            Some(reference) => Some(self.secrets.resolve(reference).map_err(|m| {
                HttpError::InvalidRequest(format!("credential {name:?}: refresh token: {m}"))
            })?),
            None => None,
        };
        let started = Instant::now();
        let (outcome, fetched) = client
            .tokens
            .get(
                name,
                oauth,
                oauth2::TokenRequest {
                    client: &client.client,
                    client_secret,
                    refresh: refresh.as_ref(),
                    deadline,
                },
            )
            .await;
        // A token endpoint's words may echo what it was sent.
        let mut sent = echoed_forms(client_secret);
        if oauth.client_auth == oauth2::ClientAuth::Basic {
            sent.push(oauth.basic_credentials(client_secret));
        }
        if let Some(refresh) = &refresh {
            sent.extend(echoed_forms(refresh));
        }
        let outcome = outcome.map_err(|e| match e {
            oauth2::TokenError::Refused(m) => oauth2::TokenError::Refused(redact_text(&m, &sent)),
            oauth2::TokenError::Failed(m) => oauth2::TokenError::Failed(redact_text(&m, &sent)),
        });
        if let Some(fetched) = fetched {
            let took = started.elapsed().as_millis();
            let kept = match (&fetched.rotated, &oauth.refresh_token) {
                (Some(new), Some(reference)) => {
                    format!(", {}", self.keep_rotated(name, reference, new).await)
                }
                _ => String::new(),
            };
            let status = fetched
                .status
                .map_or_else(|| "no answer".to_string(), |s| format!("status {s}"));
            let detail = match (&outcome, fetched.lifetime) {
                (Ok(_), Some(life)) => format!(
                    "OAuth2 token for credential {name}: {status}, valid {} s{kept}, {took} ms",
                    life.as_secs()
                ),
                (Ok(_), None) => {
                    format!("OAuth2 token for credential {name}: {status}{kept}, {took} ms")
                }
                (Err(oauth2::TokenError::Refused(m) | oauth2::TokenError::Failed(m)), _) => {
                    format!("OAuth2 token for credential {name}: failed: {m}, {took} ms")
                }
            };
            let token_url = audit_target(&oauth.token_url);
            let target =
                target_of_url("POST", &oauth.token_url).map_err(HttpError::InvalidRequest)?;
            self.audit(&target, &token_url, Decision::Allowed, detail);
        }
        outcome.map_err(|e| match e {
            oauth2::TokenError::Refused(m) => {
                let error = format!(
                    "credential {name:?}: {m}: check its oauth2 binding in grants.toml and its {} {}",
                    match oauth.secret_is_key() {
                        true => "private key",
                        false => "client secret",
                    },
                    binding.secret
                );
                tracing::error!(plugin = %self.plugin.label(), "{error}");
                HttpError::Denied(error)
            }
            oauth2::TokenError::Failed(m) => {
                HttpError::Network(format!("credential {name:?}: {m}"))
            }
        })
    }

    /// Keeps a refresh token the server rotated where the binding's
    /// reference points, when it is a key of the secrets file, so a restart
    /// sends it rather than the one it replaced (which servers such as
    /// Xero's revoke). What was done, for the fetch's audit row.
    async fn keep_rotated(&self, name: &str, reference: &SecretRef, new: &Secret) -> String {
        let SecretRef::File(key) = reference else {
            tracing::warn!(
                plugin = %self.plugin.label(),
                "credential {name:?}: the token endpoint rotated the refresh token; the new one is used, but {reference} cannot be rewritten, so after a restart the old one is sent (a file: reference keeps it)"
            );
            return format!(
                "refresh token rotated, kept in memory only ({reference} cannot be rewritten)"
            );
        };
        let (secrets, key_owned, value) = (self.secrets.clone(), key.clone(), new.clone());
        let kept = tokio::task::spawn_blocking(move || secrets.keep(&key_owned, &value))
            .await
            .unwrap_or_else(|e| Err(format!("the write did not finish: {e}")));
        match kept {
            Ok(file) => format!("refresh token rotated, kept in {} as {key}", file.display()),
            Err(e) => {
                tracing::warn!(
                    plugin = %self.plugin.label(),
                    "credential {name:?}: the token endpoint rotated the refresh token; the new one is used, but it cannot be kept as {reference}: {e}; after a restart the old one is sent"
                );
                format!("refresh token rotated, kept in memory only: {e}")
            }
        }
    }

    /// Records a use; `false` for a denial over the call's budget (then
    /// nothing is logged either).
    fn audit(&self, target: &Target, shown: &str, decision: Decision, detail: String) -> bool {
        let detail = match self.door {
            Door::Capability => detail,
            Door::WasiHttp => format!("{detail} (wasi:http)"),
        };
        self.audit.record(AuditEvent::new(
            &self.plugin,
            "http",
            &target.method,
            shown,
            decision,
            detail,
        ))
    }

    /// Records a request the host will not send as it stands (malformed,
    /// or allowed but not sendable) as a denied use, and hands back the
    /// error for the plugin. A probing plugin leaves a trace like a denied
    /// one, within the same per-call budget.
    fn refuse(&self, method: &str, shown: &str, error: HttpError) -> HttpError {
        let reason = match &error {
            HttpError::Denied(m)
            | HttpError::InvalidRequest(m)
            | HttpError::Timeout(m)
            | HttpError::TooLarge(m)
            | HttpError::Network(m) => m.clone(),
        };
        let detail = match self.door {
            Door::Capability => reason.clone(),
            Door::WasiHttp => format!("{reason} (wasi:http)"),
        };
        if self.audit.record(AuditEvent::new(
            &self.plugin,
            "http",
            method,
            shown,
            Decision::Denied,
            detail.clone(),
        )) {
            tracing::warn!(plugin = %self.plugin.label(), "http request to {shown} not sent: {detail}");
        }
        error
    }

    /// Refuses a request the door could not even read (wasi:http): `url`
    /// is the guest's text.
    pub(crate) fn refuse_unread(&self, method: &str, url: &str, error: HttpError) -> HttpError {
        self.refuse(&shown_method(method), &shown_url(url), error)
    }

    /// The checks that need no grant: what the plugin may not set, sizes,
    /// its credential's binding, the URL's form. Takes the body and the
    /// credential out of `req`; the rest stays to name a refusal.
    fn prepare(&self, req: &mut Request) -> Result<Prepared, HttpError> {
        let limits = self.policy.http_limits;
        let mut headers = reqwest::header::HeaderMap::new();
        for (name, value) in &req.headers {
            if FORBIDDEN_HEADERS.contains(&name.to_ascii_lowercase().as_str()) {
                return Err(HttpError::InvalidRequest(format!(
                    "header {name:?} is set by the host: name a credential instead of sending one"
                )));
            }
            let name = reqwest::header::HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| HttpError::InvalidRequest(format!("bad header name {name:?}")))?;
            let value = reqwest::header::HeaderValue::from_str(value)
                .map_err(|_| HttpError::InvalidRequest(format!("bad value for header {name}")))?;
            headers.append(name, value);
        }
        let body = req.body.take().unwrap_or_default();
        if body.len() as u64 > limits.max_request_bytes {
            return Err(HttpError::TooLarge(format!(
                "the request body is {} bytes; the limit is {}",
                body.len(),
                limits.max_request_bytes
            )));
        }
        let binding = match req.credential.take() {
            None => None,
            Some(name) => {
                let binding = self.policy.credentials.get(&name).cloned().ok_or_else(|| {
                    HttpError::InvalidRequest(format!(
                        "credential {name:?} is not requested in the manifest or not bound in grants.toml"
                    ))
                })?;
                Some((name, binding))
            }
        };
        // Named as the audit log shows it: a query's values may be a
        // record's data.
        let url = url::Url::parse(&req.url).map_err(|e| {
            HttpError::InvalidRequest(format!(
                "\"{}\" is not an absolute URL: {e}",
                shown_url(&req.url)
            ))
        })?;
        if let Some(segment) = written_dot_segment(&req.url) {
            return Err(HttpError::InvalidRequest(format!(
                "the URL's path holds the segment {segment:?}, which the URL parser resolves, so the request would go to {} instead: a path segment may not be \".\" or \"..\", escaped or not (%2E is a dot too); is a record's value in the path?",
                url.path()
            )));
        }
        let timeout = req
            .timeout_ms
            .map(|ms| Duration::from_millis(u64::from(ms)))
            .unwrap_or(limits.timeout)
            .min(limits.timeout);
        Ok(Prepared {
            url,
            method: req.method.to_ascii_uppercase(),
            headers,
            body,
            binding,
            deadline: (Instant::now() + timeout).min(self.deadline),
        })
    }

    /// Checks, sends and audits one request, following redirects hop by hop.
    /// Every request is audited, whatever stops it.
    pub async fn send(&self, mut req: Request) -> Result<Response, HttpError> {
        let Prepared {
            mut url,
            mut method,
            headers: asked,
            mut body,
            binding,
            deadline,
        } = self
            .prepare(&mut req)
            // Named only when refused: an allowed request parses its URL once.
            .map_err(|e| self.refuse(&shown_method(&req.method), &shown_url(&req.url), e))?;
        let limits = self.policy.http_limits;
        // The secret is resolved once the first hop is allowed: the policy
        // speaks before a missing secret does.
        let mut secret: Option<Secret> = None;
        let mut echoes: Vec<String> = Vec::new();
        // Whether `secret` is an OAuth 2.0 access token, which a 401
        // has the host forget; and whether it was renewed so once.
        let mut oauth_injected = false;
        let mut renewed = false;
        let mut hop = 0;
        while hop <= limits.max_redirects {
            let shown = audit_target(&url);
            let target = target_of_url(&method, &url).map_err(|m| {
                self.refuse(&shown_method(&method), &shown, HttpError::InvalidRequest(m))
            })?;
            if let Err(reason) = decide(&self.plugin, &self.policy, &target) {
                if self.audit(&target, &shown, Decision::Denied, reason.clone()) {
                    tracing::warn!(plugin = %self.plugin.label(), "http request denied: {reason}");
                }
                return Err(HttpError::Denied(reason));
            }
            let refuse = |error| self.refuse(&target.method, &shown, error);
            let Some(client) = &self.client else {
                return Err(refuse(HttpError::Network(
                    "the host could not build the plugin's HTTP client: its log says why"
                        .to_string(),
                )));
            };
            // The plugin's headers first: a credential's header replaces
            // any of the same name.
            let mut headers = asked.clone();
            let mut request_url = url.clone();
            // The plugin's body, unless a credential goes in it.
            let mut hop_body = std::borrow::Cow::Borrowed(body.as_slice());
            if let Some((name, binding)) = &binding {
                if hop == 0 && !renewed {
                    // Allowed, but not made: the security team sees the
                    // attempt, and the operator why (the secret's source,
                    // never its value).
                    let value = self.secrets.resolve(&binding.secret).map_err(|m| {
                        refuse(HttpError::InvalidRequest(format!(
                            "credential {name:?}: {m}"
                        )))
                    })?;
                    if !binding.binds(&target.host) {
                        let reason = format!(
                            "credential {name:?} is not bound to host {}: bind it in grants.toml ([plugins.{}.credentials.{name}] hosts)",
                            target.host, self.plugin.name
                        );
                        self.audit(&target, &shown, Decision::Denied, reason.clone());
                        return Err(HttpError::Denied(reason));
                    }
                    // With OAuth 2.0 the secret is the client's, sent only
                    // to the token endpoint: the token is what is injected.
                    let value = match &binding.oauth2 {
                        None => value,
                        Some(oauth) => {
                            echoes = echoed_forms(&value);
                            let token = self
                                .access_token(client, name, binding, oauth, &value, deadline)
                                .await
                                .map_err(|e| self.refuse(&target.method, &shown, e))?;
                            oauth_injected = true;
                            token
                        }
                    };
                    echoes.extend(secret_forms(binding, &value));
                    secret = Some(value);
                }
                // A redirect to a host the credential is not bound to: it
                // is not carried.
                if let Some(value) = &secret
                    && binding.binds(&target.host)
                {
                    inject(
                        &mut headers,
                        &mut request_url,
                        &mut hop_body,
                        name,
                        binding,
                        value,
                    )
                    .map_err(refuse)?;
                }
            }
            let reqwest_method = reqwest::Method::from_bytes(method.as_bytes())
                .map_err(|_| refuse(HttpError::InvalidRequest(format!("bad method {method:?}"))))?;
            let mut request = client
                .client
                .request(reqwest_method, request_url)
                .headers(headers);
            if !hop_body.is_empty() {
                request = request.body(hop_body.into_owned());
            }
            // One slot and one token per hop, held until its answer is read.
            let _permit = match client.limiter.admit(deadline).await {
                Ok(permit) => permit,
                Err(throttled) => {
                    let reason = throttled.to_string();
                    if self.audit(
                        &target,
                        &shown,
                        Decision::Denied,
                        format!("throttled: {reason}"),
                    ) {
                        tracing::warn!(plugin = %self.plugin.label(), "http request throttled: {reason}");
                    }
                    return Err(HttpError::Timeout(format!("{target}: {reason}")));
                }
            };
            let started = Instant::now();
            let outcome = match &client.tape {
                Some(tape) if tape.mode() == TapeMode::Replay => replayed(
                    tape,
                    &method,
                    &url,
                    &body,
                    &target,
                    limits.max_response_bytes,
                ),
                tape => {
                    let via = client
                        .proxy
                        .as_deref()
                        .filter(|proxy| !proxy.goes_direct(&target.host));
                    let outcome = exchange(
                        request,
                        &target,
                        deadline,
                        limits.max_response_bytes,
                        &echoes,
                        via,
                    )
                    .await;
                    if let (Some(tape), Ok(answer)) = (tape, &outcome) {
                        tape.keep(&method, url.as_str(), &body, &answer.to_tape());
                    }
                    outcome
                }
            };
            let took = started.elapsed().as_millis();
            match outcome {
                Err(HopFailure { error, detail }) => {
                    self.audit(
                        &target,
                        &shown,
                        Decision::Allowed,
                        format!("{detail}, {took} ms"),
                    );
                    return Err(error);
                }
                Ok(Exchange::Done(response)) => {
                    let detail = format!(
                        "status {}, {} bytes out, {} bytes in, {took} ms",
                        response.status,
                        body.len(),
                        response.body.len()
                    );
                    self.audit(&target, &shown, Decision::Allowed, detail);
                    self.asked_to_wait.note(response.status, &response.headers);
                    // The API no longer takes the token it was sent (revoked,
                    // or expired early): the host gets another and sends the
                    // request again, once; a second 401 is the plugin's.
                    if response.status == 401
                        && oauth_injected
                        && let Some((name, b)) = &binding
                        && let Some(sent) = &secret
                        && b.binds(&target.host)
                    {
                        client.tokens.forget(name, sent, deadline).await;
                        if !renewed && let Some(oauth) = &b.oauth2 {
                            renewed = true;
                            let client_secret = self.secrets.resolve(&b.secret).map_err(|m| {
                                refuse(HttpError::InvalidRequest(format!(
                                    "credential {name:?}: {m}"
                                )))
                            })?;
                            let token = self
                                .access_token(client, name, b, oauth, &client_secret, deadline)
                                .await
                                .map_err(|e| self.refuse(&target.method, &shown, e))?;
                            echoes.extend(secret_forms(b, &token));
                            secret = Some(token);
                            continue;
                        }
                    }
                    return Ok(response);
                }
                Ok(Exchange::Redirect { status, location }) => {
                    let detail = format!(
                        "status {status}, redirect, {} bytes out, {took} ms",
                        body.len()
                    );
                    self.audit(&target, &shown, Decision::Allowed, detail);
                    url = url.join(&location).map_err(|e| {
                        HttpError::Network(format!("{target}: bad redirect location: {e}"))
                    })?;
                    if status == 303 || (matches!(status, 301 | 302) && method == "POST") {
                        method = "GET".to_string();
                        body.clear();
                    }
                    hop += 1;
                }
            }
        }
        Err(HttpError::Network(format!(
            "{}: more than {} redirects",
            audit_target(&url),
            limits.max_redirects
        )))
    }
}

/// An error and its causes on one line (reqwest hides the useful part in
/// the source chain).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut message = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    message
}

impl Host for StoreState {
    async fn send(&mut self, req: Request) -> wasmtime::Result<Result<Response, HttpError>> {
        Ok(Outbound::of(self, Door::Capability).send(req).await)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_are_normalised_before_the_check() {
        let t = target_of("get", "https://API.Example.com/v1/a/../contacts?x=1").unwrap();
        assert_eq!(t.host, "api.example.com");
        assert_eq!(t.port, 443);
        assert_eq!(t.method, "GET");
        assert_eq!(t.path, "/v1/contacts");
        assert_eq!(target_of("GET", "http://127.1/").unwrap().host, "127.0.0.1");
        assert_eq!(
            target_of("GET", "http://0x7f000001/").unwrap().host,
            "127.0.0.1"
        );
        assert_eq!(
            target_of("GET", "http://[::ffff:7f00:1]/").unwrap().host,
            "::ffff:127.0.0.1"
        );
    }

    #[test]
    fn a_path_a_server_could_read_outside_its_prefix_is_refused() {
        for path in [
            "/api/..%2Fadmin",
            "/api/..%2fadmin",
            "/api/%2e%2e%2Fadmin",
            "/api/..%5Cadmin",
            "/api/..;/admin",
            "/api/..;jsessionid=x/admin",
            "/api/.;/x",
            "/api/x%2F.%2Fy",
        ] {
            let error = target_of("GET", &format!("https://a.example{path}")).unwrap_err();
            assert!(
                error.contains("write the path without it"),
                "{path}: {error}"
            );
        }
        // What the parser resolves itself, and what holds no dot segment.
        for (path, seen) in [
            ("/api/%2e%2e/admin", "/admin"),
            ("/api/.%2E/x", "/x"),
            ("/api/group%2Fproject", "/api/group%2Fproject"),
            ("/api/x;v=1", "/api/x;v=1"),
            ("/api/a..b/%2e%2e.json", "/api/a..b/%2e%2e.json"),
            ("/api/%zz/..x/%2", "/api/%zz/..x/%2"),
            ("/api/caf%C3%A9", "/api/caf%C3%A9"),
        ] {
            let target = target_of("GET", &format!("https://a.example{path}"));
            assert_eq!(target.map(|t| t.path), Ok(seen.to_string()), "{path}");
        }
    }

    #[test]
    fn a_dot_segment_as_written_is_found_however_spelt() {
        for (url, segment) in [
            ("https://a.example/v1/contacts/..", ".."),
            ("https://a.example/v1/contacts/../x?y=1", ".."),
            ("https://a.example/v1/./contacts", "."),
            ("https://a.example/v1/%2E%2e/x", "%2E%2e"),
            ("https://a.example/v1/.%2E", ".%2E"),
            ("https://a.example/v1/.\t./x", ".."),
            ("https://a.example/v1\\..\\x", ".."),
            ("https:/a.example/v1/..", ".."),
            ("https:a.example/v1/..", ".."),
            ("https:\\\\a.example\\..", ".."),
        ] {
            assert_eq!(written_dot_segment(url).as_deref(), Some(segment), "{url}");
        }
        for url in [
            "https://a.example/v1/contacts/c-1?next=../x",
            "https://a.example/v1/contacts#..",
            "https://a.example/v1/.../a..b/.x",
            "https://a.example",
            "https://a.example?q=..",
            "not a url/..",
        ] {
            assert_eq!(written_dot_segment(url), None, "{url}");
        }
    }

    #[test]
    fn malformed_requests_are_refused() {
        assert!(target_of("GET", "ftp://a.example/").is_err());
        assert!(target_of("GET", "/relative").is_err());
        assert!(target_of("GET", "https://user:pw@a.example/").is_err());
        assert!(target_of("G T", "https://a.example/").is_err());
    }

    /// An outbound door for a plugin whose manifest asks no HTTP: no
    /// rule, so no client.
    fn ungranted(audit: AuditLog) -> Outbound {
        Outbound {
            plugin: Arc::new(PluginInfo::for_tests("quiet")),
            policy: Arc::default(),
            audit,
            secrets: Arc::new(Secrets::in_memory("test", Default::default())),
            client: None,
            deadline: Instant::now() + Duration::from_secs(5),
            door: Door::Capability,
            asked_to_wait: AskedToWait::default(),
        }
    }

    #[tokio::test]
    async fn every_request_is_audited_whatever_stops_it() {
        let (_dir, db, writer) = crate::db::Writer::temporary();
        let outbound = ungranted(AuditLog::new(writer.handle()).for_call());
        let request = |method: &str, url: &str, headers: &[(&str, &str)]| Request {
            method: method.into(),
            url: url.into(),
            headers: headers
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect(),
            body: None,
            credential: None,
            timeout_ms: None,
        };
        let cases = [
            // A plugin whose manifest asks no HTTP has no client: the
            // policy still speaks first.
            (
                request("GET", "https://api.example/v1", &[]),
                "GET",
                "https://api.example/v1",
                "its manifest does not request it",
            ),
            (
                request(
                    "GET",
                    "https://api.example/v1",
                    &[("Authorization", "Bearer mine")],
                ),
                "GET",
                "https://api.example/v1",
                "is set by the host",
            ),
            (
                request("GET", "https://api.example/v1", &[("bad name", "x")]),
                "GET",
                "https://api.example/v1",
                "bad header name",
            ),
            (
                request("G\u{1b}T", "https://api.example/", &[]),
                "G\\u{1b}T",
                "https://api.example/",
                "is not an HTTP method",
            ),
            (
                request("GET", "ftp://files.example/a", &[]),
                "GET",
                "ftp://files.example/a",
                "is not http or https",
            ),
            (
                request("GET", "https://me:pw@api.example/", &[]),
                "GET",
                "https://api.example/",
                "credentials in the URL",
            ),
            (
                request("GET", "nowhere/\n?q=secret", &[]),
                "GET",
                "nowhere/\\n?…",
                "is not an absolute URL",
            ),
        ];
        let mut credential = request("GET", "https://api.example/", &[]);
        credential.credential = Some("token".into());
        let cases = cases.into_iter().chain([(
            credential,
            "GET",
            "https://api.example/",
            "not requested in the manifest",
        )]);
        let mut expected = Vec::new();
        for (req, method, shown, says) in cases {
            let error = format!("{:?}", outbound.send(req).await.unwrap_err());
            assert!(error.contains(says), "{shown}: {error}");
            expected.push((method.to_string(), shown.to_string(), says));
        }
        writer.close();

        let conn = rusqlite::Connection::open(&db).unwrap();
        let rows = crate::audit::query::query(&conn, &Default::default()).unwrap();
        assert_eq!(rows.len(), expected.len(), "{rows:#?}");
        assert!(
            rows.iter().all(|r| !r.event.detail.contains("secret")),
            "a query's values are not kept, in the target or the detail"
        );
        for (row, (method, shown, says)) in rows.iter().zip(&expected) {
            let event = &row.event;
            assert_eq!(
                (event.capability.as_str(), event.decision),
                ("http", Decision::Denied)
            );
            assert_eq!((&event.action, &event.target), (method, shown));
            assert!(event.detail.contains(says), "{event:?}");
        }
    }

    #[test]
    fn audit_targets_hide_query_values() {
        let url = url::Url::parse("https://a.example/v1?token=s3cret&page=2").unwrap();
        assert_eq!(audit_target(&url), "https://a.example/v1?token=…&page=…");
        let url = url::Url::parse("https://u:p@a.example:8443/v1?k=v").unwrap();
        assert_eq!(audit_target(&url), "https://a.example:8443/v1?k=…");
    }

    #[test]
    fn echoed_secrets_are_redacted_in_every_form() {
        let binding = CredentialBinding {
            secret: crate::secrets::SecretRef::Env("X".into()),
            hosts: vec!["a".into()],
            inject: Injection::Basic,
            oauth2: None,
        };
        let forms = secret_forms(&binding, &Secret::for_tests("user:p&ss"));
        let body = b"a user:p&ss b dXNlcjpwJnNz c user%3Ap%26ss".to_vec();
        let redacted = String::from_utf8(redact_bytes(body, &forms)).unwrap();
        assert_eq!(redacted, "a [redacted] b [redacted] c [redacted]");
        assert_eq!(
            redact_text("é user:p&ss ü", &forms),
            "é [redacted] ü",
            "text is redacted as bytes and stays UTF-8"
        );
        assert_eq!(redact_text("nothing here", &forms), "nothing here");
        let forms = ["ab".to_string()];
        assert_eq!(
            redact_bytes(b"abab-a-ab".to_vec(), &forms),
            b"[redacted][redacted]-a-[redacted]"
        );
        assert_eq!(redact_bytes(b"a".to_vec(), &forms), b"a");
        assert_eq!(redact_bytes(Vec::new(), &forms), b"");
        assert_eq!(base64_encode(b"ab"), "YWI=");
    }

    #[test]
    fn an_injected_credential_replaces_the_plugins_own_of_that_name() {
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert("x-api-key", "mine".parse().unwrap());
        let mut url = url::Url::parse("https://a.example/v1?key=mine&q=a%20b").unwrap();
        let secret = Secret::for_tests("s3cret");
        let binding = |inject| CredentialBinding {
            secret: crate::secrets::SecretRef::Env("X".into()),
            hosts: vec!["a.example".into()],
            inject,
            oauth2: None,
        };
        let mut body = std::borrow::Cow::Borrowed(&b"{}"[..]);
        let header = binding(Injection::Header("x-api-key".into()));
        inject(&mut headers, &mut url, &mut body, "c", &header, &secret).unwrap();
        let values: Vec<_> = headers.get_all("x-api-key").iter().collect();
        assert_eq!(values, ["s3cret"]);
        let query = binding(Injection::Query("key".into()));
        inject(&mut headers, &mut url, &mut body, "c", &query, &secret).unwrap();
        assert_eq!(
            url.query(),
            Some("q=a%20b&key=s3cret"),
            "the rest as written"
        );
        let mut alone = url::Url::parse("https://a.example/v1?key=mine").unwrap();
        inject(&mut headers, &mut alone, &mut body, "c", &query, &secret).unwrap();
        assert_eq!(alone.query(), Some("key=s3cret"));
        assert_eq!(&*body, b"{}", "neither touched the body");
        // In the JSON body: set beside the plugin's fields, replacing its
        // own of that name; a body that is no JSON object is refused.
        let json = binding(Injection::Json("key".into()));
        let mut body = std::borrow::Cow::Borrowed(&br#"{"key":"mine","message":{"to":"a@b"}}"#[..]);
        inject(&mut headers, &mut url, &mut body, "c", &json, &secret).unwrap();
        assert_eq!(
            serde_json::from_slice::<serde_json::Value>(&body).unwrap(),
            serde_json::json!({ "key": "s3cret", "message": { "to": "a@b" } })
        );
        for not_an_object in [&b"[1]"[..], b"", b"key=mine"] {
            let mut body = std::borrow::Cow::Borrowed(not_an_object);
            assert!(matches!(
                inject(&mut headers, &mut url, &mut body, "c", &json, &secret),
                Err(HttpError::InvalidRequest(m)) if m.contains("is not a JSON object")
            ));
        }
        let forms = secret_forms(&json, &Secret::for_tests(r#"a"b\c"#));
        assert!(forms.contains(&r#"a\"b\\c"#.to_string()), "{forms:?}");
    }

    #[test]
    fn credentials_bind_to_hosts_exactly_or_by_suffix() {
        let binding = CredentialBinding {
            secret: crate::secrets::SecretRef::Env("X".into()),
            hosts: vec!["api.crm.example".into(), "*.mailer.example".into()],
            inject: Injection::Bearer,
            oauth2: None,
        };
        assert!(binding.binds("api.crm.example"));
        assert!(binding.binds("eu.mailer.example"));
        assert!(!binding.binds("evil.example"));
        assert!(!binding.binds("mailer.example"));
    }
}
