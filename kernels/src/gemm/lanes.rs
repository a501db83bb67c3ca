//! The few vector operations the GEMM needs, over `wide`'s f32x4 / f32x8 /
//! f32x16, so one generic micro-kernel serves every instruction set.

use super::Activation;
use wide::{f32x16, f32x4, f32x8};

/// A SIMD vector of f32 lanes.
pub(crate) trait Lanes: Copy {
    const LANES: usize;
    fn zero() -> Self;
    fn splat(x: f32) -> Self;
    /// Unaligned load of `LANES` floats.
    ///
    /// # Safety
    /// `p` must be valid for reading `LANES` floats.
    unsafe fn load(p: *const f32) -> Self;
    /// Unaligned store of `LANES` floats.
    ///
    /// # Safety
    /// `p` must be valid for writing `LANES` floats.
    unsafe fn store(self, p: *mut f32);
    /// The first `count` (<= LANES) floats at `p`, the other lanes zero.
    ///
    /// # Safety
    /// `p` must be valid for reading `count` floats.
    unsafe fn load_first(p: *const f32, count: usize) -> Self;
    /// Stores the first `count` (<= LANES) lanes at `p`.
    ///
    /// # Safety
    /// `p` must be valid for writing `count` floats.
    unsafe fn store_first(self, p: *mut f32, count: usize);
    /// `self * b + c`, fused where the build has FMA.
    fn mul_add(self, b: Self, c: Self) -> Self;
    fn mul(self, b: Self) -> Self;
    fn add(self, b: Self) -> Self;
    fn relu(self) -> Self;
    /// 1 / (1 + exp(-x)); `wide`'s exp saturates to 0 / inf outside
    /// [-103, 88], which gives exactly 1 and 0 there.
    fn sigmoid(self) -> Self;
    /// The epilogue's activation.
    #[inline(always)]
    fn activate(self, act: Activation) -> Self {
        match act {
            Activation::Identity => self,
            Activation::Relu => self.relu(),
            Activation::Sigmoid => self.sigmoid(),
        }
    }
}

macro_rules! impl_lanes {
    ($v:ty, $n:expr, $raw:ty, $maskz_load:ident, $mask_store:ident) => {
        impl Lanes for $v {
            const LANES: usize = $n;
            #[inline(always)]
            fn zero() -> Self {
                <$v>::ZERO
            }
            #[inline(always)]
            fn splat(x: f32) -> Self {
                <$v>::splat(x)
            }
            #[inline(always)]
            unsafe fn load(p: *const f32) -> Self {
                // SAFETY: the caller guarantees LANES readable floats; the
                // vector type is plain-old-data of exactly that size.
                unsafe { core::ptr::read_unaligned(p as *const $v) }
            }
            #[inline(always)]
            unsafe fn store(self, p: *mut f32) {
                // SAFETY: the caller guarantees LANES writable floats.
                unsafe { core::ptr::write_unaligned(p as *mut $v, self) }
            }
            #[cfg(all(
                target_arch = "x86_64",
                target_feature = "avx512f",
                target_feature = "avx512vl"
            ))]
            #[inline(always)]
            unsafe fn load_first(p: *const f32, count: usize) -> Self {
                use core::arch::x86_64::*;
                let mask = crate::simd::first_lanes_mask16(count) as _;
                // SAFETY: the mask reads only the first `count` floats
                // (masked-off lanes are never accessed); the wide type
                // wraps one register of this size on this build (sizes
                // checked by transmute).
                unsafe { core::mem::transmute::<$raw, $v>($maskz_load(mask, p)) }
            }
            #[cfg(all(
                target_arch = "x86_64",
                target_feature = "avx512f",
                target_feature = "avx512vl"
            ))]
            #[inline(always)]
            unsafe fn store_first(self, p: *mut f32, count: usize) {
                use core::arch::x86_64::*;
                let mask = crate::simd::first_lanes_mask16(count) as _;
                // SAFETY: as in load_first, writing.
                unsafe { $mask_store(p, mask, core::mem::transmute::<$v, $raw>(self)) }
            }
            #[cfg(not(all(
                target_arch = "x86_64",
                target_feature = "avx512f",
                target_feature = "avx512vl"
            )))]
            #[inline(always)]
            unsafe fn load_first(p: *const f32, count: usize) -> Self {
                let mut buf = [0.0f32; $n];
                // SAFETY: `count` <= LANES floats are readable at p.
                unsafe { core::ptr::copy_nonoverlapping(p, buf.as_mut_ptr(), count) };
                <$v>::from(buf)
            }
            #[cfg(not(all(
                target_arch = "x86_64",
                target_feature = "avx512f",
                target_feature = "avx512vl"
            )))]
            #[inline(always)]
            unsafe fn store_first(self, p: *mut f32, count: usize) {
                let buf = self.to_array();
                // SAFETY: `count` <= LANES floats are writable at p.
                unsafe { core::ptr::copy_nonoverlapping(buf.as_ptr(), p, count) };
            }
            #[inline(always)]
            fn mul_add(self, b: Self, c: Self) -> Self {
                <$v>::mul_add(self, b, c)
            }
            #[inline(always)]
            fn mul(self, b: Self) -> Self {
                self * b
            }
            #[inline(always)]
            fn add(self, b: Self) -> Self {
                self + b
            }
            #[inline(always)]
            fn relu(self) -> Self {
                self.max(<$v>::ZERO)
            }
            #[inline(always)]
            fn sigmoid(self) -> Self {
                let one = <$v>::ONE;
                one / (one + (-self).exp())
            }
        }
    };
}

impl_lanes!(f32x4, 4, __m128, _mm_maskz_loadu_ps, _mm_mask_storeu_ps);
impl_lanes!(
    f32x8,
    8,
    __m256,
    _mm256_maskz_loadu_ps,
    _mm256_mask_storeu_ps
);
impl_lanes!(
    f32x16,
    16,
    __m512,
    _mm512_maskz_loadu_ps,
    _mm512_mask_storeu_ps
);
