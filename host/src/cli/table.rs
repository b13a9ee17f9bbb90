//! Plain text tables for the human-readable listings.

/// Lays out `rows` under `header` in columns two spaces apart.
pub fn render(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
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
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
    out
}

/// `table`, then each of `notes` on a line of its own after a blank line
/// (none: the table alone).
pub fn with_notes(mut table: String, notes: impl IntoIterator<Item = String>) -> String {
    let mut notes = notes.into_iter().peekable();
    if notes.peek().is_some() {
        table.push('\n');
        for note in notes {
            table.push_str(&note);
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
            super::with_notes(table, ["x: why".to_string()]),
            "A\nx\n\nx: why\n"
        );
    }

    #[test]
    fn columns_line_up() {
        let out = super::render(&["A", "BB"], &[vec!["long".into(), "x".into()]]);
        assert_eq!(out, "A     BB\nlong  x\n");
    }
}
