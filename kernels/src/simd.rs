//! Which SIMD path this build uses. `wide` picks its implementation at compile
//! time from the enabled target features, so this is a compile-time fact too.

/// The widest SIMD level compiled into this build, as a short name.
pub const SIMD_LEVEL: &str = if cfg!(all(target_arch = "x86_64", target_feature = "avx512f")) {
    "avx512f"
} else if cfg!(all(
    target_arch = "x86_64",
    target_feature = "avx2",
    target_feature = "fma"
)) {
    "avx2+fma"
} else if cfg!(all(target_arch = "x86_64", target_feature = "sse2")) {
    "sse2"
} else if cfg!(all(target_arch = "aarch64", target_feature = "neon")) {
    "neon"
} else {
    "scalar"
};
