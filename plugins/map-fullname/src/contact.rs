//! A contact and its mapping to a subscriber: the code every form of the
//! transform shares, on its own so that the batch-as-one-buffer experiment
//! (`plugins/test/packed`, benches/packed.rs) runs exactly this code too.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};

/// A contact as the CRM sends it. Its text borrows from the record's JSON
/// (owned only where the JSON escapes a character): a batch of 1000 maps
/// without 4000 string copies.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Contact<'a> {
    #[serde(default, borrow)]
    pub first_name: Cow<'a, str>,
    #[serde(default, borrow)]
    pub last_name: Cow<'a, str>,
    #[serde(default, borrow)]
    pub email: Option<Text<'a>>,
    #[serde(default, borrow)]
    pub company: Option<Text<'a>>,
}

/// A JSON string borrowed where it can be. serde borrows a bare `Cow<str>`
/// field only, not one inside an `Option`; this wrapper carries the borrow
/// through `null`-able fields.
#[derive(Debug, Deserialize)]
#[serde(transparent)]
pub struct Text<'a>(#[serde(borrow)] pub Cow<'a, str>);

impl<'a> From<&'a str> for Text<'a> {
    fn from(s: &'a str) -> Self {
        Text(Cow::Borrowed(s))
    }
}

/// A subscriber as the mailer expects it.
#[derive(Debug, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Subscriber<'a> {
    pub full_name: String,
    pub email: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub organization: Option<&'a str>,
}

impl Subscriber<'_> {
    /// The subscriber as JSON text: byte for byte what serde_json writes for
    /// it (the tests hold them equal). Written here rather than by
    /// serde_json, whose escaping steps through a string one byte at a time:
    /// in the sandbox each step also pays a deadline check, so that loop
    /// cost the plugin several times what it costs natively
    /// (docs/performance.md §1, session 16).
    pub fn to_json(&self) -> String {
        // The keys, quotes and braces take 44 bytes with an organization.
        let mut out = String::with_capacity(
            44 + self.full_name.len() + self.email.len() + self.organization.map_or(0, str::len),
        );
        self.write_json(&mut out);
        out
    }

    /// Appends [`Self::to_json`]'s text to `out`.
    pub fn write_json(&self, out: &mut impl JsonOut) {
        out.push_text("{\"fullName\":");
        push_json_string(out, &self.full_name);
        out.push_text(",\"email\":");
        push_json_string(out, self.email);
        if let Some(organization) = self.organization {
            out.push_text(",\"organization\":");
            push_json_string(out, organization);
        }
        out.push_text("}");
    }
}

/// Where JSON text goes: a `String`, or a byte buffer.
pub trait JsonOut {
    /// Appends `text`.
    fn push_text(&mut self, text: &str);
}

impl JsonOut for String {
    fn push_text(&mut self, text: &str) {
        self.push_str(text);
    }
}

impl JsonOut for Vec<u8> {
    fn push_text(&mut self, text: &str) {
        self.extend_from_slice(text.as_bytes());
    }
}

/// Appends `s` as a JSON string, escaped as serde_json escapes: `"`, `\\`
/// and control characters, nothing else. Runs that need no escape are
/// copied whole.
fn push_json_string(out: &mut impl JsonOut, s: &str) {
    out.push_text("\"");
    let mut rest = s;
    while let Some(at) = first_to_escape(rest.as_bytes()) {
        // The byte at `at` is ASCII: both slices end on a char boundary.
        out.push_text(&rest[..at]);
        push_escape(out, rest.as_bytes()[at]);
        rest = &rest[at + 1..];
    }
    out.push_text(rest);
    out.push_text("\"");
}

/// Whether JSON must escape `byte`.
fn must_escape(byte: u8) -> bool {
    byte < 0x20 || byte == b'"' || byte == b'\\'
}

/// The index of the first byte JSON must escape. Eight bytes are tested
/// per step: one loop iteration (and in the sandbox one deadline check)
/// where a byte-wise scan would take eight.
fn first_to_escape(bytes: &[u8]) -> Option<usize> {
    const ONES: u64 = u64::from_le_bytes([0x01; 8]);
    const HIGH: u64 = ONES * 0x80;
    // Exact for the word (a byte's own flag may be a false alarm after a
    // hit, which the byte-wise look below settles): some byte's high bit
    // ends up set iff some byte is zero (`has_zero`) or below 0x20
    // (`has_control`).
    let has_zero = |w: u64| w.wrapping_sub(ONES) & !w & HIGH != 0;
    let has_control = |w: u64| w.wrapping_sub(ONES * 0x20) & !w & HIGH != 0;
    let (words, tail) = bytes.as_chunks::<8>();
    for (n, word) in words.iter().enumerate() {
        let w = u64::from_le_bytes(*word);
        let hit = has_control(w)
            || has_zero(w ^ (ONES * u64::from(b'"')))
            || has_zero(w ^ (ONES * u64::from(b'\\')));
        if hit && let Some(i) = word.iter().position(|&b| must_escape(b)) {
            return Some(n * 8 + i);
        }
    }
    let i = tail.iter().position(|&b| must_escape(b))?;
    Some(words.len() * 8 + i)
}

/// Appends the escape for `byte`, one [`must_escape`] accepts, as serde_json
/// writes it: the short forms where JSON has one, else `\u00XX` in lower
/// case.
fn push_escape(out: &mut impl JsonOut, byte: u8) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let short = match byte {
        b'"' => "\\\"",
        b'\\' => "\\\\",
        b'\n' => "\\n",
        b'\r' => "\\r",
        b'\t' => "\\t",
        0x08 => "\\b",
        0x0c => "\\f",
        _ => {
            let code = [
                b'\\',
                b'u',
                b'0',
                b'0',
                HEX[usize::from(byte >> 4)],
                HEX[usize::from(byte & 0xf)],
            ];
            // Six ASCII bytes: always UTF-8.
            if let Ok(code) = std::str::from_utf8(&code) {
                out.push_text(code);
            }
            return;
        }
    };
    out.push_text(short);
}

/// Maps one contact; `None` when it has no email.
pub fn map_contact<'a>(contact: &'a Contact<'_>) -> Option<Subscriber<'a>> {
    let email = contact.email.as_ref().map(|e| e.0.trim())?;
    if email.is_empty() {
        return None;
    }
    let (first, last) = (contact.first_name.trim(), contact.last_name.trim());
    let mut full_name = String::with_capacity(first.len() + 1 + last.len());
    full_name.push_str(first);
    if !first.is_empty() && !last.is_empty() {
        full_name.push(' ');
    }
    full_name.push_str(last);
    Some(Subscriber {
        full_name,
        email,
        organization: contact
            .company
            .as_ref()
            .map(|c| c.0.as_ref())
            .filter(|c| !c.trim().is_empty()),
    })
}
