//! # dmoerm
//!
//! Reward models as in DMoERM (*Recipes of Mixture-of-Experts for Effective Reward
//! Modeling*, arXiv 2403.01197), on [burn](https://burn.dev): the CPU (`flex`) and GPUs
//! (`wgpu`: Vulkan, Metal, DX12, WebGPU) run the same code.
//!
//! The method, one file per part (ARCHITECTURE.md draws the data flow):
//! 1. [`text`]: the conversation rendered by the bundle's template, tokenized, truncated;
//! 2. [`backbones`]: a shared transformer (Llama family or BERT family) read from HF files,
//!    and [`pooling`]: the hidden state that stands for a sequence;
//! 3. [`router`]: the outer layer, a classifier of the user turns over the task categories;
//! 4. [`task`]: the inner layer, one task's [`expert`]s (a LoRA adapter from [`lora`] and a
//!    value head each, all `k` run in one batched pass) and its [`aggregator`] MLP;
//! 5. [`model`]: [`RewardModel`], which routes, scores and ranks;
//! 6. [`bundle`]: the manifest, reading and writing directory and packed single-file bundles.
//!
//! The router, experts and aggregator are burn modules (`Module` + `Config` with `init`),
//! which load and save themselves under a key prefix; the trainer trains the same types.
//!
//! ```no_run
//! use dmoerm::{Conversation, DeviceChoice, RewardModel};
//!
//! let model = RewardModel::load("models/default/model.dmoerm", DeviceChoice::Auto)?;
//! let score = model.score(&Conversation::new("What is the capital of France?", "Paris."))?;
//! println!("{} ({}): {:?}", score.reward, score.task, score.capabilities);
//! # Ok::<(), dmoerm::Error>(())
//! ```

pub mod aggregator;
pub mod backbones;
pub mod bundle;
pub mod chat_template;
pub mod device;
pub mod error;
pub mod expert;
pub mod kernels;
pub mod lora;
pub mod model;
pub mod pooling;
pub mod router;
pub mod task;
pub mod text;
pub mod weights;

/// Int8 and 4-bit matrices and their matmul kernels (the `dmoerm-quant` crate).
pub use dmoerm_quant as quant;

pub use bundle::{pack_bytes, Combine, HfCheckpoint, Manifest, PackDtype, PackReport, Pooling};
pub use device::DeviceChoice;
pub use error::{Error, Result, Stage};
pub use model::{Encodings, Ranked, RewardModel, Score};
pub use text::{Conversation, ConversationInput, Encoded, Message, Role};
pub use weights::{LoadOptions, Quantize};

/// The burn device type, re-exported for [`RewardModel::load_on`].
pub use burn::tensor::Device;
