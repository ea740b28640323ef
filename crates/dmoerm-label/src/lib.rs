//! # dmoerm-label
//!
//! DMoERM's cheap substitute for human capability annotation: for every prompt, every pair
//! of its responses and every capability point of its category, ask an LLM "which response
//! is better in terms of <capability>?" twice, as (A, B) and as (B, A), and keep the label
//! only when both orders agree. Dropped pairs are recorded with their reason.
//!
//! - [`categories`]: category -> capability points (the reference's five by default);
//! - [`prompt`]: the judge prompt templates;
//! - [`answer`]: parsing what the judge says;
//! - [`client`]: `POST {api-base}/chat/completions` with retries, backoff and a rate limit;
//! - [`job`]: the work list, the resumable ordered output, the run.

pub mod answer;
pub mod categories;
pub mod client;
pub mod job;
pub mod prompt;

/// Errors of a labeling run.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A line of an input file is not valid.
    #[error("{path}:{line}: {message}")]
    Line {
        /// The file.
        path: String,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// A configuration file (categories, templates) is not valid.
    #[error("{path}: {message}")]
    Config {
        /// The file.
        path: String,
        /// What is wrong.
        message: String,
    },
    /// Some items failed after every retry (they stay undone; re-run to retry them).
    #[error("{failed} items failed after all retries (last error: {last}); re-run the same command to retry them")]
    Failed {
        /// How many items.
        failed: usize,
        /// The last error seen.
        last: String,
    },
}

/// Result alias.
pub type Result<T, E = Error> = std::result::Result<T, E>;
