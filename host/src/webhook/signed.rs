//! What a sender with a scheme of its own signs, as the operator writes it
//! (`signed = "{timestamp}{body}"`): the body, and around it what the
//! sender's documentation says it signs with it — the time it sent the
//! delivery (Zendesk), the delivery's id, the URL it called
//! (Square), and any text between.

use std::time::UNIX_EPOCH;

/// A piece of what is signed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part<'a> {
    /// Text as written.
    Text(&'a str),
    /// The raw body.
    Body,
    /// The `timestamp-header`'s value, as sent.
    Timestamp,
    /// The `id-header`'s value.
    Id,
    /// `https://` + Host + the path and query, as the sender called it.
    Url,
}

/// The placeholders a template may hold.
pub const PLACEHOLDERS: &str = "{body}, {timestamp}, {id} and {url}";

/// The parts of `template`: refused with a reason if a placeholder is not
/// one of [`PLACEHOLDERS`] or the body is not in it exactly once (a
/// signature that covers no body proves nothing of what a delivery says).
pub fn parts(template: &str) -> Result<Vec<Part<'_>>, String> {
    let mut parts = Vec::new();
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        if open > 0 {
            parts.push(Part::Text(&rest[..open]));
        }
        let close = rest[open..]
            .find('}')
            .ok_or_else(|| format!("{:?} opens a placeholder it does not close", &rest[open..]))?;
        let name = &rest[open..=open + close];
        parts.push(match name {
            "{body}" => Part::Body,
            "{timestamp}" => Part::Timestamp,
            "{id}" => Part::Id,
            "{url}" => Part::Url,
            other => {
                return Err(format!(
                    "{other} is no placeholder: they are {PLACEHOLDERS}"
                ));
            }
        });
        rest = &rest[open + close + 1..];
    }
    if !rest.is_empty() {
        parts.push(Part::Text(rest));
    }
    match parts.iter().filter(|p| **p == Part::Body).count() {
        1 => Ok(parts),
        0 => Err("{body} is not in it: a signature must cover the body".into()),
        _ => Err("{body} is in it more than once".into()),
    }
}

/// Seconds since 1970 of a sender's timestamp: a number of seconds (or of
/// milliseconds, at 13 digits and more), or an RFC 3339 time
/// (`2021-08-24T18:45:15Z`, with a fraction or an offset such as `-08:00`).
pub fn epoch_seconds(text: &str) -> Option<i64> {
    let text = text.trim();
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        let number: i64 = text.parse().ok()?;
        return Some(if text.len() >= 13 {
            number / 1000
        } else {
            number
        });
    }
    // humantime reads UTC; an offset is taken off by hand.
    let (local, offset) = match text.strip_suffix(['Z', 'z']) {
        Some(local) => (local, 0),
        None => {
            let at = text.len().checked_sub(6)?;
            let (local, offset) = (text.get(..at)?, text.get(at..)?);
            let sign = match offset.as_bytes().first()? {
                b'+' => 1,
                b'-' => -1,
                _ => return None,
            };
            let (hours, minutes) = offset.get(1..)?.split_once(':')?;
            let (hours, minutes): (i64, i64) = (hours.parse().ok()?, minutes.parse().ok()?);
            (local, sign * (hours * 3600 + minutes * 60))
        }
    };
    if local.len() < 19 || local.as_bytes().get(10) != Some(&b'T') {
        return None;
    }
    let utc = humantime::parse_rfc3339_weak(local).ok()?;
    let seconds = match utc.duration_since(UNIX_EPOCH) {
        Ok(after) => i64::try_from(after.as_secs()).ok()?,
        Err(before) => -i64::try_from(before.duration().as_secs()).ok()?,
    };
    Some(seconds - offset)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_name_what_is_signed_and_must_sign_the_body() {
        assert_eq!(
            parts("{timestamp}{body}"),
            Ok(vec![Part::Timestamp, Part::Body])
        );
        assert_eq!(
            parts("v0:{timestamp}:{body}"),
            Ok(vec![
                Part::Text("v0:"),
                Part::Timestamp,
                Part::Text(":"),
                Part::Body
            ])
        );
        assert_eq!(parts("{url}{body}"), Ok(vec![Part::Url, Part::Body]));
        assert_eq!(
            parts("{id}.{body}."),
            Ok(vec![Part::Id, Part::Text("."), Part::Body, Part::Text(".")])
        );
        assert!(
            parts("{timestamp}")
                .unwrap_err()
                .contains("must cover the body")
        );
        assert!(
            parts("{body}{body}")
                .unwrap_err()
                .contains("more than once")
        );
        assert!(
            parts("{date}{body}")
                .unwrap_err()
                .starts_with("{date} is no placeholder")
        );
        assert!(parts("{body}{time").unwrap_err().contains("does not close"));
    }

    #[test]
    fn a_senders_time_is_read_in_seconds_milliseconds_or_rfc_3339() {
        assert_eq!(epoch_seconds("1629830715"), Some(1_629_830_715));
        assert_eq!(epoch_seconds("1629830715123"), Some(1_629_830_715));
        assert_eq!(epoch_seconds("2021-08-24T18:45:15Z"), Some(1_629_830_715));
        assert_eq!(
            epoch_seconds("2021-08-24T18:45:15.634234626Z"),
            Some(1_629_830_715)
        );
        assert_eq!(
            epoch_seconds("2021-08-24T10:45:15-08:00"),
            Some(1_629_830_715)
        );
        assert_eq!(
            epoch_seconds("2021-08-25T00:15:15+05:30"),
            Some(1_629_830_715)
        );
        for not_a_time in [
            "",
            "yesterday",
            "2021-08-24",
            "2021-08-24 18:45:15Z",
            "-5",
            "2021-08-24T18:45:15+0800",
        ] {
            assert_eq!(epoch_seconds(not_a_time), None, "{not_a_time}");
        }
    }
}
