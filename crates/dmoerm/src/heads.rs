//! The small heads on top of the pooled hidden state `h` (`[N, H]`):
//! - [`RouterHead`]: `softmax(h W^T + b)` over the task categories;
//! - [`ValueHeads`]: each capability expert's scalar score, all `k` heads of a task at once;
//! - [`Aggregator`]: the task's MLP over the `k` experts' concatenated hidden states,
//!   `Linear(k*H -> H) -> PReLU -> Linear(H -> 1)`, whose output is the reward.
//!
//! Heads are stored as PyTorch `nn.Linear` weights: `<prefix>weight` `[out, in]` and an
//! optional `<prefix>bias` `[out]`. The aggregator is an `nn.Sequential` state dict:
//! `0.weight, 0.bias` (Linear), `1.weight` (PReLU, 1 or H slopes), `2.weight, 2.bias` (Linear).

use burn::tensor::activation::{prelu, softmax};
use burn::tensor::{Device, Tensor, TensorData};

use crate::error::{Error, Result};
use crate::weights::TensorFile;

/// A dense layer read from a head file.
#[derive(Debug, Clone)]
pub(crate) struct Dense {
    /// `[in, out]`
    pub weight: Tensor<2>,
    pub bias: Option<Tensor<1>>,
}

impl Dense {
    /// `weight`: `[in, out]`.
    pub fn new(weight: Tensor<2>, bias: Option<Tensor<1>>) -> Self {
        Self { weight, bias }
    }

    /// Reads `<prefix>weight` (`[out, in]`) and `<prefix>bias` if present.
    pub fn load(file: &TensorFile, prefix: &str, d_in: usize, d_out: usize, device: &Device) -> Result<Self> {
        let weight = file.linear_weight(&format!("{prefix}weight"), d_in, d_out, device)?;
        let bias_name = format!("{prefix}bias");
        let bias = if file.contains(&bias_name) { Some(file.tensor(&bias_name, [d_out], device)?) } else { None };
        Ok(Self { weight, bias })
    }

    pub fn forward(&self, x: Tensor<2>) -> Tensor<2> {
        burn::tensor::module::linear(x, self.weight.clone(), self.bias.clone())
    }
}

/// The router's classifier over task categories.
#[derive(Debug, Clone)]
pub struct RouterHead {
    dense: Dense,
}

impl RouterHead {
    pub(crate) fn load(file: &TensorFile, prefix: &str, hidden: usize, tasks: usize, device: &Device) -> Result<Self> {
        Ok(Self { dense: Dense::load(file, prefix, hidden, tasks, device)? })
    }

    /// From tensors: `weight` `[H, tasks]` (the transpose of PyTorch's), `bias` `[tasks]`.
    pub fn new(weight: Tensor<2>, bias: Option<Tensor<1>>) -> Self {
        Self { dense: Dense::new(weight, bias) }
    }

    /// # Shapes
    /// - pooled: `[N, H]`, output: `[N, tasks]` probabilities
    pub fn forward(&self, pooled: Tensor<2>) -> Tensor<2> {
        softmax(self.logits(pooled), 1)
    }

    /// The scores before the softmax.
    ///
    /// # Shapes
    /// - pooled: `[N, H]`, output: `[N, tasks]`
    pub fn logits(&self, pooled: Tensor<2>) -> Tensor<2> {
        self.dense.forward(pooled)
    }
}

/// The `k` value heads of a task's experts, stacked.
#[derive(Debug, Clone)]
pub struct ValueHeads {
    /// `[k, H, 1]`
    weight: Tensor<3>,
    /// `[k, 1, 1]`
    bias: Tensor<3>,
}

impl ValueHeads {
    /// From tensors: `weight` `[k, H, 1]`, `bias` `[k, 1, 1]`.
    pub fn new(weight: Tensor<3>, bias: Tensor<3>) -> Self {
        Self { weight, bias }
    }

    /// Stacks one `nn.Linear(H, 1)` per expert; `heads[e] = (file, prefix)`.
    pub(crate) fn load(heads: &[(&TensorFile, &str)], hidden: usize, device: &Device) -> Result<Self> {
        let k = heads.len();
        let mut w = Vec::with_capacity(k * hidden);
        let mut b = Vec::with_capacity(k);
        for (file, prefix) in heads {
            let (values, _) = file.read_f32(&format!("{prefix}weight"), Some(&[1, hidden]))?;
            w.extend(values);
            let bias_name = format!("{prefix}bias");
            b.push(if file.contains(&bias_name) { file.read_f32(&bias_name, Some(&[1]))?.0[0] } else { 0.0 });
        }
        Ok(Self {
            weight: Tensor::from_data(TensorData::new(w, [k, hidden, 1]), device),
            bias: Tensor::from_data(TensorData::new(b, [k, 1, 1]), device),
        })
    }

    /// Each expert's score of its own rows.
    ///
    /// # Shapes
    /// - pooled: `[k, n, H]` (expert-major), output: `[k, n]`
    pub fn forward(&self, pooled: Tensor<3>) -> Tensor<2> {
        let [k, n, _] = pooled.dims();
        (pooled.matmul(self.weight.clone()) + self.bias.clone()).reshape([k, n])
    }
}

/// The task's aggregator MLP.
#[derive(Debug, Clone)]
pub struct Aggregator {
    fc1: Dense,
    /// PReLU slopes: `[1]` or `[H]`.
    slope: Tensor<1>,
    fc2: Dense,
}

impl Aggregator {
    /// From tensors: `fc1` `[k*H, H]` + `[H]`, PReLU `slope` `[1]` or `[H]`, `fc2` `[H, 1]` + `[1]`
    /// (weights as `[in, out]`, the transpose of PyTorch's).
    pub fn new(fc1: (Tensor<2>, Tensor<1>), slope: Tensor<1>, fc2: (Tensor<2>, Tensor<1>)) -> Self {
        Self { fc1: Dense::new(fc1.0, Some(fc1.1)), slope, fc2: Dense::new(fc2.0, Some(fc2.1)) }
    }

    pub(crate) fn load(
        file: &TensorFile,
        prefix: &str,
        experts: usize,
        hidden: usize,
        device: &Device,
    ) -> Result<Self> {
        let fc1 = Dense::load(file, &format!("{prefix}0."), experts * hidden, hidden, device)?;
        let slope_name = format!("{prefix}1.weight");
        let (slopes, shape) = file.read_f32(&slope_name, None)?;
        if !(shape == [1] || shape == [hidden]) {
            return Err(Error::Shape {
                file: file.file.clone(),
                tensor: slope_name,
                expected: vec![hidden],
                found: shape,
            });
        }
        let n = slopes.len();
        let slope = Tensor::from_data(TensorData::new(slopes, [n]), device);
        let fc2 = Dense::load(file, &format!("{prefix}2."), hidden, 1, device)?;
        Ok(Self { fc1, slope, fc2 })
    }

    /// # Shapes
    /// - pooled: `[k, n, H]` (expert-major), output: `[n]` rewards
    pub fn forward(&self, pooled: Tensor<3>) -> Tensor<1> {
        let [k, n, h] = pooled.dims();
        // concat over experts in manifest order: row j = [h_0(j), h_1(j), ..., h_{k-1}(j)]
        let x = pooled.swap_dims(0, 1).reshape([n, k * h]);
        let x = prelu(self.fc1.forward(x), self.slope.clone());
        self.fc2.forward(x).reshape([n])
    }
}
