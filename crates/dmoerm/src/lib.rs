//! # dmoerm
//!
//! Reward models as in DMoERM (*Recipes of Mixture-of-Experts for Effective Reward
//! Modeling*, arXiv 2403.01197), on [burn](https://burn.dev): the CPU (`flex`) and GPUs
//! (`wgpu`: Vulkan, Metal, DX12, WebGPU) run the same code.
//!
//! The pipeline, one module per part:
//! 1. [`text`]: the conversation rendered by the bundle's template, tokenized, truncated;
//! 2. [`backbones`]: a shared transformer (Llama family or BERT family) read from HF files;
//! 3. [`lora`]: PEFT LoRA adapters, all experts of a task batched in one pass;
//! 4. [`heads`]: the router, the capability value heads and the aggregator MLP;
//! 5. [`model`]: [`RewardModel`], which routes, scores and ranks;
//! 6. [`bundle`]: the manifest, directory and packed single-file bundles.
//!
//! ```no_run
//! use dmoerm::{Conversation, DeviceChoice, RewardModel};
//!
//! let model = RewardModel::load("models/default/model.dmoerm", DeviceChoice::Auto)?;
//! let score = model.score(&Conversation::new("What is the capital of France?", "Paris."))?;
//! println!("{} ({}): {:?}", score.reward, score.task, score.capabilities);
//! # Ok::<(), dmoerm::Error>(())
//! ```

pub mod backbones;
pub mod bundle;
pub mod device;
pub mod error;
pub mod heads;
#[cfg(not(target_family = "wasm"))]
pub mod kernels;
pub mod lora;
pub mod model;
pub mod text;
pub mod weights;

pub use bundle::{pack_bytes, Combine, HfCheckpoint, Manifest, PackDtype, PackReport, Pooling};
pub use device::DeviceChoice;
pub use error::{Error, Result, Stage};
pub use model::{Encodings, Ranked, RewardModel, Score};
pub use text::{Conversation, Encoded, Message, Role};

/// The burn device type, re-exported for [`RewardModel::load_on`].
pub use burn::tensor::Device;
