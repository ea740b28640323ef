//! The one error type of the crate.

use thiserror::Error;

/// Everything that can go wrong loading a bundle or scoring with it.
///
/// Bundle errors name the file (its path inside the bundle) and, where there is one,
/// the tensor, so a broken bundle can be fixed without a debugger.
#[derive(Debug, Error)]
pub enum Error {
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },

    /// A JSON file (manifest, HF `config.json`, PEFT `adapter_config.json`) is not valid.
    #[error("invalid JSON in {file}: {message}")]
    Json {
        /// The file inside the bundle.
        file: String,
        /// What serde said.
        message: String,
    },

    /// A safetensors file is not valid (truncated, bad header...).
    #[error("invalid safetensors file {file}: {message}")]
    Safetensors {
        /// The file inside the bundle.
        file: String,
        /// What the parser said.
        message: String,
    },

    /// A tensor the model needs is not in the file.
    #[error("{file}: missing tensor `{tensor}`")]
    MissingTensor {
        /// The file inside the bundle.
        file: String,
        /// The tensor name.
        tensor: String,
    },

    /// A tensor has the wrong shape.
    #[error("{file}: tensor `{tensor}` has shape {found:?}, expected {expected:?}")]
    Shape {
        /// The file inside the bundle.
        file: String,
        /// The tensor name.
        tensor: String,
        /// Shape the model expects.
        expected: Vec<usize>,
        /// Shape in the file.
        found: Vec<usize>,
    },

    /// A tensor has a dtype other than f32, f16 or bf16.
    #[error("{file}: tensor `{tensor}` has dtype {dtype}, expected F32, F16 or BF16")]
    Dtype {
        /// The file inside the bundle.
        file: String,
        /// The tensor name.
        tensor: String,
        /// The dtype in the file.
        dtype: String,
    },

    /// A tensor in a file does not belong to anything the model knows (a LoRA weight for a
    /// module the backbone does not have, for example).
    #[error("{file}: unexpected tensor `{tensor}`: {reason}")]
    UnexpectedTensor {
        /// The file inside the bundle.
        file: String,
        /// The tensor name.
        tensor: String,
        /// Why it does not fit.
        reason: String,
    },

    /// The bundle is inconsistent (manifest vs files, categories vs heads...).
    #[error("invalid bundle ({file}): {message}")]
    Bundle {
        /// The file inside the bundle the problem was found in.
        file: String,
        /// What is wrong.
        message: String,
    },

    /// A valid model file that uses a feature this crate does not implement.
    #[error("unsupported ({file}): {message}")]
    Unsupported {
        /// The file inside the bundle.
        file: String,
        /// What is not supported.
        message: String,
    },

    /// The tokenizer failed to load or to encode.
    #[error("tokenizer: {0}")]
    Tokenizer(String),

    /// Bad input from the caller (an empty conversation, no candidates...).
    #[error("invalid input: {0}")]
    Input(String),

    /// The requested device could not be opened.
    #[error("device: {0}")]
    Device(String),

    /// The compute backend failed (out of memory, lost device, failed read-back).
    #[error("backend: {0}")]
    Backend(String),

    /// The model gave a NaN or infinite number: a score is never reported as one.
    #[error("{bundle}: the {stage} gave a non-finite value ({what} = {value}); the weights or the input overflow")]
    NonFinite {
        /// The bundle (its path, or the name a packed bundle was loaded under).
        bundle: String,
        /// The first stage of the model whose output was not finite.
        stage: Stage,
        /// Which output: a task's probability, a capability, the reward.
        what: String,
        /// The value (NaN, inf or -inf).
        value: f32,
    },
}

/// A stage of the double-layer mixture, in the order a score passes through them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// The outer layer: the router's task probabilities.
    Router,
    /// The inner layer: a capability expert's value head.
    Expert,
    /// The task's aggregator (or the ensemble's combine rule).
    Aggregator,
}

impl std::fmt::Display for Stage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Stage::Router => "router",
            Stage::Expert => "expert",
            Stage::Aggregator => "aggregator",
        })
    }
}

/// Result alias of the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn json(file: &str, err: impl std::fmt::Display) -> Self {
        Error::Json { file: file.to_string(), message: err.to_string() }
    }

    pub(crate) fn bundle(file: &str, message: impl Into<String>) -> Self {
        Error::Bundle { file: file.to_string(), message: message.into() }
    }

    pub(crate) fn unsupported(file: &str, message: impl Into<String>) -> Self {
        Error::Unsupported { file: file.to_string(), message: message.into() }
    }
}
