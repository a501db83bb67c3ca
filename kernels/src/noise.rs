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

// The mask is applied with a bitwise AND on f32 lanes.
const _: () = assert!(std::mem::size_of::<F32s>() == 4 * LANES);
