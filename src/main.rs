use std::process::ExitCode;

use clap::Parser;

/// Large blocks (weights, optimizer state, the dataset) on cache lines:
/// see `vcortex::alloc`.
#[global_allocator]
static ALLOCATOR: vcortex::alloc::LineAligned = vcortex::alloc::LineAligned;

fn main() -> ExitCode {
    let cli = vcortex::cli::Cli::parse();
    match vcortex::cli::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
