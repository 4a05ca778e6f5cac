//! Logging setup: JSON lines, level from `RUST_LOG` (default info): a level (`debug`) or
//! `target=level` directives (`info,process=debug`), as `tracing_subscriber`'s `Targets`
//! reads them. A value it cannot read falls back to info, with a warning.

use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// Installs the global JSON subscriber. Safe to call more than once.
pub fn init() {
    let rust_log = std::env::var("RUST_LOG").ok();
    let (filter, unreadable) = filter(rust_log.as_deref());
    let json = tracing_subscriber::fmt::layer()
        .json()
        .with_current_span(true)
        .with_span_list(false)
        .with_target(false);
    let installed = tracing_subscriber::registry()
        .with(json)
        .with(filter)
        .try_init();
    if let (Ok(()), Some(value)) = (installed, unreadable) {
        tracing::warn!(
            rust_log = value,
            "RUST_LOG is not a level or target=level list; logging at info"
        );
    }
}

/// The filter `RUST_LOG` asks for (info when unset or empty); the value when unreadable.
fn filter(rust_log: Option<&str>) -> (Targets, Option<&str>) {
    let info = || Targets::new().with_default(tracing::Level::INFO);
    match rust_log.map(str::trim).filter(|v| !v.is_empty()) {
        None => (info(), None),
        Some(v) => match v.parse::<Targets>() {
            Ok(targets) => (targets, None),
            Err(_) => (info(), Some(v)),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing::Level;

    #[test]
    fn rust_log_reads_as_a_level_or_directives() {
        let (f, bad) = filter(None);
        assert!(
            f.would_enable("process", &Level::INFO) && !f.would_enable("process", &Level::DEBUG)
        );
        assert_eq!(bad, None);
        let (f, _) = filter(Some("error"));
        assert!(!f.would_enable("process", &Level::WARN));
        let (f, _) = filter(Some("info,process=debug"));
        assert!(f.would_enable("process::read", &Level::DEBUG));
        assert!(!f.would_enable("ingest", &Level::DEBUG));
        let (f, bad) = filter(Some("process[span]=nonsense"));
        assert!(f.would_enable("process", &Level::INFO));
        assert_eq!(bad, Some("process[span]=nonsense"));
    }
}
