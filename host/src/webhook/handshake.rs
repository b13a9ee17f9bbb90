//! The handshakes some senders make before they deliver anything, answered
//! by the host itself: the plugin never sees them, and the secret they
//! prove never leaves the host.
//!
//! - **Slack**'s `url_verification` (a POST, signed as its events are):
//!   answered `{"challenge": …}`; its `ssl_check` (a form with
//!   `ssl_check=1`, for slash commands), answered 200.
//! - **Zoom**'s `endpoint.url_validation` (a POST, signed; repeated every
//!   72 hours): answered `{"plainToken", "encryptedToken"}`, the token's
//!   HMAC-SHA256 under the secret token in hex.
//! - **Meta**'s `GET ?hub.mode=subscribe&hub.challenge=…&hub.verify_token=…`:
//!   the challenge, once the verify token is the operator's.
//! - **Dropbox**'s `GET ?challenge=…`: the challenge, as text browsers are
//!   told not to sniff. It proves nothing either way (anyone may ask), so it
//!   is answered to anyone, as Dropbox asks.
//!
//! A challenge echoed as text is held to the characters the senders use
//! (letters, digits, `-._~+/=`) and 256 of them, so the path cannot be
//! made to answer arbitrary content.

use serde_json::json;

use super::verify::{Refused, Scheme, same, sign_hex};

/// How a handshake is answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// 200 with this JSON.
    Json(serde_json::Value),
    /// 200 with this text (`text/plain`, not to be sniffed).
    Text(String),
    /// 200 and no body.
    Empty,
}

/// A handshake answered: the reply and what it was, for the audit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answered {
    /// What the sender is answered.
    pub reply: Reply,
    /// What the handshake was, e.g. `Slack's url_verification`.
    pub what: &'static str,
    /// Whether the sender proved itself (a signature, a verify token):
    /// only those are audited, since anyone may ask the others.
    pub proven: bool,
}

/// Whether `scheme`'s sender checks the URL with a `GET`.
pub fn checks_by_get(scheme: Scheme) -> bool {
    matches!(scheme, Scheme::Meta | Scheme::Dropbox)
}

/// The answer to a `GET` on a path of `scheme` (one [`checks_by_get`]),
/// with `query` raw (without `?`); `verify_token` is the operator's (Meta).
pub fn on_get(
    scheme: Scheme,
    query: &str,
    verify_token: Option<&[u8]>,
) -> Result<Answered, Refused> {
    let value = |name: &str| {
        url::form_urlencoded::parse(query.as_bytes())
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.into_owned())
            .ok_or_else(|| Refused::Malformed(format!("the query has no {name} parameter")))
    };
    match scheme {
        Scheme::Meta => {
            let mode = value("hub.mode")?;
            if mode != "subscribe" {
                return Err(Refused::Malformed(format!(
                    "hub.mode is {mode:?}, not \"subscribe\""
                )));
            }
            let given = value("hub.verify_token")?;
            // No verify token configured is refused by `check` and the
            // configuration; were it missing here, nothing matches.
            if !verify_token.is_some_and(|token| same(given.as_bytes(), token)) {
                return Err(Refused::Mismatch("the verify token"));
            }
            Ok(Answered {
                reply: Reply::Text(challenge(value("hub.challenge")?, "hub.challenge")?),
                what: "Meta's subscription check",
                proven: true,
            })
        }
        Scheme::Dropbox => Ok(Answered {
            reply: Reply::Text(challenge(value("challenge")?, "challenge")?),
            what: "Dropbox's challenge",
            proven: false,
        }),
        _ => Err(Refused::Malformed(format!(
            "scheme {} takes no GET",
            scheme.name()
        ))),
    }
}

/// A verified `POST` that is a handshake rather than a delivery, and its
/// answer; `None` for a delivery. `key` is the secret's bytes.
pub fn on_delivery(scheme: Scheme, key: &[u8], body: &[u8]) -> Option<Result<Answered, Refused>> {
    let field = |event: &serde_json::Value, pointer: &str, what: &str| {
        event
            .pointer(pointer)
            .and_then(serde_json::Value::as_str)
            .map(str::to_string)
            .ok_or_else(|| Refused::Malformed(format!("{what} has no {pointer} string")))
    };
    match scheme {
        Scheme::Slack => {
            // A form, never an event (JSON) that mentions one in its text.
            let ssl_check = !body.trim_ascii_start().starts_with(b"{")
                && url::form_urlencoded::parse(body).any(|(k, v)| k == "ssl_check" && v == "1");
            if ssl_check {
                return Some(Ok(Answered {
                    reply: Reply::Empty,
                    what: "Slack's ssl_check",
                    proven: true,
                }));
            }
            let event: serde_json::Value = serde_json::from_slice(body).ok()?;
            if event["type"] != "url_verification" {
                return None;
            }
            let what = "Slack's url_verification";
            Some(field(&event, "/challenge", what).map(|challenge| Answered {
                reply: Reply::Json(json!({ "challenge": challenge })),
                what,
                proven: true,
            }))
        }
        Scheme::Zoom => {
            let event: serde_json::Value = serde_json::from_slice(body).ok()?;
            if event["event"] != "endpoint.url_validation" {
                return None;
            }
            let what = "Zoom's endpoint.url_validation";
            Some(
                field(&event, "/payload/plainToken", what).map(|plain| Answered {
                    reply: Reply::Json(json!({
                        "plainToken": plain,
                        "encryptedToken": sign_hex(key, &[plain.as_bytes()]),
                    })),
                    what,
                    proven: true,
                }),
            )
        }
        _ => None,
    }
}

/// The longest challenge echoed.
const MAX_CHALLENGE: usize = 256;

/// `given`, if it is a challenge as senders write them.
fn challenge(given: String, name: &str) -> Result<String, Refused> {
    let fits = |c: char| c.is_ascii_alphanumeric() || "-._~+/=".contains(c);
    if given.is_empty() || given.len() > MAX_CHALLENGE || !given.chars().all(fits) {
        return Err(Refused::Malformed(format!(
            "{name} is not 1 to {MAX_CHALLENGE} letters, digits or -._~+/="
        )));
    }
    Ok(given)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slacks_url_verification_is_answered_with_its_challenge_and_its_events_are_not() {
        let answered = on_delivery(
            Scheme::Slack,
            b"k",
            br#"{"token":"x","challenge":"3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P","type":"url_verification"}"#,
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            answered.reply,
            Reply::Json(
                json!({ "challenge": "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P" })
            )
        );
        assert!(answered.proven);
        assert_eq!(
            on_delivery(
                Scheme::Slack,
                b"k",
                br#"{"type":"event_callback","event_id":"Ev1"}"#
            ),
            None
        );
        // Interactivity payloads are forms: deliveries, not handshakes;
        // the certificate check slash commands make is one.
        assert_eq!(on_delivery(Scheme::Slack, b"k", b"payload=%7B%7D"), None);
        let mentions = br#"{"type":"event_callback","event":{"text":"a&ssl_check=1&b"}}"#;
        assert_eq!(on_delivery(Scheme::Slack, b"k", mentions), None);
        assert_eq!(
            on_delivery(Scheme::Slack, b"k", b"ssl_check=1&token=legacy")
                .unwrap()
                .unwrap()
                .reply,
            Reply::Empty
        );
        assert!(matches!(
            on_delivery(Scheme::Slack, b"k", br#"{"type":"url_verification"}"#),
            Some(Err(Refused::Malformed(m))) if m.contains("/challenge")
        ));
    }

    #[test]
    fn zooms_url_validation_is_answered_with_the_token_signed_under_the_secret() {
        let answered = on_delivery(
            Scheme::Zoom,
            b"secret-token",
            br#"{"payload":{"plainToken":"qgg8vlvZRS6UYooatFL8Aw"},"event_ts":1654503849680,"event":"endpoint.url_validation"}"#,
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            answered.reply,
            Reply::Json(json!({
                "plainToken": "qgg8vlvZRS6UYooatFL8Aw",
                // HMAC-SHA256("secret-token", "qgg8vlvZRS6UYooatFL8Aw"),
                // computed apart with Python's hmac.
                "encryptedToken": "5b72bd117f184f54093c1c3c11499c1d13e6d56dc0d96e6b78fbfecedc953b75",
            }))
        );
        assert_eq!(
            on_delivery(
                Scheme::Zoom,
                b"k",
                br#"{"event":"meeting.started","payload":{}}"#
            ),
            None
        );
        assert_eq!(on_delivery(Scheme::Github, b"k", b"{}"), None);
    }

    #[test]
    fn metas_check_is_answered_once_its_verify_token_is_the_operators() {
        let query = "hub.mode=subscribe&hub.challenge=1158201444&hub.verify_token=meatyhamhock";
        let answered = on_get(Scheme::Meta, query, Some(b"meatyhamhock")).unwrap();
        assert_eq!(answered.reply, Reply::Text("1158201444".into()));
        assert!(answered.proven);
        assert_eq!(
            on_get(Scheme::Meta, query, Some(b"another")),
            Err(Refused::Mismatch("the verify token"))
        );
        assert_eq!(
            on_get(Scheme::Meta, query, None),
            Err(Refused::Mismatch("the verify token"))
        );
        assert!(matches!(
            on_get(
                Scheme::Meta,
                "hub.mode=unsubscribe&hub.challenge=1&hub.verify_token=meatyhamhock",
                Some(b"meatyhamhock")
            ),
            Err(Refused::Malformed(m)) if m.contains("hub.mode")
        ));
    }

    #[test]
    fn dropboxs_challenge_is_echoed_only_when_it_looks_like_one() {
        let answered = on_get(
            Scheme::Dropbox,
            "challenge=3hbwRJZrbB1VhmUgXNJfUXh2FkfmjAdZzQ9ocMMQH4g",
            None,
        )
        .unwrap();
        assert_eq!(
            answered.reply,
            Reply::Text("3hbwRJZrbB1VhmUgXNJfUXh2FkfmjAdZzQ9ocMMQH4g".into())
        );
        assert!(!answered.proven);
        for hostile in [
            "challenge=%3Cscript%3Ealert(1)%3C%2Fscript%3E",
            "challenge=",
            &format!("challenge={}", "a".repeat(MAX_CHALLENGE + 1)),
            "other=1",
        ] {
            assert!(
                matches!(
                    on_get(Scheme::Dropbox, hostile, None),
                    Err(Refused::Malformed(_))
                ),
                "{hostile}"
            );
        }
        assert!(checks_by_get(Scheme::Dropbox) && checks_by_get(Scheme::Meta));
        assert!(!checks_by_get(Scheme::Slack) && !checks_by_get(Scheme::Token));
    }
}
