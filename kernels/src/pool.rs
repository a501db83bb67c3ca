//! 2x2, stride-2 max pooling on planes (NCHW: planes = batch * channels).
//!
//! Odd sizes floor (the last row/column is dropped, as the model's 20x20 ->
//! 10x10 and 6x6 -> 3x3 need nothing else). Ties go to the first element of the
//! window in row-major order ((0,0), (0,1), (1,0), (1,1)): a later element wins
//! only if strictly greater, so the gradient reaches exactly one input. A NaN
//! never wins unless it is the window's first element (comparisons with NaN are
//! false), exactly as the reference.
//!
//! The loops are branch-free selects over row pairs with no bounds checks in
//! the inner loop (slices are cut once per row); LLVM vectorises them. Pooling
//! is memory-bound, so explicit shuffles would buy little.

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
    grad_input.fill(0.0);
    let (oh, ow) = (h / 2, w / 2);
    if oh == 0 || ow == 0 {
        return;
    }
    for ((gi, go), am) in grad_input
        .chunks_exact_mut(h * w)
        .zip(grad_output.chunks_exact(oh * ow))
        .zip(argmax.chunks_exact(oh * ow))
    {
        // Windows are disjoint, so each input gets at most one term; `+=` keeps
        // the reference's meaning even for a hand-made argmax with repeats.
        // An index outside the plane panics (indexing) instead of writing into
        // the next plane.
        for (&g, &a) in go.iter().zip(am) {
            gi[a as usize] += g;
        }
    }
}
