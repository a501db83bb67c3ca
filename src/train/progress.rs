//! Per-epoch progress on stderr: an indicatif bar (batch, running loss, ETA)
//! on a terminal, one plain line per epoch otherwise.

use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::EpochMetrics;

pub struct EpochProgress {
    bar: Option<ProgressBar>,
    enabled: bool,
    label: String,
}

impl EpochProgress {
    pub fn new(enabled: bool, label: &str, epoch: usize, epochs: usize, batches: usize) -> Self {
        let label = format!("{label} epoch {epoch}/{epochs}");
        let bar = (enabled && std::io::stderr().is_terminal()).then(|| {
            let bar =
                ProgressBar::with_draw_target(Some(batches as u64), ProgressDrawTarget::stderr());
            bar.set_style(
                ProgressStyle::with_template(
                    "{prefix} [{bar:30}] {pos}/{len} loss {msg} ETA {eta}",
                )
                .expect("valid progress template")
                .progress_chars("=> "),
            );
            bar.set_prefix(label.clone());
            crate::console::attach_bar(bar)
        });
        EpochProgress {
            bar,
            enabled,
            label,
        }
    }

    /// After batch `done` (1-based) with the running mean loss.
    pub fn batch(&self, done: usize, running_loss: f64) {
        if let Some(bar) = &self.bar {
            // Redrawing is rate-limited by indicatif; formatting every few
            // batches keeps the per-batch cost negligible.
            if done.is_multiple_of(8) {
                bar.set_message(format!("{running_loss:.4}"));
            }
            bar.set_position(done as u64);
        }
    }

    pub fn finish(self, m: &EpochMetrics) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
        if self.enabled {
            let mut line = format!("{}: train_cost {:.5}", self.label, m.train_cost);
            if let Some(c) = m.test_cost {
                line += &format!(", test_cost {c:.5}");
            }
            if let Some(a) = m.test_accuracy {
                line += &format!(", test_accuracy {a:.4}");
            }
            crate::note!("{line} ({:.2} s)", m.seconds);
        }
    }
}
