//! Probes the `http` capability. `read(stream)` takes the stream as a JSON
//! request `{"method", "url", "credential"?, "headers"?: [[name, value]], "body"?}`, performs it, logs everything it
//! got back, and answers one record `{"status", "headers", "body"}`, or an
//! error carrying the host's message: every way a plugin could learn its
//! credential ends up in its output or its logs, where tests look for it.

use causeway_sdk::http::{self, HttpError};
use causeway_sdk::{Page, PluginError, Record, Source, StreamInfo, log, plugin};
use serde::Deserialize;
use serde_json::json;

#[derive(Deserialize)]
struct Probe {
    method: String,
    url: String,
    #[serde(default)]
    credential: Option<String>,
    #[serde(default)]
    headers: Vec<(String, String)>,
    #[serde(default)]
    body: Option<String>,
}

struct Fetch;

impl Source for Fetch {
    fn discover() -> Result<Vec<StreamInfo>, PluginError> {
        Ok(Vec::new())
    }

    fn read(stream: String, _checkpoint: Option<String>) -> Result<Page, PluginError> {
        let probe: Probe = serde_json::from_str(&stream)
            .map_err(|e| PluginError::Config(format!("bad probe: {e}")))?;
        let mut request = http::request(&probe.method, &probe.url);
        if let Some(name) = &probe.credential {
            request = request.credential(name);
        }
        for (name, value) in &probe.headers {
            request = request.header(name, value);
        }
        if let Some(body) = probe.body {
            request = request.body(body);
        }
        let response = request.send().map_err(|e| {
            let message = match e {
                HttpError::Denied(m) => format!("denied: {m}"),
                HttpError::InvalidRequest(m) => format!("invalid-request: {m}"),
                HttpError::Timeout(m) => format!("timeout: {m}"),
                HttpError::TooLarge(m) => format!("too-large: {m}"),
                HttpError::Network(m) => format!("network: {m}"),
            };
            log::error(&message);
            PluginError::Fatal(message)
        })?;
        let body = String::from_utf8_lossy(response.body()).into_owned();
        log::info(format!("status {} body {body}", response.status()));
        let headers: Vec<(String, String)> = ["content-type", "x-echo-authorization", "location"]
            .iter()
            .filter_map(|h| response.header(h).map(|v| (h.to_string(), v.to_string())))
            .collect();
        let record = Record::upsert(
            "probe",
            "answer",
            &json!({ "status": response.status(), "headers": headers, "body": body }),
        )?;
        Ok(Page {
            records: vec![record],
            checkpoint: None,
            has_more: false,
        })
    }
}

plugin!(source: Fetch);
