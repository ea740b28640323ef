//! The inner layer: one task category, its capability experts and how their outputs become
//! the reward.
//!
//! ```text
//! h_e          = pool(backbone[LoRA_e](query, response)),  e = 1..k   # one batched pass
//! capability_e = value_head_e(h_e)
//! reward       = aggregator([h_1; ...; h_k])       # or combine(capability_1..k) for an ensemble,
//!                                                  # or capability_1 for a single expert
//! ```

use burn::module::Module;
use burn::tensor::Tensor;

use crate::aggregator::{Aggregator, Combine};
use crate::backbones::{Backbone, TokenBatch};
use crate::expert::ExpertGroup;
use crate::pooling::Pooling;

/// One task category.
#[derive(Module, Debug)]
pub struct Task {
    /// The task's name.
    #[module(skip)]
    pub name: String,
    /// Its capability points, in the experts' (and the aggregator's input) order.
    #[module(skip)]
    pub capabilities: Vec<String>,
    /// The `k` experts.
    pub experts: ExpertGroup,
    /// The aggregator MLP (a task with several experts).
    pub aggregator: Option<Aggregator>,
    /// Instead of an aggregator: how an ensemble combines its members' scores.
    #[module(skip)]
    pub combine: Option<Combine>,
}

impl Task {
    /// The experts' pooled states of `batch` (see [`ExpertGroup::pooled`]).
    ///
    /// # Shapes
    /// - batch: `[n, S]`, output: `[k, n, H]`
    pub fn pooled(&self, backbone: &Backbone, batch: &TokenBatch, pooling: Pooling) -> Tensor<3> {
        self.experts.pooled(backbone, batch, pooling)
    }

    /// The capabilities and, with an aggregator, the rewards on the device.
    ///
    /// # Shapes
    /// - pooled: `[k, n, H]`, output: (`[k, n]`, `[n]` or `None` without an aggregator)
    pub fn forward(&self, pooled: Tensor<3>) -> (Tensor<2>, Option<Tensor<1>>) {
        let rewards = self.aggregator.as_ref().map(|a| a.forward(pooled.clone()));
        (self.experts.forward(pooled), rewards)
    }

    /// The rewards of `n` rows from their capabilities when the task has no aggregator: the
    /// combine rule of an ensemble, else the first (only) expert's score.
    pub fn combine_rewards(&self, caps: &[f32], n: usize) -> Vec<f32> {
        let k = self.capabilities.len();
        match self.combine {
            Some(rule) => (0..n).map(|j| rule.apply(&(0..k).map(|e| caps[e * n + j]).collect::<Vec<_>>())).collect(),
            None => caps[..n].to_vec(),
        }
    }
}
