//! The second door: `wasi:http`, which a guest language's own HTTP client
//! (JavaScript's `fetch` in componentize-js) uses. Each request the guest
//! hands to `outgoing-handler.handle` is read into a capability request and
//! sent by [`Outbound::send`]: the same grant check, address checks,
//! credential injection, limits, tape and audit as the `http` capability.
//! One policy, two doors.
//!
//! wasmtime-wasi-http is built without its own client: nothing reaches the
//! network except through the plugin version's checked `reqwest` client.

use std::future::Future;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use wasmtime_wasi_http::{Error, RequestOptions, WasiBody, WasiHttpHooks};

use super::{Outbound, Request, Response};
use crate::bindings::causeway::plugin::http::HttpError;

/// The request header naming the credential the host injects, the
/// wasi:http spelling of the capability's `credential` field. The host
/// removes it before the request leaves.
pub const CREDENTIAL_HEADER: &str = "x-causeway-credential";

/// Headers the client writes itself: a guest's copy is dropped, not sent.
const FRAMING: &[&str] = &["host", "content-length", "transfer-encoding", "connection"];

/// The wasi:http hooks of one call's store.
pub struct WasiHttpDoor {
    outbound: Outbound,
}

impl WasiHttpDoor {
    /// The door for requests checked and sent as `outbound` says.
    pub fn new(outbound: Outbound) -> WasiHttpDoor {
        WasiHttpDoor { outbound }
    }

    /// A new call's deadline, for a store that serves another call.
    pub fn set_deadline(&mut self, deadline: Instant) {
        self.outbound.deadline = deadline;
    }
}

type Pending = Box<dyn Future<Output = Result<(), Error>> + Send>;

impl WasiHttpHooks for WasiHttpDoor {
    // The client sets `host` from the URL, after the grant check saw it.
    fn set_host_header(&mut self) -> bool {
        false
    }

    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        _response_errors: Pending,
    ) -> Box<dyn Future<Output = Result<(http::Response<WasiBody>, Pending), Error>> + Send> {
        // The future runs on its own task, after the store has moved on:
        // it owns what it needs, and notes a `Retry-After` into this call
        // only.
        let mut outbound = self.outbound.clone();
        outbound.asked_to_wait = outbound.asked_to_wait.for_this_call();
        Box::new(async move {
            let request = read_request(request, options, &outbound).await?;
            let response = outbound.send(request).await.map_err(error_code)?;
            Ok((
                wasi_response(response)?,
                Box::new(async { Ok(()) }) as Pending,
            ))
        })
    }
}

fn internal(message: String) -> Error {
    Error::InternalError(Some(message))
}

/// Reads a guest's request (its body within the request-size limit and the
/// call's deadline) into the capability's request.
async fn read_request(
    request: http::Request<WasiBody>,
    options: Option<RequestOptions>,
    outbound: &Outbound,
) -> Result<Request, Error> {
    let (parts, body) = request.into_parts();
    let url = parts.uri.to_string();
    // Refused here, the request is audited as the capability's are.
    let refuse = |error| outbound.refuse_unread(parts.method.as_str(), &url, error);
    let mut headers = Vec::new();
    let mut credential = None;
    for (name, value) in &parts.headers {
        let value = value
            .to_str()
            .map_err(|_| {
                let message = format!("header {name} is not visible ASCII");
                refuse(HttpError::InvalidRequest(message.clone()));
                internal(message)
            })?
            .to_string();
        if name.as_str() == CREDENTIAL_HEADER {
            credential = Some(value);
        } else if !FRAMING.contains(&name.as_str()) {
            headers.push((name.as_str().to_string(), value));
        }
    }
    let limit = outbound.policy.http_limits.max_request_bytes;
    let remaining = outbound.deadline.saturating_duration_since(Instant::now());
    let collected = tokio::time::timeout(
        remaining,
        Limited::new(body, usize::try_from(limit).unwrap_or(usize::MAX)).collect(),
    )
    .await
    .map_err(|_| {
        refuse(HttpError::Timeout(
            "the plugin did not finish writing the request body before its call's deadline"
                .to_string(),
        ));
        Error::ConnectionWriteTimeout
    })?;
    let body = match collected {
        Ok(collected) => collected.to_bytes().to_vec(),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            // Guests' fetch implementations tend to hide the error code
            // (StarlingMonkey: "NetworkError"): the audit log and the
            // host's log say why.
            refuse(HttpError::TooLarge(format!(
                "the request body is over the limit of {limit} bytes (http-limits max-request-bytes)"
            )));
            return Err(Error::HttpRequestBodySize(Some(limit)));
        }
        Err(e) => {
            let message = format!("reading the request body: {e}");
            refuse(HttpError::InvalidRequest(message.clone()));
            return Err(internal(message));
        }
    };
    // The tightest timeout the guest asked for; the host's limit still caps it.
    let timeout_ms = options
        .into_iter()
        .flat_map(|o| {
            [
                o.connect_timeout,
                o.first_byte_timeout,
                o.between_bytes_timeout,
            ]
        })
        .flatten()
        .min()
        .map(|d: Duration| u32::try_from(d.as_millis()).unwrap_or(u32::MAX));
    Ok(Request {
        method: parts.method.as_str().to_string(),
        url,
        headers,
        body: (!body.is_empty()).then_some(body),
        credential,
        timeout_ms,
    })
}

/// The capability's answer as a wasi:http response. Framing headers are
/// the host's: the body is whole (and perhaps redacted), its length is set anew.
fn wasi_response(response: Response) -> Result<http::Response<WasiBody>, Error> {
    let mut builder = http::Response::builder().status(response.status);
    for (name, value) in &response.headers {
        if !FRAMING.contains(&name.as_str()) {
            builder = builder.header(name, value);
        }
    }
    builder = builder.header(http::header::CONTENT_LENGTH, response.body.len());
    builder
        .body(
            Full::new(Bytes::from(response.body))
                .map_err(|never| match never {})
                .boxed_unsync(),
        )
        .map_err(|e| internal(format!("the response cannot be handed to the plugin: {e}")))
}

/// How the guest's HTTP client sees a failure. The reason of a denial is
/// in the audit log and the host's log; wasi:http has no field for it.
fn error_code(error: HttpError) -> Error {
    match error {
        HttpError::Denied(_) => Error::HttpRequestDenied,
        HttpError::Timeout(_) => Error::HttpResponseTimeout,
        HttpError::TooLarge(_) => Error::HttpResponseBodySize(None),
        HttpError::InvalidRequest(message) | HttpError::Network(message) => internal(message),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_response_gets_its_length_from_the_body_it_carries() {
        let response = wasi_response(Response {
            status: 200,
            headers: vec![
                ("content-length".into(), "99".into()),
                ("content-type".into(), "application/json".into()),
            ],
            body: b"{}".to_vec(),
        })
        .unwrap();
        assert_eq!(response.headers()["content-length"], "2");
        assert_eq!(response.headers()["content-type"], "application/json");
    }

    #[test]
    fn denials_reach_the_guest_as_denials() {
        assert!(matches!(
            error_code(HttpError::Denied("no grant".into())),
            Error::HttpRequestDenied
        ));
        assert!(matches!(
            error_code(HttpError::Network("refused".into())),
            Error::InternalError(Some(m)) if m == "refused"
        ));
    }
}
