//! The command line: global flags, one subcommand per job. Later subcommands
//! (`run <experiment>`, `bench`, `report`) add a variant to [`Command`], an
//! arguments struct (flattening [`DataArgs`] if they read data) and an arm in [`run`].

use std::io::{self, Write};
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::data::{Dataset, Split, DEFAULT_DATA_DIR, NUM_CLASSES};
use crate::error::Error;
use crate::experiments::{self, DaeSchemeArg, ExpError, Experiment, Options};
use crate::kernels::SIMD_LEVEL;

/// The most worker threads `--threads` (or RAYON_NUM_THREADS) may ask for.
/// The trainer gives each thread a share of one batch (128 images by
/// default), so more threads than images only wait, while each still starts
/// an OS thread and holds its own buffers: a mistyped count (100000) had
/// the machine creating threads for minutes instead of an error.
pub const MAX_THREADS: usize = 1024;

/// Fast CPU reproduction of six classic MNIST experiments.
#[derive(Debug, Parser)]
#[command(name = "vcortex", version, about)]
pub struct Cli {
    /// Worker threads for the rayon pool (0 = one per core, or RAYON_NUM_THREADS; at most 1024).
    #[arg(
        long,
        global = true,
        default_value_t = 0,
        value_name = "N",
        value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(0..=MAX_THREADS as u64)
    )]
    pub threads: usize,

    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print the dataset's figures and the build's SIMD level and thread count.
    Info(InfoArgs),
    /// Run an experiment of the study (or `all` of them) and rebuild the report.
    Run(RunArgs),
    /// Rebuild runs/report.html and runs/report.md from existing run folders.
    Report(ReportArgs),
    /// Time one epoch of each model and CNN inference; print a per-layer profile.
    Bench(BenchArgs),
}

/// Arguments of `vcortex bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    #[command(flatten)]
    pub data: DataArgs,
    /// Timed epochs per item (passes over the test set for inference); the median is shown.
    #[arg(
        long,
        alias = "repeat",
        value_name = "N",
        default_value_t = 1,
        allow_negative_numbers = true
    )]
    pub epochs: usize,
    /// Use the first N training images.
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub train_size: Option<usize>,
    /// Use the first N test images for inference.
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub test_size: Option<usize>,
    /// Minibatch size.
    #[arg(
        long,
        value_name = "N",
        default_value_t = 128,
        allow_negative_numbers = true
    )]
    pub batch_size: usize,
    /// Seed of the initialisation, shuffles and noise.
    #[arg(long, default_value_t = 1, allow_negative_numbers = true)]
    pub seed: u64,
    /// Only these items (comma-separated); the default is every item but
    /// dae2 and dae3.
    #[arg(long, value_delimiter = ',', value_name = "WORK", value_parser = WorkItemParser)]
    pub only: Vec<crate::bench::Work>,
    /// Skip the per-layer profile.
    #[arg(long)]
    pub no_profile: bool,
    /// Also write the results as JSON to FILE.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
}

/// One item of `bench --only`: clap's own enum parser (its list of possible
/// values and its "a similar value exists" tip), except for an empty item,
/// which that parser calls a missing value ("a value is required for
/// '--only'") when the list was empty or had two commas in a row or one
/// at an end.
#[derive(Clone, Copy, Debug)]
struct WorkItemParser;

impl clap::builder::TypedValueParser for WorkItemParser {
    type Value = crate::bench::Work;

    fn parse_ref(
        &self,
        cmd: &clap::Command,
        arg: Option<&clap::Arg>,
        value: &std::ffi::OsStr,
    ) -> Result<Self::Value, clap::Error> {
        if value.is_empty() {
            let names: Vec<&str> = crate::bench::Work::value_variants()
                .iter()
                .map(|w| w.name())
                .collect();
            let message = format!(
                "an empty item in the comma-separated list of '--only <WORK>' (an empty list, two commas in a \
                 row, or one at an end); the items are: {}\n",
                names.join(", ")
            );
            return Err(
                clap::Error::raw(clap::error::ErrorKind::InvalidValue, message).with_cmd(cmd),
            );
        }
        clap::builder::EnumValueParser::<crate::bench::Work>::new().parse_ref(cmd, arg, value)
    }

    fn possible_values(
        &self,
    ) -> Option<Box<dyn Iterator<Item = clap::builder::PossibleValue> + '_>> {
        Some(Box::new(
            crate::bench::Work::value_variants()
                .iter()
                .filter_map(ValueEnum::to_possible_value),
        ))
    }
}

/// Arguments of `vcortex run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Which experiment: a1, a2, a3, a-subset, b1, b2, b3, b-subset or all.
    #[arg(value_enum)]
    pub experiment: Experiment,
    #[command(flatten)]
    pub data: DataArgs,
    /// Root folder of the run folders.
    #[arg(long, value_name = "DIR", default_value = "runs")]
    pub out: PathBuf,
    /// Seed of every random draw (initialisation, shuffles, noise).
    #[arg(long, default_value_t = 1, allow_negative_numbers = true)]
    pub seed: u64,
    /// A reduced version of each experiment (few epochs on small subsets), for a smoke test.
    #[arg(long)]
    pub quick: bool,
    /// Continue each stage from its checkpoint; finished stages are kept.
    #[arg(long)]
    pub resume: bool,
    /// Epochs of every training run (per layer for DAE pre-training).
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub epochs: Option<usize>,
    /// Use the first N training images.
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub train_size: Option<usize>,
    /// Use the first N test images.
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub test_size: Option<usize>,
    /// Learning rate of every training run.
    #[arg(long, value_name = "LR", allow_hyphen_values = true, value_parser = parse_f32)]
    pub lr: Option<f32>,
    /// Momentum coefficient of b3's pre-training (the study's 0.1); a2 and
    /// a-subset compare the fixed values 0.1 and 0.9.
    #[arg(long, value_name = "GAMMA", allow_hyphen_values = true, value_parser = parse_f32)]
    pub momentum: Option<f32>,
    /// L2 weight decay inside the update.
    #[arg(long, value_name = "DECAY", allow_hyphen_values = true, value_parser = parse_f32)]
    pub decay: Option<f32>,
    /// Minibatch size.
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub batch_size: Option<usize>,
    /// DAE pre-training scheme of b1's and b3's stacks [default: image-space].
    #[arg(long, value_enum)]
    pub scheme: Option<DaeSchemeArg>,
    /// Stages of `run all` trained at once, each on THREADS / N threads, which fix its numbers [default or 0: THREADS / ceil(THREADS / 4)].
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub jobs: Option<usize>,
    /// No progress bars or lines.
    #[arg(long)]
    pub no_progress: bool,
}

/// Arguments of `vcortex report`.
#[derive(Debug, Args)]
pub struct ReportArgs {
    /// Root folder of the run folders.
    #[arg(long, value_name = "DIR", default_value = "runs")]
    pub out: PathBuf,
}

/// Where the dataset lives; flattened into every command that reads data.
#[derive(Debug, Args)]
pub struct DataArgs {
    /// Directory holding the four IDX files (raw or .gz) in the MNIST naming;
    /// Fashion-MNIST and KMNIST directories work too.
    #[arg(long = "data", value_name = "DIR", default_value = DEFAULT_DATA_DIR)]
    pub dir: PathBuf,
}

/// An f32 flag's value. A number that f32 cannot hold (1e-46 rounds to 0,
/// 1e39 to infinity) is refused as such, rather than checked later as the 0
/// or infinity it would become; NaN and infinities pass through to the
/// settings' own checks.
fn parse_f32(text: &str) -> Result<f32, String> {
    let wide: f64 = text
        .trim()
        .parse()
        .map_err(|_| format!("not a number: {text}"))?;
    let value = wide as f32;
    if wide.is_finite() && wide != 0.0 && (value == 0.0 || value.is_infinite()) {
        return Err(format!(
            "{text} is outside the range of 32-bit floats (about 1.4e-45 to 3.4e38)"
        ));
    }
    Ok(value)
}

/// Arguments of `vcortex info`.
#[derive(Debug, Args)]
pub struct InfoArgs {
    #[command(flatten)]
    pub data: DataArgs,
}

/// Configures the global thread pool, then runs the chosen command.
pub fn run(cli: Cli) -> Result<(), Error> {
    // Subnormals flushed on every compute thread (see the kernel's doc).
    crate::kernels::flush_subnormals_on_this_thread();
    check_thread_variable(cli.threads)?;
    crate::train::compute_pool_builder(cli.threads)
        .build_global()
        .map_err(Error::ThreadPool)?;
    let (threads, cores) = (
        rayon::current_num_threads(),
        std::thread::available_parallelism().map_or(1, |n| n.get()),
    );
    if threads > cores && !matches!(cli.command, Command::Report(_)) {
        crate::note!(
            "note: {threads} threads on {cores} cores: the threads take turns on the cores, \
             so the work is slower than with {cores}"
        );
    }
    match cli.command {
        Command::Info(args) => info(&args),
        Command::Run(args) => run_experiment(&args, cli.threads),
        Command::Bench(args) => bench(&args, cli.threads),
        Command::Report(args) => {
            if crate::train::folder_busy(&args.out) {
                crate::note!(
                    "note: a vcortex run is working in {}: this report shows the runs finished so \
                     far, and the run rebuilds it when it ends",
                    args.out.display()
                );
            }
            let paths = crate::report::build(&args.out).map_err(ExpError::from)?;
            print_out(&format!(
                "{}\n{}\n",
                paths.html.display(),
                paths.markdown.display()
            ))
        }
    }
}

/// With `--threads 0` rayon takes its count from RAYON_NUM_THREADS: the same
/// limit as the flag's applies, and a value that is not a number is refused
/// (rayon would silently use every core instead).
fn check_thread_variable(threads: usize) -> Result<(), Error> {
    if threads != 0 {
        return Ok(());
    }
    let Ok(value) = std::env::var("RAYON_NUM_THREADS") else {
        return Ok(());
    };
    // Parsed as rayon parses it (no trimming): " 4" would give every core.
    match value.parse::<usize>() {
        Ok(n) if n > MAX_THREADS => Err(Error::Usage(format!(
            "RAYON_NUM_THREADS={n}: at most {MAX_THREADS} worker threads"
        ))),
        Ok(_) => Ok(()),
        Err(_) if value.is_empty() => Ok(()),
        Err(_) => Err(Error::Usage(format!(
            "RAYON_NUM_THREADS={value}: not a thread count (0 or unset uses every core)"
        ))),
    }
}

fn run_experiment(args: &RunArgs, threads: usize) -> Result<(), Error> {
    let mut opts = Options::new(&args.data.dir, &args.out);
    opts.seed = args.seed;
    opts.threads = threads;
    opts.jobs = args.jobs.unwrap_or(0);
    opts.quick = args.quick;
    opts.resume = args.resume;
    opts.progress = !args.no_progress;
    opts.epochs = args.epochs;
    opts.train_size = args.train_size;
    opts.test_size = args.test_size;
    opts.lr = args.lr;
    opts.momentum = args.momentum;
    opts.decay = args.decay;
    opts.batch_size = args.batch_size;
    opts.scheme = args.scheme;
    // args_os: an argument that is not UTF-8 (a path) must not panic here.
    opts.command = std::env::args_os()
        .map(|a| shell_quote(&a.to_string_lossy()))
        .collect::<Vec<_>>()
        .join(" ");
    experiments::run(args.experiment, &opts)?;
    Ok(())
}

fn bench(args: &BenchArgs, threads: usize) -> Result<(), Error> {
    if let Some(path) = &args.json {
        crate::bench::check_json_target(path)?;
    }
    let dataset = Dataset::load(&args.data.dir)?;
    experiments::check_image_shape(&dataset)?;
    let opts = crate::bench::BenchOptions {
        threads: if threads > 0 {
            threads
        } else {
            rayon::current_num_threads()
        },
        epochs: args.epochs,
        train_size: args.train_size,
        test_size: args.test_size,
        batch_size: args.batch_size,
        seed: args.seed,
        only: if args.only.is_empty() {
            crate::bench::Work::ALL.to_vec()
        } else {
            args.only.clone()
        },
        profile: !args.no_profile,
    };
    let report = crate::bench::run(dataset.train(), dataset.test(), &opts)?;
    print_out(&crate::bench::render(&report))?;
    if let Some(path) = &args.json {
        crate::bench::write_json(&report, path)?;
    }
    Ok(())
}

fn info(args: &InfoArgs) -> Result<(), Error> {
    let dataset = Dataset::load(&args.data.dir)?;
    print_out(&info_report(&dataset))
}

/// `arg` as a POSIX shell reads it back: as it is when it holds only
/// characters no shell treats specially, else in single quotes (a quote
/// inside written as '\'').
fn shell_quote(arg: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "-_./=,:+@%".contains(c);
    if !arg.is_empty() && arg.chars().all(plain) {
        arg.to_string()
    } else {
        format!("'{}'", arg.replace('\'', "'\\''"))
    }
}

/// The words of a command line joined from [`shell_quote`]d arguments, each
/// still quoted: split at spaces outside single quotes (`'\''`, a quote
/// within a word, included).
pub fn shell_words(line: &str) -> Vec<&str> {
    let mut words = Vec::new();
    let (mut start, mut quoted, mut escaped) = (None, false, false);
    for (i, c) in line.char_indices() {
        if c == ' ' && !quoted && !escaped {
            if let Some(s) = start.take() {
                words.push(&line[s..i]);
            }
            continue;
        }
        start.get_or_insert(i);
        if escaped {
            escaped = false;
        } else if c == '\\' && !quoted {
            escaped = true;
        } else if c == '\'' {
            quoted = !quoted;
        }
    }
    if let Some(s) = start {
        words.push(&line[s..]);
    }
    words
}

/// One item of a recorded command line: `len` words from `start`, a flag
/// with its value (`--out DIR`: two words; `--out=DIR`: one) or a bare word.
pub struct CommandItem<'a> {
    pub start: usize,
    pub len: usize,
    /// The flag's name without its dashes; None for a bare word.
    pub flag: Option<&'a str>,
}

/// `words` (of [`shell_words`], the program first) as items. Which flags
/// take a value is the parser's own definition of `vcortex` and `run`.
pub fn command_items<'a>(words: &[&'a str]) -> Vec<CommandItem<'a>> {
    use clap::CommandFactory;
    let cli = Cli::command();
    let run = cli.find_subcommand("run");
    let takes_value = |name: &str| {
        cli.get_arguments()
            .chain(run.into_iter().flat_map(|r| r.get_arguments()))
            .find(|a| a.get_long() == Some(name))
            .is_some_and(|a| a.get_action().takes_values())
    };
    let mut items = Vec::new();
    let mut start = 0;
    while start < words.len() {
        let word = words[start];
        let flag = word
            .strip_prefix("--")
            .filter(|_| start > 0)
            .map(|f| f.split_once('=').map_or(f, |(name, _)| name));
        let len = match flag {
            Some(name) if !word.contains('=') && takes_value(name) => 2,
            _ => 1,
        };
        let len = len.min(words.len() - start);
        items.push(CommandItem { start, len, flag });
        start += len;
    }
    items
}

/// Writes a command's output to stdout. A reader that went away (`| head`)
/// ends it quietly; any other failure (a full disk) is an error, since the
/// output was the point of the command.
fn print_out(text: &str) -> Result<(), Error> {
    let mut out = io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() != io::ErrorKind::BrokenPipe => Err(Error::Usage(format!(
            "cannot write to standard output: {e}"
        ))),
        _ => Ok(()),
    }
}

/// Most pixel bytes `info` reads for its mean (256 MiB, under a second from
/// memory): MNIST's 47 MB whole, a larger training file sampled in
/// [`PIXEL_MEAN_RUNS`] runs of consecutive images (4 MiB each), evenly
/// spaced, long enough that the reads stream.
const PIXEL_MEAN_BYTES: usize = 1 << 28;
const PIXEL_MEAN_RUNS: usize = 64;

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
    let (mean, read) = train.pixel_mean_within(PIXEL_MEAN_BYTES, PIXEL_MEAN_RUNS);
    let sampled = if read < train.count {
        format!("; {read} of {} images, in evenly spaced runs", train.count)
    } else {
        String::new()
    };
    line(
        "pixel mean",
        format!("{mean:.4} (train, scaled to [0, 1]{sampled})"),
    );
    line("simd", SIMD_LEVEL.to_string());
    line("threads", rayon::current_num_threads().to_string());
    out
}

#[cfg(test)]
mod tests {
    use super::shell_quote;

    #[test]
    fn shell_quote_round_trips_through_sh() {
        assert_eq!(shell_quote("run"), "run");
        assert_eq!(shell_quote("--out=runs/a-1"), "--out=runs/a-1");
        assert_eq!(shell_quote(""), "''");
        assert_eq!(shell_quote("my runs"), "'my runs'");
        assert_eq!(shell_quote("it's $HOME"), "'it'\\''s $HOME'");
        // What sh makes of the quoted words is the original arguments.
        let args = [
            "plain",
            "with space",
            "quote'd",
            "$dollar",
            "back\\slash",
            "*",
        ];
        let line: Vec<String> = args.iter().map(|a| shell_quote(a)).collect();
        let script = format!("printf '%s\\n' {}", line.join(" "));
        if let Ok(out) = std::process::Command::new("sh")
            .args(["-c", &script])
            .output()
        {
            let printed = String::from_utf8_lossy(&out.stdout);
            assert_eq!(printed.lines().collect::<Vec<_>>(), args);
        }
    }
}
