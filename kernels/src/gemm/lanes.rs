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
    ($v:ty, $n:expr) => {
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

impl_lanes!(f32x4, 4);
impl_lanes!(f32x8, 8);
impl_lanes!(f32x16, 16);
