use std::process::ExitCode;

use clap::Parser;

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
