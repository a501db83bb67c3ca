//! Plain reference implementations of every kernel: simple loops, no SIMD, no
//! blocking, accumulating in f64 where a sum is long. They define what the fast
//! kernels must compute and are what the property tests compare against.
//! Shapes are not checked here beyond what indexing does.

use crate::conv::ConvShape;
use crate::gemm::{Activation, Bias, Trans};

#[inline]
fn at(t: Trans, x: &[f32], ld: usize, r: usize, c: usize) -> f32 {
    match t {
        Trans::N => x[r * ld + c],
        Trans::T => x[c * ld + r],
    }
}

/// Applies an activation to one value.
pub fn activate(act: Activation, x: f32) -> f32 {
    match act {
        Activation::Identity => x,
        Activation::Relu => x.max(0.0),
        Activation::Sigmoid => sigmoid(x),
    }
}

/// The logistic function, computed without overflow for large |x|.
pub fn sigmoid(x: f32) -> f32 {
    if x >= 0.0 {
        1.0 / (1.0 + (-x).exp())
    } else {
        let e = x.exp();
        e / (1.0 + e)
    }
}

/// C <- act(alpha * op(A) op(B) + beta * C + bias); beta == 0 never reads C.
#[allow(clippy::too_many_arguments)]
pub fn sgemm(
    ta: Trans,
    tb: Trans,
    m: usize,
    n: usize,
    k: usize,
    alpha: f32,
    a: &[f32],
    lda: usize,
    b: &[f32],
    ldb: usize,
    beta: f32,
    c: &mut [f32],
    ldc: usize,
    bias: Bias,
    act: Activation,
) {
    for i in 0..m {
        for j in 0..n {
            let mut s = 0.0f64;
            for p in 0..k {
                s += at(ta, a, lda, i, p) as f64 * at(tb, b, ldb, p, j) as f64;
            }
            let mut v = alpha as f64 * s;
            if beta != 0.0 {
                v += beta as f64 * c[i * ldc + j] as f64;
            }
            v += match bias {
                Bias::None => 0.0,
                Bias::Row(r) => r[i] as f64,
                Bias::Col(cb) => cb[j] as f64,
            };
            c[i * ldc + j] = activate(act, v as f32);
        }
    }
}

/// Valid, stride-1 convolution forward (cross-correlation, as Theano's conv2d
/// with flipped filters and every deep-learning library compute it).
pub fn conv2d_forward(
    s: &ConvShape,
    input: &[f32],
    weight: &[f32],
    bias: &[f32],
    output: &mut [f32],
    act: Activation,
) {
    let (oh, ow) = (s.out_h(), s.out_w());
    for n in 0..s.batch {
        for co in 0..s.c_out {
            for y in 0..oh {
                for x in 0..ow {
                    let mut acc = bias[co] as f64;
                    for ci in 0..s.c_in {
                        for ky in 0..s.kh {
                            for kx in 0..s.kw {
                                let iv = input[((n * s.c_in + ci) * s.h + y + ky) * s.w + x + kx];
                                let wv = weight[((co * s.c_in + ci) * s.kh + ky) * s.kw + kx];
                                acc += iv as f64 * wv as f64;
                            }
                        }
                    }
                    output[((n * s.c_out + co) * oh + y) * ow + x] = activate(act, acc as f32);
                }
            }
        }
    }
}

/// Gradient of the loss with respect to the convolution's input (overwrites).
pub fn conv2d_backward_input(
    s: &ConvShape,
    grad_output: &[f32],
    weight: &[f32],
    grad_input: &mut [f32],
) {
    let (oh, ow) = (s.out_h(), s.out_w());
    let mut acc = vec![0.0f64; s.input_len()];
    for n in 0..s.batch {
        for co in 0..s.c_out {
            for y in 0..oh {
                for x in 0..ow {
                    let g = grad_output[((n * s.c_out + co) * oh + y) * ow + x] as f64;
                    for ci in 0..s.c_in {
                        for ky in 0..s.kh {
                            for kx in 0..s.kw {
                                let wv = weight[((co * s.c_in + ci) * s.kh + ky) * s.kw + kx];
                                acc[((n * s.c_in + ci) * s.h + y + ky) * s.w + x + kx] +=
                                    g * wv as f64;
                            }
                        }
                    }
                }
            }
        }
    }
    for (d, a) in grad_input.iter_mut().zip(acc) {
        *d = a as f32;
    }
}

/// Gradients with respect to the filters and the bias, summed over the batch
/// (overwrites both).
pub fn conv2d_backward_filter(
    s: &ConvShape,
    input: &[f32],
    grad_output: &[f32],
    grad_weight: &mut [f32],
    grad_bias: &mut [f32],
) {
    let (oh, ow) = (s.out_h(), s.out_w());
    for co in 0..s.c_out {
        let mut gb = 0.0f64;
        for n in 0..s.batch {
            for y in 0..oh {
                for x in 0..ow {
                    gb += grad_output[((n * s.c_out + co) * oh + y) * ow + x] as f64;
                }
            }
        }
        grad_bias[co] = gb as f32;
        for ci in 0..s.c_in {
            for ky in 0..s.kh {
                for kx in 0..s.kw {
                    let mut gw = 0.0f64;
                    for n in 0..s.batch {
                        for y in 0..oh {
                            for x in 0..ow {
                                let g = grad_output[((n * s.c_out + co) * oh + y) * ow + x];
                                let iv = input[((n * s.c_in + ci) * s.h + y + ky) * s.w + x + kx];
                                gw += g as f64 * iv as f64;
                            }
                        }
                    }
                    grad_weight[((co * s.c_in + ci) * s.kh + ky) * s.kw + kx] = gw as f32;
                }
            }
        }
    }
}

/// 2x2, stride-2 max pooling over `planes` planes of h x w (output floor(h/2)
/// x floor(w/2)). Ties go to the first element in row-major window order.
/// `argmax` receives each maximum's index within its input plane.
pub fn maxpool2x2_forward(
    planes: usize,
    h: usize,
    w: usize,
    input: &[f32],
    output: &mut [f32],
    argmax: &mut [u32],
) {
    let (oh, ow) = (h / 2, w / 2);
    for p in 0..planes {
        let plane = &input[p * h * w..(p + 1) * h * w];
        for y in 0..oh {
            for x in 0..ow {
                let mut best = 2 * y * w + 2 * x;
                for (dy, dx) in [(0, 1), (1, 0), (1, 1)] {
                    let idx = (2 * y + dy) * w + 2 * x + dx;
                    if plane[idx] > plane[best] {
                        best = idx;
                    }
                }
                output[(p * oh + y) * ow + x] = plane[best];
                argmax[(p * oh + y) * ow + x] = best as u32;
            }
        }
    }
}

/// Scatters each output gradient to its recorded argmax (overwrites the
/// whole input gradient, zero elsewhere).
pub fn maxpool2x2_backward(
    planes: usize,
    h: usize,
    w: usize,
    grad_output: &[f32],
    argmax: &[u32],
    grad_input: &mut [f32],
) {
    let (oh, ow) = (h / 2, w / 2);
    grad_input[..planes * h * w].fill(0.0);
    for p in 0..planes {
        for i in 0..oh * ow {
            grad_input[p * h * w + argmax[p * oh * ow + i] as usize] +=
                grad_output[p * oh * ow + i];
        }
    }
}

/// Softmax cross-entropy over rows; returns the summed loss, writes the
/// probabilities and the gradient (p - onehot) * grad_scale.
pub fn softmax_cross_entropy(
    logits: &[f32],
    labels: &[u8],
    classes: usize,
    probs: &mut [f32],
    grad: &mut [f32],
    grad_scale: f32,
) -> f64 {
    let mut total = 0.0f64;
    for (r, &label) in labels.iter().enumerate() {
        let row = &logits[r * classes..(r + 1) * classes];
        let max = row.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v)) as f64;
        let sum: f64 = row.iter().map(|&v| (v as f64 - max).exp()).sum();
        let log_sum = sum.ln();
        for c in 0..classes {
            let p = ((row[c] as f64 - max).exp() / sum) as f32;
            probs[r * classes + c] = p;
            let y = if c == label as usize { 1.0 } else { 0.0 };
            grad[r * classes + c] = (p - y) * grad_scale;
        }
        total += log_sum - (row[label as usize] as f64 - max);
    }
    total
}

/// Binary cross-entropy of sigmoid(logits) against targets in [0, 1], summed
/// over all elements; writes the reconstruction and the gradient with respect
/// to the logits, (sigmoid(a) - x) * grad_scale.
pub fn sigmoid_binary_cross_entropy(
    logits: &[f32],
    targets: &[f32],
    recon: &mut [f32],
    grad: &mut [f32],
    grad_scale: f32,
) -> f64 {
    let mut total = 0.0f64;
    for i in 0..logits.len() {
        let a = logits[i] as f64;
        let x = targets[i] as f64;
        // -[x log s(a) + (1-x) log(1-s(a))] = max(a,0) - a x + log(1 + e^-|a|)
        total += a.max(0.0) - a * x + (-a.abs()).exp().ln_1p();
        let z = sigmoid(logits[i]);
        recon[i] = z;
        grad[i] = (z - targets[i]) * grad_scale;
    }
    total
}

/// KL(rho || rho_hat) summed over units and scaled by beta.
pub fn kl_sparsity_cost(rho_hat: &[f32], rho: f32, beta: f32) -> f64 {
    let rho = rho as f64;
    rho_hat
        .iter()
        .map(|&q| {
            let q = q as f64;
            rho * (rho / q).ln() + (1.0 - rho) * ((1.0 - rho) / (1.0 - q)).ln()
        })
        .sum::<f64>()
        * beta as f64
}

/// Adds d/dh of the KL penalty to `grad_h` (rows x units): every row of unit j
/// gets beta * (-rho/rho_hat_j + (1-rho)/(1-rho_hat_j)) * scale.
pub fn kl_sparsity_backward(
    grad_h: &mut [f32],
    units: usize,
    rho_hat: &[f32],
    rho: f32,
    beta: f32,
    scale: f32,
) {
    for row in grad_h.chunks_exact_mut(units) {
        for (g, &q) in row.iter_mut().zip(rho_hat) {
            *g += beta * (-rho / q + (1.0 - rho) / (1.0 - q)) * scale;
        }
    }
}

pub fn sgd_update(p: &mut [f32], g: &[f32], lr: f32, decay: f32) {
    for (p, &g) in p.iter_mut().zip(g) {
        *p -= lr * (g + decay * *p);
    }
}

pub fn momentum_update(p: &mut [f32], v: &mut [f32], g: &[f32], lr: f32, decay: f32, gamma: f32) {
    for ((p, v), &g) in p.iter_mut().zip(v.iter_mut()).zip(g) {
        *v = gamma * *v - lr * (g + decay * *p);
        *p += *v;
    }
}

pub fn momentum_finish(p: &mut [f32], v: &mut [f32], lr_decay: f32) {
    for (p, v) in p.iter_mut().zip(v.iter_mut()) {
        *v -= lr_decay * *p;
        *p += *v;
    }
}

#[allow(clippy::too_many_arguments)]
pub fn rmsprop_update(
    p: &mut [f32],
    r: &mut [f32],
    g: &[f32],
    lr: f32,
    decay: f32,
    rho: f32,
    eps: f32,
) {
    for ((p, r), &g) in p.iter_mut().zip(r.iter_mut()).zip(g) {
        *r = rho * *r + (1.0 - rho) * g * g;
        *p -= lr * (g / (*r + eps).sqrt() + decay * *p);
    }
}

/// x <- max(x, 0).
pub fn relu_inplace(x: &mut [f32]) {
    for v in x {
        *v = v.max(0.0);
    }
}

/// `rho_hat[j] <- mean over rows of h[row, j]`, rows summed in order in f32.
pub fn column_means(h: &[f32], rho_hat: &mut [f32]) {
    let units = rho_hat.len();
    let rows = h.len() / units;
    rho_hat.fill(0.0);
    for row in h.chunks_exact(units) {
        for (q, &v) in rho_hat.iter_mut().zip(row) {
            *q += v;
        }
    }
    for q in rho_hat {
        *q /= rows as f32;
    }
}

/// dst = src / 255.
pub fn u8_to_unit_f32(src: &[u8], dst: &mut [f32]) {
    for (d, &s) in dst.iter_mut().zip(src) {
        *d = s as f32 / 255.0;
    }
}

/// Masking noise, one element at a time, with the draw scheme documented in
/// `noise`: draw k's high 32 bits decide element 2k, its low 32 bits element
/// 2k+1; keep iff the 32-bit draw < round(keep_prob * 2^32).
pub fn mask_noise(input: &[f32], output: &mut [f32], keep_prob: f32, rng: &mut crate::rng::Rng) {
    let threshold = (keep_prob as f64 * 4_294_967_296.0).round() as u64;
    let mut draw = 0u64;
    for (i, (o, &x)) in output.iter_mut().zip(input).enumerate() {
        let bits = if i % 2 == 0 {
            draw = rng.next_u64();
            draw >> 32
        } else {
            draw & 0xFFFF_FFFF
        };
        *o = if bits < threshold { x } else { 0.0 };
    }
}

/// Scaling then masking, the definition `noise::mask_noise_u8` must match.
pub fn mask_noise_u8(src: &[u8], dst: &mut [f32], keep_prob: f32, rng: &mut crate::rng::Rng) {
    let mut scaled = vec![0.0f32; src.len()];
    u8_to_unit_f32(src, &mut scaled);
    mask_noise(&scaled, dst, keep_prob, rng);
}

/// dst += src.
pub fn add_assign(dst: &mut [f32], src: &[f32]) {
    for (d, &s) in dst.iter_mut().zip(src) {
        *d += s;
    }
}

/// dst *= s.
pub fn scale(dst: &mut [f32], s: f32) {
    for d in dst {
        *d *= s;
    }
}
