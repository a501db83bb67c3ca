//! The GEMM packers (the AVX-512 16 x 16 register transposes where the build
//! has them) against the portable element-wise ones and against the packed
//! layout computed directly from its definition: ragged blocks straddling
//! the 16-float register blocks and the panel widths, both operands, both
//! transposes, padded leading dimensions and offset blocks. Packing only
//! moves floats, so equality is exact (compared bit for bit).

use proptest::prelude::*;
use vcortex_kernels::gemm::{pack_for_tests, PackedOperand, Trans};

/// The packed layout by definition: panel q, step p, lane r holds
/// op(X)(outer0 + q * width + r, p0 + p), zero past `len`.
#[allow(clippy::too_many_arguments)]
fn packed_by_definition(
    operand: PackedOperand,
    trans: Trans,
    src: &[f32],
    ld: usize,
    outer0: usize,
    len: usize,
    p0: usize,
    kc: usize,
    width: usize,
) -> Vec<f32> {
    let outer_on_rows = (operand == PackedOperand::A) == (trans == Trans::N);
    let mut out = vec![0.0; len.div_ceil(width) * width * kc];
    for q in 0..len.div_ceil(width) {
        for p in 0..kc {
            for r in 0..width {
                let i = q * width + r;
                if i < len {
                    let (row, col) = if outer_on_rows {
                        (outer0 + i, p0 + p)
                    } else {
                        (p0 + p, outer0 + i)
                    };
                    out[q * width * kc + p * width + r] = src[row * ld + col];
                }
            }
        }
    }
    out
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

#[derive(Clone, Debug)]
struct Block {
    operand: PackedOperand,
    trans: Trans,
    width: usize,
    len: usize,
    kc: usize,
    outer0: usize,
    p0: usize,
    ld_pad: usize,
}

fn block() -> impl Strategy<Value = Block> {
    (
        prop_oneof![Just(PackedOperand::A), Just(PackedOperand::B)],
        prop_oneof![Just(Trans::N), Just(Trans::T)],
        // The panel widths of every path: 4 / 8 (portable), 6 / 16 (AVX2),
        // 12 / 32 (AVX-512), 64 (the M-on-lanes A^T blocks).
        prop_oneof![
            Just(4usize),
            Just(6),
            Just(8),
            Just(12),
            Just(16),
            Just(32),
            Just(64)
        ],
        1usize..=3,
        0usize..=17,
        1usize..=70,
        0usize..=5,
        0usize..=5,
        0usize..=19,
    )
        .prop_map(
            |(operand, trans, width, panels, short, kc, outer0, p0, ld_pad)| Block {
                operand,
                trans,
                width,
                // 1 ..= panels * width, ragged last panels included.
                len: (panels * width).saturating_sub(short).max(1),
                kc,
                outer0,
                p0,
                ld_pad,
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn packers_match_the_definition_and_the_plain_packer(b in block(), seed in any::<u32>()) {
        let outer_on_rows = (b.operand == PackedOperand::A) == (b.trans == Trans::N);
        let (rows, cols) = if outer_on_rows {
            (b.outer0 + b.len, b.p0 + b.kc)
        } else {
            (b.p0 + b.kc, b.outer0 + b.len)
        };
        let ld = cols + b.ld_pad;
        // Distinct values (including negative zero's neighbours) so any
        // misplaced float shows.
        let src: Vec<f32> = (0..rows * ld)
            .map(|i| ((i as u32).wrapping_mul(2654435761) ^ seed) as f32 * 1e-6 - 2000.0)
            .collect();
        let expected = packed_by_definition(
            b.operand, b.trans, &src, ld, b.outer0, b.len, b.p0, b.kc, b.width,
        );
        let fast = pack_for_tests(
            b.operand, b.trans, &src, ld, b.outer0, b.len, b.p0, b.kc, b.width, false,
        )
        .expect("the block lies inside src");
        let plain = pack_for_tests(
            b.operand, b.trans, &src, ld, b.outer0, b.len, b.p0, b.kc, b.width, true,
        )
        .expect("the block lies inside src");
        prop_assert_eq!(bits(&fast), bits(&expected));
        prop_assert_eq!(bits(&plain), bits(&expected));
    }
}

#[test]
fn out_of_range_blocks_are_refused() {
    let src = vec![0.0f32; 10 * 8];
    // Columns past the leading dimension.
    assert!(pack_for_tests(PackedOperand::A, Trans::N, &src, 8, 0, 4, 5, 4, 12, false).is_none());
    // Rows past the end of the slice.
    assert!(pack_for_tests(PackedOperand::B, Trans::N, &src, 8, 0, 4, 8, 3, 32, false).is_none());
    // Zero width.
    assert!(pack_for_tests(PackedOperand::B, Trans::T, &src, 8, 0, 4, 0, 3, 0, false).is_none());
    // The whole matrix is fine.
    assert!(pack_for_tests(PackedOperand::A, Trans::T, &src, 8, 0, 8, 0, 10, 12, true).is_some());
}
