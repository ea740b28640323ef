//! The capability experts of one task: expert `e` is a PEFT LoRA adapter on the shared
//! backbone plus a value head, an `nn.Linear(H, 1)` on the pooled state:
//!
//! ```text
//! h_e          = pool(backbone[LoRA_e](query, response))    # [H]
//! capability_e = v_e . h_e + b_e                             # one scalar per expert
//! ```
//!
//! An [`ExpertGroup`] holds the `k` experts of a task so that they run in ONE batched pass:
//! the batch is laid out expert-major (rows `e*n .. (e+1)*n` run expert `e`), the adapters are
//! stacked ([`AdapterGroup`]) and so are the heads ([`ValueHeads`]).

use burn::config::Config;
use burn::module::{Module, Param};
use burn::nn::Linear;
use burn::tensor::{Device, Tensor, TensorData};

use crate::backbones::{Backbone, TokenBatch};
use crate::bundle::keys;
use crate::error::{Error, Result};
use crate::kernels::batched_matmul;
use crate::lora::{AdapterGroup, LoraAdapter};
use crate::pooling::Pooling;
use crate::weights::{derived, load_linear, param, Scope, WriteScope};

/// The sizes of a task's experts.
#[derive(Config, Debug)]
pub struct ExpertGroupConfig {
    /// The backbone's hidden size `H`.
    pub hidden: usize,
    /// Number of experts `k`.
    pub experts: usize,
}

impl ExpertGroupConfig {
    /// `k` experts on the bare backbone whose heads have `nn.Linear`'s default initialisation
    /// (uniform with bound `1/sqrt(H)`).
    pub fn init(&self, device: &Device) -> ExpertGroup {
        let (k, h) = (self.experts, self.hidden);
        let bound = 1.0 / (h as f64).sqrt();
        let uniform = burn::tensor::Distribution::Uniform(-bound, bound);
        let heads = ValueHeads {
            weight: param(Tensor::random([k, h, 1], uniform, device)),
            bias: param(Tensor::random([k, 1, 1], uniform, device)),
        };
        ExpertGroup { adapter: None, heads }
    }

    /// Reads the `k` value heads and puts them beside the stacked adapters. `heads[e]` is
    /// where expert `e`'s head is: an `nn.Linear(H, 1)` (`weight` `[1, H]` and, when present,
    /// `bias` `[1]`), or with a row `r` row `r` of an `nn.Linear(H, labels)`.
    pub fn load(
        &self,
        adapter: Option<AdapterGroup>,
        heads: &[(Scope, Option<usize>)],
        device: &Device,
    ) -> Result<ExpertGroup> {
        let heads = heads
            .iter()
            .map(|(w, row)| match row {
                None => load_linear(w, self.hidden, 1, device),
                Some(r) => load_row(w, *r, self.hidden, device),
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(ExpertGroup { adapter, heads: ValueHeads::stack(&heads.iter().collect::<Vec<_>>()) })
    }
}

/// Row `row` of the `nn.Linear(H, labels)` at `w`, as an `nn.Linear(H, 1)`.
fn load_row(w: &Scope, row: usize, hidden: usize, device: &Device) -> Result<Linear> {
    let (values, shape) = w.read_f32(keys::WEIGHT, None)?;
    let labels = shape.first().copied().unwrap_or(0);
    if shape.len() != 2 || shape[1] != hidden || row >= labels {
        let (file, tensor) = (w.file().file.clone(), w.key(keys::WEIGHT));
        return Err(Error::Shape { file, tensor, expected: vec![row + 1, hidden], found: shape });
    }
    let weight =
        Tensor::from_data(TensorData::new(values[row * hidden..(row + 1) * hidden].to_vec(), [hidden, 1]), device);
    let bias = match w.contains(keys::BIAS) {
        true => {
            Some(Tensor::from_data(TensorData::new(vec![w.read_f32(keys::BIAS, Some(&[labels]))?.0[row]], [1]), device))
        }
        false => None,
    };
    Ok(crate::weights::linear(weight, bias))
}

/// The `k` value heads of a task's experts, stacked.
#[derive(Module, Debug)]
pub struct ValueHeads {
    /// `[k, H, 1]`
    weight: Param<Tensor<3>>,
    /// `[k, 1, 1]`
    bias: Param<Tensor<3>>,
}

impl ValueHeads {
    /// `k` heads `nn.Linear(H, 1)` (`weight` `[H, 1]`, `bias` `[1]` or none: 0) stacked; the
    /// result keeps the autodiff graph back to them.
    pub fn stack(heads: &[&Linear]) -> Self {
        let h = heads.first().map_or(0, |l| l.weight.dims()[0]);
        let weight = heads.iter().map(|l| l.weight.val().reshape([1, h, 1])).collect();
        let bias = heads
            .iter()
            .map(|l| match &l.bias {
                Some(b) => b.val().reshape([1, 1, 1]),
                None => Tensor::zeros([1, 1, 1], &l.weight.device()),
            })
            .collect();
        Self { weight: derived(Tensor::cat(weight, 0)), bias: derived(Tensor::cat(bias, 0)) }
    }

    /// Each expert's score of its own rows.
    ///
    /// # Shapes
    /// - pooled: `[k, n, H]` (expert-major), output: `[k, n]`
    pub fn forward(&self, pooled: Tensor<3>) -> Tensor<2> {
        let [k, n, _] = pooled.dims();
        (batched_matmul(pooled, self.weight.val()) + self.bias.val()).reshape([k, n])
    }

    /// Expert `e`'s head at `out` as PyTorch's `nn.Linear(H, 1)`: `weight` `[1, H]`, `bias` `[1]`.
    pub fn save(&self, e: usize, out: &mut WriteScope) -> Result<()> {
        let [_, h, _] = self.weight.dims();
        out.insert_tensor(keys::WEIGHT, self.weight.val().narrow(0, e, 1).reshape([1, h]))?;
        out.insert_tensor(keys::BIAS, self.bias.val().narrow(0, e, 1).reshape([1]))
    }
}

/// One capability expert as it is trained: a LoRA adapter and a value head `nn.Linear(H, 1)`.
#[derive(Module, Debug)]
pub struct Expert {
    adapter: LoraAdapter,
    head: Linear,
}

impl Expert {
    /// From its adapter and value head (`weight` `[H, 1]`, `bias` `[1]`).
    pub fn new(adapter: LoraAdapter, head: Linear) -> Self {
        Self { adapter, head }
    }

    pub fn adapter(&self) -> &LoraAdapter {
        &self.adapter
    }

    pub fn head(&self) -> &Linear {
        &self.head
    }
}

/// The `k` capability experts of one task, run side by side.
#[derive(Module, Debug)]
pub struct ExpertGroup {
    adapter: Option<AdapterGroup>,
    heads: ValueHeads,
}

impl ExpertGroup {
    /// Experts stacked to run in one pass (the result keeps the autodiff graph back to them).
    pub fn stack(experts: &[&Expert]) -> Self {
        let adapters: Vec<&LoraAdapter> = experts.iter().map(|e| &e.adapter).collect();
        let heads: Vec<&Linear> = experts.iter().map(|e| &e.head).collect();
        Self { adapter: AdapterGroup::stack_adapters(&adapters), heads: ValueHeads::stack(&heads) }
    }

    /// The stacked adapters (`None`: every expert on the bare backbone).
    pub fn adapter(&self) -> Option<&AdapterGroup> {
        self.adapter.as_ref()
    }

    /// Number of experts `k`.
    pub fn experts(&self) -> usize {
        self.heads.weight.dims()[0]
    }

    /// The value heads.
    pub fn heads(&self) -> &ValueHeads {
        &self.heads
    }

    /// The pooled state each expert gives each row of `batch`: one pass of `k x n` rows.
    ///
    /// The layers below the first one an adapter changes compute the same states for every
    /// expert (the default model adapts the top 2 of 6), so they run once on the `n` rows,
    /// whose states are then repeated for the `k` experts: the same numbers as `k x n` rows
    /// through every layer.
    ///
    /// # Shapes
    /// - batch: `[n, S]` token ids, output: `[k, n, H]` (expert-major)
    pub fn pooled(&self, backbone: &Backbone, batch: &TokenBatch, pooling: Pooling) -> Tensor<3> {
        let (k, n, h) = (self.experts(), batch.lengths.len(), backbone.hidden_size());
        let Some(adapter) = &self.adapter else {
            // bare experts (the labels of one head) all read the same states: one pass
            return backbone.pooled(batch, None, pooling).unsqueeze::<3>().expand([k, n, h]);
        };
        let shared = backbone.first_adapted_layer(adapter);
        // expert-major: rows e*n .. (e+1)*n run expert e
        let hidden = backbone.hidden_at(batch, shared, None).repeat_dim(0, k);
        let batch = batch.repeat(k);
        let states = backbone.forward_from(hidden, &batch, shared, Some(adapter));
        backbone.pool(states, &batch, pooling).reshape([k, n, h])
    }

    /// Each expert's capability score.
    ///
    /// # Shapes
    /// - pooled: `[k, n, H]` (from [`pooled`](Self::pooled)), output: `[k, n]`
    pub fn forward(&self, pooled: Tensor<3>) -> Tensor<2> {
        self.heads.forward(pooled)
    }
}
