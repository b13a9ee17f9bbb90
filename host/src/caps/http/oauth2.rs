//! OAuth 2.0 access tokens for a credential (`oauth2 = { ... }` in its
//! binding in grants.toml): the host, never the plugin, asks the
//! authorization server for a token with the client secret (and a refresh
//! token, if the binding names one), or with an assertion it signs with the
//! binding's private key (the JWT-bearer grant), keeps it until shortly before it
//! expires, and injects it as it would a static secret. The calendar and
//! accounting APIs most companies use (Microsoft Graph, Google, Xero,
//! QuickBooks) take only such tokens, which expire within the hour: a static
//! one would stop every pipeline after it.
//!
//! A token, the client secret, the private key and the refresh token are
//! secrets: never handed to the plugin, never logged, redacted when a
//! server echoes them.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::secrets::{Secret, SecretRef};

/// The largest token response read.
const MAX_TOKEN_RESPONSE: usize = 64 * 1024;

/// How a credential's access token is obtained: from `token-url`, as
/// `client-id` with the binding's secret as the client secret, by the
/// client-credentials grant, or the refresh-token grant when
/// `refresh-token` names one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "OAuth2File", into = "OAuth2File")]
pub struct OAuth2 {
    /// The authorization server's token endpoint.
    pub token_url: url::Url,
    /// The client's identifier (not a secret).
    pub client_id: String,
    /// Scopes asked for, if any.
    pub scopes: Vec<String>,
    /// A refresh token: the refresh-token grant instead of client
    /// credentials.
    pub refresh_token: Option<SecretRef>,
    /// How the client authenticates to the token endpoint.
    pub client_auth: ClientAuth,
    /// The JWT-bearer grant (RFC 7523) instead: an assertion signed with
    /// the binding's secret, an RSA private key (Salesforce's and Google's
    /// service accounts).
    pub jwt: Option<JwtBearer>,
    /// The `kid` a signed assertion names, for a server that holds several
    /// of the client's keys.
    pub key_id: Option<String>,
    /// The SHA-1 or SHA-256 thumbprint (hex, upper case) of the
    /// certificate of the key, which a signed assertion's header carries as
    /// `x5t` (signed RS256) or `x5t#S256` (signed PS256, as Microsoft
    /// Entra's certificate credentials now ask): they name their key so.
    pub certificate_thumbprint: Option<String>,
}

/// What a JWT-bearer assertion claims beside its issuer (`client-id`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JwtBearer {
    /// `sub`: the user the client acts as (Salesforce's username, a Google
    /// Workspace user), if any.
    pub subject: Option<String>,
    /// `aud`: the authorization server (default: `token-url`).
    pub audience: Option<String>,
}

/// The JWT-bearer grant's type, as the token request names it.
const JWT_BEARER: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";

/// How long an assertion is valid: Salesforce takes at most three minutes.
const ASSERTION_LIFETIME: Duration = Duration::from_secs(180);

/// How the client's identifier and secret reach the token endpoint
/// (RFC 6749 §2.3.1): servers accept one or the other, or both.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ClientAuth {
    /// `client_id` and `client_secret` in the form body (`client_secret_post`).
    #[default]
    Body,
    /// `Authorization: Basic`, each part form-encoded (`client_secret_basic`).
    Basic,
    /// A client assertion signed with the binding's secret, an RSA private
    /// key (`private_key_jwt`, RFC 7523 §2.2): no shared secret is sent.
    PrivateKeyJwt,
}

/// `oauth2` as written.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(
    deny_unknown_fields,
    rename_all = "kebab-case",
    expecting = "a table such as { token-url = \"https://login.example.com/oauth2/token\", client-id = \"causeway\", scopes = [\"contacts.read\"] }"
)]
struct OAuth2File {
    token_url: String,
    client_id: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    scopes: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    refresh_token: Option<SecretRef>,
    /// `body` (the default) or `basic`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    client_auth: Option<String>,
    /// `jwt-bearer`, or absent (client credentials, or refresh token).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    grant: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    subject: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    audience: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    key_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    certificate_thumbprint: Option<String>,
}

impl TryFrom<OAuth2File> for OAuth2 {
    type Error = String;

    fn try_from(file: OAuth2File) -> Result<OAuth2, String> {
        let token_url = url::Url::parse(&file.token_url)
            .map_err(|e| format!("oauth2.token-url {:?} is not a URL: {e}", file.token_url))?;
        // The client secret travels in its body.
        let loopback = match token_url.host() {
            Some(url::Host::Ipv4(a)) => a.is_loopback(),
            Some(url::Host::Ipv6(a)) => a.is_loopback(),
            Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
            None => false,
        };
        match token_url.scheme() {
            "https" => {}
            "http" if loopback => {}
            _ => {
                return Err(format!(
                    "oauth2.token-url {:?} must be https (the client secret is sent to it; plain http only on this machine's loopback)",
                    file.token_url
                ));
            }
        }
        if !token_url.username().is_empty() || token_url.password().is_some() {
            return Err(
                "oauth2.token-url holds credentials: the client secret is the binding's secret"
                    .to_string(),
            );
        }
        if file.client_id.is_empty() || file.client_id.chars().any(char::is_control) {
            return Err("oauth2.client-id must be a non-empty name".to_string());
        }
        if let Some(scope) = file
            .scopes
            .iter()
            .find(|s| s.is_empty() || s.chars().any(|c| c.is_whitespace() || c.is_control()))
        {
            return Err(format!(
                "oauth2.scopes: {scope:?} is not a scope (one word each; they are sent joined by spaces)"
            ));
        }
        let client_auth = match file.client_auth.as_deref() {
            None | Some("body") => ClientAuth::Body,
            Some("basic") => ClientAuth::Basic,
            Some("private-key-jwt") => ClientAuth::PrivateKeyJwt,
            Some(other) => {
                return Err(format!(
                    "oauth2.client-auth {other:?} must be \"body\" (client_id and client_secret in the form), \"basic\" (in an Authorization: Basic header) or \"private-key-jwt\" (an assertion signed with the secret, a private key)"
                ));
            }
        };
        let jwt = match file.grant.as_deref() {
            None => {
                if file.subject.is_some() || file.audience.is_some() {
                    return Err(
                        "oauth2.subject and oauth2.audience are claims of a JWT-bearer assertion: they need grant = \"jwt-bearer\""
                            .to_string(),
                    );
                }
                None
            }
            Some("jwt-bearer") => {
                if file.refresh_token.is_some() || file.client_auth.is_some() {
                    return Err(
                        "oauth2: grant = \"jwt-bearer\" signs an assertion with the secret: it takes no refresh-token or client-auth"
                            .to_string(),
                    );
                }
                Some(JwtBearer {
                    subject: file.subject,
                    audience: file.audience,
                })
            }
            Some(other) => {
                return Err(format!(
                    "oauth2.grant {other:?} must be \"jwt-bearer\", or absent (client credentials, or a refresh token when refresh-token names one)"
                ));
            }
        };
        if (file.key_id.is_some() || file.certificate_thumbprint.is_some())
            && jwt.is_none()
            && client_auth != ClientAuth::PrivateKeyJwt
        {
            return Err(
                "oauth2.key-id and oauth2.certificate-thumbprint name the key of a signed assertion: they need grant = \"jwt-bearer\" or client-auth = \"private-key-jwt\""
                    .to_string(),
            );
        }
        // As the Azure portal or openssl show it: 40 or 64 hex digits,
        // perhaps with colons.
        let certificate_thumbprint = match &file.certificate_thumbprint {
            Some(text) => {
                let hex: String = text
                    .chars()
                    .filter(|c| !matches!(c, ':' | ' '))
                    .collect::<String>()
                    .to_ascii_uppercase();
                if !matches!(hex.len(), 40 | 64) || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
                    return Err(format!(
                        "oauth2.certificate-thumbprint {text:?} must be the certificate's SHA-1 thumbprint (40 hex digits) or its SHA-256 one (64)"
                    ));
                }
                Some(hex)
            }
            None => None,
        };
        Ok(OAuth2 {
            token_url,
            client_id: file.client_id,
            scopes: file.scopes,
            refresh_token: file.refresh_token,
            client_auth,
            jwt,
            key_id: file.key_id,
            certificate_thumbprint,
        })
    }
}

impl From<OAuth2> for OAuth2File {
    fn from(o: OAuth2) -> OAuth2File {
        OAuth2File {
            token_url: o.token_url.to_string(),
            client_id: o.client_id,
            scopes: o.scopes,
            refresh_token: o.refresh_token,
            client_auth: match o.client_auth {
                ClientAuth::Body => None,
                ClientAuth::Basic => Some("basic".to_string()),
                ClientAuth::PrivateKeyJwt => Some("private-key-jwt".to_string()),
            },
            key_id: o.key_id,
            certificate_thumbprint: o.certificate_thumbprint,
            grant: o.jwt.as_ref().map(|_| "jwt-bearer".to_string()),
            subject: o.jwt.as_ref().and_then(|j| j.subject.clone()),
            audience: o.jwt.and_then(|j| j.audience),
        }
    }
}

impl OAuth2 {
    /// The grant it asks for, as the token request names it.
    pub fn grant_type(&self) -> &'static str {
        match (&self.jwt, &self.refresh_token) {
            (Some(_), _) => JWT_BEARER,
            (None, Some(_)) => "refresh_token",
            (None, None) => "client_credentials",
        }
    }

    /// Whether `secret`, the binding's, will do for this grant: for the
    /// JWT-bearer grant, an RSA private key an assertion can be signed
    /// with (for `causeway check`). Why not, never the value.
    pub fn check_secret(&self, secret: &Secret) -> Result<(), String> {
        let now = std::time::SystemTime::now();
        match (&self.jwt, self.client_auth) {
            (Some(jwt), _) => assertion(self, jwt, secret, now).map(|_| ()),
            (None, ClientAuth::PrivateKeyJwt) => client_assertion(self, secret, now).map(|_| ()),
            (None, _) => Ok(()),
        }
    }

    /// Whether the binding's secret is a private key the host signs with
    /// (never sent), rather than a client secret.
    pub fn secret_is_key(&self) -> bool {
        self.jwt.is_some() || self.client_auth == ClientAuth::PrivateKeyJwt
    }

    /// The grant's short name, as `causeway grants` shows it.
    fn grant_name(&self) -> &'static str {
        match (&self.jwt, &self.refresh_token) {
            (Some(_), _) => "jwt-bearer",
            (None, Some(_)) => "refresh-token",
            (None, None) => "client-credentials",
        }
    }

    /// `client_secret_basic`'s credentials: base64 of the identifier and the
    /// secret, each form-encoded, joined by `:`.
    pub(super) fn basic_credentials(&self, client_secret: &Secret) -> String {
        let encoded = |text: &str| -> String {
            url::form_urlencoded::byte_serialize(text.as_bytes()).collect()
        };
        let pair = format!(
            "{}:{}",
            encoded(&self.client_id),
            encoded(client_secret.expose())
        );
        super::base64_encode(pair.as_bytes())
    }

    /// For `causeway grants` and the audit log: where the token comes from.
    pub fn describe(&self) -> String {
        let mut text = format!(
            "an OAuth2 {} token from {} as client {}",
            self.grant_name(),
            self.token_url,
            self.client_id
        );
        if let Some(jwt) = &self.jwt {
            text.push_str(" (an assertion signed with the secret");
            if let Some(subject) = &jwt.subject {
                text.push_str(&format!(", for {subject}"));
            }
            text.push(')');
        }
        if let Some(refresh) = &self.refresh_token {
            text.push_str(&format!(" with refresh token {refresh}"));
        }
        match self.client_auth {
            ClientAuth::Body => {}
            ClientAuth::Basic => text.push_str(" (client authentication basic)"),
            ClientAuth::PrivateKeyJwt => text.push_str(
                " (client authentication private-key-jwt: an assertion signed with the secret)",
            ),
        }
        if let Some(key_id) = &self.key_id {
            text.push_str(&format!(", key {key_id}"));
        }
        if let Some(thumbprint) = &self.certificate_thumbprint {
            text.push_str(&format!(", certificate {thumbprint}"));
        }
        if !self.scopes.is_empty() {
            text.push_str(&format!(", scopes {}", self.scopes.join(" ")));
        }
        text
    }
}

/// An access token and when to stop using it.
#[derive(Clone)]
struct Token {
    access: Secret,
    /// Shortly before it expires; `None` when the server did not say
    /// (kept until an API refuses it).
    until: Option<Instant>,
}

/// A plugin version's access tokens, by credential name, and the refresh
/// tokens servers rotated. One fetch at a time per credential: the calls
/// that need it meanwhile wait for it rather than each asking.
#[derive(Default)]
pub struct Tokens {
    slots: Mutex<HashMap<String, Arc<tokio::sync::Mutex<Slot>>>>,
}

#[derive(Default)]
struct Slot {
    token: Option<Token>,
    /// A refresh token the server issued in place of the configured one:
    /// the configured one it replaced, and it.
    rotated: Option<(Secret, Secret)>,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Tokens([redacted])")
    }
}

/// Why no token was had.
#[derive(Debug)]
pub enum TokenError {
    /// The server refused the client or grant (a 4xx): the binding's
    /// configuration, or a revoked refresh token, until an operator acts.
    Refused(String),
    /// It could not be asked, or did not answer as it should: may pass.
    Failed(String),
}

/// What one fetch did, for the audit row.
pub struct Fetched {
    /// The token endpoint's status, if it answered.
    pub status: Option<u16>,
    /// How long the token lives, if the server said.
    pub lifetime: Option<Duration>,
    /// A new refresh token, in place of the one sent (rotated): the one
    /// to send from now on.
    pub rotated: Option<Secret>,
}

impl Tokens {
    /// The access token for credential `name`: the one kept, or one fetched
    /// now (then `Some` of what the fetch did, for the audit row).
    pub async fn get(
        &self,
        name: &str,
        oauth: &OAuth2,
        request: TokenRequest<'_>,
    ) -> (Result<Secret, TokenError>, Option<Fetched>) {
        let slot = {
            let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
            slots.entry(name.to_string()).or_default().clone()
        };
        // Another call's fetch is waited for, within this request's time.
        let remaining = request.deadline.saturating_duration_since(Instant::now());
        let Ok(mut slot) = tokio::time::timeout(remaining, slot.lock()).await else {
            return (
                Err(TokenError::Failed(
                    "the token another request is fetching did not come in time".to_string(),
                )),
                None,
            );
        };
        if let Some(token) = &slot.token
            && token.until.is_none_or(|until| Instant::now() < until)
        {
            return (Ok(token.access.clone()), None);
        }
        // The rotated one while the configured one is still the one it
        // replaced; the configured one once it changed (kept there, or a
        // new one an operator wrote after authorizing again).
        let refresh = match (&slot.rotated, request.refresh) {
            (Some((replaced, rotated)), Some(configured)) if replaced == configured => {
                Some(rotated.clone())
            }
            _ => request.refresh.cloned(),
        };
        let (outcome, mut fetched) = fetch(oauth, &request, refresh.as_ref()).await;
        match outcome {
            Ok(answer) => {
                slot.token = Some(Token {
                    access: answer.access.clone(),
                    until: answer
                        .lifetime
                        .map(|life| Instant::now() + life - margin(life)),
                });
                // Only where one was sent: a client-credentials answer's
                // refresh token is not used.
                if let (Some(configured), Some(new)) = (request.refresh, &answer.refresh)
                    && Some(new) != refresh.as_ref()
                {
                    slot.rotated = Some((configured.clone(), new.clone()));
                    fetched.rotated = answer.refresh;
                }
                (Ok(answer.access), Some(fetched))
            }
            Err(e) => (Err(e), Some(fetched)),
        }
    }

    /// Drops the access token kept for `name` if it is still `sent`, which
    /// an API refused (a 401): the next request fetches another. One another
    /// call fetched meanwhile is kept. Waits for the slot until `deadline`
    /// at most (then another call holds it, fetching).
    pub async fn forget(&self, name: &str, sent: &Secret, deadline: Instant) {
        let slot = {
            let slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
            slots.get(name).cloned()
        };
        let Some(slot) = slot else { return };
        let remaining = deadline.saturating_duration_since(Instant::now());
        if let Ok(mut slot) = tokio::time::timeout(remaining, slot.lock()).await
            && slot.token.as_ref().is_some_and(|t| &t.access == sent)
        {
            slot.token = None;
        }
    }
}

/// How long before its expiry a token is no longer used: a tenth of its
/// life, at most a minute, so a request does not arrive with a token that
/// expired on the way.
fn margin(life: Duration) -> Duration {
    (life / 10).min(Duration::from_secs(60))
}

/// What a token request is made with.
pub struct TokenRequest<'a> {
    /// The plugin version's client (its proxy, its roots).
    pub client: &'a reqwest::Client,
    /// The binding's secret: the client secret, or the private key an
    /// assertion is signed with.
    pub client_secret: &'a Secret,
    /// The binding's refresh token, resolved.
    pub refresh: Option<&'a Secret>,
    /// When the request that needs the token must be done.
    pub deadline: Instant,
}

/// A token endpoint's answer.
struct Answer {
    access: Secret,
    lifetime: Option<Duration>,
    refresh: Option<Secret>,
}

#[derive(Deserialize)]
struct TokenResponse {
    access_token: Option<String>,
    #[serde(default)]
    expires_in: Option<serde_json::Value>,
    #[serde(default)]
    refresh_token: Option<String>,
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    error_description: Option<String>,
}

/// Asks `oauth.token_url` for a token (RFC 6749: a form-encoded POST), the
/// client proving itself as `client_auth` says: its secret in the body or
/// in a Basic header, or an assertion signed with its key (RFC 7523).
async fn fetch(
    oauth: &OAuth2,
    request: &TokenRequest<'_>,
    refresh: Option<&Secret>,
) -> (Result<Answer, TokenError>, Fetched) {
    let mut fetched = Fetched {
        status: None,
        lifetime: None,
        rotated: None,
    };
    let now = std::time::SystemTime::now();
    let signed = match (&oauth.jwt, oauth.client_auth) {
        (Some(jwt), _) => assertion(oauth, jwt, request.client_secret, now).map(Some),
        (None, ClientAuth::PrivateKeyJwt) => {
            client_assertion(oauth, request.client_secret, now).map(Some)
        }
        (None, _) => Ok(None),
    };
    let signed = match signed {
        Ok(signed) => signed,
        Err(e) => return (Err(TokenError::Refused(e)), fetched),
    };
    // Built whole before anything is awaited (the serializer is not Send).
    let body = {
        let mut form = url::form_urlencoded::Serializer::new(String::new());
        form.append_pair("grant_type", oauth.grant_type());
        match (&signed, &oauth.jwt) {
            (Some(assertion), Some(_)) => {
                form.append_pair("assertion", assertion);
            }
            (Some(assertion), None) => {
                form.append_pair("client_id", &oauth.client_id);
                form.append_pair(
                    "client_assertion_type",
                    "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                );
                form.append_pair("client_assertion", assertion);
            }
            (None, _) => {}
        }
        if let (Some(refresh), Some(_)) = (refresh, &oauth.refresh_token) {
            form.append_pair("refresh_token", refresh.expose());
        }
        if oauth.client_auth == ClientAuth::Body && oauth.jwt.is_none() {
            form.append_pair("client_id", &oauth.client_id);
            form.append_pair("client_secret", request.client_secret.expose());
        }
        // An assertion carries its scopes (Google reads them there).
        if !oauth.scopes.is_empty() && oauth.jwt.is_none() {
            form.append_pair("scope", &oauth.scopes.join(" "));
        }
        form.finish()
    };
    let mut post = request
        .client
        .post(oauth.token_url.clone())
        .header(reqwest::header::ACCEPT, "application/json")
        .header(
            reqwest::header::CONTENT_TYPE,
            "application/x-www-form-urlencoded",
        )
        .body(body);
    if oauth.client_auth == ClientAuth::Basic
        // Base64 is always a valid header value.
        && let Ok(mut value) = reqwest::header::HeaderValue::from_str(&format!(
            "Basic {}",
            oauth.basic_credentials(request.client_secret)
        ))
    {
        value.set_sensitive(true);
        post = post.header(reqwest::header::AUTHORIZATION, value);
    }
    let remaining = request.deadline.saturating_duration_since(Instant::now());
    let response = match tokio::time::timeout(remaining, post.send()).await {
        Err(_) => {
            return (
                Err(TokenError::Failed(
                    "the token endpoint did not answer in time".to_string(),
                )),
                fetched,
            );
        }
        Ok(Err(e)) => {
            return (
                Err(TokenError::Failed(format!(
                    "cannot reach the token endpoint: {}",
                    super::error_chain(&e.without_url())
                ))),
                fetched,
            );
        }
        Ok(Ok(response)) => response,
    };
    let status = response.status().as_u16();
    fetched.status = Some(status);
    let body = match read_bounded(response, request.deadline).await {
        Ok(body) => body,
        Err(e) => return (Err(TokenError::Failed(e)), fetched),
    };
    let parsed: Option<TokenResponse> = serde_json::from_slice(&body).ok();
    if !(200..300).contains(&status) {
        // The server's own words (`invalid_client: ...`), never its body whole.
        let said = parsed
            .as_ref()
            .and_then(|p| {
                let error = p.error.as_deref()?;
                Some(match &p.error_description {
                    Some(d) => format!(": {error}: {}", cut(d)),
                    None => format!(": {error}"),
                })
            })
            .unwrap_or_default();
        let message = format!("the token endpoint answered {status}{said}");
        let error = if (400..500).contains(&status) && status != 429 && status != 408 {
            TokenError::Refused(message)
        } else {
            TokenError::Failed(message)
        };
        return (Err(error), fetched);
    }
    let Some(answer) = parsed else {
        return (
            Err(TokenError::Failed(
                "the token endpoint's answer is not a JSON token response".to_string(),
            )),
            fetched,
        );
    };
    let Some(access) = answer.access_token.filter(|t| !t.is_empty()) else {
        return (
            Err(TokenError::Failed(
                "the token endpoint's answer holds no access_token".to_string(),
            )),
            fetched,
        );
    };
    // A number, or (some servers) a number in a string.
    let lifetime = answer
        .expires_in
        .and_then(|v| match v {
            serde_json::Value::Number(n) => n.as_u64(),
            serde_json::Value::String(s) => s.trim().parse().ok(),
            _ => None,
        })
        .map(|s| Duration::from_secs(s.min(365 * 24 * 3600)));
    fetched.lifetime = lifetime;
    (
        Ok(Answer {
            access: crate::secrets::Secrets::value(access),
            lifetime,
            refresh: answer
                .refresh_token
                .filter(|t| !t.is_empty())
                .map(crate::secrets::Secrets::value),
        }),
        fetched,
    )
}

/// A JWT-bearer grant's assertion (RFC 7523 §2.1), signed with `key`:
/// issued by the client, for `jwt.audience` (default the token endpoint),
/// as `jwt.subject`, with the scopes, valid three minutes from `now`.
fn assertion(
    oauth: &OAuth2,
    jwt: &JwtBearer,
    key: &Secret,
    now: std::time::SystemTime,
) -> Result<String, String> {
    let issued = seconds(now);
    let mut claims = serde_json::json!({
        "iss": oauth.client_id,
        "aud": jwt.audience.clone().unwrap_or_else(|| oauth.token_url.to_string()),
        "iat": issued,
        "exp": issued + ASSERTION_LIFETIME.as_secs(),
    });
    if let Some(subject) = &jwt.subject {
        claims["sub"] = subject.clone().into();
    }
    if !oauth.scopes.is_empty() {
        claims["scope"] = oauth.scopes.join(" ").into();
    }
    sign(key, &header_of(oauth), &claims)
}

/// A client assertion (`private_key_jwt`, RFC 7523 §2.2), signed with
/// `key`: the client as issuer and subject, for the token endpoint, valid
/// three minutes from `now`, with a `jti` of its own (a server may refuse
/// one it saw).
fn client_assertion(
    oauth: &OAuth2,
    key: &Secret,
    now: std::time::SystemTime,
) -> Result<String, String> {
    let issued = seconds(now);
    let mut jti = [0u8; 16];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut jti)
        .map_err(|_| "cannot draw the assertion's jti".to_string())?;
    let claims = serde_json::json!({
        "iss": oauth.client_id,
        "sub": oauth.client_id,
        "aud": oauth.token_url.to_string(),
        "iat": issued,
        "nbf": issued,
        "exp": issued + ASSERTION_LIFETIME.as_secs(),
        "jti": jti.iter().map(|b| format!("{b:02x}")).collect::<String>(),
    });
    sign(key, &header_of(oauth), &claims)
}

fn seconds(now: std::time::SystemTime) -> u64 {
    now.duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A signed assertion's header: RS256, and the key's id (`kid`) and
/// certificate thumbprint (`x5t`) when the binding names them; with a
/// SHA-256 thumbprint, PS256 and `x5t#S256`.
fn header_of(oauth: &OAuth2) -> serde_json::Value {
    use base64::Engine as _;
    let sha256 = oauth
        .certificate_thumbprint
        .as_ref()
        .is_some_and(|hex| hex.len() == 64);
    let alg = if sha256 { "PS256" } else { "RS256" };
    let mut header = serde_json::json!({ "alg": alg, "typ": "JWT" });
    if let Some(key_id) = &oauth.key_id {
        header["kid"] = key_id.clone().into();
    }
    if let Some(hex) = &oauth.certificate_thumbprint {
        // Checked where written: 40 or 64 hex digits.
        let bytes: Vec<u8> = (0..hex.len())
            .step_by(2)
            .filter_map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
            .collect();
        let name = if sha256 { "x5t#S256" } else { "x5t" };
        header[name] = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(bytes)
            .into();
    }
    header
}

/// `claims` as a JWT signed RS256 with `key`, an RSA private key in PEM
/// (PKCS#8 `PRIVATE KEY`, or PKCS#1 `RSA PRIVATE KEY`), under `header`.
/// Why not, without the key.
fn sign(
    key: &Secret,
    header: &serde_json::Value,
    claims: &serde_json::Value,
) -> Result<String, String> {
    use base64::Engine as _;
    let not_a_key = |why: &str| {
        format!(
            "the binding's secret is not an RSA private key in PEM (-----BEGIN PRIVATE KEY----- or -----BEGIN RSA PRIVATE KEY-----): {why}"
        )
    };
    let pem = key.expose();
    let (pkcs8, body) = [("PRIVATE KEY", true), ("RSA PRIVATE KEY", false)]
        .iter()
        .find_map(|(label, pkcs8)| {
            let begin = format!("-----BEGIN {label}-----");
            let end = format!("-----END {label}-----");
            let start = pem.find(&begin)? + begin.len();
            let stop = pem[start..].find(&end)? + start;
            Some((*pkcs8, &pem[start..stop]))
        })
        .ok_or_else(|| not_a_key("no such block"))?;
    // PEM in an environment variable or a TOML string often has its line
    // breaks written `\n`.
    let body: String = body
        .replace("\\n", "")
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    let der = base64::engine::general_purpose::STANDARD
        .decode(body)
        .map_err(|_| not_a_key("its body is not base64"))?;
    let pair = match pkcs8 {
        true => ring::signature::RsaKeyPair::from_pkcs8(&der),
        false => ring::signature::RsaKeyPair::from_der(&der),
    }
    .map_err(|e| not_a_key(&e.to_string()))?;
    let url64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let signed = format!(
        "{}.{}",
        url64.encode(header.to_string()),
        url64.encode(claims.to_string())
    );
    let mut signature = vec![0; pair.public().modulus_len()];
    let padding: &dyn ring::signature::RsaEncoding = match header["alg"].as_str() {
        Some("PS256") => &ring::signature::RSA_PSS_SHA256,
        _ => &ring::signature::RSA_PKCS1_SHA256,
    };
    pair.sign(
        padding,
        &ring::rand::SystemRandom::new(),
        signed.as_bytes(),
        &mut signature,
    )
    .map_err(|_| "cannot sign the assertion with the binding's private key".to_string())?;
    Ok(format!("{signed}.{}", url64.encode(signature)))
}

/// The body, at most [`MAX_TOKEN_RESPONSE`] bytes, by `deadline`.
async fn read_bounded(
    mut response: reqwest::Response,
    deadline: Instant,
) -> Result<Vec<u8>, String> {
    let mut body = Vec::new();
    loop {
        let remaining = deadline.saturating_duration_since(Instant::now());
        let chunk = tokio::time::timeout(remaining, response.chunk())
            .await
            .map_err(|_| "the token endpoint's answer did not arrive in time".to_string())?
            .map_err(|e| format!("cannot read the token endpoint's answer: {e}"))?;
        let Some(chunk) = chunk else {
            return Ok(body);
        };
        if body.len() + chunk.len() > MAX_TOKEN_RESPONSE {
            return Err(format!(
                "the token endpoint's answer is larger than {MAX_TOKEN_RESPONSE} bytes"
            ));
        }
        body.extend_from_slice(&chunk);
    }
}

/// A server's text, cut for a message.
fn cut(text: &str) -> String {
    let text: String = text.chars().take(300).collect();
    text.escape_debug().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(table: &str) -> Result<OAuth2, String> {
        toml::from_str::<OAuth2>(table).map_err(|e| e.message().to_string())
    }

    /// Each table is refused, its error saying what it should.
    fn refused(cases: &[(&str, &str)]) {
        for (table, says) in cases {
            let error = parse(table).unwrap_err();
            assert!(error.contains(says), "{table}: {error}");
        }
    }

    /// The header and claims of `jwt`, once its signature is verified with
    /// `public`.
    fn verified(jwt: &str, public: &[u8]) -> (serde_json::Value, serde_json::Value) {
        use base64::Engine as _;
        let url64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let (signed, signature) = jwt.rsplit_once('.').unwrap();
        let (header, claims) = signed.split_once('.').unwrap();
        let part = |text: &str| -> serde_json::Value {
            serde_json::from_slice(&url64.decode(text).unwrap()).unwrap()
        };
        let (header, claims) = (part(header), part(claims));
        let alg: &dyn ring::signature::VerificationAlgorithm = match header["alg"].as_str() {
            Some("PS256") => &ring::signature::RSA_PSS_2048_8192_SHA256,
            _ => &ring::signature::RSA_PKCS1_2048_8192_SHA256,
        };
        ring::signature::UnparsedPublicKey::new(alg, public)
            .verify(signed.as_bytes(), &url64.decode(signature).unwrap())
            .unwrap();
        (header, claims)
    }

    /// The test key (tests/fixtures/oauth): its PEM, the same key in
    /// PKCS#1, and its public key (DER) to verify with.
    fn test_key() -> (String, String, Vec<u8>) {
        let fixtures =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/oauth");
        let read = |file: &str| std::fs::read_to_string(fixtures.join(file)).unwrap();
        (
            read("service-account.pem"),
            read("service-account.pkcs1.pem"),
            std::fs::read(fixtures.join("service-account.public.der")).unwrap(),
        )
    }

    #[test]
    fn a_token_endpoint_is_https_and_the_rest_is_checked_where_written() {
        let oauth = parse(
            "token-url = \"https://login.example.com/t/oauth2/v2.0/token\"\nclient-id = \"causeway\"\nscopes = [\"https://graph.example.com/.default\"]\n",
        )
        .unwrap();
        assert_eq!(oauth.grant_type(), "client_credentials");
        assert_eq!(
            oauth.describe(),
            "an OAuth2 client-credentials token from https://login.example.com/t/oauth2/v2.0/token as client causeway, scopes https://graph.example.com/.default"
        );
        let refreshed = parse(
            "token-url = \"http://127.0.0.1:8080/token\"\nclient-id = \"c\"\nrefresh-token = \"file:refresh\"\n",
        )
        .unwrap();
        assert_eq!(refreshed.grant_type(), "refresh_token");
        assert!(
            refreshed
                .describe()
                .ends_with("as client c with refresh token file:refresh"),
            "{}",
            refreshed.describe()
        );
        refused(&[
            (
                "token-url = \"http://login.example.com/token\"\nclient-id = \"c\"",
                "must be https",
            ),
            ("token-url = \"token\"\nclient-id = \"c\"", "is not a URL"),
            (
                "token-url = \"https://u:p@login.example.com/token\"\nclient-id = \"c\"",
                "holds credentials",
            ),
            (
                "token-url = \"https://login.example.com/token\"\nclient-id = \"\"",
                "client-id",
            ),
            (
                "token-url = \"https://login.example.com/token\"\nclient-id = \"c\"\nscopes = [\"a b\"]",
                "is not a scope",
            ),
            (
                "token-url = \"https://login.example.com/token\"\nclient-id = \"c\"\nrefresh-token = \"1//0abc\"",
                "never the value itself",
            ),
            (
                "token-url = \"https://login.example.com/token\"\nclient-id = \"c\"\nsecret = \"env:X\"",
                "unknown field `secret`",
            ),
            (
                "token-url = \"https://login.example.com/token\"\nclient-id = \"c\"\nclient-auth = \"digest\"",
                "must be \"body\"",
            ),
        ]);
    }

    #[test]
    fn basic_client_authentication_encodes_each_part_first() {
        let oauth = parse(
            "token-url = \"https://login.example.com/token\"\nclient-id = \"c i\"\nclient-auth = \"basic\"\n",
        )
        .unwrap();
        assert_eq!(oauth.client_auth, ClientAuth::Basic);
        assert!(
            oauth
                .describe()
                .ends_with("as client c i (client authentication basic)"),
            "{}",
            oauth.describe()
        );
        // base64("c+i:s%3Ap%26")
        assert_eq!(
            oauth.basic_credentials(&crate::secrets::Secrets::value("s:p&".into())),
            "YytpOnMlM0FwJTI2"
        );
        // Written back as it was read.
        let text = toml::to_string(&oauth).unwrap();
        assert!(text.contains("client-auth = \"basic\""), "{text}");
    }

    #[test]
    fn a_jwt_bearer_assertion_is_signed_with_the_private_key_and_claims_what_it_should() {
        let (pem, pkcs1, public) = test_key();
        let oauth = parse(
            "token-url = \"https://login.example.com/services/oauth2/token\"\nclient-id = \"3MVG9\"\ngrant = \"jwt-bearer\"\nsubject = \"integration@acme.example\"\naudience = \"https://login.example.com\"\nscopes = [\"api\", \"refresh_token\"]\n",
        )
        .unwrap();
        assert_eq!(oauth.grant_type(), JWT_BEARER);
        assert!(
            oauth.describe().starts_with("an OAuth2 jwt-bearer token from https://login.example.com/services/oauth2/token as client 3MVG9 (an assertion signed with the secret, for integration@acme.example)"),
            "{}",
            oauth.describe()
        );
        let jwt = oauth.jwt.clone().unwrap();
        let now = std::time::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        // The key as a TOML string or an environment variable may hold it
        // on one line, its breaks written `\n`.
        // The same key in PKCS#1 (`openssl rsa -traditional`) signs too.
        for key in [pem.clone(), pem.replace('\n', "\\n"), pkcs1] {
            let assertion =
                assertion(&oauth, &jwt, &crate::secrets::Secrets::value(key), now).unwrap();
            let (header, claims) = verified(&assertion, &public);
            assert_eq!(header, serde_json::json!({ "alg": "RS256", "typ": "JWT" }));
            assert_eq!(
                claims,
                serde_json::json!({
                    "iss": "3MVG9",
                    "sub": "integration@acme.example",
                    "aud": "https://login.example.com",
                    "iat": 1_800_000_000u64,
                    "exp": 1_800_000_180u64,
                    "scope": "api refresh_token",
                })
            );
        }
        let error = assertion(
            &oauth,
            &jwt,
            &crate::secrets::Secrets::value("hunter2".into()),
            now,
        )
        .unwrap_err();
        assert!(
            error.contains("is not an RSA private key in PEM"),
            "{error}"
        );
        assert!(!error.contains("hunter2"), "{error}");
        refused(&[
            (
                "token-url = \"https://l.example/t\"\nclient-id = \"c\"\ngrant = \"password\"",
                "must be \"jwt-bearer\"",
            ),
            (
                "token-url = \"https://l.example/t\"\nclient-id = \"c\"\nsubject = \"u\"",
                "need grant = \"jwt-bearer\"",
            ),
            (
                "token-url = \"https://l.example/t\"\nclient-id = \"c\"\ngrant = \"jwt-bearer\"\nrefresh-token = \"env:R\"",
                "takes no refresh-token",
            ),
        ]);
    }

    #[test]
    fn a_private_key_jwt_client_assertion_names_the_client_and_its_key() {
        let (pem, _, public) = test_key();
        let oauth = parse(
            "token-url = \"https://idp.example.com/oauth2/v1/token\"\nclient-id = \"0oa1\"\nclient-auth = \"private-key-jwt\"\nkey-id = \"k-2026\"\n",
        )
        .unwrap();
        assert!(oauth.secret_is_key());
        assert_eq!(oauth.grant_type(), "client_credentials");
        let key = crate::secrets::Secrets::value(pem);
        oauth.check_secret(&key).unwrap();
        let now = std::time::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let first = client_assertion(&oauth, &key, now).unwrap();
        let (header, mut claims) = verified(&first, &public);
        assert_eq!(
            header,
            serde_json::json!({ "alg": "RS256", "typ": "JWT", "kid": "k-2026" })
        );
        let jti = claims["jti"].take();
        assert!(jti.as_str().is_some_and(|j| j.len() == 32), "{jti}");
        assert_eq!(
            claims,
            serde_json::json!({
                "iss": "0oa1",
                "sub": "0oa1",
                "aud": "https://idp.example.com/oauth2/v1/token",
                "iat": 1_800_000_000u64,
                "nbf": 1_800_000_000u64,
                "exp": 1_800_000_180u64,
                "jti": null,
            })
        );
        // Each assertion its own jti.
        let second = client_assertion(&oauth, &key, now).unwrap();
        assert_ne!(first, second);
        let error = parse("token-url = \"https://l.example/t\"\nclient-id = \"c\"\nkey-id = \"k\"")
            .unwrap_err();
        assert!(
            error.contains("oauth2.key-id and oauth2.certificate-thumbprint name the key"),
            "{error}"
        );
        // Microsoft Entra's certificate credentials: the thumbprint as the
        // portal shows it, carried as `x5t`.
        let entra = parse(
            "token-url = \"https://login.example.com/t/oauth2/v2.0/token\"\nclient-id = \"0000-aaaa\"\nclient-auth = \"private-key-jwt\"\ncertificate-thumbprint = \"01:23:45:67:89:ab:cd:ef:01:23:45:67:89:AB:CD:EF:01:23:45:67\"\n",
        )
        .unwrap();
        assert_eq!(
            header_of(&entra),
            serde_json::json!({ "alg": "RS256", "typ": "JWT", "x5t": "ASNFZ4mrze8BI0VniavN7wEjRWc" })
        );
        // Its SHA-256 thumbprint, as Entra now asks: x5t#S256, signed PS256.
        let entra = parse(
            "token-url = \"https://login.example.com/t/oauth2/v2.0/token\"\nclient-id = \"0000-aaaa\"\nclient-auth = \"private-key-jwt\"\ncertificate-thumbprint = \"0123456789abcdef0123456789abcdef0123456789ABCDEF0123456789ABCDEF\"\n",
        )
        .unwrap();
        let assertion = client_assertion(&entra, &key, now).unwrap();
        let (header, _) = verified(&assertion, &public);
        assert_eq!(
            header,
            serde_json::json!({ "alg": "PS256", "typ": "JWT", "x5t#S256": "ASNFZ4mrze8BI0VniavN7wEjRWeJq83vASNFZ4mrze8" })
        );
        let error = parse(
            "token-url = \"https://l.example/t\"\nclient-id = \"c\"\nclient-auth = \"private-key-jwt\"\ncertificate-thumbprint = \"abc\"",
        )
        .unwrap_err();
        assert!(
            error.contains("40 hex digits") && error.contains("(64)"),
            "{error}"
        );
    }

    #[test]
    fn a_token_is_kept_until_shortly_before_it_expires() {
        assert_eq!(margin(Duration::from_secs(3600)), Duration::from_secs(60));
        assert_eq!(margin(Duration::from_secs(10)), Duration::from_secs(1));
        assert_eq!(margin(Duration::ZERO), Duration::ZERO);
    }
}
