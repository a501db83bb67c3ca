//! Packing of A and B blocks into contiguous, zero-padded micro-panels.
//!
//! Packed A: for each group of MR rows, `kc` steps of MR floats (the column of
//! the tile the micro-kernel broadcasts from). Packed B: for each group of NR
//! columns, `kc` rows of NR floats. Padding rows / columns are zero so a
//! micro-kernel may read a full panel.
//!
//! Where the source is read along its rows (A^T, B), the shared index is the
//! outer loop, so each source row is streamed once, start to end, which the
//! hardware prefetcher follows; strided walks down a column of panels would
//! jump more than 2 KiB per step. Where a panel is a transpose of the source
//! (A, B^T), 8 x 8 and 4 x 4 blocks go through in-register transposes; on
//! AVX-512, 16 x 16 blocks with masked edges (`transpose_panel_avx512`).
//! Measured (perf, share of single-thread GEMM time): 128x625x400 on the
//! M-on-lanes path 5.2% -> 3.6%; at 1024^3 both A and B packing are bound
//! by L3 traffic (stores waiting on their reads for ownership), and neither
//! the faster transpose, row or write prefetches, prefetching the next A
//! block during the current one's tiles, packing B panels just before first
//! use, column-grouped B packing nor non-temporal stores made them cheaper.

use super::Trans;
use wide::{f32x4, f32x8};

/// Packs rows `i0..i0 + mc`, shared indices `p0..p0 + kc` of op(A).
///
/// # Safety
/// op(A) must be readable at every packed index through `a`/`lda`; `dst` must
/// hold `ceil(mc / mr) * mr * kc` floats.
#[allow(clippy::too_many_arguments)]
#[inline]
pub(crate) unsafe fn pack_a(
    ta: Trans,
    a: *const f32,
    lda: usize,
    i0: usize,
    mc: usize,
    p0: usize,
    kc: usize,
    mr: usize,
    dst: *mut f32,
) {
    // SAFETY: forwarded, with panels exactly kc steps long.
    unsafe { pack_a_strided::<false>(ta, a, lda, i0, mc, p0, kc, mr, kc, dst) }
}

/// [`pack_a`] into panels of `panel_kc >= kc` steps (`mr * panel_kc` floats
/// apart), writing steps 0..kc of each: with `dst` offset by `q * mr` floats,
/// this fills steps q..q + kc, so several operands can be packed one after
/// another along K into the same panels (`sgemm_sum`).
///
/// The transposed panels are built by the build's packer, or with `PLAIN`
/// by the portable 8 x 8 / 4 x 4 / scalar transposes (the reference the
/// packers' tests compare against).
///
/// # Safety
/// As [`pack_a`]; `dst` must hold `(ceil(mc / mr) - 1) * mr * panel_kc +
/// mr * kc` floats.
#[allow(clippy::too_many_arguments)]
#[inline]
pub(crate) unsafe fn pack_a_strided<const PLAIN: bool>(
    ta: Trans,
    a: *const f32,
    lda: usize,
    i0: usize,
    mc: usize,
    p0: usize,
    kc: usize,
    mr: usize,
    panel_kc: usize,
    dst: *mut f32,
) {
    // SAFETY: every source index is inside op(A)'s block, every destination
    // inside the first kc steps of the ceil(mc / mr) panels of mr * panel_kc
    // floats.
    unsafe {
        match ta {
            // A(i, p) = a[i * lda + p]: each panel is a transpose.
            Trans::N => {
                for (panel, ip) in (0..mc).step_by(mr).enumerate() {
                    let rows = mr.min(mc - ip);
                    let out = dst.add(panel * mr * panel_kc);
                    transpose_panel::<PLAIN>(a.add((i0 + ip) * lda + p0), lda, rows, kc, out, mr);
                }
            }
            // A(i, p) = a[p * lda + i]: a packed step is a contiguous copy.
            Trans::T => {
                let mut p = 0;
                #[cfg(all(target_arch = "x86_64", target_feature = "avx512f"))]
                if !PLAIN && mr == 12 {
                    p = copy_rows_into_panels12(a.add(p0 * lda + i0), lda, mc, kc, panel_kc, dst);
                }
                while p < kc {
                    let src = a.add((p0 + p) * lda + i0);
                    copy_row_into_panels(src, mc, mr, panel_kc, p, dst);
                    p += 1;
                }
            }
        }
    }
}

/// [`copy_row_into_panels`] for 12-wide panels (the AVX-512 A^T blocks), 4
/// source rows at a time: 4 steps of a panel are 48 adjacent floats, built
/// from the rows' 12-float pieces with three two-source permutes and stored
/// as three whole vectors, instead of an 8- and a 4-float move per step
/// (half of them split across cache lines). Masked loads zero the ragged
/// last panel's padding. Returns how many rows it packed (a multiple of 4);
/// the caller packs the rest.
///
/// # Safety
/// `src` readable at `p * ld + j` for p < kc, j < len; `dst` holds
/// `ceil(len / 12)` panels of `12 * panel_kc` floats, panel_kc >= kc.
#[cfg(all(target_arch = "x86_64", target_feature = "avx512f"))]
unsafe fn copy_rows_into_panels12(
    src: *const f32,
    ld: usize,
    len: usize,
    kc: usize,
    panel_kc: usize,
    dst: *mut f32,
) -> usize {
    use crate::simd::first_lanes_mask16;
    use core::arch::x86_64::*;
    // Lane i of a permute takes lane idx & 15 of the first source, or of
    // the second where idx & 16: rows (0, 1), (1, 2), (2, 3) of 12 floats.
    // SAFETY: register-only constants (avx512f is enabled for this build).
    let (first, second, third) = unsafe {
        (
            _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 16, 17, 18, 19),
            _mm512_setr_epi32(4, 5, 6, 7, 8, 9, 10, 11, 16, 17, 18, 19, 20, 21, 22, 23),
            _mm512_setr_epi32(8, 9, 10, 11, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27),
        )
    };
    let mut p = 0;
    while p + 4 <= kc {
        for (panel, j) in (0..len).step_by(12).enumerate() {
            let lanes = first_lanes_mask16((len - j).min(12));
            // SAFETY: the loads read rows p..p + 4, columns j..j + 12
            // clipped to len by the mask; the stores write steps p..p + 4
            // (48 floats) of panel `panel`, inside dst.
            unsafe {
                let row = |q: usize| _mm512_maskz_loadu_ps(lanes, src.add((p + q) * ld + j));
                let (r0, r1, r2, r3) = (row(0), row(1), row(2), row(3));
                let o = dst.add(panel * 12 * panel_kc + p * 12);
                _mm512_storeu_ps(o, _mm512_permutex2var_ps(r0, first, r1));
                _mm512_storeu_ps(o.add(16), _mm512_permutex2var_ps(r1, second, r2));
                _mm512_storeu_ps(o.add(32), _mm512_permutex2var_ps(r2, third, r3));
            }
        }
        p += 4;
    }
    p
}

/// Packs shared indices `p0..p0 + kc`, columns `j0..j0 + nc` of op(B).
///
/// # Safety
/// op(B) must be readable at every packed index through `b`/`ldb`; `dst` must
/// hold `ceil(nc / nr) * nr * kc` floats.
#[allow(clippy::too_many_arguments)]
#[inline]
pub(crate) unsafe fn pack_b(
    tb: Trans,
    b: *const f32,
    ldb: usize,
    p0: usize,
    kc: usize,
    j0: usize,
    nc: usize,
    nr: usize,
    dst: *mut f32,
) {
    // SAFETY: forwarded, with panels exactly kc rows long.
    unsafe { pack_b_strided::<false>(tb, b, ldb, p0, kc, j0, nc, nr, kc, dst) }
}

/// [`pack_b`] into panels of `panel_kc >= kc` rows (`nr * panel_kc` floats
/// apart), writing rows 0..kc of each (see [`pack_a_strided`]), with the
/// build's or (`PLAIN`) the portable transposes.
///
/// # Safety
/// As [`pack_b`]; `dst` must hold `(ceil(nc / nr) - 1) * nr * panel_kc +
/// nr * kc` floats.
#[allow(clippy::too_many_arguments)]
#[inline]
pub(crate) unsafe fn pack_b_strided<const PLAIN: bool>(
    tb: Trans,
    b: *const f32,
    ldb: usize,
    p0: usize,
    kc: usize,
    j0: usize,
    nc: usize,
    nr: usize,
    panel_kc: usize,
    dst: *mut f32,
) {
    // SAFETY: as in pack_a_strided, for op(B) and ceil(nc / nr) panels of
    // nr * panel_kc.
    unsafe {
        match tb {
            // B(p, j) = b[p * ldb + j]: a packed row is a contiguous copy.
            // Row by row (sequential reads); panel by panel, or panel by
            // panel in groups of 8 rows, measured no faster on 784 x 128 x
            // 900 A^T B.
            Trans::N => {
                for p in 0..kc {
                    let src = b.add((p0 + p) * ldb + j0);
                    copy_row_into_panels(src, nc, nr, panel_kc, p, dst);
                }
            }
            // B(p, j) = b[j * ldb + p]: each panel is a transpose.
            Trans::T => {
                for (panel, jp) in (0..nc).step_by(nr).enumerate() {
                    let cols = nr.min(nc - jp);
                    let out = dst.add(panel * nr * panel_kc);
                    transpose_panel::<PLAIN>(b.add((j0 + jp) * ldb + p0), ldb, cols, kc, out, nr);
                }
            }
        }
    }
}

/// Scatters one source row of `len` floats into step `p` of consecutive
/// `width`-wide panels (each `width * kc` floats), zero-padding the last.
///
/// # Safety
/// `src` readable for `len` floats; `dst` holds `ceil(len / width)` panels.
unsafe fn copy_row_into_panels(
    src: *const f32,
    len: usize,
    width: usize,
    kc: usize,
    p: usize,
    dst: *mut f32,
) {
    for (panel, j) in (0..len).step_by(width).enumerate() {
        let count = width.min(len - j);
        // SAFETY: src[j..j + count] is inside the row; the destination row
        // of `width` floats is inside panel `panel`.
        unsafe {
            let o = dst.add(panel * width * kc + p * width);
            copy_floats(src.add(j), o, count);
            if count < width {
                core::ptr::write_bytes(o.add(count), 0, width - count);
            }
        }
    }
}

/// Copies `count` floats with inline vector moves: the pieces are short (12
/// or 32 floats), and a `memmove` call per piece cost ~5% of a DAE epoch.
///
/// # Safety
/// `src` readable and `dst` writable for `count` floats, not overlapping.
#[inline(always)]
unsafe fn copy_floats(src: *const f32, dst: *mut f32, count: usize) {
    type Chunk = [f32; 8];
    type Quad = [f32; 4];
    let mut t = 0;
    // SAFETY: every access is below `count` floats of src / dst.
    unsafe {
        while t + 8 <= count {
            let v = core::ptr::read_unaligned(src.add(t) as *const Chunk);
            core::ptr::write_unaligned(dst.add(t) as *mut Chunk, v);
            t += 8;
        }
        if t + 4 <= count {
            let v = core::ptr::read_unaligned(src.add(t) as *const Quad);
            core::ptr::write_unaligned(dst.add(t) as *mut Quad, v);
            t += 4;
        }
        // At most three left: explicit moves, not a loop LLVM would turn
        // back into a memcpy call.
        if t < count {
            *dst.add(t) = *src.add(t);
        }
        if t + 1 < count {
            *dst.add(t + 1) = *src.add(t + 1);
        }
        if t + 2 < count {
            *dst.add(t + 2) = *src.add(t + 2);
        }
    }
}

/// Zeroes columns `from..width` of a `kc` x `width` panel.
///
/// # Safety
/// `out` holds `kc * width` floats.
unsafe fn zero_columns(out: *mut f32, width: usize, from: usize, kc: usize) {
    if from < width {
        for p in 0..kc {
            // SAFETY: row p, columns from..width, inside the panel.
            unsafe { core::ptr::write_bytes(out.add(p * width + from), 0, width - from) };
        }
    }
}

/// One transposed panel: out[p * width + r] = src[r * ld + p] for r < rows,
/// p < kc, and zero for rows <= r < width. On AVX-512 (unless `PLAIN`) in
/// 16 x 16 register blocks; elsewhere with the portable transposes.
///
/// # Safety
/// `src` readable at those indices, `out` writable for `kc * width` floats;
/// rows <= width.
#[inline]
unsafe fn transpose_panel<const PLAIN: bool>(
    src: *const f32,
    ld: usize,
    rows: usize,
    kc: usize,
    out: *mut f32,
    width: usize,
) {
    #[cfg(all(target_arch = "x86_64", target_feature = "avx512f"))]
    if !PLAIN {
        // SAFETY: forwarded.
        unsafe { transpose_panel_avx512(src, ld, rows, kc, out, width) };
        return;
    }
    // SAFETY: forwarded.
    unsafe {
        transpose_into(src, ld, rows, kc, out, width);
        zero_columns(out, width, rows, kc);
    }
}

/// [`transpose_panel`] in 16 x 16 blocks: up to 16 source rows of 16 floats
/// (masked loads at the ragged ends, zero vectors for the padding rows),
/// [`crate::simd::transpose16`], and one masked store per packed step of the
/// `min(16, width - r)` columns the block covers, so every float of the
/// panel is written once and no scalar rim remains.
///
/// # Safety
/// As [`transpose_panel`].
#[cfg(all(target_arch = "x86_64", target_feature = "avx512f"))]
unsafe fn transpose_panel_avx512(
    src: *const f32,
    ld: usize,
    rows: usize,
    kc: usize,
    out: *mut f32,
    width: usize,
) {
    use crate::simd::first_lanes_mask16;
    let mut r = 0;
    while r < width {
        let live = rows.saturating_sub(r).min(16);
        let store_mask = first_lanes_mask16(width - r);
        let (src_r, out_r) = (src.wrapping_add(r * ld), out.wrapping_add(r));
        let mut p = 0;
        while p < kc {
            let steps = (kc - p).min(16);
            // SAFETY: rows r..r + live and columns p..p + steps of the
            // source, steps p..p + steps and columns r..min(r + 16, width)
            // of the panel, all inside the caller's ranges. The common
            // cases get a fixed row count and full steps, so the block
            // stays in registers.
            unsafe {
                let (s, o) = (src_r.add(p), out_r.add(p * width));
                match (live, steps == 16) {
                    (16, true) => transpose_block::<16, true>(s, ld, 16, 16, o, width, store_mask),
                    (12, true) => transpose_block::<12, true>(s, ld, 12, 16, o, width, store_mask),
                    _ => transpose_block::<16, false>(s, ld, live, steps, o, width, store_mask),
                }
            }
            p += 16;
        }
        r += 16;
    }
}

/// One 16 x 16 block of [`transpose_panel_avx512`]: `live` source rows of
/// `steps` floats (masked loads), zero rows below, transposed, and `steps`
/// masked stores of the panel columns `store_mask` selects. `LIVE` and
/// `FULL` (steps = 16) are compile-time where they are known, so the loops
/// unroll and the block is never spilled.
///
/// # Safety
/// `src` readable at `q * ld + l` for q < live, l < steps; `out` writable
/// at `s * width + l` for s < steps and the lanes of `store_mask`.
#[cfg(all(target_arch = "x86_64", target_feature = "avx512f"))]
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn transpose_block<const LIVE: usize, const FULL: bool>(
    src: *const f32,
    ld: usize,
    live: usize,
    steps: usize,
    out: *mut f32,
    width: usize,
    store_mask: u16,
) {
    use crate::simd::{first_lanes_mask16, transpose16};
    use core::arch::x86_64::*;
    let (live, steps) = if FULL { (LIVE, 16) } else { (live, steps) };
    let load_mask = first_lanes_mask16(steps);
    // SAFETY: as the caller vouched.
    unsafe {
        let mut block = [_mm512_setzero_ps(); 16];
        for (q, v) in block.iter_mut().enumerate().take(live) {
            let row = src.add(q * ld);
            *v = _mm512_maskz_loadu_ps(load_mask, row);
        }
        transpose16(&mut block);
        for (s, v) in block.iter().enumerate().take(steps) {
            _mm512_mask_storeu_ps(out.add(s * width), store_mask, *v);
        }
    }
}

/// out[p * out_stride + r] = src[r * ld + p] for r < rows, p < kc.
///
/// # Safety
/// `src` readable at those indices, `out` writable at those indices.
unsafe fn transpose_into(
    src: *const f32,
    ld: usize,
    rows: usize,
    kc: usize,
    out: *mut f32,
    out_stride: usize,
) {
    let mut r = 0;
    // SAFETY: every access is src[(r + q) * ld + p + s] with r + q < rows and
    // p + s < kc, or out[(p + s) * out_stride + r + q] likewise.
    unsafe {
        while r + 8 <= rows {
            let mut p = 0;
            while p + 8 <= kc {
                let block: [f32x8; 8] = core::array::from_fn(|q| {
                    core::ptr::read_unaligned(src.add((r + q) * ld + p) as *const f32x8)
                });
                for (s, v) in f32x8::transpose(block).iter().enumerate() {
                    core::ptr::write_unaligned(out.add((p + s) * out_stride + r) as *mut f32x8, *v);
                }
                p += 8;
            }
            transpose_scalar(src, ld, r..r + 8, p..kc, out, out_stride);
            r += 8;
        }
        while r + 4 <= rows {
            let mut p = 0;
            while p + 4 <= kc {
                let block: [f32x4; 4] = core::array::from_fn(|q| {
                    core::ptr::read_unaligned(src.add((r + q) * ld + p) as *const f32x4)
                });
                for (s, v) in f32x4::transpose(block).iter().enumerate() {
                    core::ptr::write_unaligned(out.add((p + s) * out_stride + r) as *mut f32x4, *v);
                }
                p += 4;
            }
            transpose_scalar(src, ld, r..r + 4, p..kc, out, out_stride);
            r += 4;
        }
        transpose_scalar(src, ld, r..rows, 0..kc, out, out_stride);
    }
}

/// The ragged rim of [`transpose_into`], one float at a time.
///
/// # Safety
/// As [`transpose_into`] for the given ranges.
unsafe fn transpose_scalar(
    src: *const f32,
    ld: usize,
    rows: core::ops::Range<usize>,
    steps: core::ops::Range<usize>,
    out: *mut f32,
    out_stride: usize,
) {
    for r in rows {
        for p in steps.clone() {
            // SAFETY: inside the ranges the caller vouched for.
            unsafe { *out.add(p * out_stride + r) = *src.add(r * ld + p) };
        }
    }
}

/// Packs columns `j0..j0 + cols` of op(B), shared indices `p0..p0 + kc`,
/// transposed: row j of `dst` (`kc_pad` floats) holds column j0 + j, zero
/// from kc on, and rows cols..`width` are zero. The edge panel of the
/// dot-product kernel (`kernel::tile_dot`); it is a few columns, so the
/// strided walk of a row-major B costs little.
///
/// # Safety
/// op(B) must be readable at every packed index through `b`/`ldb`; `dst`
/// must hold `width * kc_pad` floats; cols <= width, kc <= kc_pad.
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn pack_b_edge_transposed(
    tb: Trans,
    b: *const f32,
    ldb: usize,
    p0: usize,
    kc: usize,
    j0: usize,
    cols: usize,
    width: usize,
    kc_pad: usize,
    dst: *mut f32,
) {
    // SAFETY: every source index is inside op(B)'s block, every destination
    // inside the `width` rows of kc_pad floats.
    unsafe {
        core::ptr::write_bytes(dst, 0, width * kc_pad);
        match tb {
            // B(p, j) = b[j * ldb + p]: a contiguous copy per column.
            Trans::T => {
                for j in 0..cols {
                    copy_floats(b.add((j0 + j) * ldb + p0), dst.add(j * kc_pad), kc);
                }
            }
            // B(p, j) = b[p * ldb + j]: the `cols` floats of each row of B
            // are adjacent; read them together, row after row.
            Trans::N => {
                for p in 0..kc {
                    let src = b.add((p0 + p) * ldb + j0);
                    for j in 0..cols {
                        *dst.add(j * kc_pad + p) = *src.add(j);
                    }
                }
            }
        }
    }
}
