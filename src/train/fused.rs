//! The fused gradient-and-update phase for models made of dense layers.
//!
//! Instead of every chunk writing its own full gradient and a pass summing
//! them (which streams every chunk's gradient through memory, far beyond
//! L2), the parameters are cut into fixed blocks: a block of output units
//! (rows) of a dense weight, or a whole bias. One parallel phase hands the
//! blocks to the threads; each computes its block's gradient over the whole
//! batch as ONE GEMM summing, along K, the products of the chunks' kept
//! deltas and inputs (each (chunk, term) pair a stretch of k = the chunk's
//! rows, in chunk order, each chunk's terms in order: [`sgemm_sum`]), so the
//! block of C is loaded and stored once per K slice rather than once per
//! product, and applies the optimizer while the block is in cache:
//!
//! * SGD: the GEMM is the update, W <- (1 - lr decay) W - lr sum_c A_c^T B_c
//!   (beta = 1 - lr decay), no gradient buffer at all.
//! * Momentum: the GEMM writes v <- gamma v - lr g (beta = gamma), then
//!   [`momentum_finish`] subtracts lr decay p and adds v to p.
//! * RMSProp: the GEMM writes g into the block's gradient buffer, then the
//!   usual kernel.
//!
//! A pair whose input comes listed by its non-zeros ([`Factors::b_list`]:
//! image pixels) is summed by [`sgemm_tn_sparse_sum`] instead, after the
//! GEMM (with beta0 when it is the block's only kind of pair), in chunk
//! order: its work follows the non-zeros.
//!
//! Biases sum their deltas' columns over the chunks in chunk order, then run
//! the usual optimizer kernel. The blocks depend on the model's shapes and
//! the thread count, and each is computed by the same operations whatever
//! thread takes it, so the result depends on the chunk count only (as with
//! the per-chunk path), not on scheduling.

use std::ops::Range;

use super::Optimizer;
use crate::kernels::gemm::{sgemm_sum, Epilogue, KTerm, Trans};
use crate::kernels::optim::{momentum_finish, momentum_update, rmsprop_update, sgd_update};
use crate::kernels::sparse_grad::{sgemm_tn_sparse_sum, CLines, Csc, SparseTerm};
use crate::kernels::team::Team;
use crate::nn::{column_sums, Factors, TensorGrad};

/// Weight blocks hold at most about this many output units (rows), and a
/// tensor is cut into at least one block per thread (blocks of equal height
/// up to rounding; see [`plan`]): at 2 threads 900 -> 2 x 456 (the last
/// 444), 625 -> 2, 400 -> 2, 10 -> 1. Fewer, larger blocks run faster: each
/// block packs the batch's B operand once and its C rows once, and one per
/// thread keeps the threads balanced. Measured on DAE layer 1 (2 threads,
/// `vcortex bench`, 3 runs each, alternated): the phase took 0.64-0.65 s per
/// epoch with 4 blocks of 228 rows and 0.60-0.61 s with 2 of 456.
const TARGET_BLOCK_ROWS: usize = 456;

/// Blocks are never cut below this height to make one per thread: smaller
/// GEMMs lose more to packing and edges than an idle thread costs.
const MIN_BLOCK_ROWS: usize = 48;

/// (chunk, term) products a block hands to one [`sgemm_sum`]: the trainer
/// has one chunk per thread and at most 2 terms, so 16 covers 8 threads in
/// one call; more pairs run as several calls, in order.
const TERMS_PER_CALL: usize = 16;

/// Fills the unused slots of the listed pairs' stack array.
static NO_LIST: Csc = Csc::new();

/// Block heights are multiples of every GEMM register tile's height (12 rows
/// on AVX-512, 6 on AVX2, 4 portable), so only a tensor's last block can
/// have a partial tile.
const ROW_QUANTUM: usize = 12;

/// One block of the trainable range.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Block {
    /// Index of the tensor in the model's [`TensorGrad`] list.
    tensor: usize,
    /// Elements of the trainable range the block covers.
    span: Range<usize>,
    /// Output units (rows) of a dense weight; the whole tensor for a bias.
    rows: Range<usize>,
}

/// The blocks of `tensors` (laid out back to back from 0), in order, for
/// `threads` threads. Block boundaries do not change any value: a block's
/// GEMM computes each element of C from the same K terms in the same order
/// whatever rows share its block.
pub(crate) fn plan(tensors: &[TensorGrad], threads: usize) -> Vec<Block> {
    let mut blocks = Vec::new();
    let mut offset = 0;
    for (tensor, t) in tensors.iter().enumerate() {
        match *t {
            TensorGrad::Dense { n_out, n_in, .. } => {
                let count = n_out
                    .div_ceil(TARGET_BLOCK_ROWS)
                    .max(threads.min(n_out.div_ceil(MIN_BLOCK_ROWS)))
                    .max(1);
                let height = n_out.div_ceil(count).next_multiple_of(ROW_QUANTUM);
                for r0 in (0..n_out).step_by(height) {
                    let rows = r0..(r0 + height).min(n_out);
                    let span = offset + r0 * n_in..offset + rows.end * n_in;
                    blocks.push(Block { tensor, span, rows });
                }
            }
            TensorGrad::Bias { len } => blocks.push(Block {
                tensor,
                span: offset..offset + len,
                rows: 0..len,
            }),
        }
        offset += t.len();
    }
    blocks
}

/// What every block needs besides its own slices.
pub(crate) struct Step<'a, T, F> {
    tensors: &'a [TensorGrad],
    chunks: &'a [T],
    /// Rows of the last batch in a chunk.
    rows_of: fn(&T) -> usize,
    /// A chunk's factors of (tensor, term).
    factors: F,
    optimizer: Optimizer,
    lr: f32,
    decay: f32,
}

impl<'a, T, F> Step<'a, T, F>
where
    F: Fn(&T, usize, usize) -> Factors<'_>,
{
    /// (A constructor rather than a struct literal: the bound gives the
    /// `factors` closure its higher-ranked signature.)
    pub fn new(
        tensors: &'a [TensorGrad],
        chunks: &'a [T],
        rows_of: fn(&T) -> usize,
        factors: F,
        optimizer: Optimizer,
        lr: f32,
        decay: f32,
    ) -> Self {
        Step {
            tensors,
            chunks,
            rows_of,
            factors,
            optimizer,
            lr,
            decay,
        }
    }
}

/// Runs the phase: `params`, `state` (the optimizer's, empty for SGD) and
/// `grad` cover the trainable range that `blocks` (from [`plan`]) tile. With
/// a `team`, its threads claim the blocks in order; else they run in order on
/// the calling thread, with the same result.
pub(crate) fn run<T, F>(
    step: &Step<'_, T, F>,
    blocks: &[Block],
    params: &mut [f32],
    state: &mut [f32],
    grad: &mut [f32],
    team: Option<&Team>,
) where
    T: Sync,
    F: Fn(&T, usize, usize) -> Factors<'_> + Sync,
{
    let Some(first) = blocks.first() else {
        return;
    };
    // Each block's parameters, state and gradient, split off in order (the
    // blocks lie back to back; each part runs to the next block's start).
    let mut start = first.span.start;
    let (mut p, mut s, mut g) = (params, state, grad);
    let parts = blocks.iter().enumerate().map(|(i, block)| {
        let len = blocks
            .get(i + 1)
            .map_or(p.len(), |next| next.span.start - start);
        start += len;
        let (pb, pr) = std::mem::take(&mut p).split_at_mut(len);
        let (sb, sr) = if s.is_empty() {
            (&mut [][..], &mut [][..])
        } else {
            std::mem::take(&mut s).split_at_mut(len)
        };
        let (gb, gr) = std::mem::take(&mut g).split_at_mut(len);
        (p, s, g) = (pr, sr, gr);
        (block, pb, sb, gb)
    });
    let run_part = |(block, p, s, g): &mut (&Block, &mut [f32], &mut [f32], &mut [f32])| {
        step_block(step, block, p, s, g)
    };
    match team {
        Some(team) => for_each_part(team, parts, run_part),
        None => parts.for_each(|mut part| run_part(&mut part)),
    }
}

/// Parts of a phase up to which [`for_each_part`] needs no allocation (a
/// step of the dense models at 2 threads has 4 to 11 blocks).
pub(crate) const STACK_PARTS: usize = 32;

/// `f` on every part on the team's threads (parts claimed in order), from a
/// stack array when there are at most [`STACK_PARTS`]: a training step
/// allocates nothing.
pub(crate) fn for_each_part<P: Send>(
    team: &Team,
    parts: impl ExactSizeIterator<Item = P>,
    f: impl Fn(&mut P) + Sync,
) {
    let n = parts.len();
    if n <= STACK_PARTS {
        let mut slots: [Option<P>; STACK_PARTS] = std::array::from_fn(|_| None);
        for (slot, part) in slots.iter_mut().zip(parts) {
            *slot = Some(part);
        }
        team.for_each_mut(&mut slots[..n], |_, slot| {
            if let Some(part) = slot {
                f(part)
            }
        });
    } else {
        let mut all: Vec<P> = parts.collect();
        team.for_each_mut(&mut all, |_, part| f(part));
    }
}

/// The gradient of one block over the whole batch and its update. `p`, `s`
/// and `g` start at the block's first element (`s` is empty for SGD).
fn step_block<T, F>(
    step: &Step<'_, T, F>,
    block: &Block,
    p: &mut [f32],
    s: &mut [f32],
    g: &mut [f32],
) where
    F: Fn(&T, usize, usize) -> Factors<'_>,
{
    let len = block.span.len();
    let (p, g) = (&mut p[..len], &mut g[..len]);
    let s = if s.is_empty() { s } else { &mut s[..len] };
    let (lr, decay) = (step.lr, step.decay);
    match step.tensors[block.tensor] {
        TensorGrad::Dense { n_out, n_in, terms } => {
            // Where the GEMMs accumulate, with which alpha, and what beta the
            // first product applies to the target's old value.
            let (target, alpha, beta0) = match step.optimizer {
                Optimizer::Sgd => (&mut *p, -lr, 1.0 - lr * decay),
                Optimizer::Momentum { gamma } => (&mut *s, -lr, gamma),
                Optimizer::RmsProp { .. } => (&mut *g, 1.0, 0.0),
            };
            let m = block.rows.len();
            // Every (chunk, term) product in chunk order, each chunk's terms
            // in order, summed along K by one GEMM (several only past
            // TERMS_PER_CALL pairs), in a stack array: no allocation. Pairs
            // whose input comes listed (image pixels) are summed after, by
            // the sparse weight gradient; the first call applies beta0.
            let empty = KTerm {
                a: &[],
                lda: n_out,
                b: &[],
                ldb: n_in,
                k: 0,
            };
            let mut pairs = [empty; TERMS_PER_CALL];
            let no_list = SparseTerm {
                a: &[],
                lda: n_out,
                b: &NO_LIST,
            };
            let mut listed = [no_list; TERMS_PER_CALL];
            let (mut held, mut held_listed, mut products, mut beta) = (0, 0, 0, beta0);
            // Whether a call has written the target yet in this step.
            let mut wrote = false;
            for ch in step.chunks {
                let k = (step.rows_of)(ch);
                if k == 0 {
                    continue;
                }
                for term in 0..terms {
                    let f = (step.factors)(ch, block.tensor, term);
                    // dW[rows] += a[:, rows]^T b: A is stored k x n_out, so
                    // its columns from rows.start are this block's units.
                    let a = &f.a[block.rows.start..];
                    products += 1;
                    if let Some(list) = f.b_list {
                        assert_eq!(list.rows(), k, "input list of another chunk size");
                        if held_listed == TERMS_PER_CALL {
                            let c_lines = c_lines_after(wrote);
                            sgemm_tn_sparse_sum(
                                m, n_in, &listed, alpha, beta, target, n_in, c_lines,
                            );
                            (held_listed, beta, wrote) = (0, 1.0, true);
                        }
                        listed[held_listed] = SparseTerm {
                            a,
                            lda: n_out,
                            b: list,
                        };
                        held_listed += 1;
                        continue;
                    }
                    if held == TERMS_PER_CALL {
                        sum_pairs(m, n_in, &pairs, alpha, beta, target);
                        (held, beta, wrote) = (0, 1.0, true);
                    }
                    pairs[held] = KTerm {
                        a,
                        lda: n_out,
                        b: f.b,
                        ldb: n_in,
                        k,
                    };
                    held += 1;
                }
            }
            // A batch has at least one row (the engine checks the batch
            // size), so some product applies beta0.
            assert!(products > 0, "fused update of an empty batch");
            if held > 0 || held_listed == 0 {
                sum_pairs(m, n_in, &pairs[..held], alpha, beta, target);
                (beta, wrote) = (1.0, true);
            }
            if held_listed > 0 {
                let c_lines = c_lines_after(wrote);
                let listed = &listed[..held_listed];
                sgemm_tn_sparse_sum(m, n_in, listed, alpha, beta, target, n_in, c_lines);
            }
            match step.optimizer {
                Optimizer::Sgd => {}
                Optimizer::Momentum { .. } => momentum_finish(p, s, lr * decay),
                Optimizer::RmsProp { rho, eps } => rmsprop_update(p, s, g, lr, decay, rho, eps),
            }
        }
        TensorGrad::Bias { len } => {
            g.fill(0.0);
            for ch in step.chunks {
                let k = (step.rows_of)(ch);
                let a = (step.factors)(ch, block.tensor, 0).a;
                column_sums(&a[..k * len], g, true);
            }
            match step.optimizer {
                Optimizer::Sgd => sgd_update(p, g, lr, decay),
                Optimizer::Momentum { gamma } => momentum_update(p, s, g, lr, decay, gamma),
                Optimizer::RmsProp { rho, eps } => rmsprop_update(p, s, g, lr, decay, rho, eps),
            }
        }
    }
}

/// Where a sparse sum finds the block's target: just written by this
/// thread if an earlier call `wrote` it in this step (a DAE's dense decoder
/// term), else where every thread's forward pass last read the weights.
fn c_lines_after(wrote: bool) -> CLines {
    if wrote {
        CLines::Here
    } else {
        CLines::Elsewhere
    }
}

/// target[m x n] <- alpha sum_t a_t^T b_t + beta target: one `sgemm_sum` of
/// dense (chunk, term) pairs.
fn sum_pairs(m: usize, n: usize, pairs: &[KTerm], alpha: f32, beta: f32, target: &mut [f32]) {
    sgemm_sum(
        Trans::T,
        Trans::N,
        m,
        n,
        pairs,
        alpha,
        beta,
        target,
        n,
        Epilogue::NONE,
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_tile_the_tensors_in_order() {
        let tensors = [
            TensorGrad::Dense {
                n_out: 500,
                n_in: 7,
                terms: 1,
            },
            TensorGrad::Bias { len: 500 },
            TensorGrad::Dense {
                n_out: 3,
                n_in: 5,
                terms: 2,
            },
        ];
        let rows_of = |threads: usize| -> Vec<_> {
            let blocks = plan(&tensors, threads);
            let mut end = 0;
            for b in &blocks {
                assert_eq!(b.span.start, end);
                end = b.span.end;
            }
            assert_eq!(end, 500 * 7 + 500 + 15);
            blocks.iter().map(|b| (b.tensor, b.rows.clone())).collect()
        };
        // At most TARGET_BLOCK_ROWS high, at least one block per thread.
        assert_eq!(
            rows_of(1),
            [(0, 0..252), (0, 252..500), (1, 0..500), (2, 0..3)]
        );
        assert_eq!(rows_of(2), rows_of(1));
        assert_eq!(
            rows_of(3),
            [
                (0, 0..168),
                (0, 168..336),
                (0, 336..500),
                (1, 0..500),
                (2, 0..3)
            ]
        );
        // No block below MIN_BLOCK_ROWS to serve 16 threads: 11 of 48.
        let many = rows_of(16);
        assert_eq!(many.len(), 11 + 2);
        assert_eq!(many[0], (0, 0..48));
        assert_eq!(many[10], (0, 480..500));
    }

    /// More (chunk, term) pairs than one sgemm_sum call takes (18 from 12
    /// chunks, 3 of them empty): the later calls accumulate onto the
    /// first, in order. Small integers keep every sum exact, so the block's
    /// gradient (RMSProp leaves it in `g`) equals the plain sum exactly.
    #[test]
    fn more_pairs_than_one_call() {
        let (n_out, n_in, chunks) = (100, 7, 12);
        let tensors = [TensorGrad::Dense {
            n_out,
            n_in,
            terms: 2,
        }];
        let int = |i: usize| ((i * 7919) % 9) as f32 - 4.0;
        // Chunk c has c % 4 rows (some empty) and factors (a_t, b_t).
        /// A chunk's rows and its two terms' factors a and b.
        type Chunk = (usize, [Vec<f32>; 2], [Vec<f32>; 2]);
        let data: Vec<Chunk> = (0..chunks)
            .map(|c| {
                let rows = c % 4;
                let a = |t: usize| (0..rows * n_out).map(|i| int(i + 31 * c + t)).collect();
                let b = |t: usize| (0..rows * n_in).map(|i| int(i + 17 * c + 5 * t)).collect();
                (rows, [a(0), a(1)], [b(0), b(1)])
            })
            .collect();
        let step = Step::new(
            &tensors,
            &data,
            |d| d.0,
            |d, _, t| Factors::dense(&d.1[t], &d.2[t]),
            Optimizer::RmsProp {
                rho: 0.9,
                eps: 1e-6,
            },
            0.01,
            0.0,
        );
        let blocks = plan(&tensors, 1);
        let len = n_out * n_in;
        let (mut p, mut s, mut g) = (vec![0.0; len], vec![0.0; len], vec![f32::NAN; len]);
        run(&step, &blocks, &mut p, &mut s, &mut g, None);
        let mut want = vec![0.0f32; len];
        for (rows, a, b) in &data {
            for t in 0..2 {
                for r in 0..*rows {
                    for o in 0..n_out {
                        for i in 0..n_in {
                            want[o * n_in + i] += a[t][r * n_out + o] * b[t][r * n_in + i];
                        }
                    }
                }
            }
        }
        assert_eq!(g, want);
        // Other block plans give the same bits, on floats: 100 rows are one
        // block for 1 thread, two for 2 and three (of 48) for 16.
        let float = |i: usize| ((i * 7919) % 1000) as f32 * 1e-3 - 0.5;
        let data: Vec<Chunk> = data
            .iter()
            .enumerate()
            .map(|(c, (rows, a, b))| {
                let f = |v: &Vec<f32>, t: usize| -> Vec<f32> {
                    (0..v.len()).map(|i| float(i * 3 + c + t)).collect()
                };
                (
                    *rows,
                    [f(&a[0], 0), f(&a[1], 1)],
                    [f(&b[0], 2), f(&b[1], 3)],
                )
            })
            .collect();
        let step = Step::new(
            &tensors,
            &data,
            |d| d.0,
            |d, _, t| Factors::dense(&d.1[t], &d.2[t]),
            Optimizer::Sgd,
            0.1,
            1e-4,
        );
        // Run on a team of `threads` (the blocks claimed by whichever
        // thread is free), or on the caller alone with `threads` = 0 and
        // 2 threads' plan.
        let after = |threads: usize| {
            let mut p: Vec<f32> = (0..len).map(|i| float(i + 7)).collect();
            let mut g = vec![0.0; len];
            let team = Team::new(threads.max(1)).unwrap();
            run(
                &step,
                &plan(&tensors, if threads == 0 { 2 } else { threads }),
                &mut p,
                &mut [],
                &mut g,
                (threads > 0).then_some(&team),
            );
            p.iter().map(|x| x.to_bits()).collect::<Vec<u32>>()
        };
        assert_eq!(plan(&tensors, 2).len(), 2);
        assert_eq!(plan(&tensors, 16).len(), 3);
        assert_eq!(after(1), after(2));
        assert_eq!(after(0), after(2));
        assert_eq!(after(16), after(2));
        assert_eq!(after(1), after(16));
    }
}
