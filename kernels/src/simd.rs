//! Which SIMD path this build uses. `wide` picks its implementation at compile
//! time from the enabled target features, so this is a compile-time fact too.

/// The widest SIMD level compiled into this build, as a short name.
pub const SIMD_LEVEL: &str = if cfg!(all(target_arch = "x86_64", target_feature = "avx512f")) {
    "avx512f"
} else if cfg!(all(
    target_arch = "x86_64",
    target_feature = "avx2",
    target_feature = "fma"
)) {
    "avx2+fma"
} else if cfg!(all(target_arch = "x86_64", target_feature = "sse2")) {
    "sse2"
} else if cfg!(all(target_arch = "aarch64", target_feature = "neon")) {
    "neon"
} else {
    "scalar"
};

/// The AVX-512 write mask of the first `m` of 16 lanes (all 16 for m >= 16),
/// for the kernels' masked loads and stores of ragged rows.
#[cfg(all(target_arch = "x86_64", target_feature = "avx512f"))]
#[inline(always)]
pub(crate) const fn first_lanes_mask16(m: usize) -> u16 {
    if m >= 16 {
        0xFFFF
    } else {
        (1u16 << m) - 1
    }
}

#[cfg(all(target_arch = "x86_64", target_feature = "avx512f"))]
use core::arch::x86_64::*;

#[cfg(all(target_arch = "x86_64", target_feature = "avx512f"))]
/// In-register 16 x 16 transpose: afterwards `r[c]` lane `l` holds what
/// `r[l]` lane `c` held. Four rounds of 16 shuffles: 32-bit interleave,
/// 64-bit interleave (4 x 4 blocks inside each 128-bit lane), then two
/// rounds of 128-bit lane moves.
#[inline(always)]
pub(crate) fn transpose16(r: &mut [__m512; 16]) {
    // SAFETY: register-only shuffles; avx512f is enabled for the whole
    // build (this function's cfg).
    unsafe {
        // u[4i + j], 128-bit lane k = rows 4i..4i+4 of column 4k + j.
        let mut u = [_mm512_setzero_ps(); 16];
        for i in 0..4 {
            let q = transpose4x4_in_lanes([r[4 * i], r[4 * i + 1], r[4 * i + 2], r[4 * i + 3]]);
            u[4 * i..4 * i + 4].copy_from_slice(&q);
        }
        // Gather 128-bit lane k of u[j], u[4 + j], u[8 + j], u[12 + j] into
        // row 4k + j: first the even/odd lanes of each pair, then again.
        for j in 0..4 {
            let v0 = _mm512_shuffle_f32x4::<0x88>(u[j], u[4 + j]);
            let v1 = _mm512_shuffle_f32x4::<0x88>(u[8 + j], u[12 + j]);
            let w0 = _mm512_shuffle_f32x4::<0xDD>(u[j], u[4 + j]);
            let w1 = _mm512_shuffle_f32x4::<0xDD>(u[8 + j], u[12 + j]);
            r[j] = _mm512_shuffle_f32x4::<0x88>(v0, v1);
            r[8 + j] = _mm512_shuffle_f32x4::<0xDD>(v0, v1);
            r[4 + j] = _mm512_shuffle_f32x4::<0x88>(w0, w1);
            r[12 + j] = _mm512_shuffle_f32x4::<0xDD>(w0, w1);
        }
    }
}

#[cfg(all(target_arch = "x86_64", target_feature = "avx512f"))]
/// 4 x 4 transposes inside each 128-bit lane: afterwards `x[j]` lane
/// `4b + i` holds what `x[i]` lane `4b + j` held. Two rounds of 4 shuffles
/// (32-bit, then 64-bit interleave); applied twice it is the identity.
#[inline(always)]
fn transpose4x4_in_lanes(x: [__m512; 4]) -> [__m512; 4] {
    // SAFETY: register-only shuffles; avx512f is enabled for the whole
    // build (this function's cfg).
    unsafe {
        let t0 = _mm512_unpacklo_ps(x[0], x[1]);
        let t1 = _mm512_unpackhi_ps(x[0], x[1]);
        let t2 = _mm512_unpacklo_ps(x[2], x[3]);
        let t3 = _mm512_unpackhi_ps(x[2], x[3]);
        let (t0, t1, t2, t3) = (
            _mm512_castps_pd(t0),
            _mm512_castps_pd(t1),
            _mm512_castps_pd(t2),
            _mm512_castps_pd(t3),
        );
        [
            _mm512_castpd_ps(_mm512_unpacklo_pd(t0, t2)),
            _mm512_castpd_ps(_mm512_unpackhi_pd(t0, t2)),
            _mm512_castpd_ps(_mm512_unpacklo_pd(t1, t3)),
            _mm512_castpd_ps(_mm512_unpackhi_pd(t1, t3)),
        ]
    }
}

#[cfg(all(target_arch = "x86_64", target_feature = "avx512f"))]
/// The `_mm512_permutex2var_ps` index taking, from `a` and `b`, the 128-bit
/// lanes `la0`, `lb0`, `la1`, `lb1` in that order (`b`'s lanes count from 4).
#[inline(always)]
fn lane_pick(la0: i32, lb0: i32, la1: i32, lb1: i32) -> __m512i {
    let q = |l: i32| [4 * l, 4 * l + 1, 4 * l + 2, 4 * l + 3];
    let (a0, b0, a1, b1) = (q(la0), q(lb0 + 4), q(la1), q(lb1 + 4));
    // SAFETY: builds a vector from integers; avx512f is enabled.
    unsafe {
        _mm512_setr_epi32(
            a0[0], a0[1], a0[2], a0[3], b0[0], b0[1], b0[2], b0[3], a1[0], a1[1], a1[2], a1[3],
            b1[0], b1[1], b1[2], b1[3],
        )
    }
}

#[cfg(all(target_arch = "x86_64", target_feature = "avx512f"))]
/// Transposes 8 columns of 16 rows (`cols[q]` lane `r` = element (r, q))
/// into 16 rows of 8, two rows a vector: afterwards `rows[i]` lanes 0..8
/// hold row `i` and lanes 8..16 row `i + 8`. 24 shuffles (a 16 x 16
/// transpose takes 64). The inverse is [`row_pairs_to_cols8`].
#[inline(always)]
pub(crate) fn cols8_to_row_pairs(cols: [__m512; 8]) -> [__m512; 8] {
    // a[j] 128-bit lane k: row 4k + j, columns 0..4; b[j]: columns 4..8.
    let a = transpose4x4_in_lanes([cols[0], cols[1], cols[2], cols[3]]);
    let b = transpose4x4_in_lanes([cols[4], cols[5], cols[6], cols[7]]);
    // Row i = 4k + j (k = 0, 1) is lane k of a[j] and b[j]; row i + 8 is
    // lane k + 2 of both.
    let pick = [lane_pick(0, 0, 2, 2), lane_pick(1, 1, 3, 3)];
    // SAFETY: register-only permutes; avx512f is enabled (this cfg).
    core::array::from_fn(|i| unsafe { _mm512_permutex2var_ps(a[i % 4], pick[i / 4], b[i % 4]) })
}

#[cfg(all(target_arch = "x86_64", target_feature = "avx512f"))]
/// The inverse of [`cols8_to_row_pairs`]: 16 rows of 8, `rows[i]` lanes
/// 0..8 row `i` and lanes 8..16 row `i + 8`, into 8 columns of 16 rows.
#[inline(always)]
pub(crate) fn row_pairs_to_cols8(rows: [__m512; 8]) -> [__m512; 8] {
    // a[j] 128-bit lane k = row 4k + j, columns 0..4: lanes 0 and 2 of
    // rows[j] (rows j, j + 8), lanes 0 and 2 of rows[4 + j] (rows 4 + j,
    // 12 + j) interleaved; b[j] the same from lanes 1 and 3.
    let pick_a = lane_pick(0, 0, 2, 2);
    let pick_b = lane_pick(1, 1, 3, 3);
    // SAFETY: register-only permutes; avx512f is enabled (this cfg).
    let (a, b): ([__m512; 4], [__m512; 4]) = unsafe {
        (
            core::array::from_fn(|j| _mm512_permutex2var_ps(rows[j], pick_a, rows[4 + j])),
            core::array::from_fn(|j| _mm512_permutex2var_ps(rows[j], pick_b, rows[4 + j])),
        )
    };
    let a = transpose4x4_in_lanes(a);
    let b = transpose4x4_in_lanes(b);
    [a[0], a[1], a[2], a[3], b[0], b[1], b[2], b[3]]
}

/// Makes this thread's float arithmetic flush subnormal results to zero and
/// read subnormal inputs as zero (x86: MXCSR FTZ and DAZ; aarch64: FPCR FZ).
///
/// Why: late in training, softmax gradients of well-learned images fall below
/// f32::MIN_POSITIVE (1.2e-38) and every layer's backward pass then works on
/// subnormals, which x86 cores handle in microcode at many times the cost
/// of a normal FMA: in the first full study A3's epochs crept from 1.3 s to
/// 2.3 s, and one epoch resumed from its last checkpoint took 6.6 s without
/// the flags against 2.5 s with them. Values
/// that small carry nothing at f32 training precision; oneDNN (PyTorch) runs
/// with the same flags. Returns whether the flags could be set on this target.
pub fn flush_subnormals_on_this_thread() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        const FTZ: u32 = 1 << 15;
        const DAZ: u32 = 1 << 6;
        let mut csr: u32 = 0;
        // SAFETY: stmxcsr stores the 4-byte MXCSR into `csr`, a live local;
        // ldmxcsr loads it back with two mode bits set, which changes only how
        // this thread rounds subnormals (no exception is unmasked).
        unsafe {
            core::arch::asm!("stmxcsr [{}]", in(reg) &mut csr as *mut u32, options(nostack, preserves_flags));
            csr |= FTZ | DAZ;
            core::arch::asm!("ldmxcsr [{}]", in(reg) &csr as *const u32, options(nostack, preserves_flags, readonly));
        }
        true
    }
    #[cfg(target_arch = "aarch64")]
    {
        const FZ: u64 = 1 << 24;
        let mut fpcr: u64;
        // SAFETY: reads and writes this thread's floating-point control
        // register, setting only flush-to-zero mode.
        unsafe {
            core::arch::asm!("mrs {}, fpcr", out(reg) fpcr, options(nomem, nostack, preserves_flags));
            fpcr |= FZ;
            core::arch::asm!("msr fpcr, {}", in(reg) fpcr, options(nomem, nostack, preserves_flags));
        }
        true
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    {
        false
    }
}

/// Asks the cache to fetch every 64-byte line of `data` (x86: `prefetcht0`;
/// elsewhere nothing). A hint only: it never faults and changes no value.
/// The trainer issues it for the next shuffled images while it converts the
/// current one, whose lines would otherwise each wait on memory.
#[inline]
pub fn prefetch(data: &[u8]) {
    for line in data.chunks(64) {
        prefetch_line::<true>(line.as_ptr().cast());
    }
}

/// Asks the cache to fetch the 64-byte line holding `p`, into L1 (`L1`,
/// x86 `prefetcht0`) or only into L2 (`prefetcht1`); elsewhere nothing. A
/// hint: it never faults, whatever the address, and changes no value.
#[inline(always)]
pub(crate) fn prefetch_line<const L1: bool>(p: *const f32) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch is a hint; it never faults, whatever the address.
    unsafe {
        use core::arch::x86_64::{_mm_prefetch, _MM_HINT_T0, _MM_HINT_T1};
        if L1 {
            _mm_prefetch::<_MM_HINT_T0>(p.cast())
        } else {
            _mm_prefetch::<_MM_HINT_T1>(p.cast())
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

/// Asks the cache to fetch the 64-byte line holding `p` into L1 in a state
/// ready for writing (x86 `prefetchw` where the build has PRFCHW, as every
/// AVX-512 and most AVX2 CPUs do; otherwise LLVM emits a plain `prefetcht0`;
/// elsewhere nothing). Where another core holds the line (it read it last),
/// a plain prefetch brings a shared copy and the store that follows still
/// waits for the other copy's invalidation; this asks for ownership up
/// front. A hint: it never faults, whatever the address, and changes no
/// value.
#[inline(always)]
pub(crate) fn prefetch_line_for_write(p: *const f32) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch is a hint; it never faults, whatever the address.
    unsafe {
        use core::arch::x86_64::{_mm_prefetch, _MM_HINT_ET0};
        _mm_prefetch::<_MM_HINT_ET0>(p.cast())
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

#[cfg(all(test, target_arch = "x86_64", target_feature = "avx512f"))]
mod tests {
    use super::*;

    fn to_array(x: __m512) -> [f32; 16] {
        // SAFETY: __m512 and [f32; 16] are both 64 plain bytes.
        unsafe { core::mem::transmute::<__m512, [f32; 16]>(x) }
    }

    fn from_array(x: [f32; 16]) -> __m512 {
        // SAFETY: as above.
        unsafe { core::mem::transmute::<[f32; 16], __m512>(x) }
    }

    /// Every element lands where the doc says, and the inverse restores the
    /// columns exactly (element (r, q) is the distinct value 100 q + r).
    #[test]
    fn cols8_row_pairs_round_trip() {
        let cols: [__m512; 8] =
            core::array::from_fn(|q| from_array(core::array::from_fn(|r| (100 * q + r) as f32)));
        let pairs = cols8_to_row_pairs(cols);
        for (i, &pair) in pairs.iter().enumerate() {
            let lanes = to_array(pair);
            for q in 0..8 {
                assert_eq!(lanes[q], (100 * q + i) as f32, "row {i}, column {q}");
                assert_eq!(
                    lanes[8 + q],
                    (100 * q + i + 8) as f32,
                    "row {}, column {q}",
                    i + 8
                );
            }
        }
        let back = row_pairs_to_cols8(pairs);
        for q in 0..8 {
            assert_eq!(to_array(back[q]), to_array(cols[q]), "column {q}");
        }
    }
}
