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
    let counter = styled(
        ProgressBar::new_spinner(),
        "      {spinner} {pos} {msg} ({elapsed})",
    )
    .with_message(what.to_string());
    counter.enable_steady_tick(Duration::from_millis(200));
    counter
}

/// A spinner for a step without a count ("starting moto").
pub fn spinner(what: &str) -> ProgressBar {
    let spinner = styled(
        ProgressBar::new_spinner(),
        "      {spinner} {msg} ({elapsed})",
    )
    .with_message(what.to_string());
    spinner.enable_steady_tick(Duration::from_millis(200));
    spinner
}

fn styled(bar: ProgressBar, template: &str) -> ProgressBar {
    let style = ProgressStyle::with_template(template)
        .map(|s| s.progress_chars("=> "))
        .unwrap_or_else(|_| ProgressStyle::default_bar());
    bar.with_style(style)
}
