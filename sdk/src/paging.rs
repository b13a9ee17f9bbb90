//! Pagination: the three shapes third-party APIs use, each with its
//! checkpoint type, so a source's `read` is "decode the checkpoint, fetch one
//! page, encode where the next one starts".
//!
//! - [`PageNumber`]: `?page=N` (or an offset);
//! - [`Cursor`]: an opaque `next_cursor` the API hands back;
//! - [`next_link`]: an RFC 8288 `Link: <…>; rel="next"` header, whose URL is the
//!   checkpoint itself.
//!
//! A checkpoint is text the host stores after every sink acknowledged the
//! page; [`decode`] and [`encode`] carry any serde type through it.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::http::{Response, escape};
use crate::{Page, PluginError, Record};

/// Reads a checkpoint into `T`; no checkpoint (a first read) is `T::default()`.
/// Text that is not a `T` is a fatal error naming it: the host passes back only
/// what the plugin wrote, so a mismatch means the plugin changed its format.
pub fn decode<T: DeserializeOwned + Default>(checkpoint: Option<&str>) -> Result<T, PluginError> {
    match checkpoint {
        None => Ok(T::default()),
        Some(text) => serde_json::from_str(text).map_err(|e| {
            PluginError::Fatal(format!(
                "checkpoint {text:?} is not this plugin's checkpoint format: {e}"
            ))
        }),
    }
}

/// Writes a checkpoint.
pub fn encode<T: Serialize>(state: &T) -> Result<String, PluginError> {
    serde_json::to_string(state)
        .map_err(|e| PluginError::Fatal(format!("the checkpoint cannot be written: {e}")))
}

/// The page to answer: `records`, `next` (where the read after this page
/// starts: the host stores it once every sink acknowledged the page) and
/// whether the API has more right now.
pub fn page<T: Serialize>(
    records: Vec<Record>,
    next: &T,
    has_more: bool,
) -> Result<Page, PluginError> {
    Ok(Page {
        records,
        checkpoint: Some(encode(next)?),
        has_more,
    })
}

/// The page to answer for a stream read whole on every run (an API with no
/// "changed since"): `records`, and `next`, where the read after this page
/// starts, or `None` on the last page. The last page's checkpoint is the
/// first page's (`T::default()`), so the next run starts over; left on the
/// last page instead, every later run would read that page alone.
pub fn page_of_whole<T: Serialize + Default>(
    records: Vec<Record>,
    next: Option<T>,
) -> Result<Page, PluginError> {
    let has_more = next.is_some();
    page(records, &next.unwrap_or_default(), has_more)
}

/// Page-number pagination: the next page to ask for, from 1.
///
/// Page numbers suit streams read whole each time (`incremental: false`): an
/// item added to a partial last page is missed by a read resumed on the page
/// after it. For incremental reads, keep a cursor on the last item read (its
/// `updated_at` and id, as `crm-source` does), which neither repeats nor
/// misses a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PageNumber {
    /// The page to read next.
    pub page: u64,
}

impl Default for PageNumber {
    fn default() -> Self {
        PageNumber { page: 1 }
    }
}

impl PageNumber {
    /// The page after this one.
    pub fn next(self) -> PageNumber {
        PageNumber {
            page: self.page.saturating_add(1),
        }
    }

    /// `url` with `param=N` appended (`?` or `&` as needed).
    pub fn url(self, url: &str, param: &str) -> String {
        with_query(url, param, &self.page.to_string())
    }
}

/// Cursor pagination: the API's opaque cursor for the next page; `None`
/// before the first page.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Cursor {
    /// The cursor the API answered last.
    pub cursor: Option<String>,
}

impl Cursor {
    /// `url` with `param=CURSOR` appended, or unchanged on the first page.
    pub fn url(&self, url: &str, param: &str) -> String {
        match &self.cursor {
            Some(cursor) => with_query(url, param, cursor),
            None => url.to_string(),
        }
    }
}

/// `url` with `name=value` appended to its query, the value percent-encoded.
pub fn with_query(url: &str, name: &str, value: &str) -> String {
    let separator = if url.contains('?') { '&' } else { '?' };
    format!("{url}{separator}{}={}", escape(name), escape(value))
}

/// The `rel="next"` URL of the response's `Link` header (RFC 8288), as GitHub
/// and many others paginate. A relative URL is returned as written.
pub fn next_link(response: &Response) -> Option<String> {
    link(response.header("link")?, "next")
}

/// The URL of the link with relation `rel` in a `Link` header value.
pub fn link(header: &str, rel: &str) -> Option<String> {
    split_links(header).into_iter().find_map(|entry| {
        let (target, params) = entry.split_once('>')?;
        let target = target.trim().strip_prefix('<')?;
        let wanted = params.split(';').any(|param| {
            let Some((name, value)) = param.split_once('=') else {
                return false;
            };
            name.trim().eq_ignore_ascii_case("rel")
                && value
                    .trim()
                    .trim_matches('"')
                    .split_ascii_whitespace()
                    .any(|r| r.eq_ignore_ascii_case(rel))
        });
        wanted.then(|| target.to_string())
    })
}

/// Splits a `Link` header at the commas between links (not those inside
/// `<…>` or quotes).
fn split_links(header: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut start, mut in_target, mut in_quotes) = (0, false, false);
    for (i, c) in header.char_indices() {
        match c {
            '<' if !in_quotes => in_target = true,
            '>' if !in_quotes => in_target = false,
            '"' if !in_target => in_quotes = !in_quotes,
            ',' if !in_target && !in_quotes => {
                parts.push(&header[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&header[start..]);
    parts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_first_read_decodes_to_the_default_and_a_foreign_checkpoint_is_fatal() {
        assert_eq!(decode::<PageNumber>(None).unwrap(), PageNumber { page: 1 });
        let state = PageNumber { page: 7 };
        let text = encode(&state).unwrap();
        assert_eq!(decode::<PageNumber>(Some(&text)).unwrap(), state);
        assert!(matches!(
            decode::<PageNumber>(Some("not json")),
            Err(PluginError::Fatal(m)) if m.contains("not json")
        ));
    }

    #[test]
    fn a_stream_read_whole_starts_over_after_its_last_page() {
        let middle = page_of_whole(Vec::new(), Some(PageNumber { page: 3 })).unwrap();
        assert!(middle.has_more);
        assert_eq!(
            decode::<PageNumber>(middle.checkpoint.as_deref()).unwrap(),
            PageNumber { page: 3 }
        );
        let last = page_of_whole::<PageNumber>(Vec::new(), None).unwrap();
        assert!(!last.has_more);
        assert_eq!(
            decode::<PageNumber>(last.checkpoint.as_deref()).unwrap(),
            PageNumber::default()
        );
        // A link followed to its end goes back to no link: the first page.
        let last = page_of_whole::<Option<String>>(Vec::new(), None).unwrap();
        assert_eq!(last.checkpoint.as_deref(), Some("null"));
    }

    #[test]
    fn page_numbers_and_cursors_build_urls() {
        let first = PageNumber::default();
        assert_eq!(
            first.url("https://a.example/v1/x", "page"),
            "https://a.example/v1/x?page=1"
        );
        assert_eq!(
            first.next().url("https://a.example/v1/x?limit=5", "page"),
            "https://a.example/v1/x?limit=5&page=2"
        );
        assert_eq!(
            Cursor::default().url("https://a.example/x", "cursor"),
            "https://a.example/x"
        );
        let cursor = Cursor {
            cursor: Some("a b&c=/".into()),
        };
        assert_eq!(
            cursor.url("https://a.example/x", "cursor"),
            "https://a.example/x?cursor=a%20b%26c%3D%2F"
        );
    }

    #[test]
    fn a_page_carries_where_the_next_read_starts() {
        let page = page(Vec::new(), &PageNumber { page: 3 }, false).unwrap();
        assert!(!page.has_more);
        assert_eq!(page.checkpoint.as_deref(), Some(r#"{"page":3}"#));
    }

    #[test]
    fn link_headers_yield_the_next_url() {
        let header = r#"<https://api.example/items?page=3>; rel="next", <https://api.example/items?page=1,2>; rel="prev first""#;
        assert_eq!(
            link(header, "next").as_deref(),
            Some("https://api.example/items?page=3")
        );
        assert_eq!(
            link(header, "first").as_deref(),
            Some("https://api.example/items?page=1,2")
        );
        assert_eq!(link(header, "last"), None);
        assert_eq!(link("garbage", "next"), None);
        assert_eq!(
            link("<https://x.example/2>; REL=next", "next").as_deref(),
            Some("https://x.example/2")
        );
    }
}
