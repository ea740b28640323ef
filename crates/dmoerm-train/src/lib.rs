//! # dmoerm-train
//!
//! Training and evaluation of DMoERM reward models on burn autodiff (flex CPU or wgpu),
//! writing bundles that `dmoerm` loads:
//!
//! 1. [`pipeline::Pipeline::router`]: the task classifier on the user turns (cross-entropy);
//! 2. [`pipeline::Pipeline::phase1`]: per task, a LoRA adapter + value head on the overall
//!    preference (pairwise loss `-log sigmoid(r_better - r_worse)`);
//! 3. [`pipeline::Pipeline::phase2`]: per capability point, a LoRA expert + value head
//!    starting from the task's phase-1 ones, on that capability's labels;
//! 4. [`pipeline::Pipeline::phase3`]: backbone and experts frozen, the aggregator MLP on the
//!    overall preference;
//! 5. [`pipeline::Pipeline::all`]: the bundle, written by `dmoerm::bundle::write`.
//!
//! The paper's baselines (a single RM, ensembles) train in the same harness, and
//! `dmoerm_data::evaluate` scores any bundle the same way. Data files are read by
//! `dmoerm-data`.
//!
//! The model code is the scoring crate's: the same burn modules (`dmoerm::router::Router`,
//! `dmoerm::expert::Expert`, `dmoerm::aggregator::Aggregator`) in training mode, updated by
//! `burn::optim`'s Adam, checkpointed as burn records. Only the top `lora.layers` layers carry LoRA; the layers
//! below are frozen, so their output is computed once per distinct text and cached.

pub mod config;
pub mod error;
pub mod features;
pub mod host;
pub mod loss;
pub mod objectives;
pub mod pipeline;
pub mod plot;
mod progress;
pub mod trainer;

pub use config::TrainConfig;
pub use error::{Error, Result};
