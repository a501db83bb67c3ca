fn main() {
    println!("vcortex (SIMD: {})", vcortex::kernels::SIMD_LEVEL);
}
