//! How a task turns its experts into one reward.
//!
//! DMoERM's [`Aggregator`] is an MLP over the `k` experts' concatenated pooled states:
//!
//! ```text
//! reward = Linear(H -> 1)(PReLU(Linear(k*H -> H)([h_1; ...; h_k])))
//! ```
//!
//! stored as PyTorch's `nn.Sequential(Linear, PReLU, Linear)` state dict (key names in
//! [`crate::bundle::keys::aggregator`]). From an int8 or q4 bundle, on the CPU, for
//! inference, the first layer (`k * H * H` weights, most of the MLP) stays packed and is
//! expanded for each pass ([`PackedLinear`]). An ensemble of reward models has no MLP: [`Combine`]
//! merges its members' scores.

use burn::config::Config;
use burn::module::Module;
use burn::nn::{Linear, LinearConfig, PRelu, PReluConfig};
use burn::tensor::{Device, Tensor, TensorData};
use serde::{Deserialize, Serialize};

use crate::bundle::keys::{
    self,
    aggregator::{ACT, FC1, FC2},
};
use crate::error::{Error, Result};
use crate::kernels::linear_layer;
use crate::weights::{load_linear, load_linear_or_packed, param, save_linear, PackedLinear, Scope, WriteScope};

/// The aggregator's sizes.
#[derive(Config, Debug)]
pub struct AggregatorConfig {
    /// Number of experts `k`.
    pub experts: usize,
    /// The backbone's hidden size `H`.
    pub hidden: usize,
}

impl AggregatorConfig {
    /// PyTorch's defaults: both `nn.Linear` uniform with bound `1/sqrt(fan_in)`, one PReLU
    /// slope of 0.25.
    pub fn init(&self, device: &Device) -> Aggregator {
        let (k, h) = (self.experts, self.hidden);
        Aggregator {
            fc1: Some(LinearConfig::new(k * h, h).init(device)),
            act: PReluConfig::new().init(device),
            fc2: LinearConfig::new(h, 1).init(device),
            fc1_packed: None,
        }
    }

    /// Reads, at `w`, `0.*` (`Linear(k*H, H)`), `1.weight` (PReLU, 1 or H slopes) and `2.*`
    /// (`Linear(H, 1)`).
    pub fn load(&self, w: &Scope, device: &Device) -> Result<Aggregator> {
        let (k, h) = (self.experts, self.hidden);
        let fc1 = load_linear_or_packed(&w.at(FC1), k * h, h, device)?;
        let act = w.at(ACT);
        let (slopes, shape) = act.read_f32(keys::WEIGHT, None)?;
        if !(shape == [1] || shape == [h]) {
            let (file, tensor) = (act.file().file.clone(), act.key(keys::WEIGHT));
            return Err(Error::Shape { file, tensor, expected: vec![h], found: shape });
        }
        let n = slopes.len();
        let slope = Tensor::from_data(TensorData::new(slopes, [n]), device);
        let fc2 = load_linear(&w.at(FC2), h, 1, device)?;
        Ok(Aggregator::with_first_layer(fc1, slope, fc2))
    }
}

/// A task's aggregator MLP.
#[derive(Module, Debug)]
pub struct Aggregator {
    /// `Linear(k*H, H)`; `None` where `fc1_packed` holds it.
    fc1: Option<Linear>,
    act: PRelu,
    fc2: Linear,
    /// `fc1` kept packed (an int8 or q4 bundle on the CPU, for inference; never trained).
    #[module(skip)]
    fc1_packed: Option<PackedLinear>,
}

impl Aggregator {
    /// From its layers: `fc1` `Linear(k*H, H)`, PReLU `slope` `[1]` or `[H]`, `fc2` `Linear(H, 1)`.
    pub fn new(fc1: Linear, slope: Tensor<1>, fc2: Linear) -> Self {
        Self::with_first_layer(Ok(fc1), slope, fc2)
    }

    /// [`new`](Self::new), with the first layer as burn's `Linear` or kept packed.
    fn with_first_layer(fc1: std::result::Result<Linear, PackedLinear>, slope: Tensor<1>, fc2: Linear) -> Self {
        let alpha_value = 0.25; // PReluConfig's default; only its init uses it
        let act = PRelu { alpha: param(slope), alpha_value };
        match fc1 {
            Ok(fc1) => Self { fc1: Some(fc1), act, fc2, fc1_packed: None },
            Err(packed) => Self { fc1: None, act, fc2, fc1_packed: Some(packed) },
        }
    }

    /// The first layer, as built by [`with_first_layer`](Self::with_first_layer).
    fn first_layer(&self) -> std::result::Result<&Linear, &PackedLinear> {
        match (&self.fc1, &self.fc1_packed) {
            (Some(fc1), _) => Ok(fc1),
            (None, Some(packed)) => Err(packed),
            (None, None) => unreachable!("an aggregator is built with its first layer, as a Linear or packed"),
        }
    }

    /// Adds the MLP at `out` in PyTorch's `nn.Sequential` layout (a packed first layer as the
    /// f32 it stands for).
    pub fn save(&self, out: &mut WriteScope) -> Result<()> {
        match self.first_layer() {
            Ok(fc1) => save_linear(fc1, &mut out.at(FC1))?,
            Err(packed) => {
                let fc1 = crate::weights::linear(packed.expanded_weight(&self.fc2.weight.device()), packed.bias());
                save_linear(&fc1, &mut out.at(FC1))?
            }
        }
        out.at(ACT).insert_tensor(keys::WEIGHT, self.act.alpha.val())?;
        save_linear(&self.fc2, &mut out.at(FC2))
    }

    /// # Shapes
    /// - pooled: `[k, n, H]` (expert-major), output: `[n]` rewards
    pub fn forward(&self, pooled: Tensor<3>) -> Tensor<1> {
        let [k, n, h] = pooled.dims();
        // concat over experts in manifest order: row j = [h_0(j), h_1(j), ..., h_{k-1}(j)]
        let x = pooled.swap_dims(0, 1).reshape([n, k * h]);
        let hidden = match self.first_layer() {
            Ok(fc1) => linear_layer(fc1, x),
            Err(packed) => packed.forward(x),
        };
        linear_layer(&self.fc2, self.act.forward(hidden)).reshape([n])
    }
}

/// How an ensemble of reward models (a task whose experts are ensemble members and which has
/// no aggregator) turns the members' scores `s_1..s_M` into one reward.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "rule", rename_all = "snake_case", deny_unknown_fields)]
pub enum Combine {
    /// `mean(s)`.
    Mean,
    /// Worst case: `min(s)`.
    Min,
    /// Uncertainty-weighted: `mean(s) - lambda * var(s)` (population variance).
    Uncertainty {
        /// Weight of the variance penalty.
        lambda: f64,
    },
    /// One member's score: `s_index` (a reward model with several output labels, whose
    /// reward is one of them).
    Capability {
        /// The member, in the task's expert order.
        index: usize,
    },
}

impl Combine {
    /// The combined reward of member scores `scores` (not empty).
    pub fn apply(&self, scores: &[f32]) -> f32 {
        let n = scores.len().max(1) as f64;
        let mean = scores.iter().map(|&s| s as f64).sum::<f64>() / n;
        match *self {
            Combine::Mean => mean as f32,
            Combine::Min => scores.iter().copied().fold(f32::INFINITY, f32::min),
            Combine::Uncertainty { lambda } => {
                let var = scores.iter().map(|&s| (s as f64 - mean).powi(2)).sum::<f64>() / n;
                (mean - lambda * var) as f32
            }
            Combine::Capability { index } => scores.get(index).copied().unwrap_or(f32::NAN),
        }
    }
}

impl std::str::FromStr for Combine {
    type Err = String;

    /// `mean`, `min`, `uncertainty` (lambda 0.5), `uncertainty:LAMBDA` or `capability:INDEX`.
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s.split_once(':') {
            None if s == "mean" => Ok(Combine::Mean),
            None if s == "min" => Ok(Combine::Min),
            None if s == "uncertainty" => Ok(Combine::Uncertainty { lambda: 0.5 }),
            Some(("uncertainty", l)) => l
                .parse::<f64>()
                .ok()
                .filter(|l| l.is_finite() && *l >= 0.0)
                .map(|lambda| Combine::Uncertainty { lambda })
                .ok_or_else(|| format!("bad lambda `{l}` (a number >= 0)")),
            Some(("capability", i)) => i
                .parse::<usize>()
                .map(|index| Combine::Capability { index })
                .map_err(|_| format!("bad capability index `{i}` (0, 1, ...)")),
            _ => Err(format!("unknown rule `{s}` (mean, min, uncertainty[:LAMBDA], capability:INDEX)")),
        }
    }
}
