//! The outbound client of one plugin version, and its limits.
//!
//! One `reqwest` client per plugin version: its resolver knows which hosts
//! the grants name explicitly (the only ones allowed to resolve to
//! non-public addresses); proxies from the environment are ignored, the
//! operator's (`[proxy]`, [`Egress`]) is used; redirects
//! are never followed by reqwest, only hop by hop by the host, each hop
//! checked again.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::address::CheckedResolver;
use super::egress::{Egress, ProxyRoute};
use super::limiter::Limiter;
use super::tape::Tape;

/// Per-plugin HTTP limits, from `grants.toml` (`[plugins.NAME.http-limits]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(
    deny_unknown_fields,
    rename_all = "kebab-case",
    expecting = "a table such as { timeout = \"30s\", max-response-bytes = 10485760 }"
)]
pub struct HttpLimits {
    /// The largest request body, in bytes.
    #[serde(
        default = "default_request_bytes",
        deserialize_with = "at_least::max_request_bytes"
    )]
    pub max_request_bytes: u64,
    /// The largest response body, in bytes: a larger one is cut off while
    /// streaming and fails as too large.
    #[serde(
        default = "default_response_bytes",
        deserialize_with = "at_least::max_response_bytes"
    )]
    pub max_response_bytes: u64,
    /// The longest one request may take (never past the call's deadline).
    #[serde(
        default = "default_timeout",
        serialize_with = "duration_text",
        deserialize_with = "at_least::timeout"
    )]
    pub timeout: Duration,
    /// The most redirects followed.
    #[serde(default = "default_redirects")]
    pub max_redirects: u32,
    /// The most requests in flight at once, across all calls of the plugin.
    #[serde(
        default = "default_concurrent",
        deserialize_with = "at_least::max_concurrent"
    )]
    pub max_concurrent: u32,
    /// The sustained request rate; faster requests wait their turn.
    #[serde(
        default = "default_rate",
        deserialize_with = "at_least::requests_per_second"
    )]
    pub requests_per_second: u32,
    /// How many requests may go at once after a quiet spell.
    #[serde(default = "default_rate", deserialize_with = "at_least::burst")]
    pub burst: u32,
}

/// HTTP limits under which no request could go (no time, no rate, no slot,
/// no room for a body) are refused where they are written, naming the key,
/// as `[limits]` are: not every request failing later, nor a zero quietly
/// taken as one. `max-redirects` may be 0: no redirects followed.
mod at_least {
    use std::time::Duration;

    use serde::Deserializer;

    use crate::config::range::{CALL_TIMEOUT, at_least_one, within_duration};

    pub fn timeout<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        within_duration(d, "timeout", CALL_TIMEOUT)
    }

    pub fn max_concurrent<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
        at_least_one(
            d,
            "max-concurrent",
            "with none in flight no request could go",
        )
    }

    pub fn requests_per_second<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
        at_least_one(
            d,
            "requests-per-second",
            "at a rate of none no request could go",
        )
    }

    pub fn burst<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
        at_least_one(d, "burst", "a bucket holding none lets no request go")
    }

    pub fn max_request_bytes<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
        at_least_one(d, "max-request-bytes", "no request with a body could go")
    }

    pub fn max_response_bytes<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
        at_least_one(
            d,
            "max-response-bytes",
            "no response with a body could be read",
        )
    }
}

impl Default for HttpLimits {
    fn default() -> Self {
        HttpLimits {
            max_request_bytes: default_request_bytes(),
            max_response_bytes: default_response_bytes(),
            timeout: default_timeout(),
            max_redirects: default_redirects(),
            max_concurrent: default_concurrent(),
            requests_per_second: default_rate(),
            burst: default_rate(),
        }
    }
}

fn default_request_bytes() -> u64 {
    1024 * 1024
}

fn default_response_bytes() -> u64 {
    10 * 1024 * 1024
}

fn default_timeout() -> Duration {
    Duration::from_secs(30)
}

fn default_redirects() -> u32 {
    5
}

fn default_concurrent() -> u32 {
    8
}

fn default_rate() -> u32 {
    20
}

/// A duration as grants.toml writes it (`"30s"`).
fn duration_text<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&humantime::format_duration(*d).to_string())
}

/// A plugin version's outbound client.
#[derive(Debug)]
pub struct HttpClient {
    /// The reqwest client (checked resolver, the operator's proxy if any,
    /// no redirects).
    pub client: reqwest::Client,
    /// The plugin's rate and concurrency limits.
    pub limiter: Limiter,
    /// The proxy its requests go through (but to its direct hosts).
    pub proxy: Option<Arc<ProxyRoute>>,
    /// The OAuth 2.0 access tokens of its credentials.
    pub tokens: super::oauth2::Tokens,
    /// Recorded exchanges to answer from or record into (`causeway test`);
    /// `None` in the host, where every request goes to the network.
    pub tape: Option<Arc<Tape>>,
}

impl HttpClient {
    /// The client for a plugin whose effective policy is `policy` (its HTTP
    /// rules, limits and credentials' token endpoints).
    /// Its connections are made as `egress` says. With a `tape`, the network
    /// leg of each request is replayed or recorded.
    pub fn for_policy(
        policy: &crate::grants::Policy,
        egress: &Egress,
        tape: Option<Arc<Tape>>,
    ) -> Result<Arc<HttpClient>, String> {
        let limits = &policy.http_limits;
        // Hosts the grants name exactly may resolve to non-public addresses;
        // so may the proxy's own name, and a token endpoint's (a company's
        // own identity provider): the operator and the security team named
        // them.
        let mut resolvable: BTreeSet<String> = policy
            .http
            .rules
            .iter()
            .filter(|r| !r.host.starts_with('*'))
            .map(|r| r.host.to_ascii_lowercase())
            .collect();
        resolvable.extend(
            policy
                .credentials
                .values()
                .filter_map(|b| b.oauth2.as_ref()?.token_url.host_str())
                .map(|h| h.trim_matches(['[', ']']).to_ascii_lowercase()),
        );
        let mut builder = reqwest::Client::builder().no_proxy();
        if let Some(proxy) = &egress.proxy {
            resolvable.extend(proxy.host());
            builder = builder.proxy(proxy.reqwest());
        }
        for root in egress.roots.certificates() {
            builder = builder.add_root_certificate(root.clone());
        }
        let client = builder
            .redirect(reqwest::redirect::Policy::none())
            .dns_resolver(Arc::new(CheckedResolver {
                explicit: resolvable,
            }))
            .user_agent(concat!("causeway/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
        let limiter = Limiter::new(
            limits.requests_per_second,
            limits.burst,
            limits.max_concurrent,
        );
        Ok(Arc::new(HttpClient {
            client,
            limiter,
            proxy: egress.proxy.clone(),
            tokens: Default::default(),
            tape,
        }))
    }
}
