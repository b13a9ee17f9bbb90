//! Recorded HTTP exchanges, for `causeway test`: recorded once against the
//! live API, then served instead of the network, so a plugin's conformance
//! suite runs without the third party.
//!
//! Only the network leg is replaced: every request still passes the grant
//! check, credential binding, limits and audit of [`super`]. A tape holds a
//! request as the plugin built it (method, URL before any credential is
//! injected, body) and the answer as the plugin saw it (secrets the server
//! echoed already redacted), so no secret is ever written to a fixture.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use base64::Engine as _;
use serde::{Deserialize, Serialize};

use crate::files::{self, Durability};

/// Whether a tape answers requests or records them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TapeMode {
    /// Answer from the file; a request it does not hold fails.
    Replay,
    /// Send to the network and keep each exchange, to be saved.
    Record,
}

/// One request and its answer, as stored in the fixtures file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecordedExchange {
    /// The method, upper case.
    pub method: String,
    /// The URL the plugin asked for (no injected credential in it).
    pub url: String,
    /// The request body, when it is UTF-8 text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    /// The request body, base64, when it is not text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body_base64: Option<String>,
    /// The answer's status.
    pub status: u16,
    /// The answer's headers, names in lower case.
    #[serde(default)]
    pub headers: Vec<(String, String)>,
    /// The answer's body, when it is UTF-8 text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response: Option<String>,
    /// The answer's body, base64, when it is not text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_base64: Option<String>,
}

/// An answer served from a tape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TapeAnswer {
    /// The status.
    pub status: u16,
    /// The headers.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
}

/// Why a tape cannot be read or written.
#[derive(Debug, thiserror::Error)]
pub enum TapeError {
    /// The file cannot be read or written.
    #[error("{file}: {error}")]
    Io {
        /// The fixtures file.
        file: String,
        /// The error.
        error: std::io::Error,
    },
    /// The file is not a list of exchanges.
    #[error("{file} is not a list of recorded HTTP exchanges: {message}")]
    Invalid {
        /// The fixtures file.
        file: String,
        /// What is wrong.
        message: String,
    },
}

/// A fixtures file of HTTP exchanges, replayed or being recorded.
#[derive(Debug)]
pub struct Tape {
    mode: TapeMode,
    file: PathBuf,
    state: Mutex<TapeState>,
}

#[derive(Debug, Default)]
struct TapeState {
    exchanges: Vec<RecordedExchange>,
    /// For each request, how many times it was answered: the n-th identical
    /// request gets the n-th recorded answer, and the last answer repeats.
    served: BTreeMap<(String, String, Vec<u8>), usize>,
}

fn split(bytes: &[u8]) -> (Option<String>, Option<String>) {
    match std::str::from_utf8(bytes) {
        Ok(text) => (Some(text.to_string()), None),
        Err(_) => (
            None,
            Some(base64::engine::general_purpose::STANDARD.encode(bytes)),
        ),
    }
}

fn join(text: &Option<String>, encoded: &Option<String>) -> Vec<u8> {
    match (text, encoded) {
        (Some(text), _) => text.as_bytes().to_vec(),
        (None, Some(encoded)) => base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .unwrap_or_default(),
        (None, None) => Vec::new(),
    }
}

impl RecordedExchange {
    fn request_body(&self) -> Vec<u8> {
        join(&self.body, &self.body_base64)
    }

    fn matches(&self, method: &str, url: &str, body: &[u8]) -> bool {
        self.method.eq_ignore_ascii_case(method) && self.url == url && self.request_body() == body
    }
}

impl Tape {
    /// The tape in `file`, to replay. A missing file is an empty tape: every
    /// request fails, naming the file to record.
    pub fn replay(file: &Path) -> Result<Tape, TapeError> {
        let exchanges = match std::fs::read(file) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(source) => {
                return Err(TapeError::Io {
                    file: file.display().to_string(),
                    error: source,
                });
            }
            Ok(bytes) => {
                let exchanges: Vec<RecordedExchange> =
                    serde_json::from_slice(&bytes).map_err(|e| TapeError::Invalid {
                        file: file.display().to_string(),
                        message: e.to_string(),
                    })?;
                for (i, exchange) in exchanges.iter().enumerate() {
                    if exchange.body_base64.as_ref().is_some_and(|b| {
                        base64::engine::general_purpose::STANDARD.decode(b).is_err()
                    }) {
                        return Err(TapeError::Invalid {
                            file: file.display().to_string(),
                            message: format!("exchange {i}: body_base64 is not base64"),
                        });
                    }
                }
                exchanges
            }
        };
        Ok(Tape {
            mode: TapeMode::Replay,
            file: file.to_path_buf(),
            state: Mutex::new(TapeState {
                exchanges,
                served: BTreeMap::new(),
            }),
        })
    }

    /// An empty tape recording into `file` (written by [`Tape::save`]).
    pub fn record(file: &Path) -> Tape {
        Tape {
            mode: TapeMode::Record,
            file: file.to_path_buf(),
            state: Mutex::default(),
        }
    }

    /// Replay or record.
    pub fn mode(&self) -> TapeMode {
        self.mode
    }

    /// The fixtures file.
    pub fn file(&self) -> &Path {
        &self.file
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, TapeState> {
        // A panic while holding the lock leaves consistent data: keep going.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The recorded answer to this request, if the tape holds one.
    pub fn answer(&self, method: &str, url: &str, body: &[u8]) -> Option<TapeAnswer> {
        let mut state = self.lock();
        let matching: Vec<usize> = state
            .exchanges
            .iter()
            .enumerate()
            .filter(|(_, e)| e.matches(method, url, body))
            .map(|(i, _)| i)
            .collect();
        let last = *matching.last()?;
        let key = (method.to_ascii_uppercase(), url.to_string(), body.to_vec());
        let count = state.served.entry(key).or_insert(0);
        let index = matching.get(*count).copied().unwrap_or(last);
        *count += 1;
        let exchange = &state.exchanges[index];
        Some(TapeAnswer {
            status: exchange.status,
            headers: exchange.headers.clone(),
            body: join(&exchange.response, &exchange.response_base64),
        })
    }

    /// Keeps one exchange the network answered (recording only).
    pub fn keep(&self, method: &str, url: &str, body: &[u8], answer: &TapeAnswer) {
        if self.mode != TapeMode::Record {
            return;
        }
        let (body, body_base64) = if body.is_empty() {
            (None, None)
        } else {
            split(body)
        };
        let (response, response_base64) = split(&answer.body);
        let exchange = RecordedExchange {
            method: method.to_ascii_uppercase(),
            url: url.to_string(),
            body,
            body_base64,
            status: answer.status,
            headers: answer.headers.clone(),
            response,
            response_base64,
        };
        let mut state = self.lock();
        // A request asked again and answered the same adds nothing.
        if !state.exchanges.contains(&exchange) {
            state.exchanges.push(exchange);
        }
    }

    /// Writes the recorded exchanges to the file (atomically); answers how
    /// many there are.
    pub fn save(&self) -> Result<usize, TapeError> {
        let state = self.lock();
        let io = |source| TapeError::Io {
            file: self.file.display().to_string(),
            error: source,
        };
        let text =
            serde_json::to_string_pretty(&state.exchanges).map_err(|e| TapeError::Invalid {
                file: self.file.display().to_string(),
                message: e.to_string(),
            })?;
        if let Some(dir) = self.file.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        files::replace(
            &self.file,
            &self.file.with_extension("json.partial"),
            (text + "\n").as_bytes(),
            Durability::Contents,
        )
        .map_err(io)?;
        Ok(state.exchanges.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(status: u16, body: &[u8]) -> TapeAnswer {
        TapeAnswer {
            status,
            headers: vec![("content-type".into(), "application/json".into())],
            body: body.to_vec(),
        }
    }

    #[test]
    fn a_recorded_tape_replays_each_answer_in_order_then_repeats_the_last() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("fixtures").join("http.json");
        let recorder = Tape::record(&file);
        recorder.keep("get", "https://a.example/x", b"", &answer(200, b"one"));
        recorder.keep("GET", "https://a.example/x", b"", &answer(200, b"two"));
        recorder.keep("GET", "https://a.example/x", b"", &answer(200, b"two"));
        recorder.keep(
            "POST",
            "https://a.example/x",
            &[0xff, 0],
            &answer(201, &[0xfe]),
        );
        assert_eq!(recorder.save().unwrap(), 3);

        let tape = Tape::replay(&file).unwrap();
        let body = |a: Option<TapeAnswer>| a.map(|a| a.body);
        assert_eq!(
            body(tape.answer("GET", "https://a.example/x", b"")),
            Some(b"one".to_vec())
        );
        assert_eq!(
            body(tape.answer("GET", "https://a.example/x", b"")),
            Some(b"two".to_vec())
        );
        assert_eq!(
            body(tape.answer("GET", "https://a.example/x", b"")),
            Some(b"two".to_vec())
        );
        let post = tape
            .answer("POST", "https://a.example/x", &[0xff, 0])
            .unwrap();
        assert_eq!((post.status, post.body), (201, vec![0xfe]));
        assert_eq!(tape.answer("POST", "https://a.example/x", b"other"), None);
        assert_eq!(tape.answer("GET", "https://a.example/y", b""), None);
    }

    #[test]
    fn a_missing_file_is_an_empty_tape_and_a_broken_one_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let tape = Tape::replay(&dir.path().join("none.json")).unwrap();
        assert_eq!(tape.answer("GET", "https://a.example/", b""), None);
        let broken = dir.path().join("broken.json");
        std::fs::write(&broken, "{\"not\": \"a list\"}").unwrap();
        let err = Tape::replay(&broken).unwrap_err().to_string();
        assert!(
            err.contains("broken.json") && err.contains("recorded HTTP exchanges"),
            "{err}"
        );
    }
}
