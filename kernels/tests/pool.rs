//! 2x2 max pooling against the reference loops. Pooling does no arithmetic
//! except the backward scatter (one term per input), so results must match
//! exactly, argmax included.

use proptest::prelude::*;
use vcortex_kernels::{pool, reference};

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Values drawn from a few levels so that ties are common.
    #[test]
    fn forward_and_backward_match_reference(
        planes in 1usize..=5, h in 1usize..=13, w in 1usize..=37,
        levels in 1u32..=6, seed in any::<u64>(),
    ) {
        let n = planes * h * w;
        let mut x = seed | 1;
        let input: Vec<f32> = (0..n).map(|_| {
            x ^= x << 13; x ^= x >> 7; x ^= x << 17;
            (x % levels as u64) as f32 - 1.0
        }).collect();
        let m = planes * (h / 2) * (w / 2);
        let (mut out, mut am) = (vec![f32::NAN; m], vec![u32::MAX; m]);
        pool::maxpool2x2_forward(planes, h, w, &input, &mut out, &mut am);
        let (mut rout, mut ram) = (vec![0.0; m], vec![0; m]);
        reference::maxpool2x2_forward(planes, h, w, &input, &mut rout, &mut ram);
        prop_assert_eq!(&am, &ram);
        prop_assert!(out.iter().zip(&rout).all(|(a, b)| a.to_bits() == b.to_bits()));

        let go: Vec<f32> = (0..m).map(|i| i as f32 * 0.5 - 3.0).collect();
        let mut gi = vec![f32::NAN; n];
        pool::maxpool2x2_backward(planes, h, w, &go, &am, &mut gi);
        let mut rgi = vec![0.0; n];
        reference::maxpool2x2_backward(planes, h, w, &go, &ram, &mut rgi);
        prop_assert!(gi.iter().zip(&rgi).all(|(a, b)| a.to_bits() == b.to_bits()));
    }
}

#[test]
fn ties_go_to_the_first_element_in_row_major_order() {
    // One 2x2 window per case; the winner's index within the plane.
    let cases: [([f32; 4], u32); 4] = [
        ([1.0, 1.0, 1.0, 1.0], 0),
        ([0.0, 2.0, 2.0, 2.0], 1),
        ([0.0, 1.0, 3.0, 3.0], 2),
        ([0.0, 1.0, 2.0, 3.0], 3),
    ];
    for (window, want) in cases {
        let (mut out, mut am) = ([0.0], [0]);
        pool::maxpool2x2_forward(1, 2, 2, &window, &mut out, &mut am);
        assert_eq!(am[0], want, "window {window:?}");
    }
}

#[test]
fn odd_sizes_floor() {
    // 5x5 -> 2x2: the last row and column are ignored.
    let input: Vec<f32> = (0..25).map(|i| i as f32).collect();
    let (mut out, mut am) = ([0.0; 4], [0; 4]);
    pool::maxpool2x2_forward(1, 5, 5, &input, &mut out, &mut am);
    assert_eq!(am, [6, 8, 16, 18]);
    assert_eq!(out, [6.0, 8.0, 16.0, 18.0]);
}

#[test]
fn nan_wins_only_as_the_first_element_as_in_the_reference() {
    // Planes of 2 x 34 (17 windows: one full 16-window step and a ragged
    // one), a NaN at every position of some windows.
    let (h, w) = (2, 34);
    for pos in 0..4 {
        let mut input: Vec<f32> = (0..h * w).map(|i| (i % 7) as f32).collect();
        for win in (0..w / 2).step_by(3) {
            let (dy, dx) = (pos / 2, pos % 2);
            input[dy * w + 2 * win + dx] = f32::NAN;
        }
        let m = w / 2;
        let (mut out, mut am) = (vec![0.0; m], vec![0; m]);
        pool::maxpool2x2_forward(1, h, w, &input, &mut out, &mut am);
        let (mut rout, mut ram) = (vec![0.0; m], vec![0; m]);
        reference::maxpool2x2_forward(1, h, w, &input, &mut rout, &mut ram);
        assert_eq!(am, ram, "NaN at window position {pos}");
        assert!(out
            .iter()
            .zip(&rout)
            .all(|(a, b)| a.to_bits() == b.to_bits()));
    }
}

#[test]
fn backward_with_argmax_outside_its_window_matches_the_reference() {
    // Hand-made indices (not from the forward pass): every window points at
    // input 3 of its plane, so the terms pile up there as in the reference.
    let (planes, h, w) = (2, 4, 18);
    let m = planes * (h / 2) * (w / 2);
    let go: Vec<f32> = (0..m).map(|i| i as f32 * 0.25 - 1.0).collect();
    let am = vec![3u32; m];
    let mut gi = vec![f32::NAN; planes * h * w];
    pool::maxpool2x2_backward(planes, h, w, &go, &am, &mut gi);
    let mut rgi = vec![0.0; planes * h * w];
    reference::maxpool2x2_backward(planes, h, w, &go, &am, &mut rgi);
    assert!(gi.iter().zip(&rgi).all(|(a, b)| a.to_bits() == b.to_bits()));
}
