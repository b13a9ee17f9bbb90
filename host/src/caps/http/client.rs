//! The outbound client of one plugin version, and its limits.
//!
//! One `reqwest` client per plugin version: its resolver knows which hosts
//! the grants name explicitly (the only ones allowed to resolve to
//! non-public addresses); proxies from the environment are ignored; redirects
//! are never followed by reqwest, only hop by hop by the host, each hop
//! checked again.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::address::CheckedResolver;
use super::limiter::Limiter;
use super::rule::HttpPolicy;
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
    #[serde(default = "default_request_bytes")]
    pub max_request_bytes: u64,
    /// The largest response body, in bytes: a larger one is cut off while
    /// streaming and fails as too large.
    #[serde(default = "default_response_bytes")]
    pub max_response_bytes: u64,
    /// The longest one request may take (never past the call's deadline).
    #[serde(default = "default_timeout", with = "duration_text")]
    pub timeout: Duration,
    /// The most redirects followed.
    #[serde(default = "default_redirects")]
    pub max_redirects: u32,
    /// The most requests in flight at once, across all calls of the plugin.
    #[serde(default = "default_concurrent")]
    pub max_concurrent: u32,
    /// The sustained request rate; faster requests wait their turn.
    #[serde(default = "default_rate")]
    pub requests_per_second: u32,
    /// How many requests may go at once after a quiet spell.
    #[serde(default = "default_rate")]
    pub burst: u32,
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

mod duration_text {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    use crate::config::TextDuration;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*d).to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        TextDuration::deserialize(d).map(|t| t.0)
    }
}

/// A plugin version's outbound client.
#[derive(Debug)]
pub struct HttpClient {
    /// The reqwest client (checked resolver, no proxy, no redirects).
    pub client: reqwest::Client,
    /// Hosts the grants name exactly: they may be non-public addresses.
    pub explicit: BTreeSet<String>,
    /// The plugin's rate and concurrency limits.
    pub limiter: Limiter,
    /// Recorded exchanges to answer from or record into (`causeway test`);
    /// `None` in the host, where every request goes to the network.
    pub tape: Option<Arc<Tape>>,
}

impl HttpClient {
    /// The client for a plugin whose effective HTTP policy is `policy`.
    /// With a `tape`, the network leg of each request is replayed or recorded.
    pub fn for_policy(
        policy: &HttpPolicy,
        limits: &HttpLimits,
        tape: Option<Arc<Tape>>,
    ) -> Result<Arc<HttpClient>, String> {
        let explicit: BTreeSet<String> = policy
            .rules
            .iter()
            .filter(|r| !r.host.starts_with('*'))
            .map(|r| r.host.to_ascii_lowercase())
            .collect();
        let client = reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .dns_resolver(Arc::new(CheckedResolver {
                explicit: explicit.clone(),
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
            explicit,
            limiter,
            tape,
        }))
    }
}
