//! What each phase optimises. An [`Objective`] owns its data and knows how to build its
//! parameters, compute the loss of a batch of training units and validate; the loop in
//! [`crate::trainer`] is the same for all of them.
//!
//! Parameter names (flat, see [`Params`]):
//! - LoRA: `lora.<module path>.a` `[in, r]` (= PEFT `lora_A^T`) and `lora.<module path>.b`
//!   `[r, out]` (= PEFT `lora_B^T`, unscaled);
//! - value head: `head.weight` `[H]`, `head.bias` `[1]`;
//! - aggregator: `0.weight` `[kH, H]`, `0.bias` `[H]`, `1.weight` `[1]` (PReLU), `2.weight`
//!   `[H, 1]`, `2.bias` `[1]` (weights `[in, out]`);
//! - router head: `weight` `[H, tasks]`, `bias` `[tasks]`.

use burn::tensor::{Device, Tensor, TensorData};
use dmoerm::aggregator::Aggregator;
use dmoerm::backbones::{Backbone, Family};
use dmoerm::expert::ValueHeads;
use dmoerm::lora::{AdapterGroup, AdapterSettings, LoraAdapter};
use dmoerm::router::Router;
use dmoerm::weights::linear;

use crate::config::LoraSettings;
use crate::error::{Error, Result};
use crate::features::{read, Frozen, TextCache};
use crate::loss::{classification_accuracy, cross_entropy, pairwise_accuracy, pairwise_loss};
use crate::params::Params;
use crate::rng::Rng;

/// Counts of one pass over some units.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Tally {
    pub correct: usize,
    pub total: usize,
}

impl Tally {
    pub fn add(&mut self, (correct, total): (usize, usize)) {
        self.correct += correct;
        self.total += total;
    }

    /// `correct / total`, 0 when empty.
    pub fn accuracy(&self) -> f64 {
        if self.total == 0 {
            0.0
        } else {
            self.correct as f64 / self.total as f64
        }
    }
}

/// The loss of one step and what it got right.
pub struct StepOutput {
    pub loss: Tensor<1>,
    pub tally: Tally,
}

/// One phase's optimisation problem.
pub trait Objective {
    /// Number of training units (prompts, pairs, queries).
    fn train_size(&self) -> usize;
    /// Initial parameters.
    fn init(&self, rng: &mut Rng) -> Params;
    /// The loss over training units `units` (with `params` tracked); `None` when they hold
    /// nothing to learn from (e.g. only tied responses).
    fn step(&self, params: &Params, units: &[usize]) -> Result<Option<StepOutput>>;
    /// Validation accuracy counts.
    fn validate(&self, params: &Params) -> Result<Tally>;
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

    /// PEFT's initialisation: `A` Kaiming-uniform (bound `1/sqrt(in)`), `B` zero, so a new
    /// adapter starts as the identity.
    pub fn init(&self, params: &mut Params, rng: &mut Rng, device: &Device) {
        for (path, i, o) in &self.modules {
            params.insert(
                format!("lora.{path}.a"),
                rng.uniform(i * self.r, 1.0 / (*i as f64).sqrt()),
                &[*i, self.r],
                device,
            );
            params.insert(format!("lora.{path}.b"), vec![0.0; self.r * o], &[self.r, *o], device);
        }
    }

    /// The adapter of `params` as the model's module.
    pub fn adapter(&self, params: &Params) -> LoraAdapter {
        let settings = AdapterSettings {
            r: self.r,
            lora_alpha: self.alpha,
            target_modules: self.targets.clone(),
            layers_to_transform: self.layers.clone(),
        };
        let projections = self
            .modules
            .iter()
            .map(|(path, _, _)| {
                (path.clone(), params.get::<2>(&format!("lora.{path}.a")), params.get::<2>(&format!("lora.{path}.b")))
            })
            .collect();
        LoraAdapter::new(settings, projections)
    }

    /// The adapters of `members` stacked expert-major, as the bundle runs them.
    pub fn group(&self, members: &[&Params]) -> AdapterGroup {
        let adapters: Vec<LoraAdapter> = members.iter().map(|p| self.adapter(p)).collect();
        let refs: Vec<&LoraAdapter> = adapters.iter().collect();
        AdapterGroup::stack_adapters(&refs).expect("a LoRA layout has at least one module")
    }
}

/// `nn.Linear`'s default initialisation: uniform with bound `1/sqrt(fan_in)`.
fn linear_init(rng: &mut Rng, n: usize, fan_in: usize) -> Vec<f32> {
    rng.uniform(n, 1.0 / (fan_in as f64).sqrt())
}

/// Adds a value head `nn.Linear(H, 1)`.
pub fn init_value_head(params: &mut Params, hidden: usize, rng: &mut Rng, device: &Device) {
    params.insert("head.weight", linear_init(rng, hidden, hidden), &[hidden], device);
    params.insert("head.bias", linear_init(rng, 1, hidden), &[1], device);
}

/// The value heads of `members`, stacked.
pub fn value_heads(members: &[&Params], hidden: usize) -> ValueHeads {
    let w: Vec<Tensor<3>> = members.iter().map(|p| p.get::<1>("head.weight").reshape([1, hidden, 1])).collect();
    let b: Vec<Tensor<3>> = members.iter().map(|p| p.get::<1>("head.bias").reshape([1, 1, 1])).collect();
    ValueHeads::new(Tensor::cat(w, 0), Tensor::cat(b, 0))
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
    /// Start from these parameters (phase 2: the task's phase-1 adapter and head) instead of
    /// a fresh adapter and a random head.
    pub start: Option<Params>,
}

impl PairwiseLora<'_> {
    /// `[N]` rewards of cached texts.
    pub fn rewards(&self, params: &Params, texts: &[usize]) -> Tensor<1> {
        let group = self.layout.group(&[params]);
        let pooled = self.frozen.pooled(self.cache, texts, Some(&group), 1);
        let heads = value_heads(&[params], self.frozen.hidden_size());
        heads.forward(pooled.unsqueeze::<3>()).reshape([texts.len()])
    }
}

impl Objective for PairwiseLora<'_> {
    fn train_size(&self) -> usize {
        self.train.len()
    }

    fn init(&self, rng: &mut Rng) -> Params {
        if let Some(p) = &self.start {
            return p.clone();
        }
        let mut p = Params::new();
        self.layout.init(&mut p, rng, &self.frozen.device);
        init_value_head(&mut p, self.frozen.hidden_size(), rng, &self.frozen.device);
        p
    }

    fn step(&self, params: &Params, units: &[usize]) -> Result<Option<StepOutput>> {
        pairwise_step(&self.train, units, |texts| self.rewards(params, texts))
    }

    fn validate(&self, params: &Params) -> Result<Tally> {
        validate_groups(&self.valid, |texts| read(self.rewards(params, texts)))
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
    /// The aggregator of `params` (names `0.weight` ... `2.bias`).
    pub fn aggregator(params: &Params) -> Aggregator {
        Aggregator::new(
            linear(params.get::<2>("0.weight"), Some(params.get::<1>("0.bias"))),
            params.get::<1>("1.weight"),
            linear(params.get::<2>("2.weight"), Some(params.get::<1>("2.bias"))),
        )
    }

    /// `[N]` rewards; `texts` index `features`.
    pub fn rewards(&self, params: &Params, texts: &[usize]) -> Tensor<1> {
        let (k, h) = (self.experts, self.hidden);
        let flat: Vec<f32> = texts.iter().flat_map(|&t| self.features[t].iter().copied()).collect();
        let x = Tensor::<3>::from_data(TensorData::new(flat, [texts.len(), k, h]), &self.device);
        Self::aggregator(params).forward(x.swap_dims(0, 1))
    }
}

impl Objective for AggregatorObjective {
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
    fn init(&self, rng: &mut Rng) -> Params {
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
        let mut p = Params::new();
        p.insert("0.weight", w1, &[kh, h], &self.device);
        p.insert("0.bias", b1, &[h], &self.device);
        p.insert("1.weight", vec![slope], &[1], &self.device);
        p.insert("2.weight", w2, &[h, 1], &self.device);
        p.insert("2.bias", b2, &[1], &self.device);
        p
    }

    fn step(&self, params: &Params, units: &[usize]) -> Result<Option<StepOutput>> {
        pairwise_step(&self.train, units, |texts| self.rewards(params, texts))
    }

    fn validate(&self, params: &Params) -> Result<Tally> {
        validate_groups(&self.valid, |texts| read(self.rewards(params, texts)))
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
    /// The router of `params` (a head on the bare backbone).
    pub fn router(params: &Params) -> Router {
        Router::from_head(linear(params.get::<2>("weight"), Some(params.get::<1>("bias"))))
    }

    fn logits(&self, params: &Params, rows: &[&(Vec<f32>, usize)]) -> Tensor<2> {
        let flat: Vec<f32> = rows.iter().flat_map(|r| r.0.iter().copied()).collect();
        let x = Tensor::<2>::from_data(TensorData::new(flat, [rows.len(), self.hidden]), &self.device);
        Self::router(params).logits(x)
    }
}

impl Objective for RouterObjective {
    fn train_size(&self) -> usize {
        self.train.len()
    }

    fn init(&self, rng: &mut Rng) -> Params {
        let (h, t) = (self.hidden, self.tasks);
        let mut p = Params::new();
        p.insert("weight", linear_init(rng, h * t, h), &[h, t], &self.device);
        p.insert("bias", linear_init(rng, t, h), &[t], &self.device);
        p
    }

    fn step(&self, params: &Params, units: &[usize]) -> Result<Option<StepOutput>> {
        let rows: Vec<_> = units.iter().map(|&u| &self.train[u]).collect();
        let labels: Vec<usize> = rows.iter().map(|r| r.1).collect();
        let logits = self.logits(params, &rows);
        let host = read(logits.clone())?;
        let mut tally = Tally::default();
        tally.add(classification_accuracy(&host, self.tasks, &labels));
        Ok(Some(StepOutput { loss: cross_entropy(logits, &labels), tally }))
    }

    fn validate(&self, params: &Params) -> Result<Tally> {
        let mut tally = Tally::default();
        for chunk in self.valid.chunks(256) {
            let rows: Vec<_> = chunk.iter().collect();
            let labels: Vec<usize> = rows.iter().map(|r| r.1).collect();
            tally.add(classification_accuracy(&read(self.logits(params, &rows))?, self.tasks, &labels));
        }
        Ok(tally)
    }
}
