//! The doctor's report: one line per check, OK / WARN / FAIL, with the fix.

use crate::output::table;
use serde::Serialize;
use serde_json::{Value, json};

/// A check's outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Status {
    /// As the functions need it.
    Ok,
    /// Works, but worth a look (or could not be checked).
    Warn,
    /// Wrong: usage would be lost, dropped or billed twice.
    Fail,
}

impl Status {
    fn label(self) -> &'static str {
        match self {
            Status::Ok => "OK",
            Status::Warn => "WARN",
            Status::Fail => "FAIL",
        }
    }
}

/// One check: what was looked at, what was found, and what to do about it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    /// `service.what`, e.g. `stripe.event_name`.
    pub check: &'static str,
    /// The outcome.
    pub status: Status,
    /// What was found (both sides on a mismatch).
    pub message: String,
    /// What to do (WARN and FAIL).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

impl Check {
    /// Passed.
    pub fn ok(check: &'static str, message: impl Into<String>) -> Check {
        Check {
            check,
            status: Status::Ok,
            message: message.into(),
            fix: None,
        }
    }

    /// Worth a look.
    pub fn warn(check: &'static str, message: impl Into<String>, fix: impl Into<String>) -> Check {
        Check {
            check,
            status: Status::Warn,
            message: message.into(),
            fix: Some(fix.into()),
        }
    }

    /// Failed.
    pub fn fail(check: &'static str, message: impl Into<String>, fix: impl Into<String>) -> Check {
        Check {
            check,
            status: Status::Fail,
            message: message.into(),
            fix: Some(fix.into()),
        }
    }

    /// OK when `good`, else a FAIL with `fix`.
    pub fn expect(
        check: &'static str,
        good: bool,
        message: impl Into<String>,
        fix: impl FnOnce() -> String,
    ) -> Check {
        match good {
            true => Check::ok(check, message),
            false => Check::fail(check, message, fix()),
        }
    }
}

/// Every check, in order.
#[derive(Debug, Default)]
pub struct Report {
    /// The checks.
    pub checks: Vec<Check>,
}

impl Report {
    /// How many checks ended with `status`.
    pub fn count(&self, status: Status) -> usize {
        self.checks.iter().filter(|c| c.status == status).count()
    }

    /// The JSON report: the checks and the counts.
    pub fn json(&self) -> Value {
        json!({
            "ok": self.count(Status::Fail) == 0,
            "counts": {
                "OK": self.count(Status::Ok),
                "WARN": self.count(Status::Warn),
                "FAIL": self.count(Status::Fail),
            },
            "checks": self.checks,
        })
    }

    /// One line per check, the fix under each WARN and FAIL, then the counts.
    pub fn human(&self) -> String {
        let mut rows = Vec::new();
        for c in &self.checks {
            let status = c.status.label().to_string();
            rows.push(vec![status, c.check.to_string(), c.message.clone()]);
            if let Some(fix) = &c.fix {
                rows.push(vec![String::new(), String::new(), format!("fix: {fix}")]);
            }
        }
        let mut out = table(&["STATUS", "CHECK", "FOUND"], &rows);
        out.push_str(&format!(
            "doctor: {} OK, {} WARN, {} FAIL\n",
            self.count(Status::Ok),
            self.count(Status::Warn),
            self.count(Status::Fail)
        ));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_report_counts_and_shows_the_fix_under_its_check() {
        let report = Report {
            checks: vec![
                Check::ok("a.one", "fine"),
                Check::fail(
                    "b.two",
                    "the meter counts `x`; the functions send `y`",
                    "set it",
                ),
            ],
        };
        let text = report.human();
        assert!(
            text.contains("FAIL    b.two  the meter counts `x`"),
            "{text}"
        );
        assert!(text.contains("\n               fix: set it\n"), "{text}");
        assert!(text.ends_with("doctor: 1 OK, 0 WARN, 1 FAIL\n"), "{text}");
        let json = report.json();
        assert_eq!(json["ok"], false);
        assert_eq!(json["checks"][1]["status"], "FAIL");
        assert_eq!(json["checks"][0].get("fix"), None);
    }
}
