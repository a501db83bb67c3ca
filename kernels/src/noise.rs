//! Masking noise for denoising autoencoders.
//!
//! Draw scheme (the reference implements the same one, bit for bit): draw k
//! of the generator, `rng.next_u64()`, decides elements 2k (its high 32 bits)
//! and 2k+1 (its low 32 bits); an element is kept iff its 32-bit draw is
//! below `keep_threshold(keep_prob)` = round(keep_prob * 2^32). A call over n
//! elements advances `rng` by exactly ceil(n / 2) draws, so a run is
//! reproducible from its seed. Two elements per draw halves the cost of the
//! generator, which is the bottleneck of this kernel (its state update is
//! serial and does not vectorise).

use crate::lanes::{load, store, F32s, LANES};
use crate::rng::Rng;

/// The 32-bit draw threshold for `keep_prob` in [0, 1]: an element is kept iff
/// its draw is < this (2^32 keeps everything).
pub fn keep_threshold(keep_prob: f32) -> u64 {
    assert!(
        (0.0..=1.0).contains(&keep_prob),
        "mask noise: keep_prob {keep_prob} is not in [0, 1]"
    );
    (keep_prob as f64 * 4_294_967_296.0).round() as u64
}

/// Fills `keep` with all-ones / all-zero f32 bit masks, two per draw.
#[inline(always)]
fn fill_masks(keep: &mut [u32], threshold: u64, rng: &mut Rng) {
    let mut pairs = keep.chunks_exact_mut(2);
    for pair in &mut pairs {
        let d = rng.next_u64();
        pair[0] = if d >> 32 < threshold { u32::MAX } else { 0 };
        pair[1] = if d & 0xFFFF_FFFF < threshold {
            u32::MAX
        } else {
            0
        };
    }
    if let [last] = pairs.into_remainder() {
        *last = if rng.next_u64() >> 32 < threshold {
            u32::MAX
        } else {
            0
        };
    }
}

/// Block of elements whose masks are drawn before being applied with SIMD
/// (even, so draws pair up exactly as in one long sequence).
const BLOCK: usize = 512;

/// Applies `value(i)` masked by the drawn keep bits to `out`, block by block.
#[inline(always)]
fn masked(out: &mut [f32], keep_prob: f32, rng: &mut Rng, value: impl Fn(usize, &mut [f32])) {
    let threshold = keep_threshold(keep_prob);
    let mut keep = [0u32; BLOCK];
    for (b, o) in out.chunks_mut(BLOCK).enumerate() {
        let k = &mut keep[..o.len()];
        fill_masks(k, threshold, rng);
        value(b * BLOCK, o);
        let kf: &[f32] = bytemuck::cast_slice(k);
        let mut oc = o.chunks_exact_mut(LANES);
        let mut kc = kf.chunks_exact(LANES);
        for (o, k) in (&mut oc).zip(&mut kc) {
            store(load(o) & load(k), o);
        }
        for (o, k) in oc.into_remainder().iter_mut().zip(kc.remainder()) {
            *o = f32::from_bits(o.to_bits() & k.to_bits());
        }
    }
}

/// `output[i] <- input[i]` with probability keep_prob, else 0 (no rescaling).
/// See the module documentation for the exact draw scheme.
///
/// # Panics
/// If the lengths differ or keep_prob is not in [0, 1].
pub fn mask_noise(input: &[f32], output: &mut [f32], keep_prob: f32, rng: &mut Rng) {
    assert_eq!(input.len(), output.len(), "mask_noise: lengths differ");
    masked(output, keep_prob, rng, |start, o| {
        o.copy_from_slice(&input[start..start + o.len()])
    });
}

/// `dst[i] <- src[i] / 255` with probability keep_prob, else 0: pixel scaling
/// and corruption in one pass, identical to `activation::u8_to_unit_f32`
/// followed by `mask_noise` from the same generator state.
pub fn mask_noise_u8(src: &[u8], dst: &mut [f32], keep_prob: f32, rng: &mut Rng) {
    assert_eq!(src.len(), dst.len(), "mask_noise_u8: lengths differ");
    masked(dst, keep_prob, rng, |start, o| {
        crate::activation::u8_to_unit_f32(&src[start..start + o.len()], o)
    });
}

/// [`mask_noise`] of each of `input`'s rows of `row_len` floats into the same
/// row of `output`, row r drawing from its own generator `rng_of_row(r)`:
/// the same values as calling [`mask_noise`] row by row with those
/// generators. On AVX-512 builds eight rows' generators run side by side,
/// one row per 64-bit lane (xoshiro256++ is adds, shifts, rotates and
/// xors), and their draws are transposed so that each row's next eight
/// draws mask its next 16 floats with one compare: the generator's serial
/// state update, the cost of the row-by-row form, is paid once per eight
/// rows. Rows left over from groups of eight, and each row's last
/// `row_len % 16` floats, run the row-by-row form from where the lanes
/// left off.
///
/// # Panics
/// If the lengths differ, are not a multiple of `row_len`, or keep_prob is
/// not in [0, 1].
pub fn mask_noise_rows(
    input: &[f32],
    output: &mut [f32],
    row_len: usize,
    keep_prob: f32,
    rng_of_row: impl Fn(usize) -> Rng,
) {
    assert_eq!(input.len(), output.len(), "mask_noise_rows: lengths differ");
    if row_len == 0 {
        assert!(input.is_empty(), "mask_noise_rows: rows of length 0");
        return;
    }
    assert!(
        input.len().is_multiple_of(row_len),
        "mask_noise_rows: {} floats are not rows of {row_len}",
        input.len()
    );
    let rows = input.len() / row_len;
    let done = mask_row_groups(input, output, row_len, keep_prob, &rng_of_row);
    for r in done..rows {
        let span = r * row_len..(r + 1) * row_len;
        mask_noise(
            &input[span.clone()],
            &mut output[span],
            keep_prob,
            &mut rng_of_row(r),
        );
    }
}

/// The whole groups of [`ROW_GROUP`] rows of [`mask_noise_rows`] (none
/// without AVX-512); returns how many rows it did.
fn mask_row_groups(
    input: &[f32],
    output: &mut [f32],
    row_len: usize,
    keep_prob: f32,
    rng_of_row: &impl Fn(usize) -> Rng,
) -> usize {
    #[cfg(all(target_arch = "x86_64", target_feature = "avx512f"))]
    {
        let rows = input.len() / row_len;
        let mut done = 0;
        while rows - done >= ROW_GROUP {
            let span = done * row_len..(done + ROW_GROUP) * row_len;
            let rngs = core::array::from_fn(|i| rng_of_row(done + i));
            mask_row_group(
                &input[span.clone()],
                &mut output[span],
                row_len,
                rngs,
                keep_prob,
            );
            done += ROW_GROUP;
        }
        done
    }
    #[cfg(not(all(target_arch = "x86_64", target_feature = "avx512f")))]
    {
        let _ = (input, output, row_len, keep_prob, rng_of_row);
        0
    }
}

/// Rows per group of [`mask_noise_rows`]: one per 64-bit lane of a zmm.
#[cfg(all(target_arch = "x86_64", target_feature = "avx512f"))]
const ROW_GROUP: usize = 8;

/// One group of [`ROW_GROUP`] rows of [`mask_noise_rows`], `input` and
/// `output` holding exactly those rows.
#[cfg(all(target_arch = "x86_64", target_feature = "avx512f"))]
fn mask_row_group(
    input: &[f32],
    output: &mut [f32],
    row_len: usize,
    rngs: [Rng; ROW_GROUP],
    keep_prob: f32,
) {
    use core::arch::x86_64::*;
    assert!(input.len() == ROW_GROUP * row_len && output.len() == input.len());
    let threshold = keep_threshold(keep_prob);
    // 16 floats (8 draws) per row per block.
    let blocks = row_len / 16;
    let states: [[u64; 4]; ROW_GROUP] = core::array::from_fn(|i| rngs[i].state());
    // SAFETY: register arithmetic on AVX-512F (enabled for the whole build,
    // this function's cfg); every load and store covers 16 floats at
    // `r * row_len + 16 * b` for r < ROW_GROUP and b < blocks, inside both
    // slices (16 * blocks <= row_len), and the lane states are read from and
    // written to local arrays of 8 u64.
    unsafe {
        let lane = |w: usize| {
            let words: [u64; ROW_GROUP] = core::array::from_fn(|i| states[i][w]);
            _mm512_loadu_si512(words.as_ptr().cast())
        };
        let mut s = [lane(0), lane(1), lane(2), lane(3)];
        // Every draw's two 32-bit halves compared at once: below
        // `threshold` keeps the float (threshold 2^32 keeps all).
        let keep_all = threshold > u32::MAX as u64;
        let limit = _mm512_set1_epi32(threshold.min(u32::MAX as u64) as u32 as i32);
        for b in 0..blocks {
            let mut draws = [_mm512_setzero_si512(); 8];
            for d in &mut draws {
                // xoshiro256++'s step (`Rng::next_u64`), one row per lane.
                *d = _mm512_add_epi64(_mm512_rol_epi64::<23>(_mm512_add_epi64(s[0], s[3])), s[0]);
                let t = _mm512_slli_epi64::<17>(s[1]);
                s[2] = _mm512_xor_si512(s[2], s[0]);
                s[3] = _mm512_xor_si512(s[3], s[1]);
                s[1] = _mm512_xor_si512(s[1], s[2]);
                s[0] = _mm512_xor_si512(s[0], s[3]);
                s[2] = _mm512_xor_si512(s[2], t);
                s[3] = _mm512_rol_epi64::<45>(s[3]);
            }
            // Row r's 8 draws in one vector, in draw order.
            let by_row = transpose8x8_u64(draws);
            for (r, &row_draws) in by_row.iter().enumerate() {
                // Float 2j is kept by draw j's high half, float 2j + 1 by
                // its low half: swapping the halves puts each where its
                // float's 32-bit lane is.
                let halves = _mm512_rol_epi64::<32>(row_draws);
                let keep = if keep_all {
                    0xFFFF
                } else {
                    _mm512_cmplt_epu32_mask(halves, limit)
                };
                let at = r * row_len + 16 * b;
                let x = _mm512_loadu_ps(input.as_ptr().add(at));
                _mm512_storeu_ps(output.as_mut_ptr().add(at), _mm512_maskz_mov_ps(keep, x));
            }
        }
        if blocks * 16 < row_len {
            let mut words = [[0u64; ROW_GROUP]; 4];
            for (w, v) in words.iter_mut().zip(s) {
                _mm512_storeu_si512(w.as_mut_ptr().cast(), v);
            }
            let row_states: [[u64; 4]; ROW_GROUP] =
                core::array::from_fn(|r| core::array::from_fn(|w| words[w][r]));
            for (r, state) in row_states.into_iter().enumerate() {
                let mut rng = Rng::from_state(state);
                let tail = r * row_len + 16 * blocks..(r + 1) * row_len;
                mask_noise(&input[tail.clone()], &mut output[tail], keep_prob, &mut rng);
            }
        }
    }
}

/// 8 x 8 transpose of 64-bit lanes: afterwards vector r lane d holds what
/// vector d lane r held.
#[cfg(all(target_arch = "x86_64", target_feature = "avx512f"))]
#[inline(always)]
fn transpose8x8_u64(v: [core::arch::x86_64::__m512i; 8]) -> [core::arch::x86_64::__m512i; 8] {
    use core::arch::x86_64::*;
    // SAFETY: register-only shuffles on AVX-512F (this function's cfg).
    unsafe {
        // Pairs: t[2i] = (v[2i][0], v[2i+1][0], v[2i][2], v[2i+1][2], ...).
        let t: [__m512i; 8] = core::array::from_fn(|i| {
            let (a, b) = (v[i & !1], v[i | 1]);
            if i % 2 == 0 {
                _mm512_unpacklo_epi64(a, b)
            } else {
                _mm512_unpackhi_epi64(a, b)
            }
        });
        // 128-bit blocks: u[j] gathers block pairs of t[j] and t[j + 2]
        // (j in 0, 1) and of t[j + 4] and t[j + 6].
        let u: [__m512i; 8] = core::array::from_fn(|i| {
            let (g, k) = (i / 4, i % 4);
            let (a, b) = (t[4 * g + (k % 2)], t[4 * g + (k % 2) + 2]);
            if k < 2 {
                _mm512_shuffle_i64x2::<0b10_00_10_00>(a, b)
            } else {
                _mm512_shuffle_i64x2::<0b11_01_11_01>(a, b)
            }
        });
        core::array::from_fn(|r| {
            let (a, b) = (u[r % 4], u[4 + r % 4]);
            if r < 4 {
                _mm512_shuffle_i64x2::<0b10_00_10_00>(a, b)
            } else {
                _mm512_shuffle_i64x2::<0b11_01_11_01>(a, b)
            }
        })
    }
}

// The mask is applied with a bitwise AND on f32 lanes.
const _: () = assert!(std::mem::size_of::<F32s>() == 4 * LANES);
