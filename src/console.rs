//! Lines for a person on stderr that never fail the program: a closed or
//! full stderr (`2>/dev/full`, a pager that quit) loses the line instead of
//! panicking as `eprintln!` does. The results themselves go to files.
//!
//! While stages train at once on a terminal, their progress bars are drawn
//! together ([`with_shared_bars`]) and lines go above them, so that one
//! stage's bar never overwrites another's line.

use std::io::{IsTerminal, Write};
use std::sync::RwLock;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget};

/// The bars drawn together, while [`with_shared_bars`] runs on a terminal.
static SHARED_BARS: RwLock<Option<MultiProgress>> = RwLock::new(None);

/// `eprintln!` that ignores write errors.
#[macro_export]
macro_rules! note {
    () => {
        $crate::console::line("")
    };
    ($($arg:tt)*) => {
        $crate::console::line(&format!($($arg)*))
    };
}

/// Writes `text` and a newline to stderr, above the shared bars if any.
pub fn line(text: &str) {
    if let Ok(shared) = SHARED_BARS.read() {
        if let Some(bars) = shared.as_ref().filter(|b| !b.is_hidden()) {
            if bars.println(text).is_ok() {
                return;
            }
        }
    }
    let _ = writeln!(std::io::stderr(), "{text}");
}

/// `bar`, drawn with the others while bars are shared.
pub fn attach_bar(bar: ProgressBar) -> ProgressBar {
    match SHARED_BARS.read().ok().as_ref().and_then(|s| s.as_ref()) {
        Some(bars) => bars.add(bar),
        None => bar,
    }
}

/// Runs `work` with the progress bars it starts, on any thread, drawn
/// together on stderr (when stderr is a terminal; elsewhere there are no
/// bars, only lines).
pub fn with_shared_bars<R>(work: impl FnOnce() -> R) -> R {
    struct Unshare;
    impl Drop for Unshare {
        fn drop(&mut self) {
            if let Ok(mut shared) = SHARED_BARS.write() {
                *shared = None;
            }
        }
    }
    let _unshare = std::io::stderr().is_terminal().then(|| {
        if let Ok(mut shared) = SHARED_BARS.write() {
            *shared = Some(MultiProgress::with_draw_target(ProgressDrawTarget::stderr()));
        }
        Unshare
    });
    work()
}
