//! Reports: a human-readable table or text by default, JSON with `--json`.

use crate::error::CliResult;
use serde_json::Value;
use std::io::Write;

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

    /// A line of text in human mode (plans, hints); nothing in JSON mode.
    pub fn say(&mut self, line: &str) -> CliResult {
        if !self.json {
            writeln!(self.out, "{line}")?;
        }
        Ok(())
    }
}

/// A table: the headers, then one line per row, columns padded to their widest cell.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
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
    for row in rows {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    out
}

/// `key: value` lines, keys aligned.
pub fn fields(pairs: &[(&str, String)]) -> String {
    let width = pairs.iter().map(|(k, _)| k.len()).max().unwrap_or(0) + 1;
    pairs
        .iter()
        .map(|(k, v)| format!("{:<width$} {v}\n", format!("{k}:")))
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
}
