//! Vectorised transcendental functions on [`F32s`] for the activation and
//! loss kernels. Cephes-style: range reduction, a minimax polynomial, exponent
//! bits for the power of two. Accuracy (measured in `tests/elementwise.rs`):
//! about 1 ulp for `exp` and `ln_1p_unit`.

// Polynomial constants keep the digits Cephes publishes (some round to the
// same f32 as shorter literals).
#![allow(clippy::excessive_precision)]

use crate::lanes::{F32s, I32s};

/// ln(f32::MIN_POSITIVE): below this e^x is subnormal; `exp` returns 0 there.
const EXP_LO: f32 = -87.336_54;
/// Upper clamp keeps 2^n a normal power of two (n <= 127).
const EXP_HI: f32 = 88.0;

/// e^x to about 1 ulp for x in [-87.34, 88]. Below that range the result is 0
/// (flushing what would be subnormal), above it saturates at e^88 (about
/// 1.65e38); NaN propagates. Every caller in this crate passes x <= 0.
#[inline(always)]
pub fn exp(x: F32s) -> F32s {
    let xc = x
        .fast_max(F32s::splat(EXP_LO))
        .fast_min(F32s::splat(EXP_HI));
    // Adding 1.5 * 2^23 rounds to an integer (ties to even) in one step.
    let magic = F32s::splat(12_582_912.0);
    let n = xc.mul_add(F32s::splat(std::f32::consts::LOG2_E), magic) - magic;
    // x - n ln2 with ln2 split in two (Cody-Waite) so the product is exact.
    let r = n.mul_neg_add(F32s::splat(0.693_359_375), xc);
    let r = n.mul_neg_add(F32s::splat(-2.121_944_4e-4), r);
    // Cephes expf minimax polynomial for e^r - 1 - r, |r| <= ln2 / 2.
    let mut p = F32s::splat(1.987_569_1e-4);
    p = p.mul_add(r, F32s::splat(1.398_199_9e-3));
    p = p.mul_add(r, F32s::splat(8.333_452e-3));
    p = p.mul_add(r, F32s::splat(4.166_579_6e-2));
    p = p.mul_add(r, F32s::splat(1.666_666_5e-1));
    p = p.mul_add(r, F32s::splat(5.000_000_1e-1));
    let y = p.mul_add(r * r, r) + F32s::ONE;
    // 2^n from the exponent bits; n is in [-126, 127] after the clamp.
    let bits: I32s = (n.fast_trunc_int() + I32s::splat(127)) << 23u32;
    let pow2: F32s = bytemuck::cast(bits);
    let out = y * pow2;
    let out = x.simd_lt(F32s::splat(EXP_LO)).select(F32s::ZERO, out);
    x.is_nan().select(x, out)
}

/// ln(1 + u) to about 1 ulp for u in [0, 1] (the range log1p(e^-|a|) needs).
#[inline(always)]
pub fn ln_1p_unit(u: F32s) -> F32s {
    let w = u + F32s::ONE;
    // w = m 2^e with m in [sqrt(1/2), sqrt(2)); w in [1, 2] so e is 0 or 1,
    // and m - 1 is exact (Sterbenz).
    let big = w.simd_gt(F32s::splat(std::f32::consts::SQRT_2));
    let m = big.select(w * F32s::HALF, w);
    let e = big.select(F32s::ONE, F32s::ZERO);
    let x = m - F32s::ONE;
    let z = x * x;
    // Cephes logf polynomial: ln(1+x) = x - x^2/2 + x^3 P(x).
    let mut p = F32s::splat(7.037_683_6e-2);
    p = p.mul_add(x, F32s::splat(-1.151_461e-1));
    p = p.mul_add(x, F32s::splat(1.167_699_9e-1));
    p = p.mul_add(x, F32s::splat(-1.242_014_1e-1));
    p = p.mul_add(x, F32s::splat(1.424_932_3e-1));
    p = p.mul_add(x, F32s::splat(-1.666_805_8e-1));
    p = p.mul_add(x, F32s::splat(2.000_071_5e-1));
    p = p.mul_add(x, F32s::splat(-2.499_999_4e-1));
    p = p.mul_add(x, F32s::splat(3.333_333_1e-1));
    let mut y = p * x * z;
    y = e.mul_add(F32s::splat(-2.121_944_4e-4), y);
    y = z.mul_neg_add(F32s::HALF, y);
    let lnw = e.mul_add(F32s::splat(0.693_359_375), x + y);
    // 1 + u was rounded; ln(1+u) ~ ln(w) + (u - (w - 1)) / w restores it
    // (w - 1 is exact, so this is the whole rounding error of w).
    lnw + (u - (w - F32s::ONE)) / w
}

/// The logistic function 1 / (1 + e^-x), as `reference::sigmoid` computes it:
/// with e = e^-|x|, 1 / (1 + e) for x >= 0 and e / (1 + e) otherwise.
#[inline(always)]
pub fn sigmoid(x: F32s) -> F32s {
    let e = exp(-x.abs());
    let num = x.simd_ge(F32s::ZERO).select(F32s::ONE, e);
    num / (F32s::ONE + e)
}
