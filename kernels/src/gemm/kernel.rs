//! Register-blocked micro-kernels and the cache-block sizes of each path.
//!
//! A micro-kernel computes one MR x NR tile of op(A) op(B) over a `kc` slice of
//! the shared dimension, holding the MR x NR accumulators in SIMD registers
//! (N on the lanes, because C is row-major: a tile row is NR contiguous
//! floats). It then applies the epilogue (alpha, beta, bias, activation) while
//! the tile is still in registers and stores it once.

use super::lanes::Lanes;
use super::Activation;
use wide::{f32x16, f32x4, f32x8};

/// One instruction-set path: vector type, register tile and cache blocks.
pub(crate) trait Path {
    type V: Lanes;
    /// Rows of C per micro-tile (broadcast A values).
    const MR: usize;
    /// Vectors per tile row; NR = NV * LANES columns of C per micro-tile.
    const NV: usize;
    const NR: usize = Self::NV * <Self::V as Lanes>::LANES;
    /// Cuts the shared dimension (the pc loop).
    const KC: usize;
    /// Cuts M (the ic loop).
    const MC: usize;
    /// Cuts N (the jc loop).
    const NC: usize;
    /// Whether small-m products (B transposed, or B stored k x n with
    /// n >= `M_LANES_NN_MIN_N`) run the M-on-lanes kernel ([`tile_m_lanes`],
    /// 16-lane vectors) instead of packing B.
    const M_LANES: bool;
    /// Whether the last few columns of a product with a row-major op(A)
    /// run the dot-product kernel ([`tile_dot`], 16-lane vectors).
    const DOT_EDGE: bool;

    /// Computes a `rows` x NR tile (rows <= MR) and writes its first `cols`
    /// columns through the epilogue.
    ///
    /// With `a_rows = None`, `a` is a packed panel; with `Some(lda)`, `a`
    /// points at row 0 of a row-major op(A) read in place (`rows` rows,
    /// `lda` apart, `kc` floats each): no packing for products whose A
    /// block would be used by few column tiles.
    ///
    /// # Safety
    /// `a` holds `kc` steps of MR floats (or the rows above); `b` holds
    /// `kc` rows of NR readable floats, `b_stride` apart; `c` is valid for
    /// `rows` rows of `cols` floats, `ldc` apart (read only when
    /// `ep.beta != 0`); the bias pointers cover the tile's rows / `cols`
    /// columns.
    ///
    /// `prefetch_b`: a full-width tile prefetches B ahead; `prefetch_a`
    /// (with `prefetch_b`, a packed A panel): the A panel too, for tiles
    /// whose A panel streams from L2.
    #[allow(clippy::too_many_arguments)]
    unsafe fn tile(
        rows: usize,
        kc: usize,
        a: *const f32,
        a_rows: Option<usize>,
        b: *const f32,
        b_stride: usize,
        c: *mut f32,
        ldc: usize,
        cols: usize,
        ep: &TileEpilogue,
        prefetch_b: bool,
        prefetch_a: bool,
    );
}

/// The epilogue of one tile. Bias pointers are already offset to the tile.
#[derive(Clone, Copy)]
pub(crate) struct TileEpilogue {
    pub alpha: f32,
    pub beta: f32,
    pub bias_row: *const f32,
    pub bias_col: *const f32,
    pub activation: Activation,
}

impl TileEpilogue {
    /// The epilogue of one K slice of a product whose full epilogue is
    /// `whole`: the first slice applies beta to C, later ones accumulate onto
    /// the partial sums (beta 1); only the last adds the bias and applies the
    /// activation.
    #[inline(always)]
    pub fn k_slice(whole: &TileEpilogue, first: bool, last: bool) -> TileEpilogue {
        TileEpilogue {
            alpha: whole.alpha,
            beta: if first { whole.beta } else { 1.0 },
            bias_row: if last {
                whole.bias_row
            } else {
                core::ptr::null()
            },
            bias_col: if last {
                whole.bias_col
            } else {
                core::ptr::null()
            },
            activation: if last {
                whole.activation
            } else {
                Activation::Identity
            },
        }
    }

    /// The epilogue of the sub-tile `i` rows and `j` columns further on:
    /// each bias pointer present is moved along (null ones stay null).
    #[inline(always)]
    pub fn offset(&self, i: usize, j: usize) -> TileEpilogue {
        let mut ep = *self;
        if !ep.bias_row.is_null() {
            ep.bias_row = ep.bias_row.wrapping_add(i);
        }
        if !ep.bias_col.is_null() {
            ep.bias_col = ep.bias_col.wrapping_add(j);
        }
        ep
    }
}

/// How many k steps ahead the micro-kernel prefetches B (see k_step):
/// about one memory latency (~100 ns) of k steps at ~3 ns per 12 x 32 step
/// would be ~30, but the first row tile of a strip is the only one that
/// misses, and 16 rows already hide most of the latency without evicting.
/// (8, 24 and 32 measured the same on 784 x 128 x 900 A^T B, packed B in
/// row order: 3 runs of 31 alternating calls.)
const PREFETCH_ROWS: usize = 16;

/// Prefetches the line at `p` into L1.
#[inline(always)]
fn prefetch(p: *const f32) {
    crate::simd::prefetch_line::<true>(p);
}

/// Prefetches the line at `p` into L1, for writing.
#[inline(always)]
fn prefetch_for_write(p: *const f32) {
    crate::simd::prefetch_line_for_write(p);
}

/// One k step of the micro-kernel: NV loads of B, ROWS broadcasts of A (one
/// register each, shared by the row's NV FMAs), ROWS x NV FMAs.
///
/// A packed (A_ROWS false): the step's ROWS values are adjacent at `a[0]`.
/// A in place (A_ROWS true): row r is at `a[r / 4] + (r % 4) * lda`, so
/// every address is a base register plus lda scaled by 1 or 2 (or 3 lda):
/// three moving pointers instead of twelve row offsets, which would not fit
/// the general registers beside the loop's own.
///
/// # Safety
/// `a` readable for ROWS floats as above, `b` for NV * LANES floats.
#[inline(always)]
unsafe fn k_step<
    V: Lanes,
    const ROWS: usize,
    const NV: usize,
    const PREFETCH: bool,
    const PREFETCH_A: bool,
    const A_ROWS: bool,
>(
    acc: &mut [[V; NV]; ROWS],
    a: &[*const f32; 3],
    lda: usize,
    b: *const f32,
    b_stride: usize,
) {
    // SAFETY: forwarded from the caller.
    unsafe {
        let bv: [V; NV] = core::array::from_fn(|v| V::load(b.add(v * V::LANES)));
        for (r, acc_row) in acc.iter_mut().enumerate() {
            let x = if A_ROWS {
                *a[r / 4].add((r % 4) * lda)
            } else {
                *a[0].add(r)
            };
            let av = V::splat(x);
            for v in 0..NV {
                acc_row[v] = av.mul_add(bv[v], acc_row[v]);
            }
        }
    }
    if PREFETCH {
        // B read in place from a strided matrix: its rows are more than
        // 2 KiB apart, past the hardware stride prefetcher. Packed, a
        // 1024-step micro-panel (128 KiB) streams from L2, and the L1
        // prefetcher fetches only the next line (+4% on 1024^3). So fetch
        // PREFETCH_ROWS rows ahead (prefetch never faults).
        prefetch(b.wrapping_add(PREFETCH_ROWS * b_stride));
        prefetch(b.wrapping_add(PREFETCH_ROWS * b_stride + NV * V::LANES - 1));
    }
    if PREFETCH_A {
        // In the column-order tile loop with B packed too, the packed A
        // micro-panel (48 KiB at KC = 1024) streams from L2 like B's: fetch
        // it the same number of steps ahead (ROWS floats per step in a
        // full-height panel; 1024^3 +0-3%, near the noise). With B in
        // place it measured 3-6% slower (64 x 784 x 900: the strided B
        // prefetches already keep the fill buffers busy), and in the
        // row-order loop, where the A panel stays in L1, 3-4% slower
        // (784 x 64 x 900).
        prefetch(a[0].wrapping_add(PREFETCH_ROWS * ROWS));
    }
}

/// The micro-kernel's k loop: the ROWS x NV accumulators over kc steps.
/// A function of its own, returning the accumulators by value: in the same
/// body as the epilogue (which indexes them by a loop counter) LLVM kept one
/// stack array for both and zeroed it with a `memset` call per tile, then
/// loaded the zeros into registers (1.2% of 1024^3, perf).
///
/// # Safety
/// As [`tile_generic`].
#[inline(always)]
unsafe fn k_loop<
    V: Lanes,
    const ROWS: usize,
    const NV: usize,
    const PREFETCH: bool,
    const PREFETCH_A: bool,
    const A_ROWS: bool,
>(
    kc: usize,
    a: *const f32,
    a_stride: usize,
    lda: usize,
    b: *const f32,
    b_stride: usize,
) -> [[V; NV]; ROWS] {
    let mut acc = [[V::zero(); NV]; ROWS];
    // The A pointers (see k_step); only the first moves when A is packed.
    let mut ap = [a, a.wrapping_add(4 * lda), a.wrapping_add(8 * lda)];
    let mut bp = b;
    if A_ROWS {
        // One step per iteration: unrolled, LLVM hoists both steps' strided
        // broadcasts (24 with 12 rows) and spills accumulators. A rotating
        // software prefetch of one row's line per step (16, 32 or 64 floats
        // ahead) measured 3-4% slower on 128 x 180 x 100: the rows already
        // stream from L2 in sequence.
        for _ in 0..kc {
            // SAFETY: the caller guarantees kc steps of A (ROWS rows, lda
            // apart, advancing a_stride per step) and of B (b_stride apart,
            // NV * LANES readable).
            unsafe {
                k_step::<V, ROWS, NV, PREFETCH, PREFETCH_A, A_ROWS>(
                    &mut acc, &ap, lda, bp, b_stride,
                );
                ap = ap.map(|p| p.add(a_stride));
                bp = bp.add(b_stride);
            }
        }
    } else {
        // Two k steps per iteration: half the loop overhead, and the loads
        // of the second step issue while the first step's FMAs are queued.
        for _ in 0..kc / 2 {
            // SAFETY: the caller guarantees kc steps of A (a_stride apart,
            // ROWS readable) and of B (b_stride apart, NV * LANES readable).
            unsafe {
                k_step::<V, ROWS, NV, PREFETCH, PREFETCH_A, A_ROWS>(
                    &mut acc, &ap, lda, bp, b_stride,
                );
                let (ap1, bp1) = ([ap[0].add(a_stride); 3], bp.add(b_stride));
                k_step::<V, ROWS, NV, PREFETCH, PREFETCH_A, A_ROWS>(
                    &mut acc, &ap1, lda, bp1, b_stride,
                );
                ap[0] = ap[0].add(2 * a_stride);
                bp = bp.add(2 * b_stride);
            }
        }
        if kc % 2 == 1 {
            // SAFETY: as above, the last of kc steps.
            unsafe {
                k_step::<V, ROWS, NV, PREFETCH, PREFETCH_A, A_ROWS>(
                    &mut acc, &ap, lda, bp, b_stride,
                )
            };
        }
    }

    acc
}

/// Writes a full tile, `C <- alpha_beta(acc, C)` ([`alpha_beta`], as the
/// general epilogue does), without the general loop's per-vector branches.
///
/// # Safety
/// `c` holds ROWS rows, `ldc` apart, of NV * LANES floats each.
#[inline(always)]
unsafe fn write_full_tile<
    V: Lanes,
    const ROWS: usize,
    const NV: usize,
    const SCALE: bool,
    const READ: bool,
>(
    acc: &[[V; NV]; ROWS],
    c: *mut f32,
    ldc: usize,
    alpha: V,
    beta: V,
) {
    for (r, acc_row) in acc.iter().enumerate() {
        for (v, &x) in acc_row.iter().enumerate() {
            // SAFETY: row r < ROWS, vector v < NV of C (the contract).
            unsafe {
                let at = c.add(r * ldc + v * V::LANES);
                alpha_beta(x, SCALE, alpha, READ, || V::load(at), beta).store(at)
            };
        }
    }
}

/// `x` times alpha (if `scale`) plus beta times the old C that `old` loads
/// (if `read`; otherwise C is not read): the part of the epilogue before
/// bias and activation, shared by both epilogue loops so that they give the
/// same bits.
#[inline(always)]
fn alpha_beta<V: Lanes>(
    x: V,
    scale: bool,
    alpha: V,
    read: bool,
    old: impl FnOnce() -> V,
    beta: V,
) -> V {
    let x = if scale { x.mul(alpha) } else { x };
    if read {
        old().mul_add(beta, x)
    } else {
        x
    }
}

/// The generic micro-kernel: ROWS x (NV vectors) accumulators.
///
/// # Safety
/// As [`Path::tile`], with ROWS rows. A_ROWS: A is read in place from a
/// row-major op(A), rows `lda` apart, one float per step; otherwise it is a
/// packed panel of `a_stride` floats per step.
///
/// Never inlined: each path's `tile` dispatches to over a hundred instances
/// (row counts x prefetch and edge variants), and inlined they made one
/// function of ~0.5 MB of code that LLVM optimised alone on one core (the
/// kernels library took 76 s to build for the host, 64 s for plain x86-64;
/// 30 s and 27 s as separate functions). A tile's k loop is hundreds of
/// cycles or more, so the call costs nothing measurable (GEMM table).
#[inline(never)]
#[allow(clippy::too_many_arguments)]
unsafe fn tile_generic<
    V: Lanes,
    const ROWS: usize,
    const NV: usize,
    const PREFETCH: bool,
    const PREFETCH_A: bool,
    const A_ROWS: bool,
>(
    kc: usize,
    a: *const f32,
    a_stride: usize,
    lda: usize,
    b: *const f32,
    b_stride: usize,
    c: *mut f32,
    ldc: usize,
    cols: usize,
    ep: &TileEpilogue,
) {
    // Start fetching the tile of C now, for writing: it is read (beta != 0)
    // or written only after the k loop, and with small k (weight gradients,
    // k = 128) a C miss per row would otherwise cost as much as the
    // arithmetic. The rows are ldc apart, beyond what the hardware
    // prefetcher follows. For writing, because in the trainer's fused update
    // C is a block of weights that the other core read in the forward pass:
    // a plain prefetch fetched shared copies, and every store then waited
    // for the other core to drop its copy. `vcortex bench --only dae1,mlp`,
    // 2 threads, 4 alternating runs, medians: the fused update phase 0.458
    // -> 0.422 s per epoch (DAE layer), 0.580 -> 0.547 (five-layer). Alone
    // on one core (784 x 128 x 900 A^T B, beta = 0) `prefetchw`, a plain
    // prefetch, a third line per row or no C prefetch measured the same.
    for r in 0..ROWS {
        let row = c.wrapping_add(r * ldc);
        prefetch_for_write(row);
        prefetch_for_write(row.wrapping_add(NV * V::LANES - 1));
    }
    // SAFETY: forwarded.
    let acc = unsafe {
        k_loop::<V, ROWS, NV, PREFETCH, PREFETCH_A, A_ROWS>(kc, a, a_stride, lda, b, b_stride)
    };

    let nr = NV * V::LANES;
    let alpha = V::splat(ep.alpha);
    let beta = V::splat(ep.beta);
    let read_c = ep.beta != 0.0;
    // The common products (weight gradients, plain layers) have alpha = 1
    // and no bias; skipping those operations shortens the epilogue, which
    // with k = 64 is a noticeable share of a tile's time.
    let scale = ep.alpha != 1.0;
    let has_bias_row = !ep.bias_row.is_null();
    let has_bias_col = !ep.bias_col.is_null();
    // Columns of vector v inside the tile: all LANES of a full tile; a
    // ragged tile's are read and written with masks (its vectors past
    // `cols` are skipped), not through a row buffer (its `memcpy` calls, 12
    // a tile, took 2.6% of 784 x 128 x 900 A^T B, more than the 4 ragged
    // columns' k loop).
    let full = cols == nr;
    let live = |v: usize| {
        if full {
            V::LANES
        } else {
            cols.saturating_sub(v * V::LANES).min(V::LANES)
        }
    };
    let mut bias_col = [V::zero(); NV];
    if !ep.bias_col.is_null() {
        for (v, bc) in bias_col.iter_mut().enumerate() {
            // SAFETY: the bias covers the tile's `cols` columns, of which
            // live(v) start at v * LANES (zero lanes past them).
            *bc = unsafe { V::load_first(ep.bias_col.add(v * V::LANES), live(v)) };
        }
    }
    // A full tile without bias or activation is written straight from the
    // accumulators, one branch-free pass per form: the plain product (alpha
    // = 1, beta = 0: most backward-pass products) and the fused update's
    // C <- alpha AB + beta C (weights, velocities). The general loop below
    // is too large for LLVM to unroll, so it first spills the accumulators
    // to the stack and branches per vector: with k = 64 that cost ~5% of
    // the plain product (784 x 64 x 900 A^T B), and with k = 128 ~8% of
    // the update's (456 x 784, two terms of 64, alpha = -lr, beta = 1:
    // 660-675 -> 606-630 us, both epilogues alternated in one process, 3
    // runs of 21 rounds; docs/performance-history.md). The same operations
    // in the same order as the general loop, so the same bits. Bias and
    // ReLU fast paths measured no better than the general loop.
    if full && !has_bias_row && !has_bias_col && ep.activation == Activation::Identity {
        // SAFETY: forwarded (a full tile: ROWS rows of NV * LANES floats).
        unsafe {
            match (scale, read_c) {
                (false, false) => {
                    write_full_tile::<V, ROWS, NV, false, false>(&acc, c, ldc, alpha, beta)
                }
                (true, false) => {
                    write_full_tile::<V, ROWS, NV, true, false>(&acc, c, ldc, alpha, beta)
                }
                (false, true) => {
                    write_full_tile::<V, ROWS, NV, false, true>(&acc, c, ldc, alpha, beta)
                }
                (true, true) => {
                    write_full_tile::<V, ROWS, NV, true, true>(&acc, c, ldc, alpha, beta)
                }
            }
        }
        return;
    }
    for (r, acc_row) in acc.iter().enumerate() {
        // SAFETY: row r < rows of C is valid for `cols` floats.
        let c_row = unsafe { c.add(r * ldc) };
        let bias_r = if ep.bias_row.is_null() {
            V::zero()
        } else {
            // SAFETY: the row bias covers the tile's rows.
            V::splat(unsafe { *ep.bias_row.add(r) })
        };
        for v in 0..NV {
            let live = live(v);
            if live == 0 {
                break;
            }
            // SAFETY: `live` floats from column v * LANES of row r lie in C.
            let at = unsafe { c_row.add(v * V::LANES) };
            // SAFETY (the load, made only when read_c): as above.
            let old = || unsafe {
                if full {
                    V::load(at)
                } else {
                    V::load_first(at, live)
                }
            };
            let mut x = alpha_beta(acc_row[v], scale, alpha, read_c, old, beta);
            if has_bias_row {
                x = x.add(bias_r);
            }
            if has_bias_col {
                x = x.add(bias_col[v]);
            }
            x = x.activate(ep.activation);
            // SAFETY: as above.
            unsafe {
                if full {
                    x.store(at)
                } else {
                    x.store_first(at, live)
                }
            };
        }
    }
}

/// Declares a path whose micro-kernels are the generic one instantiated for
/// every row count 1..=MR (so ragged row tiles do no wasted work).
macro_rules! declare_path {
    (
        $(#[$meta:meta])*
        $name:ident, $v:ty, narrow = $narrow:ty, mr = $mr:literal, nv = $nv:literal,
        kc = $kc:expr, mc = $mc:expr, nc = $nc:expr, m_lanes = $m_lanes:expr,
        dot_edge = $dot_edge:expr,
        rows = [$($r:literal)+]
    ) => {
        $(#[$meta])*
        pub(crate) struct $name;
        impl Path for $name {
            type V = $v;
            const MR: usize = $mr;
            const NV: usize = $nv;
            const KC: usize = $kc;
            const MC: usize = $mc;
            const NC: usize = $nc;
            const M_LANES: bool = $m_lanes;
            const DOT_EDGE: bool = $dot_edge;
            #[inline]
            unsafe fn tile(
                rows: usize,
                kc: usize,
                a: *const f32,
                a_rows: Option<usize>,
                b: *const f32,
                b_stride: usize,
                c: *mut f32,
                ldc: usize,
                cols: usize,
                ep: &TileEpilogue,
                prefetch_b: bool,
                prefetch_a: bool,
            ) {
                // SAFETY: forwarded contract; `rows` selects an instance with
                // exactly that many rows.
                unsafe {
                    if <$narrow as Lanes>::LANES < <$v as Lanes>::LANES
                        && cols <= <$narrow as Lanes>::LANES
                    {
                        // The last few columns (n = 100 leaves 4) on half-width
                        // vectors: half the wasted lanes of a full vector.
                        match rows {
                            $($r => match a_rows {
                                None => tile_generic::<$narrow, $r, 1, false, false, false>(kc, a, $mr, 0, b, b_stride, c, ldc, cols, ep),
                                Some(lda) => tile_generic::<$narrow, $r, 1, false, false, true>(kc, a, 1, lda, b, b_stride, c, ldc, cols, ep),
                            },)+
                            _ => unreachable!("tile rows {rows} > MR"),
                        }
                    } else if $nv > 1 && cols <= <$v as Lanes>::LANES {
                        // A narrow ragged strip (n = 10, or the last 4 of
                        // n = 900) needs one vector per row, not NV. It is
                        // always packed, so it never needs prefetching.
                        match rows {
                            $($r => match a_rows {
                                None => tile_generic::<$v, $r, 1, false, false, false>(kc, a, $mr, 0, b, b_stride, c, ldc, cols, ep),
                                Some(lda) => tile_generic::<$v, $r, 1, false, false, true>(kc, a, 1, lda, b, b_stride, c, ldc, cols, ep),
                            },)+
                            _ => unreachable!("tile rows {rows} > MR"),
                        }
                    } else if prefetch_b {
                        match rows {
                            $($r => match a_rows {
                                // A streams from L2: prefetch it too (see k_step).
                                None if prefetch_a => tile_generic::<$v, $r, $nv, true, true, false>(kc, a, $mr, 0, b, b_stride, c, ldc, cols, ep),
                                None => tile_generic::<$v, $r, $nv, true, false, false>(kc, a, $mr, 0, b, b_stride, c, ldc, cols, ep),
                                Some(lda) => tile_generic::<$v, $r, $nv, true, false, true>(kc, a, 1, lda, b, b_stride, c, ldc, cols, ep),
                            },)+
                            _ => unreachable!("tile rows {rows} > MR"),
                        }
                    } else {
                        match rows {
                            $($r => match a_rows {
                                None => tile_generic::<$v, $r, $nv, false, false, false>(kc, a, $mr, 0, b, b_stride, c, ldc, cols, ep),
                                Some(lda) => tile_generic::<$v, $r, $nv, false, false, true>(kc, a, 1, lda, b, b_stride, c, ldc, cols, ep),
                            },)+
                            _ => unreachable!("tile rows {rows} > MR"),
                        }
                    }
                }
            }
        }
    };
}

declare_path!(
    /// AVX-512 FMA, f32, 12 x 32 tile (`avx512_fma_sgemm_f32_12x32`): 24 zmm
    /// accumulators + 2 B vectors + 1-2 broadcasts of the 32 registers; per
    /// k step 2 loads + 12 broadcasts (each into a register, shared by the
    /// row's two FMAs) feed 24 FMAs, so the two FMA ports, not the load
    /// ports, are the limit. Measured in L1 (`micro_kernel_gflops`) it runs
    /// at ~90-96% of the measured FMA peak; 8 x 48, 6 x 64 and 14 x 32
    /// tiles measured no better.
    ///
    /// Cache blocks for this machine (Xeon, 48 KiB L1d, 2 MiB L2 per core):
    /// KC = 1024 (cuts K, the pc loop): one K slice for every model product
    /// (k <= 1024), because each further slice re-reads and re-writes all
    /// of C through the epilogue, which cost ~10% at KC = 192 (1024^3: 166
    /// -> 193 GFLOP/s at KC = 512). The micro-panels then exceed L1 (B
    /// 1024 x 32 x 4 B = 128 KiB, A 48 KiB), but they stream from L2 at
    /// 176 B per ~12-cycle k step, far below L2's bandwidth, and the k loop
    /// is unrolled by two to keep those loads ahead of the FMAs.
    /// MC = 192 (cuts M, the ic loop): the packed A block (192 x 1024 x 4 B
    /// = 768 KiB), re-read for every NR column tile, stays in L2; a batch of
    /// 128 is one block, so B stored k x n is read in place (direct-B) there
    /// when the M-on-lanes kernel does not take the product (n < 400).
    /// NC = 1024 (cuts N, the jc loop): each B micro-panel is re-read by
    /// the 16 row tiles of an MC block while it is L2-resident; the whole
    /// panel (up to 4 MiB) is fetched from L3 once per MC block.
    ///
    /// The `gemm` crate 0.19 (x86-v4) on this machine, for comparison: a
    /// row-major C is computed as C^T = B^T A^T, so its 64 x 6 f32 tile is,
    /// in our terms, 6 rows of A broadcast against 64 columns of B on four
    /// zmm (k unrolled by 4); only B is packed (64-wide panels of one KC
    /// slice, packed lazily before their first use), A is read in place 6
    /// rows at a time; from the L1/L2/L3 sizes it picks KC = 512 (k = 1024:
    /// two slices; k = 625: two of 313), 512 columns of B per block (1 MiB,
    /// in L2; n = 400: all of it) and all of M per block; strips of 6 rows
    /// sweep the block's panels; no software prefetch; threads share the
    /// micro-tiles evenly (and B's packing) from 48 x 48 x 256 multiply-adds
    /// on. Profiled on 1024^3 the two micro-kernels take the
    /// same time; the difference is packing (here ~7% of the time, A's
    /// transpose and B; `gemm` ~3.5%, B only). That scheme reproduced as a
    /// 6 x 64 path (A in place, B packed 64 wide, its KC and block sizes,
    /// row-strip sweep; commit 885ab59, reverted) saved A's packing but
    /// measured no faster: 1024^3 0.94 vs 0.95 of `gemm`, 128 x 625 x 400
    /// 0.95 vs 0.97 (M-on-lanes), medians of 6 alternating runs in thread
    /// CPU time; KC or NC = 1024 on it 0.73, a padded B panel stride no
    /// change.
    Avx512Fma12x32, f32x16, narrow = f32x8, mr = 12, nv = 2, kc = 1024, mc = 192, nc = 1024,
    m_lanes = true,
    dot_edge = true,
    rows = [1 2 3 4 5 6 7 8 9 10 11 12]
);

declare_path!(
    /// AVX2 + FMA, f32, 6 x 16 tile (`avx2_fma_sgemm_f32_6x16`): 12 ymm
    /// accumulators + 2 B + 1 broadcast of 16 registers. KC = 256 keeps the
    /// B micro-panel at 16 KiB in L1d; MC and NC as for AVX-512 (L2-sized).
    Avx2Fma6x16, f32x8, narrow = f32x4, mr = 6, nv = 2, kc = 256, mc = 192, nc = 1024,
    m_lanes = false,
    dot_edge = false,
    rows = [1 2 3 4 5 6]
);

declare_path!(
    /// Portable (SSE2 / NEON / scalar via `wide`), f32, 4 x 8 tile
    /// (`portable_sgemm_f32_4x8`): 8 accumulators of 4 lanes fit the 16
    /// SSE registers. Blocks as for AVX2.
    Portable4x8, f32x4, narrow = f32x4, mr = 4, nv = 2, kc = 256, mc = 192, nc = 1024,
    m_lanes = false,
    dot_edge = false,
    rows = [1 2 3 4]
);

/// Vectors of M per tile of the M-on-lanes kernel (64 rows of C on f32x16).
pub(crate) const MLANES_VECS: usize = 4;
/// Columns of C per tile of the M-on-lanes kernel: 4 x 6 = 24 accumulators,
/// 4 A vectors and a broadcast of the 32 zmm registers.
pub(crate) const MLANES_COLS: usize = 6;

/// How many k steps ahead the M-on-lanes kernel prefetches B when B is
/// stored k x n: each step reads one row of B, `ldb` floats (> 2 KiB for
/// the trainer's weights) past the last, beyond the hardware stride
/// prefetcher. (8, 24 and 32 measured the same on 128x625x400 and
/// 64x784x900 A B, with an 8-step A^T prefetch that is no longer in: see
/// [`MLANES_UNROLL`].)
const MLANES_PREFETCH_ROWS: usize = 16;

/// The M-on-lanes micro-kernel: C's rows run along the lanes, so each k
/// step loads MLANES_VECS vectors of a packed A^T block and broadcasts COLS
/// elements of B, which is read in place. Nothing of B is packed or
/// transposed; only the small A (m x k) is, once per call. The tile is
/// transposed on its way out.
///
/// B's element (step p, column q of the tile) is read at
/// `b + q * col_stride + p * row_stride`:
/// - `B_KN = false`: B stored n x k (C = op(A) B^T, the trainer's `x W^T`
///   with W `[n_out, n_in]`): col_stride = ldb, row_stride = 1; the COLS
///   rows of B are each read front to back.
/// - `B_KN = true`: B stored k x n (C = op(A) B, the DAE decoder's `h W`
///   and the backward `delta W`): col_stride = 1, row_stride = ldb; a step's
///   COLS broadcasts come from adjacent floats of one row of B, prefetched
///   MLANES_PREFETCH_ROWS rows ahead.
///
/// # Safety
/// `a_t` holds `kc` steps of `MLANES_VECS * LANES` floats; B is readable at
/// every address above for p < kc, q < COLS; `c` is valid for `rows` rows
/// of COLS floats, `ldc` apart (read only when `ep.beta != 0`); the bias
/// pointers cover the tile's `rows` rows / COLS columns.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn tile_m_lanes<const COLS: usize, const B_KN: bool>(
    kc: usize,
    a_t: *const f32,
    b: *const f32,
    ldb: usize,
    c: *mut f32,
    ldc: usize,
    rows: usize,
    ep: &TileEpilogue,
) {
    // SAFETY: forwarded from the caller.
    let acc = unsafe { m_lanes_k_loop::<COLS, B_KN>(kc, a_t, b, ldb) };
    // SAFETY: forwarded: `c` and the bias pointers cover the tile.
    unsafe { m_lanes_epilogue::<COLS>(&acc, c, ldc, rows, ep) }
}

/// k steps per iteration of the M-on-lanes k loop: a single-step loop spends
/// ~8 scalar address and loop uops per 24 FMAs, and some of them issue on
/// the two FMA ports. Measured (`mlanes_timing`, geometric mean of its 30
/// cases, 6 alternating runs, GFLOP/s): 1 step 155, 2 steps 161, 4 steps
/// 164; `cargo bench --bench gemm`: 128x625x400 0.98-1.00 -> 1.05-1.10 of
/// `gemm`, 128x900x784 A B^T 1.23-1.25 -> 1.37-1.49. Prefetching the
/// packed A^T block 8 steps ahead (4 lines a step) gained 5-9% on the
/// single-step loop but nothing on this one: 5 alternating runs of
/// `mlanes_timing 21`, geometric means, medians: single step 152, single
/// step + prefetch 155, 4 steps 165, 4 steps + prefetch 154.
const MLANES_UNROLL: usize = 4;

/// The k loop of [`tile_m_lanes`], compiled alone so that LLVM keeps the
/// accumulators in registers: inlined into the tile with its epilogue, the
/// unrolled loop stored all 24 of them to the stack after every step (half
/// speed).
///
/// # Safety
/// As [`tile_m_lanes`] for A^T and B.
#[inline(never)]
unsafe fn m_lanes_k_loop<const COLS: usize, const B_KN: bool>(
    kc: usize,
    a_t: *const f32,
    b: *const f32,
    ldb: usize,
) -> [[f32x16; MLANES_VECS]; COLS] {
    type V = f32x16;
    let height = MLANES_VECS * V::LANES;
    let mut acc = [[V::zero(); MLANES_VECS]; COLS];
    // One k step: MLANES_VECS vectors of A^T at `$a` against the COLS
    // broadcasts `$b(q)` of B.
    macro_rules! step {
        ($a:expr, $b:expr) => {{
            let a = $a;
            let av: [V; MLANES_VECS] = core::array::from_fn(|v| V::load(a.add(v * V::LANES)));
            for (q, acc_col) in acc.iter_mut().enumerate() {
                let bq = V::splat(*$b(q));
                for v in 0..MLANES_VECS {
                    acc_col[v] = av[v].mul_add(bq, acc_col[v]);
                }
            }
        }};
    }
    if B_KN {
        let mut bp = b;
        let mut ap = a_t;
        for _ in 0..kc / MLANES_UNROLL {
            for u in 0..MLANES_UNROLL {
                // One prefetch per step, of the line holding the step's last
                // column: its first column lies in the same line or in the
                // previous column group's last, fetched already.
                prefetch(bp.wrapping_add((MLANES_PREFETCH_ROWS + u) * ldb + COLS - 1));
            }
            // SAFETY: the caller guarantees kc steps of the packed A^T
            // block and COLS floats at each of the kc rows of B, ldb apart.
            unsafe {
                for u in 0..MLANES_UNROLL {
                    step!(ap.add(u * height), |q| bp.add(u * ldb + q));
                }
                ap = ap.add(MLANES_UNROLL * height);
                bp = bp.add(MLANES_UNROLL * ldb);
            }
        }
        for _ in 0..kc % MLANES_UNROLL {
            prefetch(bp.wrapping_add(MLANES_PREFETCH_ROWS * ldb + COLS - 1));
            // SAFETY: as above, the last steps.
            unsafe {
                step!(ap, |q| bp.add(q));
                ap = ap.add(height);
                bp = bp.add(ldb);
            }
        }
    } else {
        let b_rows: [*const f32; COLS] = core::array::from_fn(|q| b.wrapping_add(q * ldb));
        let mut p = 0;
        while p + MLANES_UNROLL <= kc {
            // SAFETY: the caller guarantees kc steps of the packed A^T block
            // and kc floats in each of the COLS rows of B.
            unsafe {
                for u in 0..MLANES_UNROLL {
                    step!(a_t.add((p + u) * height), |q: usize| b_rows[q].add(p + u));
                }
            }
            p += MLANES_UNROLL;
        }
        while p < kc {
            // SAFETY: as above, the last steps.
            unsafe { step!(a_t.add(p * height), |q: usize| b_rows[q].add(p)) };
            p += 1;
        }
    }
    acc
}

/// The M-on-lanes tile's epilogue on AVX-512: alpha, beta, bias and
/// activation on the lanes (rows of C), as in the portable version; then
/// each 16-row group is transposed in registers into rows of COLS floats,
/// each written with one masked store. With beta != 0, C's rows are read
/// with masked loads and transposed the other way first. No scalar access
/// to C and no stack arrays for it. (The accumulators still pass through a
/// stack array, LLVM's choice over the group loop: unrolling the four
/// groups by hand kept them in registers but measured no faster, within
/// 1%, for four copies of this code.)
///
/// # Safety
/// As [`tile_m_lanes`]: `c` is valid for `rows` rows of COLS floats, `ldc`
/// apart; the bias pointers cover the tile.
#[cfg(all(target_arch = "x86_64", target_feature = "avx512f"))]
#[inline(always)]
unsafe fn m_lanes_epilogue<const COLS: usize>(
    acc: &[[f32x16; MLANES_VECS]; COLS],
    c: *mut f32,
    ldc: usize,
    rows: usize,
    ep: &TileEpilogue,
) {
    use crate::simd::{cols8_to_row_pairs, first_lanes_mask16, row_pairs_to_cols8};
    use core::arch::x86_64::*;
    const { assert!(COLS <= 8, "a 16-row group is transposed as 8 columns") };
    // The vector types are one 64-byte register each; the transmutes only
    // rename it (sizes checked by the compiler).
    // SAFETY: f32x16 on an AVX-512 build wraps one __m512.
    let to_m512 = |x: f32x16| unsafe { core::mem::transmute::<f32x16, __m512>(x) };
    // SAFETY: as above.
    let to_f32x16 = |x: __m512| unsafe { core::mem::transmute::<__m512, f32x16>(x) };
    let alpha = f32x16::splat(ep.alpha);
    let beta = f32x16::splat(ep.beta);
    let read_c = ep.beta != 0.0;
    // Row i's COLS floats are lanes 0..COLS of a row pair's low half; row
    // i + 8's are lanes 8..8 + COLS, stored from 8 floats before its start
    // (masked-off lanes are never accessed).
    let low = first_lanes_mask16(COLS);
    let high = low << 8;
    let zero = to_m512(f32x16::ZERO);
    let bias_c: [f32x16; COLS] = core::array::from_fn(|q| {
        if ep.bias_col.is_null() {
            f32x16::ZERO
        } else {
            // SAFETY: the column bias covers the tile's COLS columns.
            f32x16::splat(unsafe { *ep.bias_col.add(q) })
        }
    });
    // Group v holds rows 16 v.. of the tile (rows <= 64: v < MLANES_VECS).
    for (v, r0) in (0..rows).step_by(16).enumerate() {
        let group_rows = (rows - r0).min(16);
        let c0 = c.wrapping_add(r0 * ldc);
        let row_low = |i: usize| c0.wrapping_add(i * ldc);
        let row_high = |i: usize| c0.wrapping_add((i + 8) * ldc).wrapping_sub(8);
        let c_cols = if read_c {
            // SAFETY: rows i and i + 8 are read only when below
            // `group_rows`, only their first COLS floats (the masks).
            let pairs: [__m512; 8] = core::array::from_fn(|i| unsafe {
                let mut x = zero;
                if i < group_rows {
                    x = _mm512_maskz_loadu_ps(low, row_low(i));
                }
                if i + 8 < group_rows {
                    x = _mm512_mask_loadu_ps(x, high, row_high(i));
                }
                x
            });
            row_pairs_to_cols8(pairs)
        } else {
            [zero; 8]
        };
        let bias_r = if ep.bias_row.is_null() {
            f32x16::ZERO
        } else {
            // SAFETY: the row bias covers the tile's rows; the mask reads
            // only this group's.
            to_f32x16(unsafe {
                _mm512_maskz_loadu_ps(first_lanes_mask16(group_rows), ep.bias_row.add(r0))
            })
        };
        let mut cols = [zero; 8];
        for (q, col) in cols.iter_mut().enumerate().take(COLS) {
            let mut x = acc[q][v];
            if ep.alpha != 1.0 {
                x *= alpha;
            }
            if read_c {
                x = to_f32x16(c_cols[q]).mul_add(beta, x);
            }
            if !ep.bias_row.is_null() {
                x += bias_r;
            }
            if !ep.bias_col.is_null() {
                x += bias_c[q];
            }
            *col = to_m512(x.activate(ep.activation));
        }
        let pairs = cols8_to_row_pairs(cols);
        for (i, &pair) in pairs.iter().enumerate() {
            // SAFETY: rows i and i + 8 are written only when below
            // `group_rows`, only their first COLS floats (the masks).
            unsafe {
                if i < group_rows {
                    _mm512_mask_storeu_ps(row_low(i), low, pair);
                }
                if i + 8 < group_rows {
                    _mm512_mask_storeu_ps(row_high(i), high, pair);
                }
            }
        }
    }
}

/// The M-on-lanes tile's epilogue without AVX-512: alpha, beta, bias and
/// activation on the lanes (rows of C), through stack arrays; C is gathered
/// and scattered element by element.
///
/// # Safety
/// As [`tile_m_lanes`]: `c` is valid for `rows` rows of COLS floats, `ldc`
/// apart; the bias pointers cover the tile.
#[cfg(not(all(target_arch = "x86_64", target_feature = "avx512f")))]
#[inline(always)]
unsafe fn m_lanes_epilogue<const COLS: usize>(
    acc: &[[f32x16; MLANES_VECS]; COLS],
    c: *mut f32,
    ldc: usize,
    rows: usize,
    ep: &TileEpilogue,
) {
    type V = f32x16;
    const MAX_ROWS: usize = MLANES_VECS * 16;
    // The epilogue runs on the lanes (rows of C): bias_row loads a vector,
    // bias_col splats; C (when beta != 0) is gathered column by column.
    let alpha = V::splat(ep.alpha);
    let beta = V::splat(ep.beta);
    let read_c = ep.beta != 0.0;
    let mut row_bias = [0.0f32; MAX_ROWS];
    if !ep.bias_row.is_null() {
        // SAFETY: the row bias covers the tile's `rows` rows.
        unsafe { core::ptr::copy_nonoverlapping(ep.bias_row, row_bias.as_mut_ptr(), rows) };
    }
    let mut out = [[0.0f32; MAX_ROWS]; COLS];
    for (q, acc_col) in acc.iter().enumerate() {
        let mut c_col = [0.0f32; MAX_ROWS];
        if read_c {
            for (r, x) in c_col.iter_mut().enumerate().take(rows) {
                // SAFETY: row r < rows, column q < COLS of the tile.
                *x = unsafe { *c.add(r * ldc + q) };
            }
        }
        let bias_c = if ep.bias_col.is_null() {
            V::zero()
        } else {
            // SAFETY: the column bias covers the tile's COLS columns.
            V::splat(unsafe { *ep.bias_col.add(q) })
        };
        for (v, &sum) in acc_col.iter().enumerate() {
            let mut x = sum;
            if ep.alpha != 1.0 {
                x = x.mul(alpha);
            }
            // SAFETY: the stack arrays hold MAX_ROWS >= height floats.
            unsafe {
                if read_c {
                    x = V::load(c_col.as_ptr().add(v * V::LANES)).mul_add(beta, x);
                }
                if !ep.bias_row.is_null() {
                    x = x.add(V::load(row_bias.as_ptr().add(v * V::LANES)));
                }
                if !ep.bias_col.is_null() {
                    x = x.add(bias_c);
                }
                x = x.activate(ep.activation);
                x.store(out[q].as_mut_ptr().add(v * V::LANES));
            }
        }
    }
    for r in 0..rows {
        for (q, col) in out.iter().enumerate() {
            // SAFETY: row r < rows, column q < COLS of the tile.
            unsafe { *c.add(r * ldc + q) = col[r] };
        }
    }
}

/// Up to this many ragged last columns, a tile over a packed A panel runs
/// [`tile_edge_lanes`] on paths with the M-on-lanes kernel. Measured single
/// thread, GFLOP/s, medians of 31 alternating calls, 3 runs, broadcast
/// kernel -> this one: 784x128x900 A^T B 153-164 -> 159-168, 784x64x900
/// A^T B 135-149 -> 139-151 (the 4 last columns had taken 1.3% of the
/// time for 0.4% of the flops, plus their epilogue).
pub(crate) const EDGE_LANES_MAX_COLS: usize = 8;

/// A ragged column tile (COLS <= 8 columns, `rows` <= 16) over a packed A
/// panel, with the panel's rows on the lanes: each k step loads the step's
/// `rows` A values as one vector and broadcasts COLS values of B, so all
/// COLS FMAs are useful, where the broadcast kernel would spend `rows`
/// broadcasts and FMAs on mostly empty vectors (n = 900 leaves 4 columns:
/// 12 broadcasts and 12 FMAs of 8 lanes per step, for 48 products). Two
/// sets of accumulators on alternate steps hide the FMA latency. The tile
/// is transposed on its way out, as the M-on-lanes kernel's.
///
/// `a` holds `kc` steps of `a_step` floats, the first `rows` of each
/// valid; `b` holds `kc` rows, `b_stride` apart, of at least COLS floats.
///
/// # Safety
/// As described; `c` is valid for `rows` rows of COLS floats, `ldc` apart
/// (read only when `ep.beta != 0`); the bias pointers cover the tile.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn tile_edge_lanes<const COLS: usize>(
    kc: usize,
    a: *const f32,
    a_step: usize,
    rows: usize,
    b: *const f32,
    b_stride: usize,
    c: *mut f32,
    ldc: usize,
    ep: &TileEpilogue,
) {
    type V = f32x16;
    let mut acc = [[V::ZERO; COLS]; 2];
    let (mut ap, mut bp) = (a, b);
    for _ in 0..kc / 2 {
        for set in &mut acc {
            // SAFETY: the caller guarantees kc steps of A (`rows` floats
            // each) and of B (COLS floats each).
            unsafe {
                let av = V::load_first(ap, rows);
                for (q, x) in set.iter_mut().enumerate() {
                    *x = av.mul_add(V::splat(*bp.add(q)), *x);
                }
                ap = ap.add(a_step);
                bp = bp.add(b_stride);
            }
        }
    }
    if kc % 2 == 1 {
        // SAFETY: as above, the last step.
        unsafe {
            let av = V::load_first(ap, rows);
            for (q, x) in acc[0].iter_mut().enumerate() {
                *x = av.mul_add(V::splat(*bp.add(q)), *x);
            }
        }
    }
    let mut sums = [[V::ZERO; MLANES_VECS]; COLS];
    for (q, col) in sums.iter_mut().enumerate() {
        col[0] = acc[0][q] + acc[1][q];
    }
    // SAFETY: forwarded; rows <= 16 uses only the first vector of each
    // column.
    unsafe { m_lanes_epilogue::<COLS>(&sums, c, ldc, rows, ep) }
}

/// Rows of C per tile of the dot-product edge kernel ([`tile_dot`]).
pub(crate) const DOT_ROWS: usize = 6;
/// Columns of C per tile of the dot-product edge kernel: 6 x 4 = 24
/// accumulators, 4 B vectors and one A vector of the 32 zmm registers.
pub(crate) const DOT_COLS: usize = 4;

/// The dot-product kernel for the last few columns of C when op(A) is
/// row-major (read in place here even when the full tiles pack it): K runs
/// along the lanes, so
/// each step of LANES k values loads one vector from each of DOT_ROWS rows
/// of A and from each of DOT_COLS rows of a transposed B edge panel and
/// issues 24 FMAs, all lanes useful. The broadcast kernel would spend a
/// broadcast and an FMA per row and k step on a mostly empty vector (n =
/// 100 leaves 4 columns: 12 FMAs of 8 lanes per step for 48 products).
/// Each row's DOT_COLS accumulators are summed across their lanes together
/// at the end ([`sum_lanes4`]). The k tail is one masked load per A row
/// and a full tile's rows of C one f32x4 each: with four separate
/// horizontal sums per row, the tail and C copied through stack buffers
/// (`memcpy` calls) and the accumulators spilled, this kernel took 14% of
/// 128 x 180 x 100's time for 4% of its flops, 9.5% after (perf); that
/// product went 0.99-1.01 -> 1.04-1.06 of `gemm` (5 alternating runs).
///
/// `a` points at row 0 of the tile in op(A) (`rows` <= DOT_ROWS rows, `lda`
/// apart, `kc` floats each); missing rows re-read the last row and are
/// dropped.
/// `bt` holds DOT_COLS rows of `kc_pad` floats (kc_pad >= kc rounded up to
/// LANES), zero past `kc` and in rows past `cols`.
///
/// # Safety
/// As described; `c` is valid for `rows` rows of `cols` floats, `ldc` apart
/// (read only when `ep.beta != 0`); the bias pointers cover the tile.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn tile_dot(
    kc: usize,
    a: *const f32,
    lda: usize,
    rows: usize,
    bt: *const f32,
    kc_pad: usize,
    c: *mut f32,
    ldc: usize,
    cols: usize,
    ep: &TileEpilogue,
) {
    type V = f32x16;
    let a_rows: [*const f32; DOT_ROWS] =
        core::array::from_fn(|r| a.wrapping_add(r.min(rows - 1) * lda));
    let b_rows: [*const f32; DOT_COLS] = core::array::from_fn(|q| bt.wrapping_add(q * kc_pad));
    let mut acc = [[V::ZERO; DOT_COLS]; DOT_ROWS];
    let whole = kc / V::LANES * V::LANES;
    let mut p = 0;
    while p < whole {
        // SAFETY: p + LANES <= kc: inside every A row and B edge row.
        unsafe {
            let bv: [V; DOT_COLS] = core::array::from_fn(|q| V::load(b_rows[q].add(p)));
            for (acc_row, a_row) in acc.iter_mut().zip(a_rows) {
                let av = V::load(a_row.add(p));
                for q in 0..DOT_COLS {
                    acc_row[q] = av.mul_add(bv[q], acc_row[q]);
                }
            }
        }
        p += V::LANES;
    }
    if p < kc {
        // The last kc - p < LANES values of each A row (reading past them
        // could leave the slice); B is zero-padded.
        // SAFETY: kc_pad >= p + LANES; kc - p floats remain in each A row.
        unsafe {
            let bv: [V; DOT_COLS] = core::array::from_fn(|q| V::load(b_rows[q].add(p)));
            for (acc_row, a_row) in acc.iter_mut().zip(a_rows) {
                let av = V::load_first(a_row.add(p), kc - p);
                for q in 0..DOT_COLS {
                    acc_row[q] = av.mul_add(bv[q], acc_row[q]);
                }
            }
        }
    }

    // The epilogue on one f32x4 per row (DOT_COLS = 4 columns); a ragged
    // tile's `cols` columns are read and written with masks.
    const { assert!(DOT_COLS == 4, "the epilogue holds a row in one f32x4") };
    let alpha = f32x4::splat(ep.alpha);
    let beta = f32x4::splat(ep.beta);
    let bias_col = if ep.bias_col.is_null() {
        f32x4::ZERO
    } else {
        // SAFETY: the column bias covers the tile's `cols` columns.
        unsafe { f32x4::load_first(ep.bias_col, cols) }
    };
    for (r, acc_row) in acc.iter().enumerate().take(rows) {
        let mut x = sum_lanes4(acc_row);
        if ep.alpha != 1.0 {
            x *= alpha;
        }
        // SAFETY: row r < rows of C is valid for `cols` floats.
        let c_row = unsafe { c.add(r * ldc) };
        if ep.beta != 0.0 {
            // SAFETY: as above.
            x = unsafe { f32x4::load_first(c_row, cols) }.mul_add(beta, x);
        }
        if !ep.bias_row.is_null() {
            // SAFETY: the row bias covers the tile's rows.
            x += f32x4::splat(unsafe { *ep.bias_row.add(r) });
        }
        if !ep.bias_col.is_null() {
            x += bias_col;
        }
        x = x.activate(ep.activation);
        // SAFETY: as above.
        unsafe { x.store_first(c_row, cols) };
    }
}

/// The lane sums of four vectors, [sum x[0], .., sum x[3]]: 32-bit and
/// 64-bit interleaves add the four within each 128-bit lane (4 shuffles,
/// 3 adds), then the lanes are folded (2 extracts, 2 adds), instead of
/// four separate horizontal sums (the dot edge took 14% of 128 x 180 x
/// 100 for 4% of its flops, mostly in those and spilled registers).
#[cfg(all(target_arch = "x86_64", target_feature = "avx512f"))]
#[inline(always)]
fn sum_lanes4(x: &[f32x16; 4]) -> f32x4 {
    use core::arch::x86_64::*;
    // SAFETY: register-only arithmetic and shuffles; avx512f is enabled for
    // the whole build (this function's cfg); f32x16 wraps one __m512 and
    // f32x4 one __m128 here.
    unsafe {
        let [a, b, c, d]: [__m512; 4] = core::mem::transmute(*x);
        // Per 128-bit lane: a0+a2, b0+b2, a1+a3, b1+b3 (and c, d alike).
        let ab = _mm512_add_ps(_mm512_unpacklo_ps(a, b), _mm512_unpackhi_ps(a, b));
        let cd = _mm512_add_ps(_mm512_unpacklo_ps(c, d), _mm512_unpackhi_ps(c, d));
        // Per 128-bit lane: the partial sums of a, b, c, d.
        let (ab, cd) = (_mm512_castps_pd(ab), _mm512_castps_pd(cd));
        let abcd = _mm512_add_ps(
            _mm512_castpd_ps(_mm512_unpacklo_pd(ab, cd)),
            _mm512_castpd_ps(_mm512_unpackhi_pd(ab, cd)),
        );
        let high = _mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(_mm512_castps_pd(abcd)));
        let half = _mm256_add_ps(_mm512_castps512_ps256(abcd), high);
        let quarter = _mm_add_ps(
            _mm256_castps256_ps128(half),
            _mm256_extractf128_ps::<1>(half),
        );
        core::mem::transmute::<__m128, f32x4>(quarter)
    }
}

/// The lane sums of four vectors, [sum x[0], .., sum x[3]].
#[cfg(not(all(target_arch = "x86_64", target_feature = "avx512f")))]
#[inline(always)]
fn sum_lanes4(x: &[f32x16; 4]) -> f32x4 {
    f32x4::from(x.map(|v| v.reduce_add()))
}
