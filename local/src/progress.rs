//! Progress bars of the runners' long phases (indicatif, on stderr). They draw only when stderr
//! is a terminal: in logs and CI the phase lines the runners print say the same.

use indicatif::{ProgressBar, ProgressStyle};
use std::time::Duration;

/// A bar for `len` units of work, `what` naming the unit ("messages processed").
pub fn bar(len: u64, what: &str) -> ProgressBar {
    styled(
        ProgressBar::new(len),
        "      [{bar:32}] {pos}/{len} {msg} ({elapsed}, ~{eta} left)",
    )
    .with_message(what.to_string())
}

/// A counter for work of unknown size (a spinner and the count so far).
pub fn counter(what: &str) -> ProgressBar {
    ticking("      {spinner} {pos} {msg} ({elapsed})", what)
}

/// A spinner for a step without a count ("starting moto").
pub fn spinner(what: &str) -> ProgressBar {
    ticking("      {spinner} {msg} ({elapsed})", what)
}

/// A spinner that redraws itself every 200 ms.
fn ticking(template: &str, what: &str) -> ProgressBar {
    let bar = styled(ProgressBar::new_spinner(), template).with_message(what.to_string());
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

fn styled(bar: ProgressBar, template: &str) -> ProgressBar {
    let style = ProgressStyle::with_template(template)
        .map(|s| s.progress_chars("=> "))
        .unwrap_or_else(|_| ProgressStyle::default_bar());
    bar.with_style(style)
}
