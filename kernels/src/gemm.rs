//! Single-precision GEMM: C <- act(alpha * op(A) op(B) + beta * C + bias).
//!
//! PLACEHOLDER: this delegates to the reference loop until the packed, blocked
//! kernel lands (issue 3). The signatures are the contract the trainer uses.
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
    let (ar, ac) = if ta == Trans::N { (m, k) } else { (k, m) };
    let (br, bc) = if tb == Trans::N { (k, n) } else { (n, k) };
    assert!(ar == 0 || ac <= lda, "sgemm: lda {lda} < {ac} columns of A");
    assert!(br == 0 || bc <= ldb, "sgemm: ldb {ldb} < {bc} columns of B");
    assert!(m == 0 || n <= ldc, "sgemm: ldc {ldc} < n {n}");
    assert!(a.len() >= required_len(ar, ac, lda), "sgemm: A too short");
    assert!(b.len() >= required_len(br, bc, ldb), "sgemm: B too short");
    assert!(c.len() >= required_len(m, n, ldc), "sgemm: C too short");
    match epilogue.bias {
        Bias::None => {}
        Bias::Row(r) => assert!(r.len() >= m, "sgemm: row bias shorter than m"),
        Bias::Col(cb) => assert!(cb.len() >= n, "sgemm: column bias shorter than n"),
    }
}

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
    check_shapes(ta, tb, m, n, k, a, lda, b, ldb, c, ldc, &epilogue);
    crate::reference::sgemm(
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
        epilogue.bias,
        epilogue.activation,
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
/// own batch loop). Same semantics as [`sgemm_with_epilogue`].
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
    sgemm_with_epilogue(
        ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc, epilogue,
    );
}
