//! Plain text tables for the human-readable listings.

/// `text` with its control characters escaped (`\u{1b}`, and `\n` too
/// unless `lines` keeps them): a record's key, a storage key or a name a
/// plugin looked up is a third party's text, and must not move the
/// reader's cursor, recolour the terminal or break a table's rows.
pub fn printable(text: &str, lines: bool) -> std::borrow::Cow<'_, str> {
    let escaped = |c: char| c.is_control() && !(lines && c == '\n') && c != '\t';
    if !text.chars().any(escaped) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if escaped(c) {
            out.extend(c.escape_debug());
        } else {
            out.push(c);
        }
    }
    std::borrow::Cow::Owned(out)
}

/// Lays out `rows` under `header` in columns two spaces apart, each cell
/// [`printable`].
pub fn render(header: &[&str], rows: &[Vec<String>]) -> String {
    let rows: Vec<Vec<String>> = rows
        .iter()
        .map(|row| {
            row.iter()
                .map(|c| printable(c, false).into_owned())
                .collect()
        })
        .collect();
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in &rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(cell.chars().count());
            }
        }
    }
    let mut out = String::new();
    let mut line = |cells: Vec<&str>| {
        let last = cells.len().saturating_sub(1);
        for (i, cell) in cells.iter().enumerate() {
            out.push_str(cell);
            if i < last {
                let pad = widths[i] - cell.chars().count() + 2;
                out.extend(std::iter::repeat_n(' ', pad));
            }
        }
        out.push('\n');
    };
    line(header.to_vec());
    for row in &rows {
        line(row.iter().map(String::as_str).collect());
    }
    out
}

/// `table`, then each of `notes` on a line of its own after a blank line
/// (none: the table alone). A note is [`printable`] on one line: it
/// carries a plugin's error message, whose line breaks would otherwise
/// read as notes of their own.
pub fn with_notes(mut table: String, notes: impl IntoIterator<Item = String>) -> String {
    let mut notes = notes.into_iter().peekable();
    if notes.peek().is_some() {
        table.push('\n');
        for note in notes {
            table.push_str(&printable(&note, false));
            table.push('\n');
        }
    }
    table
}

#[cfg(test)]
mod tests {
    #[test]
    fn notes_follow_a_blank_line_and_none_add_nothing() {
        let table = super::render(&["A"], &[vec!["x".into()]]);
        assert_eq!(super::with_notes(table.clone(), []), "A\nx\n");
        assert_eq!(
            super::with_notes(table.clone(), ["x: why".to_string()]),
            "A\nx\n\nx: why\n"
        );
        assert_eq!(
            super::with_notes(table, ["x: one\ny: forged".to_string()]),
            "A\nx\n\nx: one\\ny: forged\n"
        );
    }

    #[test]
    fn a_third_partys_control_characters_are_shown_escaped() {
        let out = super::render(&["KEY", "N"], &[vec!["a\u{1b}[2Jb\nc".into(), "1".into()]]);
        assert_eq!(out, "KEY             N\na\\u{1b}[2Jb\\nc  1\n");
        assert_eq!(
            super::printable("two\nlines \u{7}", true),
            "two\nlines \\u{7}"
        );
        assert!(matches!(
            super::printable("plain é\ttext", false),
            std::borrow::Cow::Borrowed(_)
        ));
    }

    #[test]
    fn columns_line_up() {
        let out = super::render(&["A", "BB"], &[vec!["long".into(), "x".into()]]);
        assert_eq!(out, "A     BB\nlong  x\n");
    }
}
