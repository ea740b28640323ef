//! # dmoerm-synth
//!
//! `dmoerm data synth`: a multi-task preference benchmark made from real text, with every
//! response's quality on every capability point known, noisy training ranks like human
//! annotation, and capability labels made as `dmoerm label` makes them. Documented in
//! `docs/benchmark.md`.

pub mod generate;
pub mod sources;
pub mod tasks;

use std::path::Path;

pub use generate::{synth, Benchmark, Options, Sources};

/// What can go wrong.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Source(String),
}

pub type Result<T> = std::result::Result<T, Error>;

/// The fortune files used (Debian `fortunes`): sayings, quotations and jokes.
pub const FORTUNE_FILES: [&str; 8] =
    ["fortunes", "literature", "wisdom", "people", "humorists", "science", "education", "work"];

/// Reads the three sources.
pub fn read_sources(wordnet: &Path, chitchat: &Path, fortunes: &Path) -> Result<Sources> {
    Ok(Sources {
        senses: sources::read_wordnet(wordnet)?,
        exchanges: sources::read_chitchat(chitchat)?,
        sayings: sources::read_fortunes(fortunes, &FORTUNE_FILES)?,
    })
}

/// Writes the benchmark files into `out`.
pub fn write(out: &Path, b: &Benchmark) -> Result<()> {
    std::fs::create_dir_all(out).map_err(|source| Error::Io { path: out.display().to_string(), source })?;
    for (name, lines) in generate::files(b) {
        let path = out.join(name);
        let mut text = lines.join("\n");
        text.push('\n');
        std::fs::write(&path, text).map_err(|source| Error::Io { path: path.display().to_string(), source })?;
    }
    Ok(())
}
