//! The outer layer: the router sends a conversation's user turns to one task category.
//!
//! ```text
//! probs = softmax(W pool(backbone[LoRA_router](user turns)) + b)    # [tasks]
//! task  = argmax(probs)                                             # top-1 route
//! ```
//!
//! The head is a PyTorch `nn.Linear(H, tasks)` (rows in the manifest's task order); the
//! optional adapter is a PEFT LoRA on the shared backbone.

use burn::config::Config;
use burn::module::Module;
use burn::nn::{Linear, LinearConfig};
use burn::tensor::activation::softmax;
use burn::tensor::{Device, Tensor};

use crate::backbones::{Backbone, TokenBatch};
use crate::error::Result;
use crate::lora::AdapterGroup;
use crate::pooling::Pooling;
use crate::weights::{load_linear, save_linear, Scope, WriteScope};

/// The router's sizes.
#[derive(Config, Debug)]
pub struct RouterConfig {
    /// The backbone's hidden size `H`.
    pub hidden: usize,
    /// Number of task categories.
    pub tasks: usize,
}

impl RouterConfig {
    /// A router on the bare backbone whose head has `nn.Linear`'s default initialisation
    /// (uniform with bound `1/sqrt(H)`).
    pub fn init(&self, device: &Device) -> Router {
        Router { adapter: None, head: LinearConfig::new(self.hidden, self.tasks).init(device) }
    }

    /// Reads the head at `w`: `weight` `[tasks, H]` and `bias` `[tasks]`.
    pub fn load(&self, adapter: Option<AdapterGroup>, w: &Scope, device: &Device) -> Result<Router> {
        Ok(Router { adapter, head: load_linear(w, self.hidden, self.tasks, device)? })
    }
}

/// The task classifier: an optional LoRA adapter on the backbone and a linear head.
#[derive(Module, Debug)]
pub struct Router {
    adapter: Option<AdapterGroup>,
    head: Linear,
}

impl Router {
    /// From a trained head (`weight` `[H, tasks]`, the transpose of PyTorch's) on the bare backbone.
    pub fn from_head(head: Linear) -> Self {
        Self { adapter: None, head }
    }

    /// The head.
    pub fn head(&self) -> &Linear {
        &self.head
    }

    /// Adds the head at `out` in PyTorch's layout (`weight` `[tasks, H]`).
    pub fn save(&self, out: &mut WriteScope) -> Result<()> {
        save_linear(&self.head, out)
    }

    /// Task probabilities of each row of `batch`.
    ///
    /// # Shapes
    /// - batch: `[N, S]` token ids, output: `[N, tasks]`
    pub fn forward(&self, backbone: &Backbone, batch: &TokenBatch, pooling: Pooling) -> Tensor<2> {
        softmax(self.logits(backbone.pooled(batch, self.adapter.as_ref(), pooling)), 1)
    }

    /// The scores before the softmax, from pooled states.
    ///
    /// # Shapes
    /// - pooled: `[N, H]`, output: `[N, tasks]`
    pub fn logits(&self, pooled: Tensor<2>) -> Tensor<2> {
        crate::kernels::linear_layer(&self.head, pooled)
    }
}
