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
