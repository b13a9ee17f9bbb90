//! Outbound HTTP through the host's `http` capability.
//!
//! Every request is checked against the operator's grants. Credentials are
//! named, never held: [`RequestBuilder::credential`] asks the host to inject
//! one into the request.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::PluginError;
use crate::bindings::source::causeway::plugin::http as wit;
use crate::{RateLimit, WriteOutcome};

pub use wit::HttpError;

/// `text` percent-encoded for one URL component (a path segment or a query
/// value): everything but letters, digits and `-_.~` is escaped. A path
/// segment that is `.` or `..` stays a step up whatever its spelling
/// (`%2E` is a dot to every URL parser), and the host refuses such a
/// request as `invalid-request`: check ids from a third party before
/// putting them in a path.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

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

/// Starts a `PUT`.
pub fn put(url: impl Into<String>) -> RequestBuilder {
    request("PUT", url)
}

/// Starts a `DELETE`.
pub fn delete(url: impl Into<String>) -> RequestBuilder {
    request("DELETE", url)
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

    /// Sets the body as given (set its content type with [`Self::header`]).
    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.request.body = Some(body.into());
        self
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

    /// Whether the server asks to slow down: a 429, or a 403 carrying
    /// `Retry-After` (as GitHub's secondary rate limits answer), which is
    /// no verdict on the credentials.
    pub fn is_rate_limited(&self) -> bool {
        let status = self.inner.status;
        status == 429 || (status == 403 && self.header("retry-after").is_some())
    }

    /// Whether the server asks to be left alone for now: a rate limit
    /// ([`Response::is_rate_limited`]), or a 503 (down, or in maintenance).
    /// A sink writing a request per record sends nothing more of its batch
    /// then, and answers `retry` for the rest: the host waits as the
    /// answer's `Retry-After` says (a 503's, within the retry budget).
    pub fn asks_to_wait(&self) -> bool {
        self.is_rate_limited() || self.inner.status == 503
    }

    /// This response if it is a success (2xx); otherwise the error the host
    /// should act on: 429 (or a 403 with `Retry-After`) → rate-limited
    /// (honouring `Retry-After`, in seconds or as an HTTP date), 401/403 →
    /// auth, 5xx and 408 → transient, other 4xx → config (the request the
    /// configuration produced is wrong).
    pub fn error_for_status(self) -> Result<Response, PluginError> {
        let status = self.inner.status;
        if (200..300).contains(&status) {
            return Ok(self);
        }
        let message = self.failure_message();
        Err(match status {
            _ if self.is_rate_limited() => PluginError::RateLimited(RateLimit {
                retry_after_ms: self.retry_after_ms(),
                message,
            }),
            401 | 403 => PluginError::Auth(message),
            408 | 500..=599 => PluginError::Transient(message),
            _ => PluginError::Config(message),
        })
    }

    /// A sink's answer for one record written by its own request: 2xx → ok;
    /// 408, 429 (or a 403 with `Retry-After`) and 5xx → retry later (after
    /// a 429, when its `Retry-After` says: the host reads the header
    /// itself); 401/403 → an error for the whole
    /// batch (the credentials are wrong, no record can be written); any other
    /// 4xx → rejected for good (the record goes to the dead-letter queue with
    /// the API's answer).
    pub fn write_outcome(&self) -> Result<WriteOutcome, PluginError> {
        let status = self.inner.status;
        Ok(match status {
            200..=299 => WriteOutcome::Ok,
            _ if self.is_rate_limited() => WriteOutcome::Retry(self.failure_message()),
            401 | 403 => return Err(PluginError::Auth(self.failure_message())),
            408 | 429 | 500..=599 => WriteOutcome::Retry(self.failure_message()),
            _ => WriteOutcome::Rejected(self.failure_message()),
        })
    }

    /// How long the server asked to wait (`Retry-After`), in milliseconds.
    pub fn retry_after_ms(&self) -> Option<u64> {
        let value = self.header("retry-after")?.trim();
        if let Ok(seconds) = value.parse::<u64>() {
            return Some(seconds.saturating_mul(1000));
        }
        let at = parse_http_date(value)?;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .ok()?
            .as_secs();
        Some(at.saturating_sub(now).saturating_mul(1000))
    }

    fn failure_message(&self) -> String {
        let body = String::from_utf8_lossy(&self.inner.body);
        let snippet: String = body.chars().take(200).collect();
        format!("the API answered {}: {snippet}", self.inner.status)
    }
}

/// Seconds since the Unix epoch of an IMF-fixdate (`Sun, 06 Nov 1994
/// 08:49:37 GMT`), the date format HTTP requires servers to send.
fn parse_http_date(text: &str) -> Option<u64> {
    let (_, rest) = text.split_once(", ")?;
    let parts: Vec<&str> = rest.split_ascii_whitespace().collect();
    let [day, month, year, time, "GMT"] = parts.as_slice() else {
        return None;
    };
    let month = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ]
    .iter()
    .position(|m| m == month)? as i64
        + 1;
    let (day, year): (i64, i64) = (day.parse().ok()?, year.parse().ok()?);
    let mut clock = time.split(':').map(|p| p.parse::<i64>().ok());
    let (h, m, s) = (clock.next()??, clock.next()??, clock.next()??);
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    u64::try_from(days * 86_400 + h * 3600 + m * 60 + s).ok()
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

#[cfg(test)]
mod tests {
    use super::*;

    fn response(status: u16, headers: &[(&str, &str)]) -> Response {
        Response {
            inner: wit::Response {
                status,
                headers: headers
                    .iter()
                    .map(|(n, v)| (n.to_string(), v.to_string()))
                    .collect(),
                body: b"{\"error\":\"nope\"}".to_vec(),
            },
        }
    }

    #[test]
    fn statuses_map_to_the_error_the_host_acts_on() {
        assert!(response(204, &[]).error_for_status().is_ok());
        let kind = |status| match response(status, &[]).error_for_status() {
            Err(PluginError::Auth(_)) => "auth",
            Err(PluginError::Transient(_)) => "transient",
            Err(PluginError::Config(_)) => "config",
            Err(PluginError::RateLimited(_)) => "rate-limited",
            Err(PluginError::Fatal(_)) => "fatal",
            Ok(_) => "ok",
        };
        assert_eq!(
            [401, 403, 408, 500, 503, 400, 404, 422, 429].map(kind),
            [
                "auth",
                "auth",
                "transient",
                "transient",
                "transient",
                "config",
                "config",
                "config",
                "rate-limited"
            ]
        );
        match response(400, &[]).error_for_status() {
            Err(PluginError::Config(m)) => assert!(m.contains("400") && m.contains("nope"), "{m}"),
            other => panic!("{other:?}"),
        }
        // A 403 with Retry-After is a rate limit (GitHub's secondary
        // limits), not a refusal of the credentials.
        match response(403, &[("Retry-After", "60")]).error_for_status() {
            Err(PluginError::RateLimited(limit)) => assert_eq!(limit.retry_after_ms, Some(60_000)),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn retry_after_is_read_in_seconds_or_as_a_date() {
        match response(429, &[("retry-after", "7")]).error_for_status() {
            Err(PluginError::RateLimited(limit)) => assert_eq!(limit.retry_after_ms, Some(7000)),
            other => panic!("{other:?}"),
        }
        assert_eq!(
            parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT"),
            Some(784_111_777)
        );
        assert_eq!(parse_http_date("Thu, 01 Jan 1970 00:00:00 GMT"), Some(0));
        assert_eq!(parse_http_date("yesterday"), None);
        // A date in the past means "now".
        let past = response(429, &[("Retry-After", "Sun, 06 Nov 1994 08:49:37 GMT")]);
        assert_eq!(past.retry_after_ms(), Some(0));
        assert_eq!(response(429, &[]).retry_after_ms(), None);
    }

    #[test]
    fn a_sink_request_maps_to_a_write_outcome() {
        assert_eq!(
            response(201, &[]).write_outcome().unwrap(),
            WriteOutcome::Ok
        );
        assert!(matches!(
            response(503, &[]).write_outcome(),
            Ok(WriteOutcome::Retry(_))
        ));
        assert!(matches!(
            response(429, &[]).write_outcome(),
            Ok(WriteOutcome::Retry(_))
        ));
        assert!(
            matches!(response(422, &[]).write_outcome(), Ok(WriteOutcome::Rejected(m)) if m.contains("422"))
        );
        assert!(matches!(
            response(401, &[]).write_outcome(),
            Err(PluginError::Auth(_))
        ));
        assert!(matches!(
            response(403, &[("retry-after", "60")]).write_outcome(),
            Ok(WriteOutcome::Retry(_))
        ));
        assert!(matches!(
            response(403, &[]).write_outcome(),
            Err(PluginError::Auth(_))
        ));
    }

    #[test]
    fn a_rate_limit_or_an_unavailable_api_asks_to_wait() {
        assert!(response(429, &[]).asks_to_wait());
        assert!(response(403, &[("retry-after", "60")]).asks_to_wait());
        assert!(response(503, &[]).asks_to_wait());
        assert!(response(503, &[("retry-after", "120")]).asks_to_wait());
        for status in [200, 403, 404, 422, 500, 502] {
            assert!(!response(status, &[]).asks_to_wait(), "{status}");
        }
    }
}
