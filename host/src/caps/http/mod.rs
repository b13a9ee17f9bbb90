//! `http`: outbound requests, each checked against the plugin's effective
//! policy at one choke point ([`check_request`]) and audited, allowed or
//! denied. A denial is an error value naming the grant to add, never a trap.

mod rule;

pub use rule::{Denial, HttpPolicy, HttpRule, Target};

use crate::audit::{AuditEvent, Decision};
use crate::bindings::causeway::plugin::http::{Host, HttpError, Request, Response};
use crate::sandbox::StoreState;

/// Parses a request's URL and method into the target the policy checks.
pub fn target_of(method: &str, url: &str) -> Result<Target, String> {
    let parsed =
        url::Url::parse(url).map_err(|e| format!("{url:?} is not an absolute URL: {e}"))?;
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
        None => return Err(format!("{url:?} has no host")),
    };
    let port = parsed
        .port_or_known_default()
        .ok_or_else(|| format!("{url:?} has no port"))?;
    let method = method.trim();
    if method.is_empty() || !method.bytes().all(|b| b.is_ascii_alphabetic()) {
        return Err(format!("method {method:?} is not an HTTP method"));
    }
    Ok(Target {
        scheme,
        host,
        port,
        method: method.to_ascii_uppercase(),
        path: parsed.path().to_string(),
    })
}

/// The one check every outbound request passes through: the policy decides,
/// and the decision is audited either way.
pub fn check_request(state: &StoreState, target: &Target) -> Result<(), HttpError> {
    let decision =
        state
            .policy
            .http
            .check(&state.plugin.name, &state.policy.requested_http, target);
    let (decision, detail) = match &decision {
        Ok(()) => (Decision::Allowed, String::new()),
        Err(denial) => (Decision::Denied, denial.to_string()),
    };
    state.audit.record(AuditEvent::new(
        &state.plugin,
        "http",
        &target.method,
        &format!(
            "{}://{}:{}{}",
            target.scheme, target.host, target.port, target.path
        ),
        decision,
        detail.clone(),
    ));
    match decision {
        Decision::Allowed => Ok(()),
        Decision::Denied => {
            tracing::warn!(plugin = %state.plugin.label(), "http request denied: {detail}");
            Err(HttpError::Denied(detail))
        }
    }
}

impl Host for StoreState {
    async fn send(&mut self, req: Request) -> wasmtime::Result<Result<Response, HttpError>> {
        let target = match target_of(&req.method, &req.url) {
            Ok(target) => target,
            Err(message) => return Ok(Err(HttpError::InvalidRequest(message))),
        };
        if let Err(denied) = check_request(self, &target) {
            return Ok(Err(denied));
        }
        // Sending (hop-by-hop redirects, address checks after DNS, size and
        // rate limits, credential injection) is not built yet.
        Ok(Err(HttpError::Network(format!(
            "{target}: allowed, but this host build cannot send outbound requests yet"
        ))))
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
    fn malformed_requests_are_refused() {
        assert!(target_of("GET", "ftp://a.example/").is_err());
        assert!(target_of("GET", "/relative").is_err());
        assert!(target_of("GET", "https://user:pw@a.example/").is_err());
        assert!(target_of("G T", "https://a.example/").is_err());
    }
}
