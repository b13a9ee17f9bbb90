//! Outbound HTTP through the host's `http` capability.
//!
//! Every request is checked against the operator's grants. Credentials are
//! named, never held: [`RequestBuilder::credential`] asks the host to inject
//! one into the request.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::PluginError;
use crate::RateLimit;
use crate::bindings::source::causeway::plugin::http as wit;

pub use wit::HttpError;

/// A request being built.
#[derive(Debug, Clone)]
pub struct RequestBuilder {
    request: wit::Request,
}

/// Starts a request with any method.
pub fn request(method: &str, url: impl Into<String>) -> RequestBuilder {
    RequestBuilder {
        request: wit::Request {
            method: method.to_string(),
            url: url.into(),
            headers: Vec::new(),
            body: None,
            credential: None,
            timeout_ms: None,
        },
    }
}

/// Starts a `GET`.
pub fn get(url: impl Into<String>) -> RequestBuilder {
    request("GET", url)
}

/// Starts a `POST`.
pub fn post(url: impl Into<String>) -> RequestBuilder {
    request("POST", url)
}

impl RequestBuilder {
    /// Adds a header.
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.request
            .headers
            .push((name.to_string(), value.to_string()));
        self
    }

    /// Asks the host to inject the named credential (from the manifest).
    pub fn credential(mut self, name: &str) -> Self {
        self.request.credential = Some(name.to_string());
        self
    }

    /// Sets a JSON body and its content type.
    pub fn json(mut self, body: &impl Serialize) -> Result<Self, PluginError> {
        let bytes = serde_json::to_vec(body).map_err(|e| {
            PluginError::Fatal(format!("request body cannot be written as JSON: {e}"))
        })?;
        self.request.body = Some(bytes);
        Ok(self.header("content-type", "application/json"))
    }

    /// Sets a timeout in milliseconds (the host's limits still apply).
    pub fn timeout_ms(mut self, ms: u32) -> Self {
        self.request.timeout_ms = Some(ms);
        self
    }

    /// Sends the request through the host.
    pub fn send(self) -> Result<Response, HttpError> {
        wit::send(&self.request).map(|inner| Response { inner })
    }
}

/// A response.
#[derive(Debug, Clone)]
pub struct Response {
    inner: wit::Response,
}

impl Response {
    /// The status code.
    pub fn status(&self) -> u16 {
        self.inner.status
    }

    /// The first header with this (case-insensitive) name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.inner
            .headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body.
    pub fn body(&self) -> &[u8] {
        &self.inner.body
    }

    /// Reads the body as JSON.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, PluginError> {
        serde_json::from_slice(&self.inner.body).map_err(|e| {
            PluginError::Transient(format!(
                "the API answered {} with a body that is not the expected JSON: {e}",
                self.inner.status
            ))
        })
    }

    /// This response if it is a success (2xx); otherwise the error the host
    /// should act on: 429 → rate-limited (honouring `Retry-After` seconds),
    /// 401/403 → auth, 5xx and 408 → transient, other 4xx → config.
    pub fn error_for_status(self) -> Result<Response, PluginError> {
        let status = self.inner.status;
        if (200..300).contains(&status) {
            return Ok(self);
        }
        let body = String::from_utf8_lossy(&self.inner.body);
        let snippet: String = body.chars().take(200).collect();
        let message = format!("the API answered {status}: {snippet}");
        Err(match status {
            429 => PluginError::RateLimited(RateLimit {
                retry_after_ms: self
                    .header("retry-after")
                    .and_then(|v| v.trim().parse::<u64>().ok())
                    .map(|s| s.saturating_mul(1000)),
                message,
            }),
            401 | 403 => PluginError::Auth(message),
            408 | 500..=599 => PluginError::Transient(message),
            _ => PluginError::Config(message),
        })
    }
}

impl From<HttpError> for PluginError {
    fn from(e: HttpError) -> Self {
        match e {
            HttpError::Denied(m) => PluginError::Config(format!("request denied by the host: {m}")),
            HttpError::InvalidRequest(m) => PluginError::Fatal(format!("invalid request: {m}")),
            HttpError::Timeout(m) => PluginError::Transient(format!("request timed out: {m}")),
            HttpError::TooLarge(m) => {
                PluginError::Fatal(format!("request or response too large: {m}"))
            }
            HttpError::Network(m) => PluginError::Transient(format!("network error: {m}")),
        }
    }
}
