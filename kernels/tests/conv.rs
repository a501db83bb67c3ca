//! Direct convolution kernels against the f64 reference loops.
//!
//! Tolerance: every output is a sum of n products (plus a bias). Any f32
//! summation order, with or without FMA, is within gamma_n = n * eps / (1 - n * eps)
//! of the exact sum relative to sum |terms|, so we allow
//! |fast - reference| <= 2 * n * eps * sum|terms| + 1e-6, with sum|terms| from the
//! reference run on |input|, |weight|, |bias|. ReLU is 1-Lipschitz and the
//! sigmoid 1/4-Lipschitz, so the bound survives the fused activation; the
//! 1e-6 covers the sigmoid's own rounding. A wrong index or a missed term is
//! off by a whole term, far above this bound at these sizes (n * eps < 1e-3).

use proptest::prelude::*;
use vcortex_kernels::conv::{self, ConvShape};
use vcortex_kernels::gemm::Activation;
use vcortex_kernels::{pool, reference};

fn random(len: usize, seed: u64) -> Vec<f32> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            ((x >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

fn abs(v: &[f32]) -> Vec<f32> {
    v.iter().map(|x| x.abs()).collect()
}

fn assert_close(what: &str, fast: &[f32], exact: &[f32], sum_abs: &[f32], n_terms: usize) {
    assert_eq!(fast.len(), exact.len());
    for i in 0..fast.len() {
        let tol = 2.0 * n_terms as f32 * f32::EPSILON * sum_abs[i] + 1e-6;
        let err = (fast[i] - exact[i]).abs();
        assert!(
            err <= tol,
            "{what}[{i}]: fast {} reference {} |err| {err} > tol {tol}",
            fast[i],
            exact[i]
        );
    }
}

fn check_forward(s: &ConvShape, act: Activation, seed: u64) {
    let x = random(s.input_len(), seed);
    let w = random(s.weight_len(), seed + 1);
    let b = random(s.c_out, seed + 2);
    let mut fast = vec![f32::NAN; s.output_len()];
    conv::conv2d_forward(s, &x, &w, &b, &mut fast, act);
    let mut exact = vec![0.0; s.output_len()];
    reference::conv2d_forward(s, &x, &w, &b, &mut exact, act);
    let mut sum_abs = vec![0.0; s.output_len()];
    reference::conv2d_forward(
        s,
        &abs(&x),
        &abs(&w),
        &abs(&b),
        &mut sum_abs,
        Activation::Identity,
    );
    assert_close("forward", &fast, &exact, &sum_abs, s.c_in * s.kh * s.kw + 1);
    let mut par = vec![f32::NAN; s.output_len()];
    conv::conv2d_forward_parallel(s, &x, &w, &b, &mut par, act);
    // Each image's result depends on that image only: chunking changes nothing.
    assert!(par
        .iter()
        .zip(&fast)
        .all(|(a, b)| a.to_bits() == b.to_bits()));
}

fn check_backward_input(s: &ConvShape, seed: u64) {
    let go = random(s.output_len(), seed);
    let w = random(s.weight_len(), seed + 1);
    let mut fast = vec![f32::NAN; s.input_len()];
    conv::conv2d_backward_input(s, &go, &w, &mut fast);
    let mut exact = vec![0.0; s.input_len()];
    reference::conv2d_backward_input(s, &go, &w, &mut exact);
    let mut sum_abs = vec![0.0; s.input_len()];
    reference::conv2d_backward_input(s, &abs(&go), &abs(&w), &mut sum_abs);
    assert_close(
        "backward_input",
        &fast,
        &exact,
        &sum_abs,
        s.c_out * s.kh * s.kw,
    );
    let mut par = vec![f32::NAN; s.input_len()];
    conv::conv2d_backward_input_parallel(s, &go, &w, &mut par);
    assert!(par
        .iter()
        .zip(&fast)
        .all(|(a, b)| a.to_bits() == b.to_bits()));
}

fn check_backward_filter(s: &ConvShape, seed: u64) {
    let x = random(s.input_len(), seed);
    let go = random(s.output_len(), seed + 1);
    let mut gw = vec![f32::NAN; s.weight_len()];
    let mut gb = vec![f32::NAN; s.c_out];
    conv::conv2d_backward_filter(s, &x, &go, &mut gw, &mut gb);
    let mut ew = vec![0.0; s.weight_len()];
    let mut eb = vec![0.0; s.c_out];
    reference::conv2d_backward_filter(s, &x, &go, &mut ew, &mut eb);
    let mut aw = vec![0.0; s.weight_len()];
    let mut ab = vec![0.0; s.c_out];
    reference::conv2d_backward_filter(s, &abs(&x), &abs(&go), &mut aw, &mut ab);
    let n = s.batch * s.out_h() * s.out_w();
    assert_close("grad_weight", &gw, &ew, &aw, n);
    assert_close("grad_bias", &gb, &eb, &ab, n);
    let mut pw = vec![f32::NAN; s.weight_len()];
    let mut pb = vec![f32::NAN; s.c_out];
    conv::conv2d_backward_filter_parallel(s, &x, &go, &mut pw, &mut pb);
    assert_close("grad_weight (parallel)", &pw, &ew, &aw, n);
    assert_close("grad_bias (parallel)", &pb, &eb, &ab, n);
}

/// The fused forward + pooling must reproduce the two kernels in sequence
/// bit for bit (values and argmax), including NaN and tie handling: inputs
/// are drawn from a few levels so that pooled windows often tie, and an
/// optional NaN poisons some outputs.
fn check_forward_maxpool(s: &ConvShape, act: Activation, seed: u64, levels: bool, nan: bool) {
    let mut x = random(s.input_len(), seed);
    let mut w = random(s.weight_len(), seed + 1);
    let b = random(s.c_out, seed + 2);
    if levels {
        // Few distinct products: many exact ties among window elements.
        x.iter_mut().for_each(|v| *v = (*v * 2.0).round());
        w.iter_mut().for_each(|v| *v = (*v * 2.0).round());
    }
    if nan && !x.is_empty() {
        let i = (seed as usize) % x.len();
        x[i] = f32::NAN;
    }
    let mut y = vec![0.0; s.output_len()];
    conv::conv2d_forward(s, &x, &w, &b, &mut y, act);
    let (oh, ow) = (s.out_h(), s.out_w());
    let m = s.batch * s.c_out * (oh / 2) * (ow / 2);
    let (mut want, mut want_am) = (vec![0.0; m], vec![0u32; m]);
    pool::maxpool2x2_forward(s.batch * s.c_out, oh, ow, &y, &mut want, &mut want_am);
    let (mut got, mut got_am) = (vec![f32::NAN; m], vec![u32::MAX; m]);
    let mut scratch = conv::ConvScratch::default();
    conv::conv2d_forward_maxpool2x2_with(s, &x, &w, &b, act, &mut got, &mut got_am, &mut scratch);
    assert_eq!(got_am, want_am, "argmax");
    assert!(
        got.iter()
            .zip(&want)
            .all(|(a, b)| a.to_bits() == b.to_bits()),
        "pooled values"
    );
}

/// Filter, bias and input gradient buffers for `s`, every element `fill`.
fn grad_buffers(s: &ConvShape, fill: f32) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    (
        vec![fill; s.weight_len()],
        vec![fill; s.c_out],
        vec![fill; s.input_len()],
    )
}

/// The fused pooling + convolution backward must reproduce
/// `maxpool2x2_backward` followed by the two backward kernels bit for bit.
/// The argmax comes from a real forward pass over tie-prone values; the pooled
/// gradient has zeros and -0.0 (as ReLU's derivative leaves it).
fn check_backward_from_maxpool(s: &ConvShape, seed: u64, with_input: bool) {
    let x = random(s.input_len(), seed)
        .iter()
        .map(|v| (v * 2.0).round())
        .collect::<Vec<_>>();
    let w = random(s.weight_len(), seed + 1);
    let b = random(s.c_out, seed + 2);
    let (oh, ow) = (s.out_h(), s.out_w());
    let mut y = vec![0.0; s.output_len()];
    conv::conv2d_forward(s, &x, &w, &b, &mut y, Activation::Relu);
    let m = s.batch * s.c_out * (oh / 2) * (ow / 2);
    let (mut pooled, mut am) = (vec![0.0; m], vec![0u32; m]);
    pool::maxpool2x2_forward(s.batch * s.c_out, oh, ow, &y, &mut pooled, &mut am);
    let pg: Vec<f32> = random(m, seed + 3)
        .iter()
        .enumerate()
        .map(|(i, &v)| match i % 5 {
            0 => 0.0,
            1 => -0.0,
            _ => v,
        })
        .collect();
    let mut dy = vec![0.0; s.output_len()];
    pool::maxpool2x2_backward(s.batch * s.c_out, oh, ow, &pg, &am, &mut dy);
    let (mut gw, mut gb, mut gi) = grad_buffers(s, 0.0);
    conv::conv2d_backward_filter(s, &x, &dy, &mut gw, &mut gb);
    conv::conv2d_backward_input(s, &dy, &w, &mut gi);
    let (mut fw, mut fb, mut fi) = grad_buffers(s, f32::NAN);
    let mut scratch = conv::ConvScratch::default();
    conv::conv2d_backward_from_maxpool2x2_with(
        s,
        &x,
        &w,
        &pg,
        &am,
        &mut fw,
        &mut fb,
        with_input.then_some(&mut fi[..]),
        &mut scratch,
    );
    let same = |a: &[f32], b: &[f32]| a.iter().zip(b).all(|(p, q)| p.to_bits() == q.to_bits());
    assert!(same(&fw, &gw), "grad_weight");
    assert!(same(&fb, &gb), "grad_bias");
    if with_input {
        assert!(same(&fi, &gi), "grad_input");
    } else {
        assert!(fi.iter().all(|v| v.is_nan()), "grad_input untouched");
    }
}

/// The winners' backward pass (`conv2d_backward_from_maxpool2x2_winners`)
/// against the f64 reference run on the gradient that pooling scatters, in
/// both layouts and the default. Its sums skip the windows' three zero terms
/// and run in another order, so the bound is `assert_close`'s with n the
/// dense count of terms. The argmax comes from a real forward pass; each
/// layout's scratch first serves a call on another shape (its buffers then
/// hold stale values of the wrong size).
fn check_backward_from_winners(s: &ConvShape, seed: u64, with_input: bool, stale: &ConvShape) {
    let x = random(s.input_len(), seed);
    let w = random(s.weight_len(), seed + 1);
    let b = random(s.c_out, seed + 2);
    let (oh, ow) = (s.out_h(), s.out_w());
    let mut y = vec![0.0; s.output_len()];
    conv::conv2d_forward(s, &x, &w, &b, &mut y, Activation::Relu);
    let m = s.pooled_len();
    let (mut pooled, mut am) = (vec![0.0; m], vec![0u32; m]);
    pool::maxpool2x2_forward(s.batch * s.c_out, oh, ow, &y, &mut pooled, &mut am);
    let pg: Vec<f32> = random(m, seed + 3)
        .iter()
        .zip(&pooled)
        .map(|(&g, &p)| if p > 0.0 { g } else { 0.0 })
        .collect();
    let mut dy = vec![0.0; s.output_len()];
    pool::maxpool2x2_backward(s.batch * s.c_out, oh, ow, &pg, &am, &mut dy);
    let (mut ew, mut eb, mut ei) = grad_buffers(s, 0.0);
    reference::conv2d_backward_filter(s, &x, &dy, &mut ew, &mut eb);
    reference::conv2d_backward_input(s, &dy, &w, &mut ei);
    let (mut aw, mut ab, mut ai) = grad_buffers(s, 0.0);
    reference::conv2d_backward_filter(s, &abs(&x), &abs(&dy), &mut aw, &mut ab);
    reference::conv2d_backward_input(s, &abs(&dy), &abs(&w), &mut ai);
    let n_filter = s.batch * oh * ow;
    let n_input = s.c_out * s.kh * s.kw;
    let layouts = [
        None,
        Some(conv::WinnersLayout::Rows),
        Some(conv::WinnersLayout::Channels),
    ];
    for layout in layouts {
        let mut scratch = layout.map_or_else(conv::ConvScratch::default, |l| {
            conv::ConvScratch::with_winners_layout(l)
        });
        // A call on another shape first leaves the scratch stale.
        let sx = random(stale.input_len(), seed + 4);
        let sw = random(stale.weight_len(), seed + 5);
        let (spw, sow) = (stale.out_w() / 2, stale.out_w());
        let s_windows = (stale.out_h() / 2) * spw;
        let sam: Vec<u32> = (0..stale.pooled_len())
            .map(|i| {
                let p = i % s_windows.max(1);
                (2 * (p / spw.max(1)) * sow + 2 * (p % spw.max(1))) as u32
            })
            .collect();
        let spg = random(stale.pooled_len(), seed + 6);
        for (shape, x, w, pg, am) in [(stale, &sx, &sw, &spg, &sam), (s, &x, &w, &pg, &am)] {
            let (mut fw, mut fb, mut fi) = grad_buffers(shape, f32::NAN);
            conv::conv2d_backward_from_maxpool2x2_winners(
                shape,
                x,
                w,
                pg,
                am,
                &mut fw,
                &mut fb,
                with_input.then_some(&mut fi[..]),
                &mut scratch,
            );
            if !std::ptr::eq(shape, s) {
                continue;
            }
            let what = format!("{layout:?}");
            assert_close(&format!("grad_weight {what}"), &fw, &ew, &aw, n_filter);
            assert_close(&format!("grad_bias {what}"), &fb, &eb, &ab, n_filter);
            if with_input {
                assert_close(&format!("grad_input {what}"), &fi, &ei, &ai, n_input);
            } else {
                assert!(fi.iter().all(|v| v.is_nan()), "grad_input untouched");
            }
        }
    }
}

fn act_strategy() -> impl Strategy<Value = Activation> {
    prop_oneof![
        Just(Activation::Identity),
        Just(Activation::Relu),
        Just(Activation::Sigmoid)
    ]
}

/// Shapes straddling the lane count (batch), the register tiles (channels,
/// columns, kernel widths) and ragged edges.
fn shape_strategy() -> impl Strategy<Value = ConvShape> {
    (
        1usize..=19,
        1usize..=4,
        1usize..=7,
        1usize..=7,
        1usize..=21,
        0usize..=5,
        0usize..=8,
    )
        .prop_map(|(batch, c_in, kh, kw, c_out, dh, dw)| ConvShape {
            batch,
            c_in,
            h: kh + dh,
            w: kw + dw,
            c_out,
            kh,
            kw,
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn forward_matches_reference(s in shape_strategy(), act in act_strategy(), seed in any::<u64>()) {
        check_forward(&s, act, seed);
    }

    #[test]
    fn forward_maxpool_matches_forward_then_pool(
        s in shape_strategy(), act in act_strategy(), seed in any::<u64>(),
        levels in any::<bool>(), nan in any::<bool>(),
    ) {
        check_forward_maxpool(&s, act, seed, levels, nan);
    }

    #[test]
    fn backward_from_maxpool_matches_pool_then_backward(
        s in shape_strategy(), seed in any::<u64>(), with_input in any::<bool>(),
    ) {
        check_backward_from_maxpool(&s, seed, with_input);
    }

    #[test]
    fn backward_from_winners_matches_reference(
        s in shape_strategy(), stale in shape_strategy(), seed in any::<u64>(),
        with_input in any::<bool>(),
    ) {
        check_backward_from_winners(&s, seed, with_input, &stale);
    }

    /// Narrow planes whose kernel rows share a vector (`w + kw <= L`), and
    /// kernels wider than a vector.
    #[test]
    fn backward_from_winners_rows_share_or_span_vectors(
        batch in 1usize..=5, c_in in 1usize..=3, c_out in 1usize..=5, kh in 1usize..=6,
        kw in 1usize..=19, w in 1usize..=12, dh in 0usize..=4, seed in any::<u64>(),
    ) {
        let s = ConvShape { batch, c_in, h: kh + dh, w: kw + w - 1, c_out, kh, kw };
        check_backward_from_winners(&s, seed, true, &CONV2.with_batch(1));
    }

    #[test]
    fn backward_input_matches_reference(s in shape_strategy(), seed in any::<u64>()) {
        check_backward_input(&s, seed);
    }

    /// The row-in-registers path (6-wide output, 5-wide kernel) at other heights
    /// and channel counts.
    #[test]
    fn backward_input_row_path_matches_reference(
        batch in 1usize..=18, c_in in 1usize..=16, c_out in 1usize..=21, kh in 1usize..=6,
        dh in 0usize..=4, seed in any::<u64>(),
    ) {
        let s = ConvShape { batch, c_in, h: kh + dh, w: 10, c_out, kh, kw: 5 };
        check_backward_input(&s, seed);
    }

    /// The column-block path (20-wide output, 9-wide kernel: conv1's shape)
    /// at other heights and channel counts.
    #[test]
    fn backward_input_block_path_matches_reference(
        batch in 1usize..=18, c_in in 1usize..=3, c_out in 1usize..=17, kh in 1usize..=9,
        dh in 0usize..=3, seed in any::<u64>(),
    ) {
        let s = ConvShape { batch, c_in, h: kh + dh, w: 28, c_out, kh, kw: 9 };
        check_backward_input(&s, seed);
    }

    #[test]
    fn backward_filter_matches_reference(s in shape_strategy(), seed in any::<u64>()) {
        check_backward_filter(&s, seed);
    }
}

const CONV1: ConvShape = ConvShape {
    batch: 17,
    c_in: 1,
    h: 28,
    w: 28,
    c_out: 15,
    kh: 9,
    kw: 9,
};
const CONV2: ConvShape = ConvShape {
    batch: 17,
    c_in: 15,
    h: 10,
    w: 10,
    c_out: 20,
    kh: 5,
    kw: 5,
};

#[test]
fn model_layers_match_reference() {
    for s in [CONV1, CONV2, CONV1.with_batch(1), CONV2.with_batch(1)] {
        check_forward(&s, Activation::Relu, 7);
        for (seed, levels, nan) in [(10, false, false), (11, true, false), (12, true, true)] {
            check_forward_maxpool(&s, Activation::Relu, seed, levels, nan);
        }
        check_backward_input(&s, 8);
        check_backward_filter(&s, 9);
        check_backward_from_maxpool(&s, 13, true);
        check_backward_from_maxpool(&s, 14, false);
        check_backward_from_winners(&s, 15, true, &CONV1.with_batch(2));
        check_backward_from_winners(&s, 16, false, &CONV2.with_batch(3));
    }
}

/// The parallel filter gradient sums fixed chunks in a fixed order: repeated
/// runs, and runs on 1, 2 and 3 threads, give the same bits, which match the
/// reference.
#[test]
fn parallel_filter_gradient_is_deterministic() {
    let s = CONV2.with_batch(2 * conv::PAR_CHUNK + 5);
    let x = random(s.input_len(), 1);
    let go = random(s.output_len(), 2);
    let run = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        pool.install(|| {
            let mut gw = vec![0.0; s.weight_len()];
            let mut gb = vec![0.0; s.c_out];
            conv::conv2d_backward_filter_parallel(&s, &x, &go, &mut gw, &mut gb);
            (gw, gb)
        })
    };
    let bits = |v: &(Vec<f32>, Vec<f32>)| {
        v.0.iter()
            .chain(&v.1)
            .map(|x| x.to_bits())
            .collect::<Vec<u32>>()
    };
    let first = run(1);
    let one = bits(&first);
    let (gw, gb) = first;
    assert_eq!(one, bits(&run(1)));
    assert_eq!(one, bits(&run(2)));
    assert_eq!(one, bits(&run(3)));
    // Same bits, and the right values: several chunks (plus a ragged one)
    // summed in order still match the reference.
    let mut ew = vec![0.0; s.weight_len()];
    let mut eb = vec![0.0; s.c_out];
    reference::conv2d_backward_filter(&s, &x, &go, &mut ew, &mut eb);
    let mut aw = vec![0.0; s.weight_len()];
    let mut ab = vec![0.0; s.c_out];
    reference::conv2d_backward_filter(&s, &abs(&x), &abs(&go), &mut aw, &mut ab);
    let n = s.batch * s.out_h() * s.out_w();
    assert_close("grad_weight (chunked)", &gw, &ew, &aw, n);
    assert_close("grad_bias (chunked)", &gb, &eb, &ab, n);
}

#[test]
#[should_panic(expected = "does not fit")]
fn kernel_larger_than_image_is_rejected() {
    let s = ConvShape {
        batch: 1,
        c_in: 1,
        h: 4,
        w: 4,
        c_out: 1,
        kh: 5,
        kw: 3,
    };
    conv::conv2d_forward(
        &s,
        &[0.0; 16],
        &[0.0; 15],
        &[0.0],
        &mut [],
        Activation::Identity,
    );
}

/// One caller-owned scratch reused across shapes (large, small, ragged, a
/// general backward-input shape) gives exactly the same
/// bits as a fresh scratch per call: no stale packing data leaks from one call
/// into the next.
#[test]
fn reused_scratch_matches_fresh_calls() {
    let mut scratch = conv::ConvScratch::default();
    let general = ConvShape {
        batch: 3,
        c_in: 2,
        h: 7,
        w: 6,
        c_out: 3,
        kh: 3,
        kw: 2,
    };
    let shapes = [
        CONV1.with_batch(2 * conv::LANES + 3),
        CONV2.with_batch(5),
        general,
        CONV2.with_batch(conv::LANES + 1),
        CONV1.with_batch(1),
    ];
    for (i, s) in shapes.iter().enumerate() {
        let seed = 10 * i as u64;
        let x = random(s.input_len(), seed);
        let w = random(s.weight_len(), seed + 1);
        let b = random(s.c_out, seed + 2);
        let go = random(s.output_len(), seed + 3);
        let (mut y1, mut y2) = (vec![0.0; s.output_len()], vec![1.0; s.output_len()]);
        let fresh = &mut conv::ConvScratch::default();
        conv::conv2d_forward_with(s, &x, &w, &b, &mut y1, Activation::Relu, fresh);
        conv::conv2d_forward_with(s, &x, &w, &b, &mut y2, Activation::Relu, &mut scratch);
        assert_eq!(y1, y2, "forward, shape {i}");
        let (mut d1, mut d2) = (vec![0.0; s.input_len()], vec![1.0; s.input_len()]);
        let fresh = &mut conv::ConvScratch::default();
        conv::conv2d_backward_input_with(s, &go, &w, &mut d1, fresh);
        conv::conv2d_backward_input_with(s, &go, &w, &mut d2, &mut scratch);
        assert_eq!(d1, d2, "backward_input, shape {i}");
        let (mut w1, mut w2) = (vec![0.0; s.weight_len()], vec![1.0; s.weight_len()]);
        let (mut b1, mut b2) = (vec![0.0; s.c_out], vec![1.0; s.c_out]);
        let fresh = &mut conv::ConvScratch::default();
        conv::conv2d_backward_filter_with(s, &x, &go, &mut w1, &mut b1, fresh);
        conv::conv2d_backward_filter_with(s, &x, &go, &mut w2, &mut b2, &mut scratch);
        assert_eq!((w1, b1), (w2, b2), "backward_filter, shape {i}");
    }
}

/// Every argmax of a window other than its four positions is refused, in
/// either layout, wherever it sits in the batch (an image's windows are
/// checked a vector at a time, with a ragged last vector).
#[test]
fn backward_from_winners_rejects_an_argmax_outside_its_window() {
    let s = ConvShape {
        batch: 3,
        c_in: 2,
        h: 7,
        w: 7,
        c_out: 3,
        kh: 2,
        kw: 2,
    };
    // 6 x 6 output, 3 x 3 pooled windows per channel: 27 per image.
    let (ow, pw) = (6, 3);
    let good: Vec<u32> = (0..s.pooled_len())
        .map(|i| {
            let p = i % 9;
            (2 * (p / pw) * ow + 2 * (p % pw) + ow + 1) as u32
        })
        .collect();
    let run = |am: &[u32], layout| {
        let (mut gw, mut gb, mut gi) = grad_buffers(&s, 0.0);
        let mut scratch = conv::ConvScratch::with_winners_layout(layout);
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            conv::conv2d_backward_from_maxpool2x2_winners(
                &s,
                &random(s.input_len(), 1),
                &random(s.weight_len(), 2),
                &random(s.pooled_len(), 3),
                am,
                &mut gw,
                &mut gb,
                Some(&mut gi),
                &mut scratch,
            )
        }))
        .is_ok()
    };
    for layout in [conv::WinnersLayout::Rows, conv::WinnersLayout::Channels] {
        assert!(run(&good, layout), "the windows' own argmax");
        for i in [0, 15, 16, 26, 27, 40, s.pooled_len() - 1] {
            // good[i] is the window's bottom-right: two columns right of
            // its corner, two rows down, the next window's own winner
            // (good[i] + 2), past the plane, and a huge index.
            for bad in [good[i] + 1, good[i] + ow as u32, good[i] + 2, 36, u32::MAX] {
                let mut am = good.clone();
                am[i] = bad;
                assert!(!run(&am, layout), "argmax {bad} at window {i}, {layout:?}");
            }
        }
    }
}

#[test]
#[should_panic(expected = "outside its 2x2 window")]
fn backward_from_maxpool_rejects_an_argmax_outside_its_window() {
    let s = ConvShape {
        batch: 1,
        c_in: 1,
        h: 5,
        w: 5,
        c_out: 1,
        kh: 2,
        kw: 2,
    };
    // 4 x 4 output, 2 x 2 pooled; index 15 belongs to the last window only.
    let am = [15u32, 2, 8, 10];
    let (mut gw, mut gb) = (vec![0.0; 4], vec![0.0; 1]);
    let mut scratch = conv::ConvScratch::default();
    conv::conv2d_backward_from_maxpool2x2_with(
        &s,
        &[0.5; 25],
        &[0.5; 4],
        &[1.0; 4],
        &am,
        &mut gw,
        &mut gb,
        None,
        &mut scratch,
    );
}
