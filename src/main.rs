use std::process::ExitCode;

use clap::Parser;

/// Large blocks (weights, optimizer state, packing buffers) on cache lines,
/// the largest on huge pages: see `vcortex_kernels::alloc`.
#[global_allocator]
static ALLOCATOR: vcortex::kernels::alloc::LargeBlocksAligned =
    vcortex::kernels::alloc::LargeBlocksAligned;

fn main() -> ExitCode {
    let cli = vcortex::cli::Cli::parse();
    match vcortex::cli::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // Not eprintln!: a closed stderr must not turn the error into a panic.
            vcortex::note!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
