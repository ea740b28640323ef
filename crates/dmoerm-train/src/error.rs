//! The trainer's error type.

use thiserror::Error;

/// What can go wrong reading data or a config, or running a phase.
#[derive(Debug, Error)]
pub enum Error {
    /// Loading the backbone, a bundle, or scoring.
    #[error(transparent)]
    Model(#[from] dmoerm::Error),

    /// Reading a data file.
    #[error(transparent)]
    Read(#[from] dmoerm_data::Error),

    /// A line of a data file is not valid.
    #[error("{file}:{line}: {message}")]
    Data {
        /// The data file.
        file: String,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        message: String,
    },

    /// The training config is not valid.
    #[error("{file}: {message}")]
    Config {
        /// The config file.
        file: String,
        /// What is wrong.
        message: String,
    },

    /// A file could not be read or written.
    #[error("cannot {action} {path}: {source}")]
    Io {
        /// `read`, `write`, `create`...
        action: &'static str,
        /// The path.
        path: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },

    /// A checkpoint or run directory is not what this run expects.
    #[error("{path}: {message}")]
    Run {
        /// The file or directory.
        path: String,
        /// What is wrong.
        message: String,
    },
}

/// `Result` with [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub(crate) fn io(action: &'static str, path: &std::path::Path) -> impl FnOnce(std::io::Error) -> Error {
        let path = path.display().to_string();
        move |source| Error::Io { action, path, source }
    }

    pub(crate) fn run(path: &std::path::Path, message: impl Into<String>) -> Error {
        Error::Run { path: path.display().to_string(), message: message.into() }
    }
}
