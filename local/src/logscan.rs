//! A log writer that scans every line the code under test logs for the test secrets: the
//! Langfuse and Stripe secret keys, and the Basic credentials built from the Langfuse keys.
//! A hit is recorded by the secret's name and a masked excerpt, never the secret itself.

use crate::harness::{LANGFUSE_PUBLIC_KEY, LANGFUSE_SECRET_KEY, STRIPE_SECRET_KEY};
use base64::Engine;
use std::io::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use tracing_subscriber::fmt::MakeWriter;

static LINES: AtomicU64 = AtomicU64::new(0);
static BYTES: AtomicU64 = AtomicU64::new(0);
static LEAKS: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// What the scan saw so far in this process.
#[derive(Debug, Clone, Default)]
pub struct ScanResults {
    /// Log lines scanned.
    pub lines: u64,
    /// Bytes scanned.
    pub bytes: u64,
    /// One entry per line that held a secret: the secret's name and a masked excerpt.
    pub leaks: Vec<String>,
}

/// The results so far.
pub fn results() -> ScanResults {
    ScanResults {
        lines: LINES.load(Ordering::Relaxed),
        bytes: BYTES.load(Ordering::Relaxed),
        leaks: LEAKS.lock().unwrap_or_else(|e| e.into_inner()).clone(),
    }
}

/// The secrets looked for, by name.
fn secrets() -> [(&'static str, String); 3] {
    let basic = base64::engine::general_purpose::STANDARD
        .encode(format!("{LANGFUSE_PUBLIC_KEY}:{LANGFUSE_SECRET_KEY}"));
    [
        ("LANGFUSE_SECRET_KEY", LANGFUSE_SECRET_KEY.to_string()),
        ("STRIPE_SECRET_KEY", STRIPE_SECRET_KEY.to_string()),
        ("Langfuse Basic credentials", basic),
    ]
}

/// Scans one chunk of log output.
pub fn scan(text: &[u8]) {
    let text = String::from_utf8_lossy(text);
    LINES.fetch_add(text.matches('\n').count().max(1) as u64, Ordering::Relaxed);
    BYTES.fetch_add(text.len() as u64, Ordering::Relaxed);
    for (name, secret) in secrets() {
        if let Some(at) = text.find(&secret) {
            let start = at.saturating_sub(60);
            let excerpt: String = text[..at]
                .chars()
                .skip(text[..start].chars().count())
                .collect();
            LEAKS
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(format!("{name} logged after: {excerpt:?}"));
        }
    }
}

/// A [`MakeWriter`] that scans everything written through it, then passes it on.
pub struct Scanning<M>(pub M);

/// The writer of [`Scanning`].
pub struct ScanningWriter<W>(W);

impl<'a, M: MakeWriter<'a>> MakeWriter<'a> for Scanning<M> {
    type Writer = ScanningWriter<M::Writer>;

    fn make_writer(&'a self) -> Self::Writer {
        ScanningWriter(self.0.make_writer())
    }
}

impl<W: Write> Write for ScanningWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        scan(buf);
        self.0.write_all(buf)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_logged_secret_is_caught_and_not_repeated() {
        let mut out = Vec::new();
        {
            let mut w = ScanningWriter(&mut out);
            writeln!(w, "calling Stripe with Bearer {STRIPE_SECRET_KEY}").unwrap();
            writeln!(w, "a harmless line").unwrap();
        }
        let r = results();
        let leak = r
            .leaks
            .iter()
            .find(|l| l.starts_with("STRIPE_SECRET_KEY"))
            .expect("caught");
        assert!(!leak.contains(STRIPE_SECRET_KEY), "{leak}");
        assert!(r.lines >= 2);
        assert_eq!(
            out.len(),
            2 + "calling Stripe with Bearer ".len()
                + STRIPE_SECRET_KEY.len()
                + "a harmless line".len()
        );
    }
}
