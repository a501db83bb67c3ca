//! Property tests of the IDX parser: arbitrary bytes and mutated real headers
//! always give an error or a self-consistent header, never a panic.

use proptest::prelude::*;
use vcortex::data::{parse_idx, parse_idx_header, IdxError, IdxFile, IdxRole};

/// The real header of MNIST's train images (60000 x 28 x 28).
const MNIST_IMAGES_HEADER: [u8; 16] = [
    0x00, 0x00, 0x08, 0x03, 0x00, 0x00, 0xea, 0x60, 0x00, 0x00, 0x00, 0x1c, 0x00, 0x00, 0x00, 0x1c,
];
/// The real header of MNIST's train labels (60000).
const MNIST_LABELS_HEADER: [u8; 8] = [0x00, 0x00, 0x08, 0x01, 0x00, 0x00, 0xea, 0x60];

/// A small valid file built on a real header: 3 images of 28x28, or 3 labels.
fn small_file(header: &[u8]) -> Vec<u8> {
    let mut bytes = header.to_vec();
    bytes[4..8].copy_from_slice(&3u32.to_be_bytes());
    let payload = if header.len() == 16 { 3 * 784 } else { 3 };
    bytes.extend((0..payload).map(|i| i as u8));
    bytes
}

/// Checks what every successful parse must satisfy.
fn assert_consistent(bytes: &[u8], header: &vcortex::data::IdxHeader) {
    assert_eq!(header.header_len, 4 + 4 * header.dims.len());
    assert!(header.header_len <= bytes.len());
    assert_eq!(bytes[3] as usize, header.dims.len());
    let product = header
        .dims
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d));
    assert_eq!(product, Some(header.data_len));
    for (i, &d) in header.dims.iter().enumerate() {
        let offset = 4 + 4 * i;
        let raw = u32::from_be_bytes(bytes[offset..offset + 4].try_into().unwrap());
        assert_eq!(raw as usize, d);
    }
}

#[test]
fn every_truncation_of_a_real_file_is_an_error() {
    for header in [&MNIST_IMAGES_HEADER[..], &MNIST_LABELS_HEADER[..]] {
        let file = small_file(header);
        assert!(parse_idx(&file).is_ok());
        for cut in 0..file.len() {
            let err = parse_idx(&file[..cut]).unwrap_err();
            if cut < header.len() {
                assert!(
                    matches!(err, IdxError::TruncatedHeader { found, .. } if found == cut),
                    "cut {cut}: {err}"
                );
            } else {
                assert_eq!(
                    err,
                    IdxError::LengthMismatch {
                        expected: file.len(),
                        found: cut
                    }
                );
            }
        }
        let mut longer = file.clone();
        longer.push(0);
        assert!(matches!(
            parse_idx(&longer),
            Err(IdxError::LengthMismatch { .. })
        ));
    }
}

#[test]
fn other_idx_type_codes_are_unsupported_not_garbage() {
    for code in [0x09u8, 0x0B, 0x0C, 0x0D, 0x0E] {
        let mut file = small_file(&MNIST_LABELS_HEADER);
        file[2] = code;
        let err = parse_idx(&file).unwrap_err();
        assert_eq!(err, IdxError::UnsupportedElementType { code });
        assert!(
            err.to_string().contains("unsupported element type"),
            "{err}"
        );
    }
    for code in [0x00u8, 0x07, 0x0A, 0x0F, 0xFF] {
        let mut file = small_file(&MNIST_LABELS_HEADER);
        file[2] = code;
        assert!(matches!(parse_idx(&file), Err(IdxError::BadMagic { .. })));
    }
}

#[test]
fn the_real_headers_parse_to_the_mnist_shapes() {
    let images = parse_idx_header(&MNIST_IMAGES_HEADER).unwrap();
    assert_eq!(images.dims, vec![60000, 28, 28]);
    assert_eq!(images.file_len(), 16 + 60000 * 784);
    assert!(images.check_role(IdxRole::Images).is_ok());
    assert!(images.check_role(IdxRole::Labels).is_err());
    let labels = parse_idx_header(&MNIST_LABELS_HEADER).unwrap();
    assert_eq!((labels.dims.clone(), labels.data_len), (vec![60000], 60000));
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
        if let Ok(header) = parse_idx_header(&bytes) {
            assert_consistent(&bytes, &header);
        }
        if let Ok(header) = parse_idx(&bytes) {
            prop_assert_eq!(header.file_len(), bytes.len());
        }
        let _ = IdxFile::from_bytes("arbitrary".into(), bytes);
    }

    #[test]
    fn arbitrary_bytes_behind_a_valid_prefix_never_panic(
        dims in 1u8..5,
        rest in proptest::collection::vec(any::<u8>(), 0..48),
    ) {
        // Reach deeper than random magic numbers usually do.
        let mut bytes = vec![0, 0, 0x08, dims];
        bytes.extend(rest);
        match parse_idx(&bytes) {
            Ok(header) => {
                assert_consistent(&bytes, &header);
                prop_assert_eq!(header.file_len(), bytes.len());
            }
            Err(err) => prop_assert!(!err.to_string().contains('\n')),
        }
    }

    #[test]
    fn mutated_real_headers_give_an_error_or_a_consistent_header(
        images in any::<bool>(),
        mutations in proptest::collection::vec((0usize..16, any::<u8>()), 1..4),
        cut in proptest::option::of(0usize..3000),
    ) {
        let header = if images { &MNIST_IMAGES_HEADER[..] } else { &MNIST_LABELS_HEADER[..] };
        let mut file = small_file(header);
        for (offset, value) in mutations {
            let offset = offset % header.len();
            file[offset] = value;
        }
        if let Some(cut) = cut {
            file.truncate(cut);
        }
        if let Ok(parsed) = parse_idx(&file) {
            assert_consistent(&file, &parsed);
            prop_assert_eq!(parsed.file_len(), file.len());
        }
        if let Err(err) = IdxFile::from_bytes("mutated".into(), file) {
            prop_assert!(err.to_string().starts_with("mutated: "));
        }
    }

    #[test]
    fn dimension_products_are_overflow_checked(
        dims in proptest::collection::vec(prop_oneof![Just(0u32), Just(u32::MAX), any::<u32>()], 1..5),
    ) {
        let mut bytes = vec![0, 0, 0x08, dims.len() as u8];
        for d in &dims {
            bytes.extend_from_slice(&d.to_be_bytes());
        }
        let header_len = bytes.len() as u128;
        // Exact in u128 saturating arithmetic: 4 u32 factors fit in 128 bits.
        let product: u128 = dims.iter().fold(1u128, |acc, &d| acc.saturating_mul(d as u128));
        let fits = product.checked_add(header_len).is_some_and(|t| t <= usize::MAX as u128);
        match parse_idx_header(&bytes) {
            Ok(header) => {
                prop_assert!(fits);
                prop_assert_eq!(header.data_len as u128, product);
                // The payload is absent, so the whole-file check must fail without allocating.
                if header.data_len > 0 {
                    let is_length_mismatch =
                        matches!(parse_idx(&bytes), Err(IdxError::LengthMismatch { .. }));
                    prop_assert!(is_length_mismatch);
                }
            }
            Err(err) => {
                prop_assert!(!fits, "{}", err);
                prop_assert_eq!(err, IdxError::SizeOverflow { dims: dims.clone() });
            }
        }
    }
}

#[test]
fn a_zero_dimension_after_huge_ones_is_an_empty_payload() {
    let mut bytes = vec![0, 0, 0x08, 4];
    for d in [u32::MAX, u32::MAX, u32::MAX, 0] {
        bytes.extend_from_slice(&d.to_be_bytes());
    }
    let header = parse_idx(&bytes).unwrap();
    assert_eq!((header.data_len, header.file_len()), (0, 20));
}

#[test]
fn three_maximal_dimensions_overflow() {
    let mut bytes = vec![0, 0, 0x08, 3];
    for _ in 0..3 {
        bytes.extend_from_slice(&u32::MAX.to_be_bytes());
    }
    let err = parse_idx_header(&bytes).unwrap_err();
    assert!(matches!(err, IdxError::SizeOverflow { .. }));
    assert_eq!(
        err.to_string(),
        "dimensions 4294967295x4294967295x4294967295 overflow the addressable size"
    );
}
