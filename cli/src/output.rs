//! Reports: a human-readable table or text by default, JSON with `--json`. Text that came
//! from outside (message bodies, trace ids, reasons and details, Langfuse and Stripe strings)
//! reaches the terminal through [`escape`]: the tables, the `key: value` lines and the plan
//! lines escape every cell; JSON stays JSON (serde escapes control characters itself).

use crate::error::CliResult;
use serde_json::Value;
use std::borrow::Cow;
use std::fmt::Write as _;
use std::io::Write;

/// `text` safe to print on a terminal: control characters (ANSI escape sequences start with
/// one), and the invisible characters that reorder or hide text (bidi overrides and
/// isolates, direction marks) are written as `\u{..}` (`\n`, `\r`, `\t` for the usual three).
/// Everything else, any script included, is kept.
pub fn escape(text: &str) -> Cow<'_, str> {
    if !text.chars().any(unsafe_char) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if unsafe_char(c) => {
                let _ = write!(out, "\\u{{{:04x}}}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// Control characters (C0, DEL, C1), bidi embeddings, overrides and isolates, direction
/// marks, and the zero-width characters that hide text.
pub(crate) fn unsafe_char(c: char) -> bool {
    c.is_control()
        || matches!(c,
            '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}'
            | '\u{061c}' | '\u{feff}')
}

/// Where a command writes its report, and in which form.
pub struct Output<'a> {
    out: &'a mut dyn Write,
    json: bool,
}

impl<'a> Output<'a> {
    /// Tables and text, or JSON.
    pub fn new(out: &'a mut dyn Write, json: bool) -> Output<'a> {
        Output { out, json }
    }

    /// Whether the report is JSON.
    pub fn json(&self) -> bool {
        self.json
    }

    /// One report: `value` as JSON, or what `human` renders.
    pub fn report(&mut self, value: &Value, human: impl FnOnce() -> String) -> CliResult {
        if self.json {
            writeln!(self.out, "{value}")?;
        } else {
            write!(self.out, "{}", human())?;
        }
        Ok(())
    }

    /// A line of text in human mode (plans, hints), escaped; nothing in JSON mode.
    pub fn say(&mut self, line: &str) -> CliResult {
        if !self.json {
            writeln!(self.out, "{}", escape(line))?;
        }
        Ok(())
    }
}

/// A table: the headers, then one line per row, columns padded to their widest cell; every
/// cell escaped.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let rows: Vec<Vec<String>> = rows
        .iter()
        .map(|row| row.iter().map(|c| escape(c).into_owned()).collect())
        .collect();
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in &rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(cell.chars().count());
            }
        }
    }
    let line = |cells: Vec<&str>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        format!("{}\n", padded.join("  ").trim_end())
    };
    let mut out = line(headers.to_vec());
    for row in &rows {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    out
}

/// `key: value` lines, keys aligned, values escaped.
pub fn fields(pairs: &[(&str, String)]) -> String {
    let width = pairs.iter().map(|(k, _)| k.len()).max().unwrap_or(0) + 1;
    pairs
        .iter()
        .map(|(k, v)| format!("{:<width$} {}\n", format!("{k}:"), escape(v)))
        .collect()
}

/// An optional value, or `-`.
pub fn or_dash(v: Option<impl ToString>) -> String {
    v.map(|v| v.to_string()).unwrap_or_else(|| "-".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_pad_columns_to_the_widest_cell() {
        let rows = vec![vec!["t-1".to_string(), "unmapped_customer".to_string()]];
        let t = table(&["trace", "reason"], &rows);
        assert_eq!(t, "trace  reason\nt-1    unmapped_customer\n");
    }

    #[test]
    fn untrusted_text_is_escaped_in_tables_and_fields() {
        let hostile = "t\u{1b}[2J\u{1b}]0;owned\u{7}\u{202e}gnp.exe\r\nx";
        let rows = vec![vec![hostile.to_string()]];
        let cases = [
            (table(&["trace"], &rows), 2),
            (fields(&[("trace", hostile.into())]), 1),
        ];
        for (text, lines) in cases {
            // One line per row: the only raw newlines are the table's own.
            assert_eq!(text.lines().count(), lines, "{text:?}");
            assert!(
                !text.lines().any(|l| l.chars().any(unsafe_char)),
                "{text:?}"
            );
            assert!(text.contains("\\u{001b}[2J"), "{text}");
            assert!(text.contains("\\u{202e}gnp.exe\\r\\nx"), "{text}");
        }
        assert_eq!(escape("cus_ü 漢字"), "cus_ü 漢字");
    }
}
