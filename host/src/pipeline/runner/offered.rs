//! Whether the source offers the stream a pipeline reads, as its `discover`
//! says, asked once per source build and stream before the first read.
//!
//! A stream named wrong (`contact` for `contacts`) would otherwise fail
//! with whatever the plugin makes of it, or, from a plugin that reads any
//! name it is given, sync nothing without a word. A source that lists no
//! stream (against the contract: `causeway test` wants a list) is taken to
//! read any; one whose `discover` fails is not checked, and its read says
//! what is wrong.

use std::sync::Mutex;

use crate::bindings::StreamInfo;
use crate::operation::{Answer, Operation};

use super::stage::Bound;
use super::{RunEnd, Runner};

/// The source build and stream last asked about and not refused.
#[derive(Debug, Default)]
pub(crate) struct Offered(Mutex<Option<(String, String)>>);

impl Offered {
    fn last(&self) -> std::sync::MutexGuard<'_, Option<(String, String)>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Runner {
    /// Ends the run, the source's reads stopped until the configuration or
    /// the plugin changes, when `source` does not offer `stream`.
    pub(super) async fn stream_offered(
        &self,
        source: &Bound<'_>,
        stream: &str,
    ) -> Result<(), RunEnd> {
        let plugin = &source.installed.plugin.info;
        // Asked on every page: compared in place, nothing copied.
        let known = |last: &Option<(String, String)>| {
            last.as_ref()
                .is_some_and(|(digest, known)| *digest == plugin.digest && known == stream)
        };
        if known(&self.offered.last()) {
            return Ok(());
        }
        let answer = source
            .installed
            .call_warm(
                &self.runtime.engine,
                Operation::Discover,
                &self.context(source),
            )
            .await;
        match answer {
            Ok(Answer::Streams(streams)) => {
                if let Some(why) = not_offered(&plugin.name, stream, &streams) {
                    return Err(RunEnd::SourceStopped(format!(
                        "pipeline {}: {why}",
                        self.name
                    )));
                }
            }
            other => tracing::debug!(
                pipeline = %self.name,
                "{} did not list its streams ({}): the stream {stream:?} is not checked",
                plugin.name,
                match other {
                    Ok(_) => "another kind of answer".to_string(),
                    Err(e) => e.to_string(),
                }
            ),
        }
        *self.offered.last() = Some((plugin.digest.clone(), stream.to_string()));
        Ok(())
    }
}

/// Why `plugin`, which lists `streams`, cannot be read as `stream`, if it
/// cannot.
fn not_offered(plugin: &str, stream: &str, streams: &[StreamInfo]) -> Option<String> {
    if streams.is_empty() || streams.iter().any(|s| s.name == stream) {
        return None;
    }
    const SHOWN: usize = 10;
    let mut names: Vec<&str> = streams.iter().map(|s| s.name.as_str()).collect();
    names.sort_unstable();
    // The names are the plugin's: the message goes into the pipeline's
    // state and its run's history, so each is cut.
    let shown: Vec<_> = names[..names.len().min(SHOWN)]
        .iter()
        .map(|name| crate::contract::shown(name, 80))
        .collect();
    let mut offers = shown.join(", ");
    if streams.len() > SHOWN {
        offers.push_str(&format!(" and {} more", streams.len() - SHOWN));
    }
    // A name longer than a stream may be is no one's likely meaning.
    let likely = names
        .iter()
        .copied()
        .filter(|name| name.len() <= crate::contract::MAX_STREAM_BYTES);
    let hint = match crate::config::closest(stream, likely) {
        Some(known) => format!(" (did you mean `{known}`?)"),
        None => String::new(),
    };
    Some(format!(
        "source.stream {stream:?} is not a stream {plugin} offers: its discover lists {offers}{hint}; \
         name one of them in causeway.toml (the reads wait until it does)"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn streams(names: &[&str]) -> Vec<StreamInfo> {
        names
            .iter()
            .map(|name| StreamInfo {
                name: name.to_string(),
                description: String::new(),
                incremental: true,
                json_schema: None,
            })
            .collect()
    }

    #[test]
    fn a_stream_the_source_does_not_list_is_named_with_the_likely_one() {
        let offered = streams(&["contacts", "companies"]);
        assert_eq!(not_offered("crm", "contacts", &offered), None);
        assert_eq!(
            not_offered("crm", "contact", &offered).as_deref(),
            Some(
                "source.stream \"contact\" is not a stream crm offers: its discover lists \
                 companies, contacts (did you mean `contacts`?); name one of them in \
                 causeway.toml (the reads wait until it does)"
            )
        );
        // Nothing close: no guess.
        let far = not_offered("crm", "deals", &offered).unwrap_or_default();
        assert!(far.contains("lists companies, contacts;"), "{far}");
        // A source that lists nothing reads any stream.
        assert_eq!(not_offered("crm", "anything", &[]), None);
        // A long list is cut.
        let many: Vec<String> = (0..25).map(|i| format!("s{i:02}")).collect();
        let many = streams(&many.iter().map(String::as_str).collect::<Vec<_>>());
        let cut = not_offered("crm", "x", &many).unwrap_or_default();
        assert!(
            cut.contains("s00, s01") && cut.contains("s09 and 15 more;"),
            "{cut}"
        );
        // So is a long name.
        let long = "c".repeat(1 << 20);
        let cut = not_offered("crm", "contacts", &streams(&[&long])).unwrap_or_default();
        assert!(cut.len() < 400, "{} bytes", cut.len());
        assert!(cut.contains("… (1048576 bytes)"), "{}", &cut[..200]);
    }
}
