//! Per-layer timing for `vcortex bench`: wall time of every layer's forward
//! and backward call, summed over chunks and batches, plus the engine's
//! update step (chunk-gradient reduction or fused weight gradients, and the
//! optimizer).
//!
//! Off by default. While off, a hook costs one relaxed atomic load and a
//! branch, against layer calls of tens to hundreds of microseconds, so normal
//! training pays nothing measurable. While on, each hook reads the clock twice
//! and takes an uncontended lock once.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use serde::Serialize;

/// What a timed span covers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    /// A layer's forward pass on one chunk (runs on every thread at once).
    Forward,
    /// A layer's backward pass on one chunk (runs on every thread at once).
    Backward,
    /// A step of the whole pool, timed once on the calling thread (e.g. the
    /// engine's update step).
    Pool,
}

/// One (layer, phase) accumulator.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Span {
    pub layer: &'static str,
    pub phase: Phase,
    /// Summed over every call (for per-chunk phases: over every thread).
    pub seconds: f64,
    pub calls: u64,
}

static ENABLED: AtomicBool = AtomicBool::new(false);
static SPANS: Mutex<Vec<Span>> = Mutex::new(Vec::new());

/// Switches the hooks on or off (process-wide).
pub fn set_enabled(on: bool) {
    ENABLED.store(on, Ordering::Relaxed);
}

/// Whether the hooks record.
#[inline]
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

fn spans() -> std::sync::MutexGuard<'static, Vec<Span>> {
    // A panic while holding the lock cannot leave a half-written entry that
    // matters for timing; keep going with what is there.
    SPANS.lock().unwrap_or_else(|e| e.into_inner())
}

/// Clears every accumulator.
pub fn reset() {
    spans().clear();
}

/// The accumulators in first-recorded order, and clears them.
pub fn take() -> Vec<Span> {
    std::mem::take(&mut *spans())
}

/// Adds `seconds` to the (layer, phase) accumulator.
pub fn record(layer: &'static str, phase: Phase, seconds: f64) {
    let mut spans = spans();
    match spans
        .iter_mut()
        .find(|s| s.layer == layer && s.phase == phase)
    {
        Some(s) => {
            s.seconds += seconds;
            s.calls += 1;
        }
        None => spans.push(Span {
            layer,
            phase,
            seconds,
            calls: 1,
        }),
    }
}

/// Runs `f`, charging its wall time to (layer, phase) when profiling is on.
#[inline]
pub fn timed<R>(layer: &'static str, phase: Phase, f: impl FnOnce() -> R) -> R {
    if !enabled() {
        return f();
    }
    let start = Instant::now();
    let r = f();
    record(layer, phase, start.elapsed().as_secs_f64());
    r
}

/// `"{prefix}{i}"` as a static name for layers numbered 1..=8 (the models
/// have at most a handful); "{prefix}n" beyond.
pub fn numbered(names: &'static [&'static str; 9], i: usize) -> &'static str {
    names[i.min(8)]
}

/// The profile label of the fused phase of the dense models (weight
/// gradients + optimizer).
pub const FUSED_UPDATE: &str = "dW+update";

/// The first layer's W^T, built before a batch where stale (`nn::TransposedWeights`).
pub const W1_PANELS: &str = "W1^T";

/// Names of dense layers fc1.., for [`numbered`].
pub const FC: [&str; 9] = [
    "fc?", "fc1", "fc2", "fc3", "fc4", "fc5", "fc6", "fc7", "fc_n",
];
/// Names of DAE encoders, for [`numbered`].
pub const DAE_ENC: [&str; 9] = [
    "dae?.enc",
    "dae1.enc",
    "dae2.enc",
    "dae3.enc",
    "dae4.enc",
    "dae5.enc",
    "dae6.enc",
    "dae7.enc",
    "dae_n.enc",
];
/// Names of DAE decoders, for [`numbered`].
pub const DAE_DEC: [&str; 9] = [
    "dae?.dec",
    "dae1.dec",
    "dae2.dec",
    "dae3.dec",
    "dae4.dec",
    "dae5.dec",
    "dae6.dec",
    "dae7.dec",
    "dae_n.dec",
];
