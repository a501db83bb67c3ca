//! Masking noise for denoising autoencoders.

use crate::rng::Rng;

/// output[i] <- input[i] with probability keep_prob, else 0 (no rescaling).
pub fn mask_noise(input: &[f32], output: &mut [f32], keep_prob: f32, rng: &mut Rng) {
    assert_eq!(input.len(), output.len(), "mask_noise: lengths differ");
    for (o, &x) in output.iter_mut().zip(input) {
        *o = if rng.next_f32() < keep_prob { x } else { 0.0 };
    }
}
