//! The f32 SIMD vector type every elementwise kernel uses, chosen once at
//! compile time from the enabled target features, plus load/store helpers.
//!
//! `wide` itself picks its instructions from target features; choosing the
//! vector width here as well keeps each build on its native register width
//! (an f32x16 on an AVX2 build would be two f32x8 and only add register
//! pressure).

#[cfg(all(target_arch = "x86_64", target_feature = "avx512f"))]
mod pick {
    pub type F32s = wide::f32x16;
    pub type I32s = wide::i32x16;
    pub const LANES: usize = 16;
}

#[cfg(all(
    target_arch = "x86_64",
    not(target_feature = "avx512f"),
    target_feature = "avx2",
    target_feature = "fma"
))]
mod pick {
    pub type F32s = wide::f32x8;
    pub type I32s = wide::i32x8;
    pub const LANES: usize = 8;
}

#[cfg(not(all(
    target_arch = "x86_64",
    any(
        target_feature = "avx512f",
        all(target_feature = "avx2", target_feature = "fma")
    )
)))]
mod pick {
    pub type F32s = wide::f32x4;
    pub type I32s = wide::i32x4;
    pub const LANES: usize = 4;
}

/// The f32 vector of this build (f32x16, f32x8 or f32x4).
pub type F32s = pick::F32s;
/// The i32 vector of the same width, for exponent-bit manipulation.
pub type I32s = pick::I32s;
/// Number of f32 lanes in [`F32s`].
pub const LANES: usize = pick::LANES;

/// Loads exactly `LANES` values (`s.len()` must equal `LANES`; with
/// `chunks_exact(LANES)` the check compiles away).
#[inline(always)]
pub fn load(s: &[f32]) -> F32s {
    let arr: [f32; LANES] = s.try_into().expect("lanes::load: slice length");
    F32s::new(arr)
}

/// Stores exactly `LANES` values into `d` (`d.len()` must equal `LANES`).
#[inline(always)]
pub fn store(v: F32s, d: &mut [f32]) {
    d.copy_from_slice(v.as_array());
}

/// Loads a ragged tail of fewer than `LANES` values, padding with `fill`.
#[inline(always)]
pub fn load_partial(s: &[f32], fill: f32) -> F32s {
    let mut arr = [fill; LANES];
    arr[..s.len()].copy_from_slice(s);
    F32s::new(arr)
}

/// Stores the first `d.len()` (< `LANES`) lanes of `v` into `d`.
#[inline(always)]
pub fn store_partial(v: F32s, d: &mut [f32]) {
    let n = d.len();
    d.copy_from_slice(&v.as_array()[..n]);
}

/// `x[i] <- f(x[i])` vector by vector; the tail runs through the same `f` on a
/// padded vector so ragged edges get exactly the same arithmetic.
#[inline(always)]
pub fn map_inplace(x: &mut [f32], f: impl Fn(F32s) -> F32s) {
    let mut chunks = x.chunks_exact_mut(LANES);
    for c in &mut chunks {
        store(f(load(c)), c);
    }
    let tail = chunks.into_remainder();
    if !tail.is_empty() {
        store_partial(f(load_partial(tail, 0.0)), tail);
    }
}

/// `x[i] <- f(a[i], x[i])`; `a` and `x` must have equal lengths.
#[inline(always)]
pub fn zip_inplace(a: &[f32], x: &mut [f32], f: impl Fn(F32s, F32s) -> F32s) {
    zip_inplace_with(a, x, |_| {}, f);
}

/// [`zip_inplace`], calling `before(c)` ahead of each full chunk c of LANES
/// (the parameter updates' prefetch hint).
#[inline(always)]
pub fn zip_inplace_with(
    a: &[f32],
    x: &mut [f32],
    before: impl Fn(usize),
    f: impl Fn(F32s, F32s) -> F32s,
) {
    assert_eq!(a.len(), x.len(), "lanes::zip_inplace: lengths differ");
    let mut xc = x.chunks_exact_mut(LANES);
    let mut ac = a.chunks_exact(LANES);
    for (c, (xs, as_)) in (&mut xc).zip(&mut ac).enumerate() {
        before(c);
        store(f(load(as_), load(xs)), xs);
    }
    let xt = xc.into_remainder();
    if !xt.is_empty() {
        let at = ac.remainder();
        store_partial(f(load_partial(at, 0.0), load_partial(xt, 0.0)), xt);
    }
}

/// Sum of the lanes in f64, lane by lane in index order.
#[inline(always)]
pub fn sum_f64(v: F32s) -> f64 {
    v.as_array().iter().map(|&x| x as f64).sum()
}

/// Largest lane (NaN-ignoring like `f32::max`).
#[inline(always)]
pub fn max_lane(v: F32s) -> f32 {
    v.as_array()
        .iter()
        .fold(f32::NEG_INFINITY, |m, &x| m.max(x))
}
