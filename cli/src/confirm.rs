//! Confirming a change: `--yes`, or a question on a terminal; never a silent change.

use std::io::{BufRead, IsTerminal, Write};

/// Asks whether to carry out a planned change.
pub trait Confirm: Send + Sync {
    /// True when the operator agrees to `plan`.
    fn confirm(&self, plan: &str) -> bool;
}

/// Asks on the terminal (stdin and stderr); anything but `y`/`yes` is no, and without a
/// terminal the answer is no.
pub struct Terminal;

impl Confirm for Terminal {
    fn confirm(&self, plan: &str) -> bool {
        if !std::io::stdin().is_terminal() {
            return false;
        }
        let mut err = std::io::stderr();
        if write!(err, "{}\nProceed? [y/N] ", crate::output::escape(plan))
            .and_then(|_| err.flush())
            .is_err()
        {
            return false;
        }
        let mut answer = String::new();
        if std::io::stdin().lock().read_line(&mut answer).is_err() {
            return false;
        }
        matches!(answer.trim().to_ascii_lowercase().as_str(), "y" | "yes")
    }
}

/// Always the same answer (tests, and `--yes`).
pub struct Answer(pub bool);

impl Confirm for Answer {
    fn confirm(&self, _plan: &str) -> bool {
        self.0
    }
}
