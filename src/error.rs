//! The binary's top-level error: every failure a command can report, as one line.

use std::fmt;

use crate::data::DataError;
use crate::experiments::ExpError;

/// Any error a `vcortex` command reports (printed as `error: <message>`).
#[derive(Debug)]
pub enum Error {
    /// Loading a dataset failed.
    Data(DataError),
    /// The rayon thread pool could not be configured.
    ThreadPool(rayon::ThreadPoolBuildError),
    /// A setting outside what the command accepts (the flags themselves are
    /// checked by clap).
    Usage(String),
    /// An experiment, its training or its figures failed.
    Experiment(ExpError),
}

impl From<ExpError> for Error {
    fn from(e: ExpError) -> Self {
        Error::Experiment(e)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Data(e) => write!(f, "{e}"),
            Error::ThreadPool(e) => write!(f, "cannot configure the thread pool: {e}"),
            Error::Usage(message) => write!(f, "{message}"),
            Error::Experiment(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Data(e) => Some(e),
            Error::ThreadPool(e) => Some(e),
            Error::Usage(_) => None,
            Error::Experiment(e) => Some(e),
        }
    }
}

impl From<DataError> for Error {
    fn from(e: DataError) -> Self {
        Error::Data(e)
    }
}
