//! Single-precision GEMM: C <- act(alpha * op(A) op(B) + beta * C + bias).
//!
//! A BLIS-style packed GEMM (issue 3): the jc / pc / ic loops cut N, K and M
//! into cache blocks (sizes in `kernel.rs`), A and B blocks are packed into
//! zero-padded micro-panels in thread-local buffers (`pack.rs`), and a
//! register-blocked micro-kernel computes each MR x NR tile of C and applies
//! the epilogue while the tile is in registers. Small-m products (m <= 128;
//! B transposed, the trainer's `x W^T`, or B stored k x n with n >= 400)
//! skip packing B on the AVX-512 path: an M-on-lanes kernel packs only A^T
//! and reads B in place (`kernel::tile_m_lanes`). Narrow products (n <= 256)
//! read a row-major A in place instead of packing it, and B stored k x n is
//! read in place when M is one block. The last few ragged columns (n = 100
//! or 900 leave 4) of a product with a row-major op(A) run a dot-product
//! kernel with K on the lanes (`kernel::tile_dot`, AVX-512 path) instead of
//! a mostly empty vector per row. The instruction set is chosen at compile time (AVX-512,
//! AVX2 + FMA, or portable); every path is compiled in every build and
//! reachable through the doc-hidden [`sgemm_on_path`] so the tests cover all
//! of them.
//!
//! Storage is row-major with leading dimensions. op(A) is m x k: with
//! `Trans::N` A is stored m x k (lda >= k); with `Trans::T` A is stored k x m
//! (lda >= m). Likewise op(B) is k x n. C is m x n with ldc >= n.
//! When beta == 0, C is never read (it may hold garbage or NaN).

/// Whether an operand is used as stored or transposed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Trans {
    N,
    T,
}

/// A bias added in the epilogue.
#[derive(Clone, Copy, Debug)]
pub enum Bias<'a> {
    None,
    /// One value per row of C (length m).
    Row(&'a [f32]),
    /// One value per column of C (length n).
    Col(&'a [f32]),
}

/// An activation applied in the epilogue, after the bias.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activation {
    Identity,
    Relu,
    Sigmoid,
}

/// What the GEMM does to each result before storing it.
#[derive(Clone, Copy, Debug)]
pub struct Epilogue<'a> {
    pub bias: Bias<'a>,
    pub activation: Activation,
}

impl Epilogue<'_> {
    pub const NONE: Epilogue<'static> = Epilogue {
        bias: Bias::None,
        activation: Activation::Identity,
    };
}

fn required_len(rows: usize, cols: usize, ld: usize) -> usize {
    if rows == 0 || cols == 0 {
        0
    } else {
        (rows - 1) * ld + cols
    }
}

#[allow(clippy::too_many_arguments)]
fn check_shapes(
    ta: Trans,
    tb: Trans,
    m: usize,
    n: usize,
    k: usize,
    a: &[f32],
    lda: usize,
    b: &[f32],
    ldb: usize,
    c: &[f32],
    ldc: usize,
    epilogue: &Epilogue,
) {
    let (br, bc) = if tb == Trans::N { (k, n) } else { (n, k) };
    assert!(br == 0 || bc <= ldb, "sgemm: ldb {ldb} < {bc} columns of B");
    assert!(b.len() >= required_len(br, bc, ldb), "sgemm: B too short");
    check_shapes_but_b(ta, m, n, k, a, lda, c, ldc, epilogue);
}

/// [`check_shapes`] of everything but B (whose panels a caller built).
#[allow(clippy::too_many_arguments)]
fn check_shapes_but_b(
    ta: Trans,
    m: usize,
    n: usize,
    k: usize,
    a: &[f32],
    lda: usize,
    c: &[f32],
    ldc: usize,
    epilogue: &Epilogue,
) {
    let (ar, ac) = if ta == Trans::N { (m, k) } else { (k, m) };
    assert!(ar == 0 || ac <= lda, "sgemm: lda {lda} < {ac} columns of A");
    assert!(m == 0 || n <= ldc, "sgemm: ldc {ldc} < n {n}");
    assert!(a.len() >= required_len(ar, ac, lda), "sgemm: A too short");
    assert!(c.len() >= required_len(m, n, ldc), "sgemm: C too short");
    match epilogue.bias {
        Bias::None => {}
        Bias::Row(r) => assert!(r.len() >= m, "sgemm: row bias shorter than m"),
        Bias::Col(cb) => assert!(cb.len() >= n, "sgemm: column bias shorter than n"),
    }
}

mod kernel;
pub(crate) mod lanes;
mod pack;
mod shared_b;
mod sum;

use kernel::{
    tile_dot, tile_edge_lanes, tile_m_lanes, Avx2Fma6x16, Avx512Fma12x32, Path, Portable4x8,
    TileEpilogue, DOT_COLS, DOT_ROWS, EDGE_LANES_MAX_COLS, MLANES_COLS, MLANES_VECS,
};
use shared_b::SharedPackedB;
use std::cell::RefCell;

/// Which compiled micro-kernel family runs a product.
#[doc(hidden)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KernelPath {
    /// f32x16, 12 x 32 tile.
    Avx512,
    /// f32x8, 6 x 16 tile.
    Avx2,
    /// f32x4, 4 x 8 tile.
    Portable,
}

impl KernelPath {
    /// The path this build uses, chosen from its target features.
    pub const NATIVE: KernelPath = if cfg!(all(target_arch = "x86_64", target_feature = "avx512f"))
    {
        KernelPath::Avx512
    } else if cfg!(all(
        target_arch = "x86_64",
        target_feature = "avx2",
        target_feature = "fma"
    )) {
        KernelPath::Avx2
    } else {
        KernelPath::Portable
    };
    pub const ALL: [KernelPath; 3] = [KernelPath::Avx512, KernelPath::Avx2, KernelPath::Portable];

    /// (MR, NR) of the register tile.
    pub fn tile(self) -> (usize, usize) {
        match self {
            KernelPath::Avx512 => (Avx512Fma12x32::MR, Avx512Fma12x32::NR),
            KernelPath::Avx2 => (Avx2Fma6x16::MR, Avx2Fma6x16::NR),
            KernelPath::Portable => (Portable4x8::MR, Portable4x8::NR),
        }
    }

    /// The path's default cache blocks.
    pub fn blocking(self) -> Blocking {
        fn of<P: Path>() -> Blocking {
            Blocking {
                kc: P::KC,
                mc: P::MC,
                nc: P::NC,
            }
        }
        match self {
            KernelPath::Avx512 => of::<Avx512Fma12x32>(),
            KernelPath::Avx2 => of::<Avx2Fma6x16>(),
            KernelPath::Portable => of::<Portable4x8>(),
        }
    }
}

/// Cache-block sizes (KC cuts K, MC cuts M, NC cuts N). Tests shrink them to
/// exercise every loop on small matrices.
#[doc(hidden)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Blocking {
    pub kc: usize,
    pub mc: usize,
    pub nc: usize,
}

/// Below this many flops (2mnk) the parallel entry stays on one thread: the
/// fork-join costs a few microseconds, as much as such a product takes.
const PARALLEL_MIN_FLOPS: usize = 1 << 22;

/// Up to this many rows, C = op(A) B^T (and C = op(A) B from
/// [`M_LANES_NN_MIN_N`] columns) runs the M-on-lanes kernel on paths that
/// have it: packing A^T (m x k) instead of transposing B (n x k) saves
/// most of the packing work when m < n, as in the trainer's 64-row chunks
/// against 900 x 784 weights.
const M_LANES_MAX_M: usize = 128;

/// From this many columns, C = op(A) B with B stored k x n (the DAE
/// decoder's `h W`, the backward `delta W`) also runs the M-on-lanes kernel
/// when m <= [`M_LANES_MAX_M`]: its COLS broadcasts per k step come from one
/// row of B, read in place, and all 64 lanes of M are used (the 12 x 32
/// tiles spend 72 rows on m = 64). Measured single
/// thread (`GEMM_TABLE_ROWS="A B t1" cargo bench --bench gemm -- table-only`,
/// GFLOP/s, median of 3 alternating runs, 12 x 32 path -> M-on-lanes; FMA
/// peak ~242): 64x784x900 144 -> 158, 64x900x784 140 -> 158, 64x900x625
/// 145 -> 161, 64x625x400 160 -> 165, 128x784x900 157 -> 159, 128x900x625
/// 154 -> 164, 128x625x400 160 -> 163; but 64x180x100 153 -> 125,
/// 128x180x100 159 -> 124 and 64x400x10 75 -> 37 (the narrow products read
/// A in place on the 12 x 32 path and the ragged last group wastes lanes),
/// so narrower products stay there. The MLP's backward shapes, in a later,
/// busier run (everything ~10% slower): 64x625x900 139 -> 144, 64x400x625
/// 139 -> 145 (64x900x784 130 -> 144 in the same run). For m = 65..128 the
/// 12 x 32 path won 128x625x400 (0.95 -> 1.02 of `gemm`) once A's panels
/// were packed by register transposes, but lost it again (1.00-1.03 ->
/// 0.97-0.98, 3 alternating runs) once the M-on-lanes epilogue wrote its
/// tiles with masked stores, so one threshold serves every m. (These
/// figures predate the 4-step k loop, `MLANES_UNROLL` in `kernel`, which
/// added about 5% to every M-on-lanes product.)
const M_LANES_NN_MIN_N: usize = 400;

/// Up to this many columns of C, a row-major op(A) is read in place by the
/// micro-kernel instead of packed (see [`gemm_serial`]): packing costs about
/// as much as the product when the block serves few column tiles (n = 10:
/// 70% of the time), while for n >= 625 the packed panel's compact layout
/// measured 2-8% faster.
const DIRECT_A_MAX_N: usize = 256;

/// Up to this many ragged last columns, a product with a row-major op(A)
/// computes them with the dot-product kernel (`kernel::tile_dot`) on paths
/// that have it.
const DOT_EDGE_MAX_COLS: usize = 12;

/// Up to this K slice the tile loops run along rows of C (see
/// [`gemm_serial`]): at k = 128 (784 x 128 x 900 A^T B) row order measured
/// 3-4% faster than column order.
const ROW_MAJOR_TILES_MAX_K: usize = 128;

/// MC for K slices up to [`ROW_MAJOR_TILES_MAX_K`] with the default blocking.
/// On 784 x 128 x 900 A^T B (M = 3 blocks of 264), MC = 132, 396 and 780
/// measured the same as 264 (3 runs of 31 alternating calls, +-1%).
const MC_SHORT_K: usize = 264;

/// Everything the unsafe core needs, after the safe entry checked it.
#[derive(Clone, Copy)]
struct Operands {
    ta: Trans,
    tb: Trans,
    m: usize,
    n: usize,
    k: usize,
    alpha: f32,
    a: *const f32,
    lda: usize,
    b: *const f32,
    ldb: usize,
    beta: f32,
    c: *mut f32,
    ldc: usize,
    bias_row: *const f32,
    bias_col: *const f32,
    activation: Activation,
}

// SAFETY: the pointers come from slices borrowed for the whole call; parallel
// workers write disjoint blocks of C and only read A, B and the bias.
unsafe impl Send for Operands {}
// SAFETY: as above.
unsafe impl Sync for Operands {}

impl Operands {
    /// The micro-kernels' epilogue of the whole product.
    fn tile_epilogue(&self) -> TileEpilogue {
        TileEpilogue {
            alpha: self.alpha,
            beta: self.beta,
            bias_row: self.bias_row,
            bias_col: self.bias_col,
            activation: self.activation,
        }
    }

    /// The sub-product on columns j0..j1 of C.
    fn columns(&self, j0: usize, j1: usize) -> Operands {
        let mut s = *self;
        s.n = j1 - j0;
        s.b = match self.tb {
            Trans::N => self.b.wrapping_add(j0),
            Trans::T => self.b.wrapping_add(j0 * self.ldb),
        };
        s.c = self.c.wrapping_add(j0);
        if !s.bias_col.is_null() {
            s.bias_col = self.bias_col.wrapping_add(j0);
        }
        s
    }

    /// The sub-product on rows i0..i1 of C.
    fn rows(&self, i0: usize, i1: usize) -> Operands {
        let mut s = *self;
        s.m = i1 - i0;
        s.a = match self.ta {
            Trans::N => self.a.wrapping_add(i0 * self.lda),
            Trans::T => self.a.wrapping_add(i0),
        };
        s.c = self.c.wrapping_add(i0 * self.ldc);
        if !s.bias_row.is_null() {
            s.bias_row = self.bias_row.wrapping_add(i0);
        }
        s
    }
}

/// A cache-line-aligned chunk of a packing buffer.
#[repr(C, align(64))]
#[derive(Clone, Copy)]
struct Line([f32; 16]);

// SAFETY: Line is repr(C) over [f32; 16]: 64 bytes at align 64, no padding,
// and every bit pattern (all zeros included) is a valid value.
unsafe impl bytemuck::Zeroable for Line {}
// SAFETY: as above; Copy, 'static, no interior mutability.
unsafe impl bytemuck::Pod for Line {}

thread_local! {
    /// Packed A block and packed B panel of this thread, grown on demand and
    /// reused by every later call on the thread.
    static PACK_BUFFERS: RefCell<(Vec<Line>, Vec<Line>)> = const { RefCell::new((Vec::new(), Vec::new())) };
}

fn grow(buf: &mut Vec<Line>, floats: usize) -> *mut f32 {
    let lines = floats.div_ceil(16).max(1);
    if buf.len() < lines {
        buf.resize(lines, Line([0.0; 16]));
    }
    buf.as_mut_ptr() as *mut f32
}

/// Runs `f` with packing buffers of at least `a_floats` and `b_floats`.
fn with_pack_buffers<R>(
    a_floats: usize,
    b_floats: usize,
    f: impl FnOnce(*mut f32, *mut f32) -> R,
) -> R {
    PACK_BUFFERS.with(|cell| match cell.try_borrow_mut() {
        Ok(mut bufs) => {
            let (a, b) = &mut *bufs;
            let pa = grow(a, a_floats);
            let pb = grow(b, b_floats);
            f(pa, pb)
        }
        // Re-entered on this thread (cannot happen today): use fresh buffers.
        Err(_) => {
            let (mut a, mut b) = (Vec::new(), Vec::new());
            let pa = grow(&mut a, a_floats);
            let pb = grow(&mut b, b_floats);
            f(pa, pb)
        }
    })
}

/// Splits `len` into `parts` near-equal pieces, each a multiple of `unit`
/// except possibly the last.
fn split_even(len: usize, parts: usize, unit: usize) -> usize {
    let units = len.div_ceil(unit);
    units.div_ceil(parts.max(1)) * unit
}

impl Blocking {
    /// Whether these are path P's own blocks (tests shrink them to drive the
    /// packed loops on small matrices; the shape-specific variants then stay
    /// off).
    fn is_default_for<P: Path>(self) -> bool {
        self.kc == P::KC && self.mc == P::MC && self.nc == P::NC
    }
}

/// The cache blocks of one product (also of a sum's concatenated K).
struct BlockSizes {
    kc_count: usize,
    kc_size: usize,
    mc_size: usize,
    nc_size: usize,
}

impl BlockSizes {
    fn of<P: Path>(m: usize, n: usize, k: usize, blk: Blocking) -> BlockSizes {
        let default_blocking = blk.is_default_for::<P>();
        // Balanced blocks: k = 784 with KC = 256 (the AVX2 path) runs four
        // slices of 196, not three of 256 and a sliver of 16.
        let kc_count = k.div_ceil(blk.kc.max(1)).max(1);
        let kc_size = k.div_ceil(kc_count);
        // Short K slices (A^T B weight gradients, k = 64 or 128) make thin A
        // blocks: 264 x 128 floats is 132 KiB, so taller blocks still sit in
        // L2 and cut the number of passes over the packed B panel (784 x 128
        // x 900: +3% over MC = 192, with the row-order tiles of
        // [`sweep_tiles`]). Only where M spans more than one tall block:
        // making M a single block would switch B to the in-place path, whose
        // column-order sweep is slow for short k (the trainer's 228 x 64 x
        // 784 update blocks: DAE epoch 1.78 -> 2.0 s).
        let mc_limit = if default_blocking && kc_size <= ROW_MAJOR_TILES_MAX_K && m > MC_SHORT_K {
            MC_SHORT_K
        } else {
            blk.mc
        };
        BlockSizes {
            kc_count,
            kc_size,
            mc_size: split_even(m, m.div_ceil(mc_limit.max(1)), P::MR),
            nc_size: split_even(n, n.div_ceil(blk.nc.max(1)), P::NR),
        }
    }
}

/// Runs `tile(ir, jr)` over an mc x nc block in steps of mr x nr. With
/// `row_order` (short k, weight gradients: C traffic, not arithmetic,
/// dominates) each row strip of C is swept left to right, MR sequential
/// streams the hardware prefetcher follows, re-reading the packed B panel
/// (at most 512 KiB) from L2; otherwise column by column, so one B
/// micro-panel serves the whole A block before the next is read (in L1 for
/// short slices; at KC = 1024 both stream from L2, see `kernel`). (Running
/// the ragged last strip's tile right after the last full strip's, row
/// tile by row tile, while that A is in L1, measured the same on 128 x 180
/// x 100 and 64 x 180 x 100 A B.)
fn sweep_tiles(
    mc: usize,
    nc: usize,
    mr: usize,
    nr: usize,
    row_order: bool,
    mut tile: impl FnMut(usize, usize),
) {
    if row_order {
        for ir in (0..mc).step_by(mr) {
            for jr in (0..nc).step_by(nr) {
                tile(ir, jr);
            }
        }
    } else {
        for jr in (0..nc).step_by(nr) {
            for ir in (0..mc).step_by(mr) {
                tile(ir, jr);
            }
        }
    }
}

/// The bias pointers (row, column) of an epilogue; null where absent.
fn bias_pointers(bias: &Bias) -> (*const f32, *const f32) {
    match *bias {
        Bias::None => (core::ptr::null(), core::ptr::null()),
        Bias::Row(r) => (r.as_ptr(), core::ptr::null()),
        Bias::Col(cb) => (core::ptr::null(), cb.as_ptr()),
    }
}

/// The packed B block of one (jc, pc) step of [`gemm_blocked`].
struct PackedB {
    /// The ragged last column strip (n = 100 leaves 4, n = 900 too) of a
    /// product with a row-major op(A), whether or not A is packed for the
    /// full tiles, runs the dot-product kernel: K on the lanes, reading A's
    /// rows in place, against a transposed copy of those columns of B
    /// packed after the B panels. Column blocks are multiples of NR, so
    /// only the last one is ragged.
    dot_edge: bool,
    /// Rows of the edge panel (the ragged columns rounded up to DOT_COLS).
    edge_width: usize,
    /// Floats of the NR-wide panels (one panel when B is read in place:
    /// the ragged strip).
    main_floats: usize,
    /// Floats of the whole block: the panels and the edge panel.
    floats: usize,
}

impl PackedB {
    fn of<P: Path>(op: &Operands, kc_size: usize, nc_size: usize, direct_b: bool) -> PackedB {
        let nr = P::NR;
        let main_floats = if direct_b {
            nr * kc_size
        } else {
            nc_size.div_ceil(nr) * nr * kc_size
        };
        let edge_cols = op.n % nr;
        let dot_edge =
            P::DOT_EDGE && op.ta == Trans::N && edge_cols != 0 && edge_cols <= DOT_EDGE_MAX_COLS;
        let edge_width = edge_cols.next_multiple_of(DOT_COLS);
        let floats = if dot_edge {
            main_floats + edge_width * kc_size.next_multiple_of(16)
        } else {
            main_floats
        };
        PackedB {
            dot_edge,
            edge_width,
            main_floats,
            floats,
        }
    }
}

/// Whether [`gemm_serial`] gives the whole product to the M-on-lanes
/// kernel: on paths that have it, with the default blocking (so the tests'
/// tiny blocks still drive the packed loops with B transposed), for at most
/// [`M_LANES_MAX_M`] rows, with B stored n x k or at least
/// [`M_LANES_NN_MIN_N`] columns of a B stored k x n.
fn takes_m_lanes<P: Path>(op: &Operands, blk: Blocking) -> bool {
    P::M_LANES
        && blk.is_default_for::<P>()
        && op.m <= M_LANES_MAX_M
        && (op.tb == Trans::T || op.n >= M_LANES_NN_MIN_N)
}

/// The blocked single-threaded product on one path.
///
/// # Safety
/// `op` describes valid, checked operands (see [`check_shapes`]), and nothing
/// else writes the part of C it covers.
unsafe fn gemm_serial<P: Path>(op: &Operands, blk: Blocking) {
    // SAFETY: forwarded.
    unsafe { gemm_blocked::<P>(op, blk, None) }
}

/// [`gemm_serial`], with op(B) packed into `shared` together with the other
/// parts of a parallel product (see `shared_b`) when given: `op` is then
/// one part's rows, and `shared` was made for the whole product's blocks
/// ([`PackedB::of`] with the same n, k and blocking).
///
/// # Safety
/// As [`gemm_serial`]; every part sharing `shared` covers the same columns
/// and K of the same B.
unsafe fn gemm_blocked<P: Path>(op: &Operands, blk: Blocking, shared: Option<&SharedPackedB>) {
    let (m, n, k) = (op.m, op.n, op.k);
    if m == 0 || n == 0 {
        return;
    }
    if shared.is_none() && takes_m_lanes::<P>(op, blk) {
        // SAFETY: forwarded.
        return unsafe { gemm_m_lanes(op) };
    }
    let (mr, nr) = (P::MR, P::NR);
    let BlockSizes {
        kc_count,
        kc_size,
        mc_size,
        nc_size,
    } = BlockSizes::of::<P>(m, n, k, blk);
    // With B stored k x n, full NR-wide strips of B are already laid out as a
    // packed panel with row stride ldb; the micro-kernel reads them in place
    // and only the ragged last strip is packed. This saves a full pass over
    // B, which dominates for the trainer's small-m products. Only when M is
    // one MC block (so each strip is fetched from memory once either way)
    // and ldb is not a multiple of 64 floats: a 256-byte-multiple stride puts
    // a strip's kc rows into a few L1 sets (ldb = 1024 puts them all in one).
    // For short K slices in row order with several M blocks (784 x 128 x
    // 900 and 784 x 64 x 900 A^T B), B read in place by every block
    // measured 2-6% slower than packed once.
    // A shared packing is always packed.
    let direct_b =
        shared.is_none() && op.tb == Trans::N && m <= mc_size && !op.ldb.is_multiple_of(64);
    // A row-major op(A) is read in place when the product is a single,
    // narrow column block (n <= DIRECT_A_MAX_N and n <= NC): each A row
    // tile then serves few column tiles, too few to pay for its packing.
    // Not with lda a multiple of 64 floats, for the same L1-set reason as
    // direct B above.
    let direct_a =
        op.ta == Trans::N && n <= DIRECT_A_MAX_N.min(blk.nc) && !op.lda.is_multiple_of(64);
    let PackedB {
        dot_edge,
        edge_width,
        main_floats: b_main_floats,
        floats: b_floats,
    } = PackedB::of::<P>(op, kc_size, nc_size, direct_b);
    let a_floats = if direct_a {
        0
    } else {
        mc_size.div_ceil(mr) * mr * kc_size
    };

    let whole = op.tile_epilogue();
    let own_b_floats = if shared.is_some() { 0 } else { b_floats };
    with_pack_buffers(a_floats, own_b_floats, |pa, own_pb| {
        for jc in (0..n).step_by(nc_size) {
            let nc = nc_size.min(n - jc);
            let full_nc = nc / nr * nr;
            for kb in 0..kc_count {
                let p0 = kb * kc_size;
                let kc = kc_size.min(k - p0);
                let last = kb + 1 == kc_count;
                let ep = TileEpilogue::k_slice(&whole, kb == 0, last);
                let edge_kc_pad = kc.next_multiple_of(16);
                let block = jc / nc_size * kc_count + kb;
                let pb = shared.map_or(own_pb, |s| s.block(block));
                let edge_panel = pb.wrapping_add(b_main_floats);
                // With the dot edge, the ragged strip is only read from its
                // transposed edge panel, packed after the block's
                // b_main_floats of NR-wide panels.
                let packed_nc = if dot_edge { full_nc } else { nc };
                let edge = dot_edge && full_nc < nc;
                // Steps q..q + rows of every packed panel of the block.
                let pack_panels = |q: usize, rows: usize| {
                    // SAFETY: rows p0 + q.. of the block's columns lie
                    // inside op(B); panels of kc steps start q * nr floats
                    // into the block, which holds b_floats.
                    unsafe {
                        pack::pack_b_strided::<false>(
                            op.tb,
                            op.b,
                            op.ldb,
                            p0 + q,
                            rows,
                            jc,
                            packed_nc,
                            nr,
                            kc,
                            pb.wrapping_add(q * nr),
                        )
                    }
                };
                let pack_edge = || {
                    // SAFETY: the columns lie inside op(B); the block holds
                    // b_main_floats + edge_width * kc_pad floats.
                    unsafe {
                        pack::pack_b_edge_transposed(
                            op.tb,
                            op.b,
                            op.ldb,
                            p0,
                            kc,
                            jc + full_nc,
                            nc - full_nc,
                            edge_width,
                            edge_kc_pad,
                            edge_panel,
                        )
                    }
                };
                if let Some(shared) = shared {
                    // Units of UNIT_ROWS steps, then the edge panel.
                    let unit_rows = shared_b::UNIT_ROWS;
                    let row_units = kc.div_ceil(unit_rows);
                    shared.pack_block(block, row_units + usize::from(edge), |unit| {
                        if unit < row_units {
                            let q = unit * unit_rows;
                            pack_panels(q, unit_rows.min(kc - q));
                        } else {
                            pack_edge();
                        }
                    });
                } else if !direct_b {
                    pack_panels(0, kc);
                    if edge {
                        pack_edge();
                    }
                } else if full_nc < nc {
                    // B read in place: only the ragged strip is packed, as
                    // a panel or as the edge panel.
                    if dot_edge {
                        pack_edge();
                    } else {
                        // SAFETY: the strip lies inside op(B); pb holds
                        // b_floats (one panel).
                        unsafe {
                            pack::pack_b(
                                op.tb,
                                op.b,
                                op.ldb,
                                p0,
                                kc,
                                jc + full_nc,
                                nc - full_nc,
                                nr,
                                pb,
                            )
                        };
                    }
                }
                for ic in (0..m).step_by(mc_size) {
                    let mc = mc_size.min(m - ic);
                    // An A^T stored k x m (weight gradients) could be read in
                    // place, a step's MR values being adjacent as in a panel
                    // (lda apart instead of MR): with the next row tile's
                    // lines prefetched along each row strip, 784 x 128 x 900
                    // and 784 x 64 x 900 A^T B measured 5-10% slower. An L2
                    // prefetch of the next block's A, spread over this
                    // block's tiles, measured no faster either.
                    if !direct_a {
                        // SAFETY: the block lies inside op(A); pa holds a_floats.
                        unsafe { pack::pack_a(op.ta, op.a, op.lda, ic, mc, p0, kc, mr, pa) };
                    }
                    let row_order = kc <= ROW_MAJOR_TILES_MAX_K && !direct_b;
                    let a_block = pa as *const f32;
                    let run_tile = |ir: usize, jr: usize| {
                        let cols = nr.min(nc - jr);
                        let (b_panel, b_stride) = if !direct_b {
                            (pb.wrapping_add(jr / nr * nr * kc) as *const f32, nr)
                        } else if cols == nr {
                            (op.b.wrapping_add(p0 * op.ldb + jc + jr), op.ldb)
                        } else {
                            (pb as *const f32, nr)
                        };
                        let j = jc + jr;
                        let rows = mr.min(mc - ir);
                        let i = ic + ir;
                        let tile_ep = ep.offset(i, j);
                        if dot_edge && cols < nr {
                            for r0 in (0..rows).step_by(DOT_ROWS) {
                                for q0 in (0..cols).step_by(DOT_COLS) {
                                    let dot_ep = tile_ep.offset(r0, q0);
                                    // SAFETY: rows i + r0.. of op(A) (in
                                    // place) hold kc floats from column p0;
                                    // the edge panel holds edge_width rows of
                                    // edge_kc_pad floats, zero-padded; the
                                    // sub-tile lies in C; bias offsets match.
                                    unsafe {
                                        tile_dot(
                                            kc,
                                            op.a.wrapping_add((i + r0) * op.lda + p0),
                                            op.lda,
                                            DOT_ROWS.min(rows - r0),
                                            edge_panel.wrapping_add(q0 * edge_kc_pad),
                                            edge_kc_pad,
                                            op.c.wrapping_add((i + r0) * op.ldc + j + q0),
                                            op.ldc,
                                            DOT_COLS.min(cols - q0),
                                            &dot_ep,
                                        )
                                    };
                                }
                            }
                            return;
                        }
                        let (a_tile, a_rows) = if direct_a {
                            (op.a.wrapping_add(i * op.lda + p0), Some(op.lda))
                        } else {
                            (a_block.wrapping_add(ir / mr * mr * kc), None)
                        };
                        // The lane edge ends in the M-on-lanes kernel's
                        // epilogue (f32x16, MR <= 16 lanes): it runs where
                        // that kernel does.
                        if P::M_LANES && !direct_a && cols <= EDGE_LANES_MAX_COLS && cols < nr {
                            // SAFETY: the packed A panel holds kc steps of
                            // MR (<= 16) floats; the B panel (packed, this
                            // is a ragged strip) kc rows of NR >= cols; the
                            // tile lies in C; bias offsets match.
                            unsafe {
                                edge_lanes_tile(
                                    cols,
                                    kc,
                                    a_tile,
                                    mr,
                                    rows,
                                    b_panel,
                                    b_stride,
                                    op.c.wrapping_add(i * op.ldc + j),
                                    op.ldc,
                                    &tile_ep,
                                )
                            };
                            return;
                        }
                        // SAFETY: the tile (rows x cols at (i, j)) lies in C;
                        // A is a packed panel of kc steps of MR, or `rows`
                        // in-place rows of op(A) from column p0 on; the B
                        // panel has kc rows of NR readable floats (packed, or
                        // a full in-place strip of B); bias offsets match.
                        unsafe {
                            P::tile(
                                rows,
                                kc,
                                a_tile,
                                a_rows,
                                b_panel,
                                b_stride,
                                op.c.wrapping_add(i * op.ldc + j),
                                op.ldc,
                                cols,
                                &tile_ep,
                                // Full tiles prefetch B ahead (see kernel),
                                // and a packed A panel where it streams from
                                // L2 (column order, B packed too).
                                cols == nr,
                                !row_order && !direct_a && !direct_b,
                            );
                        }
                    };
                    sweep_tiles(mc, nc, mr, nr, row_order, run_tile);
                }
            }
        }
    });
}

/// C = op(A) op(B) on the M-on-lanes kernel: op(A) is packed once into A^T
/// blocks of 64 rows (zero-padded), B (stored n x k or k x n) is read in
/// place.
///
/// # Safety
/// As [`gemm_serial`].
unsafe fn gemm_m_lanes(op: &Operands) {
    let (m, n, k) = (op.m, op.n, op.k);
    let height = MLANES_VECS * 16;
    let blocks = m.div_ceil(height);
    with_pack_buffers(blocks * height * k, 0, |pa, _| {
        // op(A)^T as a k x m "B" operand: stored the other way round.
        let flipped = match op.ta {
            Trans::N => Trans::T,
            Trans::T => Trans::N,
        };
        for blk in 0..blocks {
            let i = blk * height;
            let block = pa.wrapping_add(blk * height * k);
            // SAFETY: rows i..i + mb of op(A), all k; the buffer holds
            // `blocks` panels of height x k.
            unsafe {
                pack::pack_b(
                    flipped,
                    op.a,
                    op.lda,
                    0,
                    k,
                    i,
                    height.min(m - i),
                    height,
                    block,
                )
            };
        }
        let ep = op.tile_epilogue();
        // Column groups outer: the COLS rows (B^T) or columns (B) of B,
        // COLS x k floats, stay in L1 or L2 while the packed A^T blocks
        // stream from L2.
        let b_kn = op.tb == Trans::N;
        for j in (0..n).step_by(MLANES_COLS) {
            let cols = MLANES_COLS.min(n - j);
            let b = if b_kn {
                op.b.wrapping_add(j)
            } else {
                op.b.wrapping_add(j * op.ldb)
            };
            for blk in 0..blocks {
                let i = blk * height;
                let rows = height.min(m - i);
                let tile_ep = ep.offset(i, j);
                let a_t = pa.wrapping_add(blk * height * k) as *const f32;
                let c = op.c.wrapping_add(i * op.ldc + j);
                // SAFETY: the packed block has k steps of `height` floats;
                // columns j..j + cols of op(B) hold k floats each; the tile
                // (rows x cols at (i, j)) lies in C; bias offsets match.
                unsafe {
                    if b_kn {
                        m_lanes_tile::<true>(cols, k, a_t, b, op.ldb, c, op.ldc, rows, &tile_ep)
                    } else {
                        m_lanes_tile::<false>(cols, k, a_t, b, op.ldb, c, op.ldc, rows, &tile_ep)
                    }
                }
            }
        }
    });
}

/// [`tile_edge_lanes`] with COLS = `cols` (1..=EDGE_LANES_MAX_COLS).
///
/// # Safety
/// As [`tile_edge_lanes`] with COLS = `cols`.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn edge_lanes_tile(
    cols: usize,
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
    // SAFETY: forwarded; each arm's COLS equals `cols`.
    unsafe {
        match cols {
            1 => tile_edge_lanes::<1>(kc, a, a_step, rows, b, b_stride, c, ldc, ep),
            2 => tile_edge_lanes::<2>(kc, a, a_step, rows, b, b_stride, c, ldc, ep),
            3 => tile_edge_lanes::<3>(kc, a, a_step, rows, b, b_stride, c, ldc, ep),
            4 => tile_edge_lanes::<4>(kc, a, a_step, rows, b, b_stride, c, ldc, ep),
            5 => tile_edge_lanes::<5>(kc, a, a_step, rows, b, b_stride, c, ldc, ep),
            6 => tile_edge_lanes::<6>(kc, a, a_step, rows, b, b_stride, c, ldc, ep),
            7 => tile_edge_lanes::<7>(kc, a, a_step, rows, b, b_stride, c, ldc, ep),
            _ => tile_edge_lanes::<8>(kc, a, a_step, rows, b, b_stride, c, ldc, ep),
        }
    }
}

/// One M-on-lanes tile of `cols` <= MLANES_COLS columns: the kernel
/// instance with exactly that many.
///
/// # Safety
/// As [`tile_m_lanes`] with COLS = `cols`.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn m_lanes_tile<const B_KN: bool>(
    cols: usize,
    k: usize,
    a_t: *const f32,
    b: *const f32,
    ldb: usize,
    c: *mut f32,
    ldc: usize,
    rows: usize,
    ep: &TileEpilogue,
) {
    // SAFETY: forwarded; each arm's COLS equals `cols`.
    unsafe {
        match cols {
            1 => tile_m_lanes::<1, B_KN>(k, a_t, b, ldb, c, ldc, rows, ep),
            2 => tile_m_lanes::<2, B_KN>(k, a_t, b, ldb, c, ldc, rows, ep),
            3 => tile_m_lanes::<3, B_KN>(k, a_t, b, ldb, c, ldc, rows, ep),
            4 => tile_m_lanes::<4, B_KN>(k, a_t, b, ldb, c, ldc, rows, ep),
            5 => tile_m_lanes::<5, B_KN>(k, a_t, b, ldb, c, ldc, rows, ep),
            _ => tile_m_lanes::<MLANES_COLS, B_KN>(k, a_t, b, ldb, c, ldc, rows, ep),
        }
    }
}

/// The product split over the rayon pool, along N (or M when C is taller
/// than wide), one contiguous block per thread. Falls back to one thread for
/// small products and when already on a rayon worker, so a call from inside
/// the trainer's batch loop never oversubscribes the cores.
///
/// # Safety
/// As [`gemm_serial`].
unsafe fn gemm_parallel<P: Path>(op: &Operands, blk: Blocking) {
    let threads = rayon::current_num_threads();
    let flops = 2 * op.m * op.n * op.k;
    if threads < 2 || rayon::current_thread_index().is_some() || flops < PARALLEL_MIN_FLOPS {
        // SAFETY: forwarded.
        return unsafe { gemm_serial::<P>(op, blk) };
    }
    // A product the M-on-lanes kernel takes whole is cut by its 64-row
    // blocks when it has two or more, so that every part still takes it
    // (cut by columns, the halves of 128 x 900 x 625 A B fell below
    // M_LANES_NN_MIN_N and went to the 12 x 32 path) and packs only its
    // own rows of A. `GEMM_TABLE_ROWS=t2 cargo bench --bench gemm --
    // table-only`, 5 alternating runs, medians, GFLOP/s on 2 threads:
    // 128x900x625 A B 255 -> 291, 128x784x900 A B 281 -> 295, 128x625x400
    // A B 254 -> 256.
    let m_lanes = takes_m_lanes::<P>(op, blk);
    if !m_lanes {
        // SAFETY: forwarded.
        if unsafe { gemm_parallel_shared_b::<P>(op, blk, threads) } {
            return;
        }
    }
    let m_lanes_height = MLANES_VECS * 16;
    let (by_columns, row_unit) = if m_lanes && op.m > m_lanes_height {
        (false, m_lanes_height)
    } else {
        (op.n >= op.m, P::MR)
    };
    let (len, unit) = if by_columns {
        (op.n, P::NR)
    } else {
        (op.m, row_unit)
    };
    let chunk = split_even(len, threads, unit);
    let parts = len.div_ceil(chunk);
    let part = |t: usize| {
        let (lo, hi) = (t * chunk, ((t + 1) * chunk).min(len));
        let sub = if by_columns {
            op.columns(lo, hi)
        } else {
            op.rows(lo, hi)
        };
        // SAFETY: each part covers disjoint rows or columns of C.
        unsafe { gemm_serial::<P>(&sub, blk) };
    };
    run_parts(parts, part);
}

/// Runs `part(0..parts)` on the rayon pool. The calling thread (never a
/// pool worker here) computes the first part while the workers take the
/// others: it needs no waking, and a worker that wakes late can no longer
/// end up computing every part alone (`into_par_iter` from outside the pool
/// left the caller waiting while the first worker to wake often took both
/// halves: 2-thread rows of the GEMM bench at 1-thread speed).
fn run_parts(parts: usize, part: impl Fn(usize) + Sync) {
    let part = &part;
    rayon::in_place_scope(|scope| {
        for t in 1..parts {
            scope.spawn(move |_| part(t));
        }
        part(0);
    });
}

/// The parallel product cut by rows, every part packing its own rows of A
/// and all parts packing op(B) together, once (`shared_b`), where each part
/// has more than one MC block of rows (so B is packed at all, and a part
/// would otherwise pack all of it for its share of the rows). Returns false,
/// having done nothing, where that does not apply or the shared buffer is
/// too large or busy.
///
/// # Safety
/// As [`gemm_serial`].
unsafe fn gemm_parallel_shared_b<P: Path>(op: &Operands, blk: Blocking, threads: usize) -> bool {
    let chunk = split_even(op.m, threads, P::MR);
    let parts = op.m.div_ceil(chunk);
    let sizes = BlockSizes::of::<P>(chunk, op.n, op.k, blk);
    if parts < 2 || chunk <= sizes.mc_size {
        return false;
    }
    let blocks = op.n.div_ceil(sizes.nc_size) * sizes.kc_count;
    let block_floats = PackedB::of::<P>(op, sizes.kc_size, sizes.nc_size, false).floats;
    let Some(shared) = SharedPackedB::try_new(blocks, block_floats) else {
        return false;
    };
    let shared = &shared;
    run_parts(parts, |t| {
        let sub = op.rows(t * chunk, ((t + 1) * chunk).min(op.m));
        // SAFETY: each part covers disjoint rows of C; every part has the
        // whole product's columns and K, so the same B blocks.
        unsafe { gemm_blocked::<P>(&sub, blk, Some(shared)) };
    });
    true
}

/// [`sgemm_with_epilogue`] (or [`sgemm_parallel`] when `parallel`) on a chosen
/// path and, optionally, cache blocking: for tests and benches of paths other
/// than the build's own.
#[doc(hidden)]
#[allow(clippy::too_many_arguments)]
pub fn sgemm_on_path(
    path: KernelPath,
    blocking: Option<Blocking>,
    parallel: bool,
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
    epilogue: Epilogue,
) {
    check_shapes(ta, tb, m, n, k, a, lda, b, ldb, c, ldc, &epilogue);
    let (bias_row, bias_col) = bias_pointers(&epilogue.bias);
    let op = Operands {
        ta,
        tb,
        m,
        n,
        k,
        alpha,
        a: a.as_ptr(),
        lda,
        b: b.as_ptr(),
        ldb,
        beta,
        c: c.as_mut_ptr(),
        ldc,
        bias_row,
        bias_col,
        activation: epilogue.activation,
    };
    let blk = blocking.unwrap_or_else(|| path.blocking());
    // SAFETY: check_shapes verified every index the core touches is inside
    // the slices; `c` is borrowed mutably for the whole call.
    unsafe {
        match (path, parallel) {
            (KernelPath::Avx512, false) => gemm_serial::<Avx512Fma12x32>(&op, blk),
            (KernelPath::Avx512, true) => gemm_parallel::<Avx512Fma12x32>(&op, blk),
            (KernelPath::Avx2, false) => gemm_serial::<Avx2Fma6x16>(&op, blk),
            (KernelPath::Avx2, true) => gemm_parallel::<Avx2Fma6x16>(&op, blk),
            (KernelPath::Portable, false) => gemm_serial::<Portable4x8>(&op, blk),
            (KernelPath::Portable, true) => gemm_parallel::<Portable4x8>(&op, blk),
        }
    }
}

/// The micro-kernel's own ceiling: GFLOP/s of full MR x NR tiles over one
/// packed A micro-panel and one packed B micro-panel of `kc` steps, reused
/// call after call (in L1 up to kc ~ 256 on AVX-512; no packing, C
/// overwritten with beta = 0). Best of a
/// few runs, so a busy machine still yields an undisturbed one. For benches.
#[doc(hidden)]
pub fn micro_kernel_gflops(path: KernelPath, kc: usize) -> f64 {
    fn measure<P: Path>(kc: usize) -> f64 {
        let kc = kc.max(1);
        // Cache-line-aligned, as the packing buffers are: a misaligned
        // 64-byte load splits across two lines.
        let lines = |floats: usize, step: usize| -> Vec<Line> {
            (0..floats.div_ceil(16))
                .map(|l| {
                    Line(core::array::from_fn(|i| {
                        ((l * 16 + i) % step) as f32 * 0.01
                    }))
                })
                .collect()
        };
        let (a_buf, b_buf, mut c_buf) = (
            lines(P::MR * kc, 7),
            lines(P::NR * kc, 5),
            lines(P::MR * P::NR, 1),
        );
        let (a, b, c) = (
            a_buf.as_ptr() as *const f32,
            b_buf.as_ptr() as *const f32,
            c_buf.as_mut_ptr() as *mut f32,
        );
        let ep = TileEpilogue {
            alpha: 1.0,
            beta: 0.0,
            bias_row: core::ptr::null(),
            bias_col: core::ptr::null(),
            activation: Activation::Identity,
        };
        // About 20 M flops per run: a few milliseconds.
        let reps = (20_000_000 / (2 * P::MR * P::NR * kc)).max(1);
        let mut best = 0.0f64;
        for _ in 0..15 {
            let start = std::time::Instant::now();
            for _ in 0..reps {
                // SAFETY: a holds kc steps of MR floats, b kc rows of NR
                // floats (stride NR), c is MR x NR with ldc = NR.
                unsafe {
                    P::tile(
                        P::MR,
                        kc,
                        std::hint::black_box(a),
                        None,
                        b,
                        P::NR,
                        c,
                        P::NR,
                        P::NR,
                        &ep,
                        false,
                        false,
                    )
                };
            }
            let secs = start.elapsed().as_secs_f64();
            std::hint::black_box(c);
            best = best.max((2 * P::MR * P::NR * kc * reps) as f64 / secs / 1e9);
        }
        best
    }
    match path {
        KernelPath::Avx512 => measure::<Avx512Fma12x32>(kc),
        KernelPath::Avx2 => measure::<Avx2Fma6x16>(kc),
        KernelPath::Portable => measure::<Portable4x8>(kc),
    }
}

/// How many parallel products have packed op(B) once for all their parts
/// (rather than once per part) so far: lets the tests check they drove
/// that path.
#[doc(hidden)]
pub fn shared_b_products() -> usize {
    shared_b::products()
}

/// Several products summed along K in one GEMM (the trainer's weight
/// gradients over chunks and terms).
pub use sum::{sgemm_sum, sgemm_sum_on_path, KTerm};

/// Single-threaded GEMM with a fused epilogue. Use inside per-chunk rayon loops.
#[allow(clippy::too_many_arguments)]
pub fn sgemm_with_epilogue(
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
    epilogue: Epilogue,
) {
    sgemm_on_path(
        KernelPath::NATIVE,
        None,
        false,
        ta,
        tb,
        m,
        n,
        k,
        alpha,
        a,
        lda,
        b,
        ldb,
        beta,
        c,
        ldc,
        epilogue,
    );
}

/// Single-threaded GEMM, C <- alpha * op(A) op(B) + beta * C.
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
) {
    sgemm_with_epilogue(
        ta,
        tb,
        m,
        n,
        k,
        alpha,
        a,
        lda,
        b,
        ldb,
        beta,
        c,
        ldc,
        Epilogue::NONE,
    );
}

/// GEMM split across the rayon pool (for large products outside the trainer's
/// own batch loop). Same semantics as [`sgemm_with_epilogue`]. Called from a
/// rayon worker it runs on that thread alone (no nested parallelism).
#[allow(clippy::too_many_arguments)]
pub fn sgemm_parallel(
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
    epilogue: Epilogue,
) {
    sgemm_on_path(
        KernelPath::NATIVE,
        None,
        true,
        ta,
        tb,
        m,
        n,
        k,
        alpha,
        a,
        lda,
        b,
        ldb,
        beta,
        c,
        ldc,
        epilogue,
    );
}

mod sparse;
pub use sparse::{
    sgemm_sparse_input, sgemm_sparse_input_on_path, sgemm_sparse_input_panels, PanelBlock,
    PanelLayout, SparsePanels,
};

/// Which operand [`pack_for_tests`] packs.
#[doc(hidden)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PackedOperand {
    /// op(A): panels of `width` rows, `kc` steps each.
    A,
    /// op(B): panels of `width` columns, `kc` rows each.
    B,
}

/// Packs op(A) rows (or op(B) columns) `outer0..outer0 + len`, shared
/// indices `p0..p0 + kc`, into `ceil(len / width)` panels of `width x kc`,
/// with the build's packer or (`plain`) the portable element-wise
/// transposes: for the packers' tests. The result starts as NaN, so a float
/// the packer leaves unwritten shows. `None` when the block does not lie
/// inside `src` with leading dimension `ld`, or `width` or `kc` is zero.
#[doc(hidden)]
#[allow(clippy::too_many_arguments)]
pub fn pack_for_tests(
    operand: PackedOperand,
    trans: Trans,
    src: &[f32],
    ld: usize,
    outer0: usize,
    len: usize,
    p0: usize,
    kc: usize,
    width: usize,
    plain: bool,
) -> Option<Vec<f32>> {
    // Stored rows and columns of the block: op(A) = A and op(B) = B^T keep
    // the outer index on the stored rows.
    let outer_on_rows = (operand == PackedOperand::A) == (trans == Trans::N);
    let (row_end, col_end) = if outer_on_rows {
        (outer0.checked_add(len)?, p0.checked_add(kc)?)
    } else {
        (p0.checked_add(kc)?, outer0.checked_add(len)?)
    };
    if width == 0 || kc == 0 || len == 0 || col_end > ld || row_end == 0 {
        return None;
    }
    if (row_end - 1).checked_mul(ld)?.checked_add(col_end)? > src.len() {
        return None;
    }
    let mut out = vec![f32::NAN; len.div_ceil(width) * width * kc];
    let (s, d) = (src.as_ptr(), out.as_mut_ptr());
    // SAFETY: the block lies inside src (checked above); out holds
    // ceil(len / width) panels of width * kc floats.
    unsafe {
        match (operand, plain) {
            (PackedOperand::A, false) => {
                pack::pack_a_strided::<false>(trans, s, ld, outer0, len, p0, kc, width, kc, d)
            }
            (PackedOperand::A, true) => {
                pack::pack_a_strided::<true>(trans, s, ld, outer0, len, p0, kc, width, kc, d)
            }
            (PackedOperand::B, false) => {
                pack::pack_b_strided::<false>(trans, s, ld, p0, kc, outer0, len, width, kc, d)
            }
            (PackedOperand::B, true) => {
                pack::pack_b_strided::<true>(trans, s, ld, p0, kc, outer0, len, width, kc, d)
            }
        }
    }
    Some(out)
}
