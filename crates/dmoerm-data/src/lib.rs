//! # dmoerm-data
//!
//! Preference data, as training and evaluation read it, with no training machinery (no
//! autodiff): any program that scores bundles can evaluate one.
//!
//! - [`preferences`]: the JSONL layouts (ranked, pairwise, capability pairs), every line
//!   checked with errors that name the file and the line;
//! - [`eval`]: how well a bundle orders preference data (pairwise accuracy, router accuracy,
//!   best-of-n);
//! - [`rng`]: the seeded generator that training and `dmoerm data synth` share.

pub mod eval;
pub mod preferences;
pub mod rng;

pub use eval::{evaluate, Report, Tally};
pub use preferences::{ordered_pairs, read_capability_pairs, read_preferences, CapabilityPair, Preference};

/// What can go wrong reading data or evaluating on it.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Loading or scoring with the model.
    #[error(transparent)]
    Model(#[from] dmoerm::Error),

    /// A line of a data file is not valid.
    #[error("{file}:{line}: {message}")]
    Data {
        /// The data file.
        file: String,
        /// 1-based line number (0: the file as a whole).
        line: usize,
        /// What is wrong.
        message: String,
    },

    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The path.
        path: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

/// `Result` with [`Error`].
pub type Result<T> = std::result::Result<T, Error>;
