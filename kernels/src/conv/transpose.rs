//! Moves between NCHW image rows and lane-packed vectors (one image per lane).
//!
//! Both directions are transposes of `L x L` blocks (`L` images x `L` columns):
//! in registers on AVX-512 (16 x 16) and AVX2 (8 x 8), where each block costs
//! `L` vector loads, `L` vector stores and `L log2 L` shuffles instead of
//! `L * L` scalar loads and stores. Ragged edges (fewer than `L` columns left,
//! fewer than `L` images in the group) run through the same transpose with
//! masked loads and stores, so every path handles every shape. Other targets
//! use the scalar loops.

use super::lanes::{L, V};

/// `dst[x][l] = src[l * stride + x]` for `l < g` and `x < dst.len()`; lanes
/// `l >= g` of every vector are zero.
///
/// # Safety
/// `g <= L`, and `src + l * stride + x` must be valid for reads for every
/// `l < g` and `x < dst.len()`.
#[inline]
pub(super) unsafe fn pack(src: *const f32, stride: usize, g: usize, dst: &mut [V]) {
    debug_assert!(g <= L);
    // SAFETY: forwarded from the caller.
    unsafe { imp::pack(src, stride, g, dst) }
}

/// `dst[l * stride + x] = src[x][l]` for `l < g` and `x < src.len()`; nothing
/// else is written.
///
/// # Safety
/// `g <= L`, and `dst + l * stride + x` must be valid for writes for every
/// `l < g` and `x < src.len()`.
#[inline]
pub(super) unsafe fn unpack(src: &[V], dst: *mut f32, stride: usize, g: usize) {
    debug_assert!(g <= L);
    // SAFETY: forwarded from the caller.
    unsafe { imp::unpack::<false, false>(src, dst, stride, g) }
}

/// `unpack` of `max(src, 0)` (ReLU on the way out: no separate pass over
/// `src`). `max(NaN, 0)` gives 0, as `wide`'s `max` and `f32::max` do.
///
/// # Safety
/// As for `unpack`.
#[inline]
pub(super) unsafe fn unpack_relu(src: &[V], dst: *mut f32, stride: usize, g: usize) {
    debug_assert!(g <= L);
    // SAFETY: forwarded from the caller.
    unsafe { imp::unpack::<true, false>(src, dst, stride, g) }
}

/// `dst[l * stride + x] += src[x][l]` for `l < g` and `x < src.len()`; nothing
/// else is read or written (the sparse weight gradient's transposed tiles).
///
/// # Safety
/// As for `unpack`, and the same elements must be valid for reads.
#[inline]
pub(crate) unsafe fn unpack_add(src: &[V], dst: *mut f32, stride: usize, g: usize) {
    debug_assert!(g <= L);
    // SAFETY: forwarded from the caller.
    unsafe { imp::unpack::<false, true>(src, dst, stride, g) }
}

#[cfg(all(target_arch = "x86_64", target_feature = "avx512f"))]
mod imp {
    use super::V;
    use crate::simd::first_lanes_mask16 as mask;
    use crate::simd::transpose16;
    use core::arch::x86_64::*;

    /// Columns in the first block so that every later block starts on a
    /// 64-byte line of every row: rows `stride` apart share their alignment
    /// only if the stride is a multiple of 16 floats. A block that straddles
    /// two lines costs a split load or store per row.
    #[inline(always)]
    fn first_block(p: *const f32, stride: usize) -> usize {
        let misaligned = (p as usize / 4) % 16;
        if stride.is_multiple_of(16) && misaligned != 0 {
            16 - misaligned
        } else {
            16
        }
    }

    #[inline(always)]
    pub(super) unsafe fn pack(src: *const f32, stride: usize, g: usize, dst: &mut [V]) {
        let n = dst.len();
        let d = dst.as_mut_ptr().cast::<f32>();
        let mut x0 = 0;
        let mut block = first_block(src, stride);
        while x0 < n {
            let m = (n - x0).min(block);
            let k = mask(m);
            let mut r = [_mm512_setzero_ps(); 16];
            for (l, row) in r.iter_mut().enumerate() {
                if l < g {
                    // SAFETY: lanes x0 .. x0 + m of row l < g are readable per
                    // the caller; masked-off lanes are not accessed.
                    *row = unsafe { _mm512_maskz_loadu_ps(k, src.add(l * stride + x0)) };
                }
            }
            transpose16(&mut r);
            for (j, v) in r.iter().enumerate() {
                if j < m {
                    // SAFETY: x0 + j < n = dst.len(), one whole V per column.
                    unsafe { _mm512_storeu_ps(d.add((x0 + j) * 16), *v) };
                }
            }
            x0 += m;
            block = 16;
        }
    }

    #[inline(always)]
    pub(super) unsafe fn unpack<const RELU: bool, const ADD: bool>(
        src: &[V],
        dst: *mut f32,
        stride: usize,
        g: usize,
    ) {
        let n = src.len();
        let s = src.as_ptr().cast::<f32>();
        let mut x0 = 0;
        let mut block = first_block(dst, stride);
        while x0 < n {
            let m = (n - x0).min(block);
            let k = mask(m);
            let mut r = [_mm512_setzero_ps(); 16];
            for (j, v) in r.iter_mut().enumerate() {
                if j < m {
                    // SAFETY: x0 + j < n = src.len(), one whole V per column.
                    *v = unsafe { _mm512_loadu_ps(s.add((x0 + j) * 16)) };
                    if RELU {
                        // max(x, 0): the second operand is returned when
                        // either is NaN, so NaN -> 0 like `V::max`.
                        *v = _mm512_max_ps(*v, _mm512_setzero_ps());
                    }
                }
            }
            transpose16(&mut r);
            for (l, row) in r.iter().enumerate() {
                if l < g {
                    let p = dst.wrapping_add(l * stride + x0);
                    // SAFETY: columns x0 .. x0 + m of row l < g are writable
                    // (and, with ADD, readable) per the caller; masked-off
                    // lanes are not accessed.
                    unsafe {
                        let v = if ADD {
                            _mm512_add_ps(_mm512_maskz_loadu_ps(k, p), *row)
                        } else {
                            *row
                        };
                        _mm512_mask_storeu_ps(p, k, v)
                    };
                }
            }
            x0 += m;
            block = 16;
        }
    }
}

#[cfg(all(
    target_arch = "x86_64",
    target_feature = "avx2",
    target_feature = "fma",
    not(target_feature = "avx512f")
))]
mod imp {
    use super::V;
    use core::arch::x86_64::*;

    /// In-register 8 x 8 transpose: 32-bit interleave, 64-bit shuffles, then
    /// 128-bit lane swaps (24 shuffles).
    #[inline(always)]
    fn transpose8(r: &mut [__m256; 8]) {
        // SAFETY: register-only shuffles; avx2 is enabled for the whole build
        // (this module's cfg).
        unsafe {
            let mut t = [_mm256_setzero_ps(); 8];
            for i in 0..4 {
                t[2 * i] = _mm256_unpacklo_ps(r[2 * i], r[2 * i + 1]);
                t[2 * i + 1] = _mm256_unpackhi_ps(r[2 * i], r[2 * i + 1]);
            }
            // u[4h + j], 128-bit lane k = rows 4h..4h+4 of column 4k + j.
            let mut u = [_mm256_setzero_ps(); 8];
            for h in 0..2 {
                let b = 4 * h;
                u[b] = _mm256_shuffle_ps::<0x44>(t[b], t[b + 2]);
                u[b + 1] = _mm256_shuffle_ps::<0xEE>(t[b], t[b + 2]);
                u[b + 2] = _mm256_shuffle_ps::<0x44>(t[b + 1], t[b + 3]);
                u[b + 3] = _mm256_shuffle_ps::<0xEE>(t[b + 1], t[b + 3]);
            }
            for j in 0..4 {
                r[j] = _mm256_permute2f128_ps::<0x20>(u[j], u[4 + j]);
                r[4 + j] = _mm256_permute2f128_ps::<0x31>(u[j], u[4 + j]);
            }
        }
    }

    /// Sign-bit mask of the first `m` of 8 lanes.
    #[inline(always)]
    fn mask(m: usize) -> __m256i {
        // SAFETY: register-only; avx2 is enabled for the whole build.
        unsafe {
            _mm256_cmpgt_epi32(
                _mm256_set1_epi32(m.min(8) as i32),
                _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7),
            )
        }
    }

    #[inline(always)]
    pub(super) unsafe fn pack(src: *const f32, stride: usize, g: usize, dst: &mut [V]) {
        let n = dst.len();
        let d = dst.as_mut_ptr().cast::<f32>();
        let mut x0 = 0;
        while x0 < n {
            let m = (n - x0).min(8);
            let k = mask(m);
            let mut r = [_mm256_setzero_ps(); 8];
            for (l, row) in r.iter_mut().enumerate() {
                if l < g {
                    let p = src.wrapping_add(l * stride + x0);
                    // SAFETY: lanes x0 .. x0 + m of row l < g are readable per
                    // the caller; masked-off lanes are not accessed (no fault).
                    *row = unsafe {
                        if m == 8 {
                            _mm256_loadu_ps(p)
                        } else {
                            _mm256_maskload_ps(p, k)
                        }
                    };
                }
            }
            transpose8(&mut r);
            for (j, v) in r.iter().enumerate() {
                if j < m {
                    // SAFETY: x0 + j < n = dst.len(), one whole V per column.
                    unsafe { _mm256_storeu_ps(d.add((x0 + j) * 8), *v) };
                }
            }
            x0 += 8;
        }
    }

    #[inline(always)]
    pub(super) unsafe fn unpack<const RELU: bool, const ADD: bool>(
        src: &[V],
        dst: *mut f32,
        stride: usize,
        g: usize,
    ) {
        let n = src.len();
        let s = src.as_ptr().cast::<f32>();
        let mut x0 = 0;
        while x0 < n {
            let m = (n - x0).min(8);
            let k = mask(m);
            let mut r = [_mm256_setzero_ps(); 8];
            for (j, v) in r.iter_mut().enumerate() {
                if j < m {
                    // SAFETY: x0 + j < n = src.len(), one whole V per column.
                    *v = unsafe { _mm256_loadu_ps(s.add((x0 + j) * 8)) };
                    if RELU {
                        // NaN -> 0 like `V::max` (see the AVX-512 version).
                        *v = _mm256_max_ps(*v, _mm256_setzero_ps());
                    }
                }
            }
            transpose8(&mut r);
            for (l, row) in r.iter().enumerate() {
                if l < g {
                    let p = dst.wrapping_add(l * stride + x0);
                    // SAFETY: columns x0 .. x0 + m of row l < g are writable
                    // (and, with ADD, readable) per the caller; masked-off
                    // lanes are not accessed.
                    unsafe {
                        let old = if !ADD {
                            _mm256_setzero_ps()
                        } else if m == 8 {
                            _mm256_loadu_ps(p)
                        } else {
                            _mm256_maskload_ps(p, k)
                        };
                        let v = if ADD { _mm256_add_ps(old, *row) } else { *row };
                        if m == 8 {
                            _mm256_storeu_ps(p, v)
                        } else {
                            _mm256_maskstore_ps(p, k, v)
                        }
                    };
                }
            }
            x0 += 8;
        }
    }
}

#[cfg(not(any(
    all(target_arch = "x86_64", target_feature = "avx512f"),
    all(
        target_arch = "x86_64",
        target_feature = "avx2",
        target_feature = "fma"
    )
)))]
mod imp {
    use super::{L, V};

    #[inline(always)]
    pub(super) unsafe fn pack(src: *const f32, stride: usize, g: usize, dst: &mut [V]) {
        for (x, cell) in dst.iter_mut().enumerate() {
            // SAFETY: element x of row l < g is readable per the caller.
            *cell = V::new(core::array::from_fn(|l| {
                if l < g {
                    unsafe { *src.add(l * stride + x) }
                } else {
                    0.0
                }
            }));
        }
    }

    #[inline(always)]
    pub(super) unsafe fn unpack<const RELU: bool, const ADD: bool>(
        src: &[V],
        dst: *mut f32,
        stride: usize,
        g: usize,
    ) {
        let f: &[f32] = bytemuck::cast_slice(src);
        for l in 0..g {
            // SAFETY: row l < g of the destination is valid per the caller.
            let d = unsafe { dst.add(l * stride) };
            for (x, v) in f[l..].iter().step_by(L).take(src.len()).enumerate() {
                let v = if RELU { v.max(0.0) } else { *v };
                // SAFETY: x < src.len(), inside row l (readable with ADD).
                unsafe { *d.add(x) = if ADD { *d.add(x) + v } else { v } };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every (columns, images, stride, alignment) combination around the
    /// block size: pack must place element (l, x) in lane l of vector x and
    /// zero the rest; unpack must invert it and write nothing outside the g
    /// rows of n columns. Strides that are multiples of 16 with a misaligned
    /// start take the line-aligned block split.
    #[test]
    fn pack_and_unpack_are_exact_transposes() {
        for n in [1, 3, L - 1, L, L + 1, 2 * L + 3, 49] {
            for g in [1, 2, L / 2 + 1, L - 1, L] {
                for stride in [n + 5, n.next_multiple_of(16) + 16] {
                    for off in [0, 3, 13] {
                        check_round_trip(n, g, stride, off);
                    }
                }
            }
        }
    }

    fn check_round_trip(n: usize, g: usize, stride: usize, off: usize) {
        let len = off + g * stride;
        // Alternating signs, so that the ReLU variant has work to do.
        let src: Vec<f32> = (0..len)
            .map(|i| {
                if i % 3 == 0 {
                    -(i as f32) - 0.5
                } else {
                    i as f32 + 0.5
                }
            })
            .collect();
        let mut packed = vec![V::splat(-1.0); n];
        // SAFETY: rows l < g of n columns from off lie inside src (len).
        unsafe { pack(src[off..].as_ptr(), stride, g, &mut packed) };
        for (x, v) in packed.iter().enumerate() {
            for (l, &e) in v.to_array().iter().enumerate() {
                let want = if l < g {
                    src[off + l * stride + x]
                } else {
                    0.0
                };
                assert_eq!(
                    e, want,
                    "pack n {n} g {g} stride {stride} off {off}: lane {l} of column {x}"
                );
            }
        }
        let mut back = vec![-7.0f32; len];
        // SAFETY: as for pack.
        unsafe { unpack(&packed, back[off..].as_mut_ptr(), stride, g) };
        for (i, &e) in back.iter().enumerate() {
            let inside = i >= off && (i - off) % stride < n;
            let want = if inside { src[i] } else { -7.0 };
            assert_eq!(
                e, want,
                "unpack n {n} g {g} stride {stride} off {off}: element {i}"
            );
        }
        let mut relu = vec![-7.0f32; len];
        // SAFETY: as for pack.
        unsafe { unpack_relu(&packed, relu[off..].as_mut_ptr(), stride, g) };
        for (i, (&e, &b)) in relu.iter().zip(&back).enumerate() {
            let inside = i >= off && (i - off) % stride < n;
            let want = if inside { b.max(0.0) } else { -7.0 };
            assert_eq!(
                e, want,
                "unpack_relu n {n} g {g} stride {stride} off {off}: element {i}"
            );
        }
        let base = |i: usize| (i % 7) as f32 * 0.25;
        let mut sum: Vec<f32> = (0..len).map(base).collect();
        // SAFETY: as for pack.
        unsafe { unpack_add(&packed, sum[off..].as_mut_ptr(), stride, g) };
        for (i, &e) in sum.iter().enumerate() {
            let inside = i >= off && (i - off) % stride < n;
            let want = if inside { base(i) + src[i] } else { base(i) };
            assert_eq!(
                e, want,
                "unpack_add n {n} g {g} stride {stride} off {off}: element {i}"
            );
        }
    }
}
