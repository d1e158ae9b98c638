//! Progress bars for long prefills (one tick per layer).

use indicatif::{ProgressBar, ProgressStyle};
use minference_engine::PrefillProgress;

/// A per-layer bar, hidden for short prompts where it would only flicker.
pub fn layer_bar(tokens: usize, layers: usize, label: &str) -> ProgressBar {
    if tokens < 2048 {
        return ProgressBar::hidden();
    }
    styled_bar(layers, label, "{prefix} [{bar:30}] layer {pos}/{len} {elapsed_precise}")
}

fn styled_bar(len: usize, label: &str, template: &str) -> ProgressBar {
    let bar = ProgressBar::new(len as u64);
    bar.set_style(
        ProgressStyle::with_template(template).unwrap_or_else(|_| ProgressStyle::default_bar()).progress_chars("=> "),
    );
    bar.set_prefix(label.to_string());
    bar
}

pub fn tick(bar: &ProgressBar) -> impl FnMut(PrefillProgress) + '_ {
    move |p: PrefillProgress| bar.set_position((p.layer + 1) as u64)
}

/// A spinner with a message and the elapsed time, for waits without steps (a request in flight).
pub fn spinner(message: String) -> ProgressBar {
    let bar = ProgressBar::new_spinner();
    bar.set_style(
        ProgressStyle::with_template("{spinner} {msg} {elapsed_precise}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    bar.set_message(message);
    bar.enable_steady_tick(std::time::Duration::from_millis(200));
    bar
}

/// A bar over `len` items (requests done, eval cells), with its ETA and an optional message.
pub fn count_bar(len: usize, label: &str) -> ProgressBar {
    styled_bar(len, label, "{prefix} [{bar:30}] {pos}/{len} {elapsed_precise} (eta {eta}) {msg}")
}
