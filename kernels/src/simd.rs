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
        let mut t = [_mm512_setzero_ps(); 16];
        for i in 0..8 {
            t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
            t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
        }
        // u[4i + j], 128-bit lane k = rows 4i..4i+4 of column 4k + j.
        let mut u = [_mm512_setzero_ps(); 16];
        for i in 0..4 {
            let (a, b, c, d) = (
                _mm512_castps_pd(t[4 * i]),
                _mm512_castps_pd(t[4 * i + 1]),
                _mm512_castps_pd(t[4 * i + 2]),
                _mm512_castps_pd(t[4 * i + 3]),
            );
            u[4 * i] = _mm512_castpd_ps(_mm512_unpacklo_pd(a, c));
            u[4 * i + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(a, c));
            u[4 * i + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(b, d));
            u[4 * i + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(b, d));
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
