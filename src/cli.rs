//! The command line: global flags, one subcommand per job. Later subcommands
//! (`run <experiment>`, `bench`, `report`) add a variant to [`Command`], an
//! arguments struct (flattening [`DataArgs`] if they read data) and an arm in [`run`].

use std::io::{self, Write};
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::data::{Dataset, Split, DEFAULT_DATA_DIR, NUM_CLASSES};
use crate::error::Error;
use crate::kernels::SIMD_LEVEL;

/// Fast CPU reproduction of six classic MNIST experiments.
#[derive(Debug, Parser)]
#[command(name = "vcortex", version, about)]
pub struct Cli {
    /// Worker threads for the rayon pool (0 = one per core, or RAYON_NUM_THREADS).
    #[arg(long, global = true, default_value_t = 0, value_name = "N")]
    pub threads: usize,

    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print the dataset's figures and the build's SIMD level and thread count.
    Info(InfoArgs),
}

/// Where the dataset lives; flattened into every command that reads data.
#[derive(Debug, Args)]
pub struct DataArgs {
    /// Directory holding the four IDX files (raw or .gz) in the MNIST naming;
    /// Fashion-MNIST and KMNIST directories work too.
    #[arg(long = "data", value_name = "DIR", default_value = DEFAULT_DATA_DIR)]
    pub dir: PathBuf,
}

/// Arguments of `vcortex info`.
#[derive(Debug, Args)]
pub struct InfoArgs {
    #[command(flatten)]
    pub data: DataArgs,
}

/// Configures the global thread pool, then runs the chosen command.
pub fn run(cli: Cli) -> Result<(), Error> {
    rayon::ThreadPoolBuilder::new()
        .num_threads(cli.threads)
        .build_global()
        .map_err(Error::ThreadPool)?;
    match cli.command {
        Command::Info(args) => info(&args),
    }
}

fn info(args: &InfoArgs) -> Result<(), Error> {
    let dataset = Dataset::load(&args.data.dir)?;
    let report = info_report(&dataset);
    // A closed stdout (e.g. `| head`) is not worth an error line.
    let _ = io::stdout().lock().write_all(report.as_bytes());
    Ok(())
}

/// The text `vcortex info` prints for `dataset`.
pub fn info_report(dataset: &Dataset) -> String {
    let (train, test) = (dataset.train(), dataset.test());
    let counts = |split: &Split<'_>| {
        split
            .label_counts()
            .iter()
            .map(|c| c.to_string())
            .collect::<Vec<_>>()
            .join(" ")
    };
    let mut out = String::new();
    let mut line = |key: &str, value: String| out.push_str(&format!("{key:<14}{value}\n"));
    line("dataset", dataset.dir().display().to_string());
    line(
        "train",
        format!("{} images of {}x{}", train.count, train.rows, train.cols),
    );
    line(
        "test",
        format!("{} images of {}x{}", test.count, test.rows, test.cols),
    );
    let classes = format!("0..{}", NUM_CLASSES - 1);
    line("train labels", format!("{classes} = {}", counts(&train)));
    line("test labels", format!("{classes} = {}", counts(&test)));
    line(
        "pixel mean",
        format!("{:.4} (train, scaled to [0, 1])", train.pixel_mean()),
    );
    line("simd", SIMD_LEVEL.to_string());
    line("threads", rayon::current_num_threads().to_string());
    out
}
