//! Central finite-difference gradient checker shared by the gradient tests.
//!
//! The code under test computes in f32 (the kernels have no f64 path), so the
//! check is done in f32 with the loss accumulated in f64:
//! * step h = 1e-2 on inputs and parameters of order 1. Rounding: each f32
//!   output carries a relative error ~1e-7, so a loss of size L has an error
//!   ~1e-7 * L * sqrt(outputs), divided by 2h = 2e-2 that is < 1e-4 for the
//!   small shapes used here. Truncation: the central difference is off by
//!   h^2/6 * f''' ~ 2e-5 * f''', a fraction of a percent of the slope for the
//!   sigmoid / softmax compositions tested.
//! * tolerance |g_fd - g| <= 1e-3 + 2e-2 * |g|: well above both error terms
//!   and far below any real mistake (a dropped term, a wrong scale or a
//!   transposed index is off by O(|g|)).
//!
//! Piecewise-smooth functions (ReLU, max-pool) are checked only where the
//! function is smooth along the step: `loss` returns a discrete "pattern" (the
//! ReLU on/off masks and pool winners); coordinates whose +-h evaluation
//! changes the pattern are retried with h / 10 (the rounding term then grows
//! to < 1e-3 for these shapes, still inside the tolerance) and skipped and
//! counted if the pattern still changes, so a kink or a near tie cannot
//! produce a false alarm; the callers assert that at least half the
//! coordinates asked for were actually checked. The layer checks keep their
//! inputs away from kinks, so nothing is skipped there; the whole CNN's
//! check cannot (its pool winners move with every upstream parameter), so it
//! draws each tensor's coordinates until enough are checked
//! ([`check_groups`]).

#![allow(dead_code)]

use proptest::test_runner::Config as ProptestConfig;
use vcortex::kernels::rng::Rng;

/// The gradient tests' proptest settings: `cases` cases (PROPTEST_CASES
/// overrides it), and room for rejected ones in proportion. These tests
/// reject 7-14% of their random inputs (pre-activations near a ReLU's kink,
/// a saturated mean unit under sparsity), so proptest's fixed limit of 1024
/// rejects aborted them from about 6000 cases on. A test whose every input
/// is rejected (a checker that skips everything) still fails, after
/// rejecting half as many inputs as it was to test (at least 1024).
pub fn proptest_config(cases: u32) -> ProptestConfig {
    let effective = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse::<u32>().ok())
        .unwrap_or(cases);
    ProptestConfig {
        max_global_rejects: 1024.max(effective / 2),
        ..ProptestConfig::with_cases(cases)
    }
}

pub const H: f32 = 1e-2;
pub const ABS_TOL: f64 = 1e-3;
pub const REL_TOL: f64 = 2e-2;

#[derive(Debug, Default, Clone, Copy)]
pub struct Stats {
    pub checked: usize,
    pub skipped: usize,
    /// Coordinates the caller asked to have checked: all of them for
    /// [`check`], up to `want` per group for [`check_groups`].
    pub wanted: usize,
}

impl Stats {
    /// At least half the coordinates asked for were checked, and at least one.
    pub fn mostly_checked(&self) -> bool {
        self.checked >= 1 && 2 * self.checked >= self.wanted
    }
}

/// Compares `analytic[i]` with the central difference of `loss` at `x` for
/// every `i` in `coords`. `loss` returns (value, pattern); see the module doc.
pub fn check<F>(x: &mut [f32], analytic: &[f32], coords: &[usize], loss: F) -> Result<Stats, String>
where
    F: FnMut(&[f32]) -> (f64, Vec<u8>),
{
    check_with_step(x, analytic, coords, H, loss)
}

/// [`check`] with another step, for functions whose third derivative is
/// large (the caller justifies the step).
pub fn check_with_step<F>(
    x: &mut [f32],
    analytic: &[f32],
    coords: &[usize],
    step: f32,
    loss: F,
) -> Result<Stats, String>
where
    F: FnMut(&[f32]) -> (f64, Vec<u8>),
{
    check_groups_with_step(x, analytic, &[coords], usize::MAX, step, loss)
}

/// [`check`] over groups of coordinates (a model's tensors, each in random
/// order), each group tried in order until `want` of its coordinates are
/// checked or it runs out. A coordinate skipped at a kink is then replaced
/// by the group's next one, so on a small network whose every parameter
/// moves some pool winner or ReLU within a step, the check still covers each
/// tensor instead of giving up on a fixed draw.
pub fn check_groups<F>(
    x: &mut [f32],
    analytic: &[f32],
    groups: &[Vec<usize>],
    want: usize,
    loss: F,
) -> Result<Stats, String>
where
    F: FnMut(&[f32]) -> (f64, Vec<u8>),
{
    check_groups_with_step(x, analytic, groups, want, H, loss)
}

fn check_groups_with_step<G, F>(
    x: &mut [f32],
    analytic: &[f32],
    groups: &[G],
    want: usize,
    step: f32,
    mut loss: F,
) -> Result<Stats, String>
where
    G: AsRef<[usize]>,
    F: FnMut(&[f32]) -> (f64, Vec<u8>),
{
    assert_eq!(x.len(), analytic.len(), "checker: gradient length");
    let (_, base) = loss(x);
    let mut stats = Stats::default();
    for group in groups {
        let group = group.as_ref();
        stats.wanted += want.min(group.len());
        let mut checked_here = 0;
        for &i in group {
            if checked_here == want {
                break;
            }
            let Some(fd) = smooth_difference(x, i, step, &base, &mut loss) else {
                stats.skipped += 1;
                continue;
            };
            let g = analytic[i] as f64;
            // Written so that a NaN on either side fails too.
            let within = (fd - g).abs() <= ABS_TOL + REL_TOL * g.abs();
            if !within {
                return Err(format!(
                    "coordinate {i}: analytic {g:.6e}, finite difference {fd:.6e}"
                ));
            }
            checked_here += 1;
        }
        stats.checked += checked_here;
    }
    Ok(stats)
}

/// The central difference of `loss` along coordinate `i`, with the step
/// `step` or else `step / 10`, whichever first leaves the pattern as it is at
/// `x` on both sides; `None` if neither does (a kink or near tie).
fn smooth_difference<F>(
    x: &mut [f32],
    i: usize,
    step: f32,
    base: &[u8],
    loss: &mut F,
) -> Option<f64>
where
    F: FnMut(&[f32]) -> (f64, Vec<u8>),
{
    let orig = x[i];
    for h in [step, step / 10.0] {
        let (up, down) = (orig + h, orig - h);
        x[i] = up;
        let (lp, pp) = loss(x);
        x[i] = down;
        let (lm, pm) = loss(x);
        x[i] = orig;
        if pp == base && pm == base {
            // The exact f32 step actually taken.
            return Some((lp - lm) / (up as f64 - down as f64));
        }
    }
    None
}

/// Smooth functions: no pattern.
pub fn check_smooth<F>(
    x: &mut [f32],
    analytic: &[f32],
    coords: &[usize],
    mut loss: F,
) -> Result<Stats, String>
where
    F: FnMut(&[f32]) -> f64,
{
    check(x, analytic, coords, |x| (loss(x), Vec::new()))
}

/// Every index, or `max` distinct random ones if there are more.
pub fn coords(len: usize, max: usize, rng: &mut Rng) -> Vec<usize> {
    let mut all: Vec<usize> = (0..len).collect();
    if len > max {
        rng.shuffle(&mut all);
        all.truncate(max);
    }
    all
}

pub fn uniform(rng: &mut Rng, n: usize, lo: f32, hi: f32) -> Vec<f32> {
    let mut v = vec![0.0; n];
    rng.fill_uniform(&mut v, lo, hi);
    v
}

/// sum_i c_i y_i in f64.
pub fn weighted_sum(c: &[f32], y: &[f32]) -> f64 {
    c.iter().zip(y).map(|(&a, &b)| a as f64 * b as f64).sum()
}

/// 1 where v > 0, else 0: a ReLU's on/off pattern.
pub fn positive_mask(v: &[f32]) -> Vec<u8> {
    v.iter().map(|&x| (x > 0.0) as u8).collect()
}

/// The winner of each 2x2 window of `planes` planes h x w, among windows with
/// a positive maximum (all-zero windows after a ReLU pass no gradient, so
/// their tie-breaking is irrelevant).
pub fn pool_winners(v: &[f32], planes: usize, h: usize, w: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for p in 0..planes {
        let plane = &v[p * h * w..(p + 1) * h * w];
        for y in 0..h / 2 {
            for x in 0..w / 2 {
                let idx = [
                    2 * y * w + 2 * x,
                    2 * y * w + 2 * x + 1,
                    (2 * y + 1) * w + 2 * x,
                    (2 * y + 1) * w + 2 * x + 1,
                ];
                let mut best = 0;
                for k in 1..4 {
                    if plane[idx[k]] > plane[idx[best]] {
                        best = k;
                    }
                }
                out.push(if plane[idx[best]] > 0.0 {
                    best as u8 + 1
                } else {
                    0
                });
            }
        }
    }
    out
}

/// Asserts the check passed and compared at least half the coordinates it
/// was asked to (and at least one).
pub fn assert_mostly_checked(result: Result<Stats, String>, what: &str) {
    match result {
        Ok(s) => assert!(
            s.mostly_checked(),
            "{what}: only {} of {} coordinates checked, {} skipped at kinks",
            s.checked,
            s.wanted,
            s.skipped
        ),
        Err(e) => panic!("{what}: {e}"),
    }
}
