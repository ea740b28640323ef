//! What each phase optimises. An [`Objective`] owns its data and knows how to initialise its
//! model (one of the scoring crate's modules: an [`Expert`], an [`Aggregator`], a [`Router`]),
//! compute the loss of a batch of training units and validate; the loop in [`crate::trainer`]
//! is the same for all of them.
//!
//! Initialisation draws from the trainer's own seeded [`Rng`] (PyTorch's `nn.Linear` and PEFT
//! LoRA defaults), so a run depends only on its seed.

use burn::module::Module;
use burn::tensor::{Device, Tensor, TensorData};
use dmoerm::aggregator::Aggregator;
use dmoerm::backbones::{Backbone, Family};
use dmoerm::expert::{Expert, ExpertGroup};
use dmoerm::lora::{AdapterSettings, LoraAdapter};
use dmoerm::router::Router;
use dmoerm::weights::linear;

use crate::config::LoraSettings;
use crate::error::{Error, Result};
use crate::features::{read, Frozen, TextCache};
use crate::loss::{classification_accuracy, cross_entropy, pairwise_loss};
pub use dmoerm_data::eval::{pairwise_accuracy, Tally};
use dmoerm_data::rng::Rng;

/// The loss of one step and what it got right.
pub struct StepOutput {
    pub loss: Tensor<1>,
    pub tally: Tally,
}

/// One phase's optimisation problem.
pub trait Objective {
    /// The module trained.
    type Model: Module;
    /// Number of training units (prompts, pairs, queries).
    fn train_size(&self) -> usize;
    /// The initial model.
    fn init(&self, rng: &mut Rng) -> Self::Model;
    /// The loss over training units `units` (with `model` in training mode); `None` when they
    /// hold nothing to learn from (e.g. only tied responses).
    fn step(&self, model: &Self::Model, units: &[usize]) -> Result<Option<StepOutput>>;
    /// Validation accuracy counts.
    fn validate(&self, model: &Self::Model) -> Result<Tally>;
}

/// Where LoRA goes: the target projections of the top layers, rank and scale.
#[derive(Debug, Clone)]
pub struct LoraLayout {
    /// `(canonical path, in, out)`.
    pub modules: Vec<(String, usize, usize)>,
    pub r: usize,
    pub alpha: f64,
    /// The target names (for `adapter_config.json`).
    pub targets: Vec<String>,
    /// The adapted layers (PEFT's `layers_to_transform`).
    pub layers: Vec<usize>,
}

impl LoraLayout {
    /// The modules of layers `split..` whose path ends with `.<target>`.
    pub fn new(backbone: &Backbone, split: usize, settings: &LoraSettings) -> Result<Self> {
        let targets = settings.targets.clone().unwrap_or_else(|| match backbone.family() {
            Family::Llama => vec!["q_proj".into(), "v_proj".into()],
            Family::Bert => vec!["query".into(), "value".into()],
        });
        use dmoerm::lora::Projections;
        let mut modules = Vec::new();
        for layer in split..backbone.num_layers() {
            for path in backbone.layer_projections(layer) {
                if targets.iter().any(|t| path.ends_with(&format!(".{t}"))) {
                    let (i, o) = backbone.projection(&path).unwrap_or_default();
                    modules.push((path, i, o));
                }
            }
        }
        if modules.is_empty() {
            return Err(Error::Config {
                file: "train config".into(),
                message: format!("lora.targets {targets:?} match no linear module of the backbone"),
            });
        }
        Ok(Self {
            modules,
            r: settings.r,
            alpha: settings.alpha,
            targets,
            layers: (split..backbone.num_layers()).collect(),
        })
    }

    /// What the adapters' `adapter_config.json` says.
    pub fn settings(&self) -> AdapterSettings {
        AdapterSettings {
            r: self.r,
            lora_alpha: self.alpha,
            target_modules: self.targets.clone(),
            layers_to_transform: self.layers.clone(),
        }
    }

    /// PEFT's initialisation: `A` Kaiming-uniform (bound `1/sqrt(in)`), `B` zero, so a new
    /// adapter starts as the identity.
    pub fn init(&self, rng: &mut Rng, device: &Device) -> LoraAdapter {
        let projections = self
            .modules
            .iter()
            .map(|(path, i, o)| {
                let a = rng.uniform(i * self.r, 1.0 / (*i as f64).sqrt());
                let a = Tensor::from_data(TensorData::new(a, [*i, self.r]), device);
                (path.clone(), a, Tensor::zeros([self.r, *o], device))
            })
            .collect();
        LoraAdapter::new(self.settings(), projections)
    }
}

/// `nn.Linear`'s default initialisation: uniform with bound `1/sqrt(fan_in)`.
fn linear_init(rng: &mut Rng, n: usize, fan_in: usize) -> Vec<f32> {
    rng.uniform(n, 1.0 / (fan_in as f64).sqrt())
}

fn tensor<const D: usize>(values: Vec<f32>, shape: [usize; D], device: &Device) -> Tensor<D> {
    Tensor::from_data(TensorData::new(values, shape), device)
}

/// A fresh expert: a new adapter of `layout` (PEFT's initialisation) and a value head with
/// PyTorch's.
pub fn init_expert(layout: &LoraLayout, hidden: usize, rng: &mut Rng, device: &Device) -> Expert {
    let adapter = layout.init(rng, device);
    Expert::new(adapter, init_value_head(hidden, rng, device))
}

/// A value head `nn.Linear(H, 1)` with PyTorch's default initialisation.
pub fn init_value_head(hidden: usize, rng: &mut Rng, device: &Device) -> burn::nn::Linear {
    let weight = tensor(linear_init(rng, hidden, hidden), [hidden, 1], device);
    let bias = tensor(linear_init(rng, 1, hidden), [1], device);
    linear(weight, Some(bias))
}

/// A group of texts of one prompt and the ordered pairs among them to learn.
#[derive(Debug, Clone)]
pub struct Group {
    /// Indices into the text cache.
    pub texts: Vec<usize>,
    /// `(better, worse)`, indices into `texts`.
    pub pairs: Vec<(usize, usize)>,
}

/// Flattens groups into one list of texts and global pairs.
fn flatten<'a>(groups: impl Iterator<Item = &'a Group>) -> (Vec<usize>, Vec<(usize, usize)>) {
    let mut texts = Vec::new();
    let mut pairs = Vec::new();
    for g in groups {
        let base = texts.len();
        texts.extend(&g.texts);
        pairs.extend(g.pairs.iter().map(|&(b, w)| (base + b, base + w)));
    }
    (texts, pairs)
}

/// The pairwise loss of training groups `units`, `rewards(texts)` giving one reward per text.
fn pairwise_step(
    groups: &[Group],
    units: &[usize],
    rewards: impl FnOnce(&[usize]) -> Tensor<1>,
) -> Result<Option<StepOutput>> {
    let (texts, pairs) = flatten(units.iter().map(|&u| &groups[u]));
    let rewards = rewards(&texts);
    let host = read(rewards.clone())?;
    Ok(pairwise_loss(rewards, &pairs).map(|loss| {
        let mut tally = Tally::default();
        tally.add(pairwise_accuracy(&host, &pairs));
        StepOutput { loss, tally }
    }))
}

/// Texts per validation forward pass.
const EVAL_TEXTS: usize = 64;

/// Validation in chunks of whole groups: `rewards(texts)` gives one reward per text.
fn validate_groups(groups: &[Group], mut rewards: impl FnMut(&[usize]) -> Result<Vec<f32>>) -> Result<Tally> {
    let mut tally = Tally::default();
    let mut start = 0;
    while start < groups.len() {
        let mut end = start;
        let mut n = 0;
        while end < groups.len() && (end == start || n + groups[end].texts.len() <= EVAL_TEXTS) {
            n += groups[end].texts.len();
            end += 1;
        }
        let (texts, pairs) = flatten(groups[start..end].iter());
        tally.add(pairwise_accuracy(&rewards(&texts)?, &pairs));
        start = end;
    }
    Ok(tally)
}

/// A LoRA adapter + value head on pairwise preferences: phase 1 (a task's overall
/// preference), phase 2 (one capability point, starting from phase 1) and the single-RM
/// baseline (every task's overall preference).
pub struct PairwiseLora<'a> {
    pub frozen: &'a Frozen,
    pub cache: &'a TextCache,
    pub layout: &'a LoraLayout,
    pub train: Vec<Group>,
    pub valid: Vec<Group>,
    /// Start from this expert (phase 2: the task's phase-1 adapter and head) instead of a
    /// fresh adapter and a random head.
    pub start: Option<Expert>,
}

impl PairwiseLora<'_> {
    /// `[N]` rewards of cached texts: the expert run as the bundle runs it.
    pub fn rewards(&self, expert: &Expert, texts: &[usize]) -> Tensor<1> {
        let group = ExpertGroup::stack(&[expert]);
        let pooled = self.frozen.pooled(self.cache, texts, group.adapter(), 1);
        group.forward(pooled.unsqueeze::<3>()).reshape([texts.len()])
    }
}

impl Objective for PairwiseLora<'_> {
    type Model = Expert;

    fn train_size(&self) -> usize {
        self.train.len()
    }

    fn init(&self, rng: &mut Rng) -> Expert {
        if let Some(e) = &self.start {
            return e.clone();
        }
        init_expert(self.layout, self.frozen.hidden_size(), rng, &self.frozen.device)
    }

    fn step(&self, expert: &Expert, units: &[usize]) -> Result<Option<StepOutput>> {
        pairwise_step(&self.train, units, |texts| self.rewards(expert, texts))
    }

    fn validate(&self, expert: &Expert) -> Result<Tally> {
        validate_groups(&self.valid, |texts| read(self.rewards(expert, texts)))
    }
}

/// Phase 3: the aggregator MLP on the frozen experts' pooled hidden states.
pub struct AggregatorObjective {
    /// Per cached text: the `k` experts' pooled states, expert-major (`[k * H]`).
    pub features: Vec<Vec<f32>>,
    pub experts: usize,
    pub hidden: usize,
    pub train: Vec<Group>,
    pub valid: Vec<Group>,
    /// The experts' value heads (`[H]` weight, bias), in expert order: when given, the
    /// aggregator starts as the mean of the experts' scores (see [`Objective::init`]); when
    /// empty, from PyTorch's default initialisation.
    pub expert_heads: Vec<(Vec<f32>, f32)>,
    pub device: Device,
}

impl AggregatorObjective {
    /// `[N]` rewards; `texts` index `features`.
    pub fn rewards(&self, aggregator: &Aggregator, texts: &[usize]) -> Tensor<1> {
        let (k, h) = (self.experts, self.hidden);
        let flat: Vec<f32> = texts.iter().flat_map(|&t| self.features[t].iter().copied()).collect();
        let x = tensor(flat, [texts.len(), k, h], &self.device);
        aggregator.forward(x.swap_dims(0, 1))
    }
}

impl Objective for AggregatorObjective {
    type Model = Aggregator;

    fn train_size(&self) -> usize {
        self.train.len()
    }

    /// `nn.Linear` defaults for both layers, PReLU slope `a` = 0.25 (PyTorch's defaults).
    ///
    /// With expert heads `(v_i, b_i)`, hidden units `i` and `k + i` compute `+s_i` and `-s_i`,
    /// the expert's own score `s_i = v_i . h_i + b_i`, and the output weights are
    /// `+-1 / (k (1 + a))`: since `prelu(x) - prelu(-x) = (1 + a) x`, the aggregator then
    /// starts exactly at `mean_i s_i`, and training moves it from there. The other hidden
    /// units keep their random input weights and start with output weight 0.
    fn init(&self, rng: &mut Rng) -> Aggregator {
        let (k, h) = (self.experts, self.hidden);
        let kh = k * h;
        let slope = 0.25f32;
        let mut w1 = linear_init(rng, kh * h, kh);
        let mut b1 = linear_init(rng, h, kh);
        let mut w2 = linear_init(rng, h, h);
        let mut b2 = linear_init(rng, 1, h);
        if self.expert_heads.len() == k && 2 * k <= h {
            let out = 1.0 / (k as f32 * (1.0 + slope));
            w2.iter_mut().for_each(|w| *w = 0.0);
            b2[0] = 0.0;
            for (i, (v, b)) in self.expert_heads.iter().enumerate() {
                for (sign, unit) in [(1.0f32, i), (-1.0, k + i)] {
                    // w1 is [kH, H] (in, out): column `unit` reads only expert i's block
                    for row in 0..kh {
                        let inside = row / h == i;
                        w1[row * h + unit] = if inside { sign * v[row % h] } else { 0.0 };
                    }
                    b1[unit] = sign * b;
                    w2[unit] = sign * out;
                }
            }
        }
        let d = &self.device;
        Aggregator::new(
            linear(tensor(w1, [kh, h], d), Some(tensor(b1, [h], d))),
            tensor(vec![slope], [1], d),
            linear(tensor(w2, [h, 1], d), Some(tensor(b2, [1], d))),
        )
    }

    fn step(&self, aggregator: &Aggregator, units: &[usize]) -> Result<Option<StepOutput>> {
        pairwise_step(&self.train, units, |texts| self.rewards(aggregator, texts))
    }

    fn validate(&self, aggregator: &Aggregator) -> Result<Tally> {
        validate_groups(&self.valid, |texts| read(self.rewards(aggregator, texts)))
    }
}

/// The router: a linear head over the tasks on the frozen backbone's pooled user turns,
/// cross-entropy.
pub struct RouterObjective {
    /// `(pooled state [H], task index)`.
    pub train: Vec<(Vec<f32>, usize)>,
    pub valid: Vec<(Vec<f32>, usize)>,
    pub tasks: usize,
    pub hidden: usize,
    pub device: Device,
}

impl RouterObjective {
    fn logits(&self, router: &Router, rows: &[&(Vec<f32>, usize)]) -> Tensor<2> {
        let flat: Vec<f32> = rows.iter().flat_map(|r| r.0.iter().copied()).collect();
        router.logits(tensor(flat, [rows.len(), self.hidden], &self.device))
    }
}

impl Objective for RouterObjective {
    type Model = Router;

    fn train_size(&self) -> usize {
        self.train.len()
    }

    /// A head on the bare backbone with `nn.Linear`'s default initialisation.
    fn init(&self, rng: &mut Rng) -> Router {
        let (h, t) = (self.hidden, self.tasks);
        let weight = tensor(linear_init(rng, h * t, h), [h, t], &self.device);
        let bias = tensor(linear_init(rng, t, h), [t], &self.device);
        Router::from_head(linear(weight, Some(bias)))
    }

    fn step(&self, router: &Router, units: &[usize]) -> Result<Option<StepOutput>> {
        let rows: Vec<_> = units.iter().map(|&u| &self.train[u]).collect();
        let labels: Vec<usize> = rows.iter().map(|r| r.1).collect();
        let logits = self.logits(router, &rows);
        let host = read(logits.clone())?;
        let mut tally = Tally::default();
        tally.add(classification_accuracy(&host, self.tasks, &labels));
        Ok(Some(StepOutput { loss: cross_entropy(logits, &labels), tally }))
    }

    fn validate(&self, router: &Router) -> Result<Tally> {
        let mut tally = Tally::default();
        for chunk in self.valid.chunks(256) {
            let rows: Vec<_> = chunk.iter().collect();
            let labels: Vec<usize> = rows.iter().map(|r| r.1).collect();
            tally.add(classification_accuracy(&read(self.logits(router, &rows))?, self.tasks, &labels));
        }
        Ok(tally)
    }
}
