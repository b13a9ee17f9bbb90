//! What an API asked when it answered 429 Too Many Requests (or 403 with a
//! `Retry-After`, as GitHub's secondary rate limits do): how long to wait
//! (`Retry-After`, in seconds or as an HTTP date).
//!
//! The host sees every response, so it keeps the longest wait a call was
//! asked for, whatever the plugin made of the answer: a sink answering
//! `retry` for each record it could not write, or a plugin failing with an
//! error that carries no delay of its own (JavaScript's `fetch` leaves the
//! header to the plugin). The pipeline then waits that long before it tries
//! those records again, as it waits for a `rate-limited` error's delay,
//! instead of backing off on its own clock into the API's quota.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

/// The longest `Retry-After` of the 429 answers one call got. Shared by the
/// call's two HTTP doors; read and cleared once the call ends. (Also what a
/// sink's calls were asked, across the calls of one write.)
#[derive(Debug, Clone, Default)]
pub struct AskedToWait(Arc<AtomicU64>);

impl AskedToWait {
    /// Notes one answer: a 429 with a `Retry-After` the host can read, or
    /// a 403 with one (GitHub's secondary rate limits answer so).
    pub fn note(&self, status: u16, headers: &[(String, String)]) {
        if status != 429 && status != 403 {
            return;
        }
        let asked = headers
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case("retry-after"))
            .and_then(|(_, value)| retry_after(value, SystemTime::now()));
        if let Some(asked) = asked {
            self.ask(asked);
        }
    }

    /// Notes a wait asked, kept if it is the longest yet.
    pub fn ask(&self, wait: Duration) {
        // Kept as milliseconds + 1, so that 0 means "not asked".
        let millis = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX - 1);
        self.0.fetch_max(millis + 1, Ordering::Relaxed);
    }

    /// The longest wait asked since the last take, forgotten for the next
    /// call of a warm instance.
    pub fn take(&self) -> Option<Duration> {
        match self.0.swap(0, Ordering::Relaxed) {
            0 => None,
            millis => Some(Duration::from_millis(millis - 1)),
        }
    }
}

/// A `Retry-After` value as a wait from `now`: whole seconds, or an HTTP
/// date (one already past is no wait). Anything else is not read.
fn retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(value: &str) -> Vec<(String, String)> {
        vec![
            ("content-type".into(), "application/json".into()),
            ("Retry-After".into(), value.into()),
        ]
    }

    #[test]
    fn seconds_and_dates_are_read_and_anything_else_is_not() {
        let now = httpdate::parse_http_date("Sun, 06 Dec 2026 18:00:00 GMT").unwrap();
        assert_eq!(retry_after(" 7 ", now), Some(Duration::from_secs(7)));
        assert_eq!(
            retry_after("Sun, 06 Dec 2026 18:01:30 GMT", now),
            Some(Duration::from_secs(90))
        );
        assert_eq!(
            retry_after("Sun, 06 Dec 2026 17:00:00 GMT", now),
            Some(Duration::ZERO)
        );
        for unread in ["", "-1", "1.5", "soon", "Sun, 06 Dec 2026"] {
            assert_eq!(retry_after(unread, now), None, "{unread:?}");
        }
    }

    #[test]
    fn a_call_keeps_the_longest_wait_of_its_429s_until_taken() {
        let asked = AskedToWait::default();
        assert_eq!(asked.take(), None);
        // Other statuses, and a 429 without a readable header, ask nothing.
        asked.note(503, &headers("30"));
        asked.note(200, &headers("30"));
        asked.note(403, &[]);
        asked.note(429, &headers("later"));
        asked.note(429, &[]);
        assert_eq!(asked.take(), None);
        asked.note(429, &headers("2"));
        asked.clone().note(429, &headers("5"));
        asked.note(429, &headers("0"));
        assert_eq!(asked.take(), Some(Duration::from_secs(5)));
        asked.note(403, &headers("60"));
        assert_eq!(asked.take(), Some(Duration::from_secs(60)));
        // Taken, it is forgotten: the next call starts with nothing asked.
        assert_eq!(asked.take(), None);
        asked.note(429, &headers("0"));
        assert_eq!(asked.take(), Some(Duration::ZERO));
    }
}
