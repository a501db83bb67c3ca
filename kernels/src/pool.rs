//! 2x2, stride-2 max pooling on planes (NCHW: planes = batch * channels).
//!
//! Odd sizes floor (the last row/column is dropped, as the model's 20x20 ->
//! 10x10 and 6x6 -> 3x3 need nothing else). Ties go to the first element of the
//! window in row-major order ((0,0), (0,1), (1,0), (1,1)): a later element wins
//! only if strictly greater, so the gradient reaches exactly one input. A NaN
//! never wins unless it is the window's first element (comparisons with NaN are
//! false), exactly as the reference.
//!
//! On AVX-512, rows of at least `SIMD_MIN_OW` windows run 16 windows per
//! step: even and odd columns are split (and, backward, merged) with
//! two-source permutes, and the scalar select chain (strictly greater; an
//! ordered compare is false whenever a NaN is involved) runs lane-wise, so
//! values, indices and the tie/NaN rules are exactly the scalar ones.
//! Elsewhere the loops are branch-free selects over row pairs with no bounds
//! checks in the inner loop (slices are cut once per row), which LLVM
//! vectorises.

fn check(
    planes: usize,
    h: usize,
    w: usize,
    input_len: usize,
    output_len: usize,
    argmax_len: usize,
) {
    assert_eq!(input_len, planes * h * w, "maxpool2x2: input length");
    assert_eq!(
        output_len,
        planes * (h / 2) * (w / 2),
        "maxpool2x2: output length"
    );
    assert_eq!(argmax_len, output_len, "maxpool2x2: argmax length");
}

/// output <- max over each 2x2 window; argmax <- the winner's index in its plane.
pub fn maxpool2x2_forward(
    planes: usize,
    h: usize,
    w: usize,
    input: &[f32],
    output: &mut [f32],
    argmax: &mut [u32],
) {
    check(planes, h, w, input.len(), output.len(), argmax.len());
    let (oh, ow) = (h / 2, w / 2);
    if oh == 0 || ow == 0 {
        return;
    }
    for ((inp, out), am) in input
        .chunks_exact(h * w)
        .zip(output.chunks_exact_mut(oh * ow))
        .zip(argmax.chunks_exact_mut(oh * ow))
    {
        #[cfg(all(target_arch = "x86_64", target_feature = "avx512f"))]
        if ow >= SIMD_MIN_OW {
            for (y, (out_row, am_row)) in out
                .chunks_exact_mut(ow)
                .zip(am.chunks_exact_mut(ow))
                .enumerate()
            {
                let top = &inp[2 * y * w..2 * y * w + 2 * ow];
                let bottom = &inp[(2 * y + 1) * w..(2 * y + 1) * w + 2 * ow];
                avx512::row_pair(top, bottom, (2 * y * w) as u32, w as u32, out_row, am_row);
            }
            continue;
        }
        for (y, (out_row, am_row)) in out
            .chunks_exact_mut(ow)
            .zip(am.chunks_exact_mut(ow))
            .enumerate()
        {
            let top = &inp[2 * y * w..2 * y * w + 2 * ow];
            let bottom = &inp[(2 * y + 1) * w..(2 * y + 1) * w + 2 * ow];
            let row_base = (2 * y * w) as u32;
            let w32 = w as u32;
            for (x, ((o, a), (t, b))) in out_row
                .iter_mut()
                .zip(am_row.iter_mut())
                .zip(top.chunks_exact(2).zip(bottom.chunks_exact(2)))
                .enumerate()
            {
                let base = row_base + 2 * x as u32;
                let (mut best, mut idx) = (t[0], base);
                if t[1] > best {
                    (best, idx) = (t[1], base + 1);
                }
                if b[0] > best {
                    (best, idx) = (b[0], base + w32);
                }
                if b[1] > best {
                    (best, idx) = (b[1], base + w32 + 1);
                }
                *o = best;
                *a = idx;
            }
        }
    }
}

/// grad_input <- grad_output scattered to the recorded argmax (overwrites).
pub fn maxpool2x2_backward(
    planes: usize,
    h: usize,
    w: usize,
    grad_output: &[f32],
    argmax: &[u32],
    grad_input: &mut [f32],
) {
    check(
        planes,
        h,
        w,
        grad_input.len(),
        grad_output.len(),
        argmax.len(),
    );
    let (oh, ow) = (h / 2, w / 2);
    #[cfg(all(target_arch = "x86_64", target_feature = "avx512f"))]
    if oh > 0 && ow >= SIMD_MIN_OW {
        if h % 2 == 1 || w % 2 == 1 {
            // The dropped last row / column get no gradient.
            grad_input.fill(0.0);
        }
        for ((gi, go), am) in grad_input
            .chunks_exact_mut(h * w)
            .zip(grad_output.chunks_exact(oh * ow))
            .zip(argmax.chunks_exact(oh * ow))
        {
            let mut in_windows = true;
            for (y, (go_row, am_row)) in go.chunks_exact(ow).zip(am.chunks_exact(ow)).enumerate() {
                let (above, below) = gi[2 * y * w..(2 * y + 2) * w].split_at_mut(w);
                in_windows &= avx512::row_pair_backward(
                    go_row,
                    am_row,
                    (2 * y * w) as u32,
                    w as u32,
                    &mut above[..2 * ow],
                    &mut below[..2 * ow],
                );
            }
            if !in_windows {
                // A hand-made argmax pointing outside its window: the scalar
                // scatter gives the reference's meaning (or panics).
                gi.fill(0.0);
                scatter(gi, go, am);
            }
        }
        return;
    }
    grad_input.fill(0.0);
    if oh == 0 || ow == 0 {
        return;
    }
    for ((gi, go), am) in grad_input
        .chunks_exact_mut(h * w)
        .zip(grad_output.chunks_exact(oh * ow))
        .zip(argmax.chunks_exact(oh * ow))
    {
        scatter(gi, go, am);
    }
}

/// gi[am[i]] += go[i] within one plane.
fn scatter(gi: &mut [f32], go: &[f32], am: &[u32]) {
    // Windows are disjoint, so each input gets at most one term; `+=` keeps
    // the reference's meaning even for a hand-made argmax with repeats. An
    // index outside the plane panics (indexing) instead of writing into the
    // next plane.
    for (&g, &a) in go.iter().zip(am) {
        gi[a as usize] += g;
    }
}

/// Narrower rows stay scalar: a 16-window step would be mostly masked off.
#[cfg(all(target_arch = "x86_64", target_feature = "avx512f"))]
const SIMD_MIN_OW: usize = 8;

#[cfg(all(target_arch = "x86_64", target_feature = "avx512f"))]
mod avx512 {
    use crate::simd::first_lanes_mask16 as mask;
    use core::arch::x86_64::*;

    /// One row pair: `out[x]`, `am[x]` for the windows over columns 2x, 2x + 1
    /// of `top` and `bottom` (each `2 * out.len()` long); indices are
    /// `row_base + 2x (+1) (+w)`.
    #[inline(always)]
    pub(super) fn row_pair(
        top: &[f32],
        bottom: &[f32],
        row_base: u32,
        w: u32,
        out: &mut [f32],
        am: &mut [u32],
    ) {
        let n = out.len();
        assert!(top.len() == 2 * n && bottom.len() == 2 * n && am.len() == n);
        // SAFETY: avx512f is enabled for the whole build (the module's cfg).
        // Every load and store is masked to lanes inside the slices checked
        // above: windows x0 .. x0 + m, columns 2 x0 .. 2 (x0 + m).
        unsafe {
            let even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
            let odd = _mm512_add_epi32(even, _mm512_set1_epi32(1));
            let one = _mm512_set1_epi32(1);
            let wv = _mm512_set1_epi32(w as i32);
            let mut x0 = 0;
            while x0 < n {
                let m = (n - x0).min(16);
                let (k_out, k_lo, k_hi) = (mask(m), mask(2 * m), mask((2 * m).saturating_sub(16)));
                let split = |row: &[f32]| {
                    let p = row.as_ptr().add(2 * x0);
                    let lo = _mm512_maskz_loadu_ps(k_lo, p);
                    // wrapping: past the slice when k_hi = 0 (nothing loaded).
                    let hi = _mm512_maskz_loadu_ps(k_hi, p.wrapping_add(16));
                    (
                        _mm512_permutex2var_ps(lo, even, hi),
                        _mm512_permutex2var_ps(lo, odd, hi),
                    )
                };
                let (t0, t1) = split(top);
                let (b0, b1) = split(bottom);
                let base =
                    _mm512_add_epi32(_mm512_set1_epi32((row_base + 2 * x0 as u32) as i32), even);
                let base_b = _mm512_add_epi32(base, wv);
                // The scalar chain: a later element wins only if strictly greater.
                let mut best = t0;
                let mut idx = base;
                for (v, i) in [
                    (t1, _mm512_add_epi32(base, one)),
                    (b0, base_b),
                    (b1, _mm512_add_epi32(base_b, one)),
                ] {
                    let c = _mm512_cmp_ps_mask::<_CMP_GT_OQ>(v, best);
                    best = _mm512_mask_blend_ps(c, best, v);
                    idx = _mm512_mask_blend_epi32(c, idx, i);
                }
                _mm512_mask_storeu_ps(out.as_mut_ptr().add(x0), k_out, best);
                _mm512_mask_storeu_epi32(am.as_mut_ptr().add(x0).cast(), k_out, idx);
                x0 += m;
            }
        }
    }

    /// The inverse of `row_pair` for one row pair: each input column of
    /// `top` / `bottom` (each `2 * go.len()` long) gets `0.0 + go[x]` if it is
    /// window x's recorded argmax, else 0.0 (`0.0 + g` rather than `g`
    /// matches the scalar `+=` on a zeroed buffer bit for bit, -0.0
    /// included). Returns false if some index is none of its window's four
    /// positions (nothing is written for it then).
    #[inline(always)]
    pub(super) fn row_pair_backward(
        go: &[f32],
        am: &[u32],
        row_base: u32,
        w: u32,
        top: &mut [f32],
        bottom: &mut [f32],
    ) -> bool {
        let n = go.len();
        assert!(am.len() == n && top.len() == 2 * n && bottom.len() == 2 * n);
        let mut in_windows = true;
        // SAFETY: avx512f is enabled for the whole build (the module's cfg).
        // Every load and store is masked to lanes inside the slices checked
        // above: windows x0 .. x0 + m, columns 2 x0 .. 2 (x0 + m).
        unsafe {
            let even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
            // Interleave lanes 0..8 (then 8..16) of two vectors: a0 b0 a1 b1 ...
            let lo = _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
            let hi = _mm512_add_epi32(lo, _mm512_set1_epi32(8));
            let one = _mm512_set1_epi32(1);
            let wv = _mm512_set1_epi32(w as i32);
            let mut x0 = 0;
            while x0 < n {
                let m = (n - x0).min(16);
                let (k_in, k_lo, k_hi) = (mask(m), mask(2 * m), mask((2 * m).saturating_sub(16)));
                let g = _mm512_add_ps(
                    _mm512_setzero_ps(),
                    _mm512_maskz_loadu_ps(k_in, go.as_ptr().add(x0)),
                );
                let a = _mm512_maskz_loadu_epi32(k_in, am.as_ptr().add(x0).cast());
                let t0 =
                    _mm512_add_epi32(_mm512_set1_epi32((row_base + 2 * x0 as u32) as i32), even);
                let b0 = _mm512_add_epi32(t0, wv);
                let at_t0 = _mm512_cmpeq_epi32_mask(a, t0);
                let at_t1 = _mm512_cmpeq_epi32_mask(a, _mm512_add_epi32(t0, one));
                let at_b0 = _mm512_cmpeq_epi32_mask(a, b0);
                let at_b1 = _mm512_cmpeq_epi32_mask(a, _mm512_add_epi32(b0, one));
                in_windows &= (at_t0 | at_t1 | at_b0 | at_b1) & k_in == k_in;
                let merge = |row: &mut [f32], even_cols: __m512, odd_cols: __m512| {
                    let p = row.as_mut_ptr().add(2 * x0);
                    _mm512_mask_storeu_ps(p, k_lo, _mm512_permutex2var_ps(even_cols, lo, odd_cols));
                    // wrapping: past the slice when k_hi = 0 (nothing stored).
                    _mm512_mask_storeu_ps(
                        p.wrapping_add(16),
                        k_hi,
                        _mm512_permutex2var_ps(even_cols, hi, odd_cols),
                    );
                };
                merge(
                    top,
                    _mm512_maskz_mov_ps(at_t0, g),
                    _mm512_maskz_mov_ps(at_t1, g),
                );
                merge(
                    bottom,
                    _mm512_maskz_mov_ps(at_b0, g),
                    _mm512_maskz_mov_ps(at_b1, g),
                );
                x0 += m;
            }
        }
        in_windows
    }
}
