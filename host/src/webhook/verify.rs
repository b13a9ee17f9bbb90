//! Verifying a webhook delivery on its raw body, by the sender's scheme:
//!
//! - **Standard Webhooks**: `webhook-id`, `webhook-timestamp` and
//!   `webhook-signature` (space-separated `v1,<base64>` entries, several
//!   during a key rotation); HMAC-SHA256 over `id.timestamp.body` with the
//!   secret (`whsec_` + base64, or raw bytes). Svix sends the same as
//!   `svix-id`, `svix-timestamp` and `svix-signature` (Resend, Clerk).
//! - **GitHub**: `X-Hub-Signature-256: sha256=<hex>`, HMAC-SHA256 over the
//!   body; the delivery id is `X-GitHub-Delivery`.
//! - **Stripe**: `Stripe-Signature: t=<ts>,v1=<hex>[,v1=…]`, HMAC-SHA256
//!   over `t.body`; the delivery id is the event's `id`. Calendly signs the
//!   same way in `Calendly-Webhook-Signature`: the operator names the header.
//! - **SendGrid** (the Event Webhook's signed mode): an ECDSA P-256
//!   signature (`X-Twilio-Email-Event-Webhook-Signature`, base64 DER) over
//!   `X-Twilio-Email-Event-Webhook-Timestamp` and the body; the "secret" is
//!   SendGrid's public key, which proves the sender without a shared key.
//! - **HubSpot** (v3): `X-HubSpot-Signature-v3: <base64>`, HMAC-SHA256 over
//!   method, URL (`https://` + Host + path and query, some characters
//!   decoded), body and `X-HubSpot-Request-Timestamp` (milliseconds).
//! - **hmac-sha256**: the many senders that sign the body alone, each in a
//!   header of its own (Shopify, Xero, QuickBooks, WooCommerce, Typeform):
//!   the operator names the header, the encoding (hex or base64) and any
//!   prefix before it, and optionally the header naming the delivery.
//! - **hmac-sha1**: the same with SHA-1, for senders that never moved on
//!   (Intercom's `X-Hub-Signature: sha1=…`).
//! - **token**: senders that sign nothing but send a secret the operator
//!   chose, in a header the operator names (Google Calendar's
//!   `X-Goog-Channel-Token`, GitLab's `X-Gitlab-Token`), or in a query
//!   parameter of the URL the operator gave them (Mailchimp's).
//! - **basic**: senders that log in with HTTP Basic (Pipedrive, Postmark);
//!   the secret is `user:password`.
//! - **Slack** and **Zoom**: `X-Slack-Signature` / `x-zm-signature`
//!   `v0=<hex>`, HMAC-SHA256 over `v0:<timestamp>:<body>` with the
//!   timestamp in `X-Slack-Request-Timestamp` / `x-zm-request-timestamp`;
//!   Slack's events are known by their `event_id`.
//! - **Meta** (`X-Hub-Signature-256`, as GitHub's, with the app secret) and
//!   **Dropbox** (`X-Dropbox-Signature`, hex, no prefix): the body signed.
//! - **Mailgun**: the signature is in the JSON body (`signature`:
//!   `timestamp`, `token`, `signature`, and `parent-signature` for a
//!   subaccount's events, made with the parent's key), HMAC-SHA256 over the
//!   timestamp and the token; the event is known by its `event-data.id`.
//!   It signs none of the event, so, as a token, it proves who sent a
//!   delivery, not what it says.
//!
//! The handshakes the last four make before they deliver anything are
//! answered in [`super::handshake`].
//!
//! Signatures, tokens and passwords are compared in constant time
//! (`Mac::verify_slice`); a timestamp outside the tolerance is refused
//! either way (replays, clocks). The last two prove who sent a delivery,
//! not what it says: a body is as safe as the TLS it came through. And a
//! token or a login is the secret itself, not a proof of it: the server
//! keeps it out of what it stores and hands the plugin
//! ([`Method::secret_header`], [`Method::secret_query`]).

use std::time::Duration;

use base64::Engine as _;
use hmac::{Hmac, Mac};
use serde::Deserialize;
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// A sender's signature scheme.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Scheme {
    /// <https://www.standardwebhooks.com>
    StandardWebhooks,
    /// GitHub's `X-Hub-Signature-256`.
    Github,
    /// Stripe's `Stripe-Signature` (or the same in another header).
    Stripe,
    /// HubSpot's `X-HubSpot-Signature-v3`.
    Hubspot,
    /// SendGrid's ECDSA signature, checked with its public key.
    Sendgrid,
    /// HMAC-SHA256 of the body, in a header the operator names.
    HmacSha256,
    /// HMAC-SHA1 of the body, in a header the operator names.
    HmacSha1,
    /// The secret itself, in a header or a query parameter the operator
    /// names.
    Token,
    /// HTTP Basic: the secret is `user:password`.
    Basic,
    /// Slack's `X-Slack-Signature` (and its `url_verification`).
    Slack,
    /// Zoom's `x-zm-signature` (and its `endpoint.url_validation`).
    Zoom,
    /// Meta's `X-Hub-Signature-256` (and its `hub.challenge` check).
    Meta,
    /// Dropbox's `X-Dropbox-Signature` (and its `challenge` check).
    Dropbox,
    /// Mailgun's signature, in the body.
    Mailgun,
}

impl Scheme {
    /// The name written in `causeway.toml`.
    pub fn name(self) -> &'static str {
        match self {
            Scheme::StandardWebhooks => "standard-webhooks",
            Scheme::Github => "github",
            Scheme::Stripe => "stripe",
            Scheme::Hubspot => "hubspot",
            Scheme::Sendgrid => "sendgrid",
            Scheme::HmacSha256 => "hmac-sha256",
            Scheme::HmacSha1 => "hmac-sha1",
            Scheme::Token => "token",
            Scheme::Basic => "basic",
            Scheme::Slack => "slack",
            Scheme::Zoom => "zoom",
            Scheme::Meta => "meta",
            Scheme::Dropbox => "dropbox",
            Scheme::Mailgun => "mailgun",
        }
    }
}

/// How a signature is written in its header.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Encoding {
    /// Hexadecimal, either case (as GitHub and Stripe write theirs).
    #[default]
    Hex,
    /// Standard base64, padded (Shopify, Xero, QuickBooks, WooCommerce).
    Base64,
}

/// How a pipeline's deliveries are verified: the scheme and, for those
/// whose headers vary by sender, where to look. The named schemes read
/// their own headers and ignore the rest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Method<'a> {
    /// The scheme.
    pub scheme: Scheme,
    /// The header with the signature (`hmac-sha256`, and `stripe` where
    /// another sender signs as Stripe does) or the token (`token`), lower
    /// case; empty for a scheme's own.
    pub header: &'a str,
    /// How the signature is written (`hmac-sha256`).
    pub encoding: Encoding,
    /// What precedes the signature or token in its header, e.g. `sha256=`.
    pub prefix: &'a str,
    /// The query parameter with the token (`token`), in place of a header.
    pub query: Option<&'a str>,
    /// The header naming the delivery, lower case, if the sender sends one
    /// (`hmac-sha256`, `token`, `basic`); otherwise the body's digest is
    /// the id.
    pub id_header: Option<&'a str>,
    /// What is signed (`hmac-sha256`, `hmac-sha1`), as [`super::signed`]
    /// reads it; empty for the body alone.
    pub signed: &'a str,
    /// The header with the time the sender signed, lower case
    /// (`hmac-sha256`, `hmac-sha1`, with `{timestamp}` in `signed`).
    pub timestamp_header: Option<&'a str>,
}

impl From<Scheme> for Method<'static> {
    fn from(scheme: Scheme) -> Self {
        Method {
            scheme,
            header: "",
            encoding: Encoding::Hex,
            prefix: "",
            query: None,
            id_header: None,
            signed: "",
            timestamp_header: None,
        }
    }
}

impl Method<'_> {
    /// The header that carries the secret itself (a token, a login),
    /// lower case: never stored, nor handed to the plugin.
    pub fn secret_header(&self) -> Option<&str> {
        match self.scheme {
            Scheme::Token if self.query.is_none() => Some(self.header),
            Scheme::Basic => Some("authorization"),
            _ => None,
        }
    }

    /// Whether the sender proves itself with the secret itself (a token,
    /// a login) rather than a signature over what it sends.
    pub fn sends_secret(&self) -> bool {
        self.secret_header().is_some() || self.secret_query().is_some()
    }

    /// Whether what a delivery says is signed, not only who sent it: a
    /// token, a login, or Mailgun's signature (over a timestamp and a
    /// nonce) can be put on another body by anyone on the way.
    pub fn signs_body(&self) -> bool {
        !self.sends_secret() && self.scheme != Scheme::Mailgun
    }

    /// The query parameter that carries the secret itself: taken out of
    /// the query stored and handed to the plugin.
    pub fn secret_query(&self) -> Option<&str> {
        match self.scheme {
            Scheme::Token => self.query,
            _ => None,
        }
    }
}

/// `query` (raw, without `?`) without the parameters named `name`, the
/// others as they were written.
pub fn query_without(query: &str, name: &str) -> String {
    query
        .split('&')
        .filter(|pair| {
            let key = pair.split('=').next().unwrap_or_default();
            let decoded: String = url::form_urlencoded::parse(key.as_bytes())
                .map(|(k, _)| k.into_owned())
                .collect();
            !pair.is_empty() && decoded != name
        })
        .collect::<Vec<_>>()
        .join("&")
}

/// The value of the query parameter `name` in the request target `path`.
fn query_value(path: &str, name: &str) -> Option<String> {
    let (_, query) = path.split_once('?')?;
    url::form_urlencoded::parse(query.as_bytes())
        .find(|(key, _)| key == name)
        .map(|(_, value)| value.into_owned())
}

/// Why a delivery was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// A header the scheme needs is missing or malformed.
    #[error("{0}")]
    Malformed(String),
    /// The timestamp is too old or too far in the future.
    #[error("the timestamp is {0} s away from now, beyond the tolerance")]
    Stale(i64),
    /// No signature matches.
    #[error("no signature matches")]
    BadSignature,
    /// The token or login is not the secret (`token`, `basic`).
    #[error("{0} does not match")]
    Mismatch(&'static str),
}

/// A verified delivery: its id for deduplication, if the scheme names one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// The sender's delivery id.
    pub id: Option<String>,
}

fn mac(secret: &[u8]) -> HmacSha256 {
    // HMAC takes a key of any length: this cannot fail.
    <HmacSha256 as Mac>::new_from_slice(secret).unwrap_or_else(|_| unreachable!())
}

/// The key deliveries signed under `scheme` are verified with, from the
/// secret `reference` names: what fails says why.
pub fn key(
    secrets: &crate::secrets::Secrets,
    scheme: Scheme,
    reference: &crate::secrets::SecretRef,
) -> Result<Vec<u8>, String> {
    let secret = secrets.resolve(reference)?;
    match scheme {
        Scheme::StandardWebhooks => {
            standard_key(secret.expose()).map_err(|e| format!("secret {reference}: {e}"))
        }
        // Its point, read once here rather than on every delivery.
        Scheme::Sendgrid => base64::engine::general_purpose::STANDARD
            .decode(secret.expose().split_whitespace().collect::<String>())
            .ok()
            .and_then(|spki| crate::der::p256_point(&spki).map(<[u8]>::to_vec))
            .ok_or_else(|| {
                format!(
                    "secret {reference}: is not a P-256 public key in base64 (as SendGrid's Event Webhook settings show it, MFkw...)"
                )
            }),
        Scheme::Basic if !secret.expose().contains(':') => Err(format!(
            "secret {reference}: the basic scheme's secret is user:password, and it has no ':' (what it holds is not shown)"
        )),
        Scheme::Github
        | Scheme::Stripe
        | Scheme::Hubspot
        | Scheme::HmacSha256
        | Scheme::HmacSha1
        | Scheme::Token
        | Scheme::Basic
        | Scheme::Slack
        | Scheme::Zoom
        | Scheme::Meta
        | Scheme::Dropbox
        | Scheme::Mailgun => Ok(secret.expose().as_bytes().to_vec()),
    }
}

/// The key bytes of a Standard Webhooks secret: `whsec_` + base64, or raw.
pub fn standard_key(secret: &str) -> Result<Vec<u8>, String> {
    match secret.strip_prefix("whsec_") {
        Some(encoded) => base64::engine::general_purpose::STANDARD
            .decode(encoded)
            // Not base64's own error: it names the offending symbol and
            // where it is, a piece of the secret.
            .map_err(|_| {
                "the whsec_ secret is not base64 (what is wrong in it is not shown)".into()
            }),
        None => Ok(secret.as_bytes().to_vec()),
    }
}

/// Signs as a Standard Webhooks sender does: `v1,<base64>`.
pub fn sign_standard(key: &[u8], id: &str, timestamp: i64, body: &[u8]) -> String {
    let mut mac = mac(key);
    mac.update(format!("{id}.{timestamp}.").as_bytes());
    mac.update(body);
    format!(
        "v1,{}",
        base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
    )
}

/// HMAC-SHA256 of `parts`, in hex (GitHub's and Stripe's form).
pub fn sign_hex(key: &[u8], parts: &[&[u8]]) -> String {
    let mut mac = mac(key);
    for part in parts {
        mac.update(part);
    }
    format!("{:x}", mac.finalize().into_bytes())
}

fn hex_decode(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

/// Whether `given` is `expected`, in time that tells nothing of either:
/// both are compared as MACs under one key, so neither their bytes nor
/// their lengths show in how long it takes.
pub(crate) fn same(given: &[u8], expected: &[u8]) -> bool {
    const KEY: &[u8] = b"causeway: compare a webhook's token";
    let mut m = mac(KEY);
    m.update(expected);
    let expected = m.finalize().into_bytes();
    let mut m = mac(KEY);
    m.update(given);
    m.verify_slice(&expected).is_ok()
}

fn fresh(timestamp: i64, now: i64, tolerance: Duration) -> Result<(), Refused> {
    // A sender's number: any i64, so the difference must not overflow.
    let skew = now.saturating_sub(timestamp);
    if skew.unsigned_abs() > tolerance.as_secs() {
        return Err(Refused::Stale(skew));
    }
    Ok(())
}

/// Verifies a delivery. `header` looks a header up by lower-case name, and
/// the request's method and target (path and query) as `:method` and
/// `:path` (no HTTP/1.1 header name begins with `:`); `key` is the secret's
/// bytes (see [`standard_key`] for Standard Webhooks);
/// `now` is in seconds since the epoch.
pub fn verify<'a>(
    method: Method<'_>,
    key: &[u8],
    header: impl Fn(&str) -> Option<&'a str>,
    body: &[u8],
    now: i64,
    tolerance: Duration,
) -> Result<Verified, Refused> {
    let need = |name: &str| {
        header(name).ok_or_else(|| Refused::Malformed(format!("the {name} header is missing")))
    };
    // What follows the operator's prefix in the operator's header.
    let prefixed = || {
        let value = need(method.header)?.trim();
        value.strip_prefix(method.prefix).ok_or_else(|| {
            Refused::Malformed(format!(
                "{} does not start with {:?}",
                method.header, method.prefix
            ))
        })
    };
    let named = || Verified {
        id: method.id_header.and_then(&header).map(str::to_string),
    };
    match method.scheme {
        Scheme::StandardWebhooks => {
            // Svix, which delivers for Resend, Clerk and others, sends the
            // same under names of its own.
            let svix = header("webhook-id").is_none() && header("svix-id").is_some();
            let [id, timestamp, signature] = match svix {
                true => ["svix-id", "svix-timestamp", "svix-signature"],
                false => ["webhook-id", "webhook-timestamp", "webhook-signature"],
            };
            let id = need(id)?;
            let timestamp: i64 = need(timestamp)?
                .trim()
                .parse()
                .map_err(|_| Refused::Malformed(format!("{timestamp} is not a number")))?;
            fresh(timestamp, now, tolerance)?;
            let mut expected = mac(key);
            expected.update(format!("{id}.{timestamp}.").as_bytes());
            expected.update(body);
            let matches = need(signature)?
                .split_whitespace()
                .filter_map(|entry| entry.strip_prefix("v1,"))
                .filter_map(|b64| base64::engine::general_purpose::STANDARD.decode(b64).ok())
                .any(|signature| expected.clone().verify_slice(&signature).is_ok());
            if !matches {
                return Err(Refused::BadSignature);
            }
            Ok(Verified {
                id: Some(id.to_string()),
            })
        }
        // GitHub's, Meta's and Dropbox's are the body signed in a header
        // of their own.
        Scheme::Github | Scheme::Meta | Scheme::Dropbox => {
            let (signature, prefix, id_header) = match method.scheme {
                Scheme::Github => ("x-hub-signature-256", "sha256=", Some("x-github-delivery")),
                Scheme::Meta => ("x-hub-signature-256", "sha256=", None),
                _ => ("x-dropbox-signature", "", None),
            };
            verify(
                Method {
                    scheme: Scheme::HmacSha256,
                    header: signature,
                    encoding: Encoding::Hex,
                    prefix,
                    query: None,
                    id_header,
                    signed: "",
                    timestamp_header: None,
                },
                key,
                header,
                body,
                now,
                tolerance,
            )
        }
        Scheme::Mailgun => {
            let delivery: serde_json::Value = serde_json::from_slice(body).map_err(|_| {
                Refused::Malformed(
                    "the body is not JSON, as Mailgun's webhooks send ({\"signature\": ..., \"event-data\": ...})".into(),
                )
            })?;
            let signed = &delivery["signature"];
            let field = |name: &str| {
                // Mailgun documents the timestamp as a number, and sends a string.
                match &signed[name] {
                    serde_json::Value::String(text) => Some(text.clone()),
                    serde_json::Value::Number(number) => Some(number.to_string()),
                    _ => None,
                }
                .ok_or_else(|| Refused::Malformed(format!("the body has no signature.{name}")))
            };
            let (sent, token) = (field("timestamp")?, field("token")?);
            let seconds: i64 = sent
                .parse()
                .map_err(|_| Refused::Malformed("signature.timestamp is not a number".into()))?;
            fresh(seconds, now, tolerance)?;
            let mut expected = mac(key);
            expected.update(sent.as_bytes());
            expected.update(token.as_bytes());
            let matches = ["signature", "parent-signature"]
                .iter()
                .filter_map(|name| signed[name].as_str())
                .filter_map(hex_decode)
                .any(|signature| expected.clone().verify_slice(&signature).is_ok());
            if !matches {
                return Err(Refused::BadSignature);
            }
            // A retry carries the event's id; the token is each request's.
            let id = delivery["event-data"]["id"]
                .as_str()
                .map_or(token, str::to_string);
            Ok(Verified { id: Some(id) })
        }
        Scheme::Slack | Scheme::Zoom => {
            let (signature, timestamp) = match method.scheme {
                Scheme::Slack => ("x-slack-signature", "x-slack-request-timestamp"),
                _ => ("x-zm-signature", "x-zm-request-timestamp"),
            };
            let sent = need(timestamp)?.trim();
            let seconds: i64 = sent
                .parse()
                .map_err(|_| Refused::Malformed(format!("{timestamp} is not a number")))?;
            fresh(seconds, now, tolerance)?;
            let signature = need(signature)?
                .trim()
                .strip_prefix("v0=")
                .and_then(hex_decode)
                .ok_or_else(|| Refused::Malformed(format!("{signature} is not v0= and hex")))?;
            let mut expected = mac(key);
            expected.update(b"v0:");
            expected.update(sent.as_bytes());
            expected.update(b":");
            expected.update(body);
            expected
                .verify_slice(&signature)
                .map_err(|_| Refused::BadSignature)?;
            // Slack's Events API names each event, and a retry (with
            // X-Slack-Retry-Num) carries the same; its other payloads
            // (forms) and Zoom's events are known by their body.
            let id = match method.scheme {
                Scheme::Slack => serde_json::from_slice::<serde_json::Value>(body)
                    .ok()
                    .and_then(|event| event["event_id"].as_str().map(str::to_string)),
                _ => None,
            };
            Ok(Verified { id })
        }
        Scheme::Stripe => {
            let name = match method.header {
                "" => "stripe-signature",
                named => named,
            };
            let (timestamp, signatures) = parse_stripe(need(name)?)?;
            fresh(timestamp, now, tolerance)?;
            let mut expected = mac(key);
            expected.update(format!("{timestamp}.").as_bytes());
            expected.update(body);
            if !signatures
                .iter()
                .any(|s| expected.clone().verify_slice(s).is_ok())
            {
                return Err(Refused::BadSignature);
            }
            let id = serde_json::from_slice::<serde_json::Value>(body)
                .ok()
                .and_then(|event| event["id"].as_str().map(str::to_string));
            Ok(Verified { id })
        }
        Scheme::Hubspot => {
            let sent = need("x-hubspot-request-timestamp")?.trim();
            let millis: i64 = sent.parse().map_err(|_| {
                Refused::Malformed("X-HubSpot-Request-Timestamp is not a number".into())
            })?;
            fresh(millis.div_euclid(1000), now, tolerance)?;
            let signature = base64::engine::general_purpose::STANDARD
                .decode(need("x-hubspot-signature-v3")?.trim())
                .map_err(|_| Refused::Malformed("X-HubSpot-Signature-v3 is not base64".into()))?;
            let mut expected = mac(key);
            expected.update(need(":method")?.as_bytes());
            expected.update(b"https://");
            expected.update(need("host")?.as_bytes());
            expected.update(hubspot_decoded(need(":path")?).as_bytes());
            expected.update(body);
            expected.update(sent.as_bytes());
            expected
                .verify_slice(&signature)
                .map_err(|_| Refused::BadSignature)?;
            Ok(Verified { id: None })
        }
        Scheme::Sendgrid => {
            let sent = need("x-twilio-email-event-webhook-timestamp")?.trim();
            let timestamp: i64 = sent.parse().map_err(|_| {
                Refused::Malformed("X-Twilio-Email-Event-Webhook-Timestamp is not a number".into())
            })?;
            fresh(timestamp, now, tolerance)?;
            let signature = base64::engine::general_purpose::STANDARD
                .decode(need("x-twilio-email-event-webhook-signature")?.trim())
                .map_err(|_| {
                    Refused::Malformed(
                        "X-Twilio-Email-Event-Webhook-Signature is not base64".into(),
                    )
                })?;
            let signed = [sent.as_bytes(), body].concat();
            ring::signature::UnparsedPublicKey::new(&ring::signature::ECDSA_P256_SHA256_ASN1, key)
                .verify(&signed, &signature)
                .map_err(|_| Refused::BadSignature)?;
            Ok(Verified { id: None })
        }
        Scheme::HmacSha256 | Scheme::HmacSha1 => {
            let written = prefixed()?;
            let signature = match method.encoding {
                Encoding::Hex => hex_decode(written),
                Encoding::Base64 => base64::engine::general_purpose::STANDARD
                    .decode(written)
                    .ok(),
            }
            .ok_or_else(|| {
                Refused::Malformed(format!(
                    "{} is not {}",
                    method.header,
                    match method.encoding {
                        Encoding::Hex => "hex",
                        Encoding::Base64 => "base64",
                    }
                ))
            })?;
            let message = signed_message(method, &header, &need, body, now, tolerance)?;
            if method.scheme == Scheme::HmacSha1 {
                // ring's own constant-time check.
                let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, key);
                ring::hmac::verify(&key, &message, &signature)
                    .map_err(|_| Refused::BadSignature)?;
                return Ok(named());
            }
            let mut expected = mac(key);
            expected.update(&message);
            expected
                .verify_slice(&signature)
                .map_err(|_| Refused::BadSignature)?;
            Ok(named())
        }
        Scheme::Token => {
            let given = match method.query {
                Some(name) => query_value(need(":path")?, name).ok_or_else(|| {
                    Refused::Malformed(format!("the query has no {name} parameter"))
                })?,
                None => prefixed()?.to_string(),
            };
            if !same(given.as_bytes(), key) {
                return Err(Refused::Mismatch("the token"));
            }
            Ok(named())
        }
        Scheme::Basic => {
            let value = need("authorization")?.trim();
            let credentials = value
                .split_once(' ')
                .filter(|(kind, _)| kind.eq_ignore_ascii_case("basic"))
                .and_then(|(_, b64)| {
                    base64::engine::general_purpose::STANDARD
                        .decode(b64.trim())
                        .ok()
                })
                .ok_or_else(|| {
                    Refused::Malformed("Authorization is not Basic credentials".into())
                })?;
            if !same(&credentials, key) {
                return Err(Refused::Mismatch("the login"));
            }
            Ok(named())
        }
    }
}

/// What an `hmac-sha256` or `hmac-sha1` sender signed: the body alone, or
/// the parts its `signed` template names, the timestamp checked first.
fn signed_message<'b, 'h>(
    method: Method<'_>,
    header: &impl Fn(&str) -> Option<&'h str>,
    need: &impl Fn(&str) -> Result<&'h str, Refused>,
    body: &'b [u8],
    now: i64,
    tolerance: Duration,
) -> Result<std::borrow::Cow<'b, [u8]>, Refused> {
    use super::signed::{Part, epoch_seconds, parts};
    if let Some(name) = method.timestamp_header {
        let sent = need(name)?;
        let seconds = epoch_seconds(sent).ok_or_else(|| {
            Refused::Malformed(format!(
                "{name} is not a time (seconds since 1970, or RFC 3339)"
            ))
        })?;
        fresh(seconds, now, tolerance)?;
    }
    if method.signed.is_empty() {
        return Ok(std::borrow::Cow::Borrowed(body));
    }
    // Checked when the configuration was read: refused here only if not.
    let parts = parts(method.signed).map_err(Refused::Malformed)?;
    let mut message = Vec::with_capacity(body.len() + 256);
    for part in parts {
        match part {
            Part::Text(text) => message.extend_from_slice(text.as_bytes()),
            Part::Body => message.extend_from_slice(body),
            Part::Timestamp => {
                let name = method.timestamp_header.unwrap_or("timestamp-header");
                message.extend_from_slice(need(name)?.as_bytes());
            }
            Part::Id => {
                let name = method.id_header.unwrap_or("id-header");
                message.extend_from_slice(need(name)?.as_bytes());
            }
            Part::Url => {
                message.extend_from_slice(b"https://");
                message.extend_from_slice(need("host")?.as_bytes());
                message.extend_from_slice(header(":path").unwrap_or("/").as_bytes());
            }
        }
    }
    Ok(std::borrow::Cow::Owned(message))
}

/// A request target as HubSpot signs it: with the characters its
/// documentation lists decoded where they are written encoded.
fn hubspot_decoded(target: &str) -> String {
    const DECODED: [(&str, &str); 12] = [
        ("%3A", ":"),
        ("%2F", "/"),
        ("%3F", "?"),
        ("%40", "@"),
        ("%21", "!"),
        ("%24", "$"),
        ("%27", "'"),
        ("%28", "("),
        ("%29", ")"),
        ("%2A", "*"),
        ("%2C", ","),
        ("%3B", ";"),
    ];
    let mut out = String::with_capacity(target.len());
    let mut rest = target;
    while let Some(at) = rest.find('%') {
        out.push_str(&rest[..at]);
        let escape = rest.get(at..at + 3).unwrap_or(&rest[at..]);
        match DECODED
            .iter()
            .find(|(encoded, _)| encoded.eq_ignore_ascii_case(escape))
        {
            Some((_, decoded)) => out.push_str(decoded),
            None => out.push_str(escape),
        }
        rest = &rest[at + escape.len()..];
    }
    out.push_str(rest);
    out
}

/// `t=<ts>,v1=<hex>[,v1=<hex>…]` (other schemes, such as `v0`, ignored).
pub fn parse_stripe(header: &str) -> Result<(i64, Vec<Vec<u8>>), Refused> {
    let mut timestamp = None;
    let mut signatures = Vec::new();
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", t)) => {
                timestamp = Some(t.parse::<i64>().map_err(|_| {
                    Refused::Malformed("Stripe-Signature t= is not a number".into())
                })?)
            }
            Some(("v1", hex)) => signatures.push(
                hex_decode(hex)
                    .ok_or_else(|| Refused::Malformed("Stripe-Signature v1= is not hex".into()))?,
            ),
            _ => {}
        }
    }
    let timestamp =
        timestamp.ok_or_else(|| Refused::Malformed("Stripe-Signature has no t=".into()))?;
    if signatures.is_empty() {
        return Err(Refused::Malformed("Stripe-Signature has no v1=".into()));
    }
    Ok((timestamp, signatures))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINUTES_5: Duration = Duration::from_secs(300);

    fn headers<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<&'a str> {
        move |name| pairs.iter().find(|(n, _)| *n == name).map(|(_, v)| *v)
    }

    #[test]
    fn hmac_matches_rfc_4231_test_case_2() {
        assert_eq!(
            sign_hex(b"Jefe", &[b"what do ya want for nothing?"]),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn the_standard_webhooks_test_vector_verifies() {
        let key = standard_key("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let body = br#"{"test": 2432232314}"#;
        let id = "msg_p5jXN8AQM9LWM0D4loKWxJek";
        assert_eq!(
            sign_standard(&key, id, 1614265330, body),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
        // Several signatures (a rotation): one matching is enough.
        let pairs = [
            ("webhook-id", id),
            ("webhook-timestamp", "1614265330"),
            (
                "webhook-signature",
                "v1,bm9wZQ== v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
            ),
        ];
        let verified = verify(
            Scheme::StandardWebhooks.into(),
            &key,
            headers(&pairs),
            body,
            1614265330,
            MINUTES_5,
        )
        .unwrap();
        assert_eq!(verified.id.as_deref(), Some(id));
        // Tampered, stale, or signed with another key: refused.
        assert_eq!(
            verify(
                Scheme::StandardWebhooks.into(),
                &key,
                headers(&pairs),
                br#"{"test": 2432232315}"#,
                1614265330,
                MINUTES_5
            ),
            Err(Refused::BadSignature)
        );
        assert_eq!(
            verify(
                Scheme::StandardWebhooks.into(),
                &key,
                headers(&pairs),
                body,
                1614265330 + 301,
                MINUTES_5
            ),
            Err(Refused::Stale(301))
        );
        assert_eq!(
            verify(
                Scheme::StandardWebhooks.into(),
                b"other",
                headers(&pairs),
                body,
                1614265330,
                MINUTES_5
            ),
            Err(Refused::BadSignature)
        );
        // The same vector as Svix sends it (Resend's documentation shows
        // it so); a missing header is named as the sender names them.
        let svix = [
            ("svix-id", id),
            ("svix-timestamp", "1614265330"),
            (
                "svix-signature",
                "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
            ),
        ];
        let standard = Method::from(Scheme::StandardWebhooks);
        assert_eq!(
            verify(standard, &key, headers(&svix), body, 1614265330, MINUTES_5).map(|v| v.id),
            Ok(Some(id.to_string()))
        );
        assert_eq!(
            verify(
                standard,
                &key,
                headers(&svix[..2]),
                body,
                1614265330,
                MINUTES_5
            ),
            Err(Refused::Malformed(
                "the svix-signature header is missing".into()
            ))
        );
    }

    #[test]
    fn the_github_test_vector_verifies() {
        let key = b"It's a Secret to Everybody";
        let signature = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
        assert_eq!(
            format!("sha256={}", sign_hex(key, &[b"Hello, World!"])),
            signature
        );
        let pairs = [
            ("x-hub-signature-256", signature),
            ("x-github-delivery", "d-1"),
        ];
        let verified = verify(
            Scheme::Github.into(),
            key,
            headers(&pairs),
            b"Hello, World!",
            0,
            MINUTES_5,
        )
        .unwrap();
        assert_eq!(verified.id.as_deref(), Some("d-1"));
        assert_eq!(
            verify(
                Scheme::Github.into(),
                key,
                headers(&pairs),
                b"Hello, World?",
                0,
                MINUTES_5
            ),
            Err(Refused::BadSignature)
        );
        assert!(matches!(
            verify(Scheme::Github.into(), key, headers(&[]), b"x", 0, MINUTES_5),
            Err(Refused::Malformed(_))
        ));
    }

    #[test]
    fn the_stripe_documented_header_parses_and_signatures_verify() {
        // The header Stripe's documentation shows (its secret and payload
        // are not published, so the signature itself cannot be checked).
        let (t, v1) = parse_stripe(
            "t=1492774577,v1=5257a869e7ecebeda32affa62cdca3fa51cad7e77a0e56ff536d0ce8e108d8bd,v0=6ffbb59b2300aae63f272406069a9788598b792a944a07aba816edb039989a39",
        )
        .unwrap();
        assert_eq!(t, 1492774577);
        assert_eq!(v1.len(), 1);
        assert_eq!(
            v1[0],
            hex_decode("5257a869e7ecebeda32affa62cdca3fa51cad7e77a0e56ff536d0ce8e108d8bd").unwrap()
        );
        // Stripe signs `t.body` with HMAC-SHA256, hex: the same primitive
        // the RFC 4231 and GitHub vectors pin down.
        let key = b"whsec_test";
        let body = br#"{"id":"evt_1","object":"event"}"#;
        let header = format!("t=1700000000,v1={}", sign_hex(key, &[b"1700000000.", body]));
        let pairs = [("stripe-signature", header.as_str())];
        let verified = verify(
            Scheme::Stripe.into(),
            key,
            headers(&pairs),
            body,
            1700000100,
            MINUTES_5,
        )
        .unwrap();
        assert_eq!(verified.id.as_deref(), Some("evt_1"));
        assert_eq!(
            verify(
                Scheme::Stripe.into(),
                key,
                headers(&pairs),
                body,
                1700000400,
                MINUTES_5
            ),
            Err(Refused::Stale(400))
        );
        assert_eq!(
            verify(
                Scheme::Stripe.into(),
                key,
                headers(&pairs),
                b"{}",
                1700000000,
                MINUTES_5
            ),
            Err(Refused::BadSignature)
        );
    }

    #[test]
    fn a_body_signed_in_a_header_the_operator_names_verifies_in_hex_or_base64() {
        // RFC 4231's test case 2, written as senders of each kind write it.
        let key = b"Jefe";
        let body = b"what do ya want for nothing?";
        let hex = "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843";
        let method = |encoding, prefix| Method {
            scheme: Scheme::HmacSha256,
            header: "x-shop-hmac",
            encoding,
            prefix,
            query: None,
            id_header: Some("x-shop-id"),
            signed: "",
            timestamp_header: None,
        };
        let check = |method: Method<'_>, value: &str, body: &[u8]| {
            let pairs = [("x-shop-hmac", value), ("x-shop-id", "order-7")];
            verify(method, key, headers(&pairs), body, 0, MINUTES_5)
        };
        let base64 = "W9zBRr9gdU5qBCQmCJV1x1oAPwidJzmDnexYuWTsOEM=";
        for (method, value) in [
            (method(Encoding::Base64, ""), base64.to_string()),
            (method(Encoding::Hex, ""), hex.to_string()),
            (method(Encoding::Hex, ""), hex.to_uppercase()),
            (method(Encoding::Hex, "sha256="), format!("sha256={hex}")),
        ] {
            let verified = check(method, &value, body).unwrap();
            assert_eq!(verified.id.as_deref(), Some("order-7"), "{value}");
            assert_eq!(
                check(method, &value, b"what do ya want for something?"),
                Err(Refused::BadSignature),
                "{value}"
            );
        }
        // Without an id header, no id: the server takes the body's digest.
        let no_id = Method {
            id_header: None,
            ..method(Encoding::Base64, "")
        };
        assert_eq!(check(no_id, base64, body).unwrap().id, None);
        for (method, value, expected) in [
            (
                method(Encoding::Hex, "sha256="),
                hex.to_string(),
                "x-shop-hmac does not start with \"sha256=\"",
            ),
            (
                method(Encoding::Hex, ""),
                base64.to_string(),
                "x-shop-hmac is not hex",
            ),
            (
                method(Encoding::Base64, ""),
                "%%%".to_string(),
                "x-shop-hmac is not base64",
            ),
        ] {
            assert_eq!(
                check(method, &value, body),
                Err(Refused::Malformed(expected.into()))
            );
        }
        assert_eq!(
            verify(
                method(Encoding::Hex, ""),
                key,
                headers(&[]),
                body,
                0,
                MINUTES_5
            ),
            Err(Refused::Malformed(
                "the x-shop-hmac header is missing".into()
            ))
        );
        // SHA-1, as Intercom signs: RFC 2202's test case 2.
        let sha1 = Method {
            scheme: Scheme::HmacSha1,
            ..method(Encoding::Hex, "sha1=")
        };
        let signed = "sha1=effcdf6ae5eb2fa2d27416d5f184df9c259a7c79";
        assert!(check(sha1, signed, body).is_ok());
        assert_eq!(
            check(sha1, signed, b"what do ya want for something?"),
            Err(Refused::BadSignature)
        );
        assert_eq!(
            check(sha1, &format!("sha256={hex}"), body),
            Err(Refused::Malformed(
                "x-shop-hmac does not start with \"sha1=\"".into()
            ))
        );
    }

    #[test]
    fn a_token_or_basic_login_must_be_the_secret_exactly() {
        let token = Method {
            scheme: Scheme::Token,
            header: "x-goog-channel-token",
            encoding: Encoding::Hex,
            prefix: "",
            query: None,
            id_header: Some("x-goog-message-number"),
            signed: "",
            timestamp_header: None,
        };
        let check = |method: Method<'_>, pairs: &[(&str, &str)]| {
            verify(method, b"s3cret pass", headers(pairs), b"{}", 0, MINUTES_5)
        };
        let verified = check(
            token,
            &[
                ("x-goog-channel-token", "s3cret pass"),
                ("x-goog-message-number", "12"),
            ],
        )
        .unwrap();
        assert_eq!(verified.id.as_deref(), Some("12"));
        for wrong in ["s3cret pas", "s3cret passs", "S3cret pass", ""] {
            assert_eq!(
                check(token, &[("x-goog-channel-token", wrong)]),
                Err(Refused::Mismatch("the token")),
                "{wrong:?}"
            );
        }
        let bearer = Method {
            header: "authorization",
            prefix: "Bearer ",
            ..token
        };
        assert!(check(bearer, &[("authorization", "Bearer s3cret pass")]).is_ok());
        assert!(matches!(
            check(bearer, &[("authorization", "s3cret pass")]),
            Err(Refused::Malformed(_))
        ));

        // In a query parameter of the URL given to the sender.
        let in_query = Method {
            header: "",
            query: Some("key"),
            ..token
        };
        assert!(check(in_query, &[(":path", "/hooks/m?list=7&key=s3cret%20pass")]).is_ok());
        assert!(check(in_query, &[(":path", "/hooks/m?key=s3cret+pass")]).is_ok());
        assert_eq!(
            check(in_query, &[(":path", "/hooks/m?key=guess")]),
            Err(Refused::Mismatch("the token"))
        );
        assert_eq!(
            check(in_query, &[(":path", "/hooks/m?list=7")]),
            Err(Refused::Malformed("the query has no key parameter".into()))
        );
        // The secret itself, where it is, is kept from the plugin.
        assert_eq!(token.secret_header(), Some("x-goog-channel-token"));
        assert_eq!(
            (in_query.secret_header(), in_query.secret_query()),
            (None, Some("key"))
        );
        assert_eq!(
            Method::from(Scheme::Basic).secret_header(),
            Some("authorization")
        );
        assert_eq!(Method::from(Scheme::Github).secret_header(), None);
        assert_eq!(
            query_without("list=7&key=s3cret&k%65y=x&x=1", "key"),
            "list=7&x=1"
        );
        assert_eq!(query_without("key=s3cret", "key"), "");
        assert_eq!(query_without("a=1&&keys=2", "key"), "a=1&keys=2");

        let basic: Method<'_> = Scheme::Basic.into();
        let check = |value: &str| {
            verify(
                basic,
                b"causeway:s3cret pass",
                headers(&[("authorization", value)]),
                b"{}",
                0,
                MINUTES_5,
            )
        };
        for good in [
            "Basic Y2F1c2V3YXk6czNjcmV0IHBhc3M=",
            "basic  Y2F1c2V3YXk6czNjcmV0IHBhc3M=",
        ] {
            assert_eq!(check(good), Ok(Verified { id: None }), "{good}");
        }
        // causeway:s3cret pas
        assert_eq!(
            check("Basic Y2F1c2V3YXk6czNjcmV0IHBhcw=="),
            Err(Refused::Mismatch("the login"))
        );
        for malformed in ["Bearer Y2F1c2V3YXk6czNjcmV0IHBhc3M=", "Basic %%%", "Basic"] {
            assert_eq!(
                check(malformed),
                Err(Refused::Malformed(
                    "Authorization is not Basic credentials".into()
                )),
                "{malformed}"
            );
        }
    }

    #[test]
    fn hubspot_signs_the_request_line_the_url_the_body_and_the_time() {
        // Computed apart (Python's hmac) over
        // POST https://hooks.example.com/hooks/crm?portal=1:2 [{"eventId":1}] 1700000000000.
        let signature = "fJiZkD4MyouXjQ7+D4XWEPr9Nf1QqWwiml99PSKT7Rw=";
        let body = br#"[{"eventId":1}]"#;
        let check = |path: &str, host: &str, timestamp: &str, now: i64, body: &[u8]| {
            let pairs = [
                (":method", "POST"),
                (":path", path),
                ("host", host),
                ("x-hubspot-request-timestamp", timestamp),
                ("x-hubspot-signature-v3", signature),
            ];
            verify(
                Scheme::Hubspot.into(),
                b"client-secret",
                headers(&pairs),
                body,
                now,
                MINUTES_5,
            )
        };
        let url = "/hooks/crm?portal=1%3A2";
        let host = "hooks.example.com";
        let sent = "1700000000000";
        assert_eq!(
            check(url, host, sent, 1_700_000_100, body),
            Ok(Verified { id: None })
        );
        // Another URL, host, body or time: another signature.
        for (path, host, timestamp, body) in [
            ("/hooks/other?portal=1%3A2", host, sent, &body[..]),
            (url, "evil.example.com", sent, &body[..]),
            (url, host, "1700000000001", &body[..]),
            (url, host, sent, br#"[{"eventId":2}]"#),
        ] {
            assert_eq!(
                check(path, host, timestamp, 1_700_000_000, body),
                Err(Refused::BadSignature),
                "{path} {host} {timestamp}"
            );
        }
        // Milliseconds, held to the tolerance in seconds.
        assert_eq!(
            check(url, host, sent, 1_700_000_301, body),
            Err(Refused::Stale(301))
        );
        assert!(matches!(
            check(url, host, "soon", 1_700_000_000, body),
            Err(Refused::Malformed(_))
        ));
        assert_eq!(hubspot_decoded("/a%3a%2F%20b%2"), "/a:/%20b%2");
        assert_eq!(hubspot_decoded("%"), "%");
    }

    #[test]
    fn sendgrid_signs_the_time_and_body_with_a_key_only_it_holds() {
        use ring::signature::KeyPair as _;
        let rng = ring::rand::SystemRandom::new();
        let alg = &ring::signature::ECDSA_P256_SHA256_ASN1_SIGNING;
        let pkcs8 = ring::signature::EcdsaKeyPair::generate_pkcs8(alg, &rng).unwrap();
        let pair = ring::signature::EcdsaKeyPair::from_pkcs8(alg, pkcs8.as_ref(), &rng).unwrap();
        let body = br#"[{"event":"delivered","sg_event_id":"e1"}]"#;
        let signature = base64::engine::general_purpose::STANDARD.encode(
            pair.sign(&rng, &[&b"1700000000"[..], body].concat())
                .unwrap(),
        );
        let check = |timestamp: &str, now: i64, body: &[u8]| {
            let pairs = [
                ("x-twilio-email-event-webhook-timestamp", timestamp),
                ("x-twilio-email-event-webhook-signature", signature.as_str()),
            ];
            verify(
                Scheme::Sendgrid.into(),
                pair.public_key().as_ref(),
                headers(&pairs),
                body,
                now,
                MINUTES_5,
            )
        };
        assert_eq!(
            check("1700000000", 1_700_000_010, body),
            Ok(Verified { id: None })
        );
        assert_eq!(
            check("1700000001", 1_700_000_010, body),
            Err(Refused::BadSignature)
        );
        assert_eq!(
            check("1700000000", 1_700_000_010, b"[]"),
            Err(Refused::BadSignature)
        );
        assert_eq!(
            check("1700000000", 1_700_000_400, body),
            Err(Refused::Stale(400))
        );
    }

    #[test]
    fn calendly_signs_as_stripe_does_in_a_header_of_its_own() {
        let key = b"calendly-signing-key";
        let body = br#"{"event":"invitee.created"}"#;
        let header = format!("t=1700000000,v1={}", sign_hex(key, &[b"1700000000.", body]));
        let pairs = [("calendly-webhook-signature", header.as_str())];
        let calendly = Method {
            header: "calendly-webhook-signature",
            ..Scheme::Stripe.into()
        };
        assert_eq!(
            verify(
                calendly,
                key,
                headers(&pairs),
                body,
                1_700_000_000,
                MINUTES_5
            ),
            Ok(Verified { id: None })
        );
        assert_eq!(
            verify(
                Scheme::Stripe.into(),
                key,
                headers(&pairs),
                body,
                1_700_000_000,
                MINUTES_5
            ),
            Err(Refused::Malformed(
                "the stripe-signature header is missing".into()
            ))
        );
    }

    #[test]
    fn a_timestamp_at_the_ends_of_the_number_line_is_stale_not_a_panic() {
        for t in ["-9223372036854775808", "9223372036854775807"] {
            let standard = [
                ("webhook-id", "msg_1"),
                ("webhook-timestamp", t),
                ("webhook-signature", "v1,AAAA"),
            ];
            let stripe_header = format!("t={t},v1=00");
            let stripe = [("stripe-signature", stripe_header.as_str())];
            let hubspot = [
                ("x-hubspot-request-timestamp", t),
                ("x-hubspot-signature-v3", "AAAA"),
            ];
            for (scheme, pairs) in [
                (Scheme::StandardWebhooks, &standard[..]),
                (Scheme::Stripe, &stripe[..]),
                (Scheme::Hubspot, &hubspot[..]),
            ] {
                let refused = verify(
                    scheme.into(),
                    b"k",
                    headers(pairs),
                    b"{}",
                    1700000000,
                    MINUTES_5,
                );
                assert!(
                    matches!(refused, Err(Refused::Stale(_))),
                    "{t}: {refused:?}"
                );
            }
        }
    }

    #[test]
    fn slacks_documented_example_verifies_and_its_events_are_known_by_their_id() {
        // Slack's "Verifying requests from Slack" example, as published.
        let body = b"token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text=&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c";
        let key = b"8f742231b10e8888abcd99yyyzzz85a5";
        let signed = [
            ("x-slack-request-timestamp", "1531420618"),
            (
                "x-slack-signature",
                "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503",
            ),
        ];
        let slack = Method::from(Scheme::Slack);
        let verified = verify(slack, key, headers(&signed), body, 1531420618, MINUTES_5);
        assert_eq!(
            verified,
            Ok(Verified { id: None }),
            "a form: known by its body"
        );
        assert_eq!(
            verify(
                slack,
                key,
                headers(&signed),
                &body[1..],
                1531420618,
                MINUTES_5
            ),
            Err(Refused::BadSignature)
        );
        assert_eq!(
            verify(
                slack,
                key,
                headers(&signed),
                body,
                1531420618 + 301,
                MINUTES_5
            ),
            Err(Refused::Stale(301))
        );
        assert_eq!(
            verify(
                slack,
                key,
                headers(&signed[..1]),
                body,
                1531420618,
                MINUTES_5
            ),
            Err(Refused::Malformed(
                "the x-slack-signature header is missing".into()
            ))
        );
        let event = br#"{"type":"event_callback","event_id":"Ev0PV52K21"}"#;
        let signature = format!("v0={}", sign_hex(key, &[b"v0:1531420618:", event]));
        let pairs = [
            ("x-slack-request-timestamp", "1531420618"),
            ("x-slack-signature", signature.as_str()),
        ];
        assert_eq!(
            verify(slack, key, headers(&pairs), event, 1531420618, MINUTES_5),
            Ok(Verified {
                id: Some("Ev0PV52K21".into())
            })
        );
    }

    #[test]
    fn zoom_meta_and_dropbox_signatures_verify_in_their_own_headers() {
        // Each signature computed apart with Python's hmac.
        let zoom = [
            ("x-zm-request-timestamp", "1658940994"),
            (
                "x-zm-signature",
                "v0=a1b2ef4a7fb1f207163cb75742436927656c9a1b21e92451f5b35b2b0e7ce940",
            ),
        ];
        let body = br#"{"event":"meeting.started"}"#;
        let method = Method::from(Scheme::Zoom);
        assert_eq!(
            verify(
                method,
                b"zoom-secret",
                headers(&zoom),
                body,
                1658940994,
                MINUTES_5
            ),
            Ok(Verified { id: None })
        );
        assert_eq!(
            verify(
                method,
                b"zoom-secret2",
                headers(&zoom),
                body,
                1658940994,
                MINUTES_5
            ),
            Err(Refused::BadSignature)
        );
        let body = br#"{"object":"page"}"#;
        let hex = "ae958d6f00b134dd32b95a9a76bedaaeb068c0949769358355023f7d1a0c580b";
        let meta = format!("sha256={hex}");
        let meta = [("x-hub-signature-256", meta.as_str())];
        let dropbox = [("x-dropbox-signature", hex)];
        for (scheme, pairs) in [(Scheme::Meta, &meta), (Scheme::Dropbox, &dropbox)] {
            let method = Method::from(scheme);
            assert_eq!(
                verify(method, b"app-secret", headers(pairs), body, 0, MINUTES_5),
                Ok(Verified { id: None }),
                "{scheme:?}"
            );
            assert_eq!(
                verify(method, b"app-secret", headers(pairs), b"{}", 0, MINUTES_5),
                Err(Refused::BadSignature),
                "{scheme:?}"
            );
        }
        // Each reads its own header only.
        assert!(matches!(
            verify(
                Method::from(Scheme::Meta),
                b"app-secret",
                headers(&dropbox),
                body,
                0,
                MINUTES_5
            ),
            Err(Refused::Malformed(_))
        ));
    }

    #[test]
    fn mailguns_signature_in_the_body_verifies_and_its_event_is_known_by_its_id() {
        // Computed apart with Python's hmac.
        let signature = "adbb83c91c8abbcfd4e37393fb3b2fa9675c9672c7510e241669951d5f8b7537";
        let token = "e0b5477167110d68991efc6b9f89f0a11066af27834600e123";
        let delivery = |signed: serde_json::Value, event: serde_json::Value| {
            serde_json::json!({ "signature": signed, "event-data": event }).to_string()
        };
        let mailgun = |body: &str, now: i64| {
            verify(
                Scheme::Mailgun.into(),
                b"mailgun-signing-key",
                headers(&[]),
                body.as_bytes(),
                now,
                MINUTES_5,
            )
        };
        let event = serde_json::json!({ "id": "CPgfbmQMTCKtHW6uIWtuVe", "event": "delivered" });
        let signed = serde_json::json!({ "timestamp": "1770920772", "token": token, "signature": signature });
        assert_eq!(
            mailgun(&delivery(signed.clone(), event.clone()), 1770920772),
            Ok(Verified {
                id: Some("CPgfbmQMTCKtHW6uIWtuVe".into())
            })
        );
        // The timestamp as the number Mailgun documents; no event id: the
        // token names the request.
        let numeric =
            serde_json::json!({ "timestamp": 1770920772, "token": token, "signature": signature });
        assert_eq!(
            mailgun(&delivery(numeric, serde_json::json!({})), 1770920772),
            Ok(Verified {
                id: Some(token.into())
            })
        );
        // A subaccount's event: the parent's signature is the one that matches.
        let parent = serde_json::json!({
            "timestamp": "1770920772", "token": token,
            "signature": "00", "parent-signature": signature,
        });
        assert!(mailgun(&delivery(parent, event.clone()), 1770920772).is_ok());
        let forged = serde_json::json!({ "timestamp": "1770920773", "token": token, "signature": signature });
        assert_eq!(
            mailgun(&delivery(forged, event.clone()), 1770920773),
            Err(Refused::BadSignature)
        );
        assert_eq!(
            mailgun(&delivery(signed, event.clone()), 1770920772 + 301),
            Err(Refused::Stale(301))
        );
        assert!(matches!(
            mailgun("token=1&timestamp=2", 0),
            Err(Refused::Malformed(m)) if m.contains("not JSON")
        ));
        assert_eq!(
            mailgun(&delivery(serde_json::json!({ "timestamp": "1" }), event), 1),
            Err(Refused::Malformed("the body has no signature.token".into()))
        );
        assert!(!Method::from(Scheme::Mailgun).signs_body());
        assert!(Method::from(Scheme::Github).signs_body());
        assert!(!Method::from(Scheme::Basic).signs_body());
    }

    #[test]
    fn a_sender_that_signs_more_than_the_body_is_verified_as_signed_says() {
        // Each signature computed apart with Python's hmac.
        let body = br#"{"ticket":1}"#;
        let with = |header, encoding, signed, timestamp_header, id_header| Method {
            scheme: Scheme::HmacSha256,
            header,
            encoding,
            prefix: "",
            query: None,
            id_header,
            signed,
            timestamp_header,
        };
        // Zendesk: base64, over the RFC 3339 time it sent and the body.
        let zendesk = with(
            "x-zendesk-webhook-signature",
            Encoding::Base64,
            "{timestamp}{body}",
            Some("x-zendesk-webhook-signature-timestamp"),
            None,
        );
        let pairs = [
            (
                "x-zendesk-webhook-signature",
                "CzGRAT1c4IU4PwCehx4K57eN0nFQJOOXwDDJ4Qp0sMo=",
            ),
            (
                "x-zendesk-webhook-signature-timestamp",
                "2021-08-24T18:45:15Z",
            ),
        ];
        let at = 1_629_830_715;
        let check = |method, pairs: &[(&str, &str)], body: &[u8], now| {
            verify(
                method,
                b"zendesk-signing-secret",
                headers(pairs),
                body,
                now,
                MINUTES_5,
            )
        };
        assert_eq!(
            check(zendesk, &pairs, body, at + 60),
            Ok(Verified { id: None })
        );
        assert_eq!(
            check(zendesk, &pairs, b"{}", at),
            Err(Refused::BadSignature)
        );
        assert_eq!(
            check(zendesk, &pairs, body, at + 301),
            Err(Refused::Stale(301))
        );
        // The time changed (and still fresh): no longer what was signed.
        let moved = [
            pairs[0],
            (
                "x-zendesk-webhook-signature-timestamp",
                "2021-08-24T18:45:16Z",
            ),
        ];
        assert_eq!(check(zendesk, &moved, body, at), Err(Refused::BadSignature));
        let garbled = [
            pairs[0],
            ("x-zendesk-webhook-signature-timestamp", "Tuesday"),
        ];
        assert!(matches!(
            check(zendesk, &garbled, body, at),
            Err(Refused::Malformed(m)) if m.contains("is not a time")
        ));
        assert!(matches!(
            check(zendesk, &pairs[..1], body, at),
            Err(Refused::Malformed(m)) if m.contains("x-zendesk-webhook-signature-timestamp header is missing")
        ));
        // Hex, over the time in seconds and the body.
        let seconds = with(
            "x-sig-hash",
            Encoding::Hex,
            "{timestamp}{body}",
            Some("x-sig-timestamp"),
            None,
        );
        let pairs = [
            (
                "x-sig-hash",
                "3009da86b0a7286f74e8742c322da504174214af5918bc9f2156451358657ae9",
            ),
            ("x-sig-timestamp", "1629830715"),
        ];
        assert!(verify(seconds, b"close-key", headers(&pairs), body, at, MINUTES_5).is_ok());
        // Square: base64, over the URL it called and the body.
        let square = with(
            "x-square-hmacsha256-signature",
            Encoding::Base64,
            "{url}{body}",
            None,
            None,
        );
        let called = |host, target| {
            [
                (
                    "x-square-hmacsha256-signature",
                    "Mfcp3DIH1xc6gyh4qh1dMoR2U+oOE4F34G9UEDcsEqU=",
                ),
                ("host", host),
                (":path", target),
            ]
        };
        let url = called("hooks.example.com", "/hooks/square?x=1");
        assert!(verify(square, b"square-key", headers(&url), body, 0, MINUTES_5).is_ok());
        let elsewhere = called("evil.example", "/hooks/square?x=1");
        assert_eq!(
            verify(
                square,
                b"square-key",
                headers(&elsewhere),
                body,
                0,
                MINUTES_5
            ),
            Err(Refused::BadSignature)
        );
        // With SHA-1, text between, and the delivery's id signed too.
        let sha1 = Method {
            scheme: Scheme::HmacSha1,
            ..with(
                "x-sig",
                Encoding::Hex,
                "{id}.{body}",
                None,
                Some("x-event-id"),
            )
        };
        let pairs = [
            ("x-sig", "85aa1134054bf92f18eac9ad584ae340af128f67"),
            ("x-event-id", "evt-9"),
        ];
        assert_eq!(
            verify(sha1, b"sha1-key", headers(&pairs), body, 0, MINUTES_5),
            Ok(Verified {
                id: Some("evt-9".into())
            })
        );
        let renamed = [pairs[0], ("x-event-id", "evt-10")];
        assert_eq!(
            verify(sha1, b"sha1-key", headers(&renamed), body, 0, MINUTES_5),
            Err(Refused::BadSignature)
        );
    }
}
