//! The DMoERM training pipeline and the baselines, over one config and one run directory:
//!
//! ```text
//! <out>/config.toml                 the config as run
//! <out>/router/                     the router head
//! <out>/phase1/<task>/              the task adapter + head
//! <out>/phase2/<task>/<capability>/ the capability experts
//! <out>/phase3/<task>/              the aggregator
//! <out>/bundle/                     the DMoERM bundle (`train all`)
//! <out>/baseline/single/, <out>/baseline/ensemble/member_<i>/
//! <out>/baseline-single/, <out>/baseline-ensemble/   their bundles
//! ```
//!
//! Every phase directory has `metrics.json` and `curve.svg`, and resumes where it stopped
//! (see [`crate::trainer`]).

use std::path::PathBuf;

use burn::tensor::Device;
use dmoerm::aggregator::{Aggregator, AggregatorConfig, Combine};
use dmoerm::bundle::write::{write_bundle, BackboneFiles, BundleOut, ExpertOut, TaskOut};
use dmoerm::expert::{Expert, ExpertGroup};
use dmoerm::router::{Router, RouterConfig};
use dmoerm::RewardModel;
use dmoerm_data::preferences::{read_capability_pairs, read_preferences, CapabilityPair, Preference};
use dmoerm_data::rng::Rng;

use crate::config::{AggregatorInit, PhaseSettings, TrainConfig};
use crate::error::{Error, Result};
use crate::features::{read, Frozen, TextCache};
use crate::objectives::{init_expert, AggregatorObjective, Group, LoraLayout, PairwiseLora, RouterObjective};
use crate::trainer::{PhaseRun, Trained};

/// A loaded config: the frozen backbone, the data, the text cache.
pub struct Pipeline {
    pub cfg: TrainConfig,
    pub frozen: Frozen,
    pub layout: LoraLayout,
    cache: TextCache,
    train: Vec<Preference>,
    valid: Vec<Preference>,
    caps_train: Vec<CapabilityPair>,
    caps_valid: Vec<CapabilityPair>,
    device: Device,
}

/// An error about the data line `source` (`file:line`).
fn data_error(source: &str, message: String) -> Error {
    let (file, line) = source.rsplit_once(':').unwrap_or((source, "0"));
    Error::Data { file: file.to_string(), line: line.parse().unwrap_or(0), message }
}

/// Expert texts per pass when computing phase-3 features.
const FEATURE_BATCH: usize = 16;

impl Pipeline {
    /// Loads the backbone and the data, checks every line against the tasks, and writes
    /// `<out>/config.toml`.
    pub fn open(cfg: TrainConfig, device: Device) -> Result<Self> {
        let frozen = Frozen::load(&cfg.backbone, cfg.input.clone(), cfg.pooling, cfg.lora.layers, &device)?;
        let layout = LoraLayout::new(&frozen.backbone, frozen.split, &cfg.lora)?;
        let train = read_preferences(&cfg.data.train)?;
        let valid = read_preferences(&cfg.data.valid)?;
        let read_caps = |p: &Option<PathBuf>| p.as_deref().map(read_capability_pairs).transpose();
        let caps_train = read_caps(&cfg.data.capabilities_train)?.unwrap_or_default();
        let caps_valid = read_caps(&cfg.data.capabilities_valid)?.unwrap_or_default();
        let p = Self { cfg, frozen, layout, cache: TextCache::default(), train, valid, caps_train, caps_valid, device };
        for item in p.train.iter().chain(&p.valid) {
            p.task_of(&item.source, item.category.as_deref())?;
        }
        for pair in p.caps_train.iter().chain(&p.caps_valid) {
            p.capability_of(pair)?;
        }
        std::fs::create_dir_all(&p.cfg.out).map_err(Error::io("create", &p.cfg.out))?;
        let path = p.cfg.out.join("config.toml");
        let text = toml::to_string(&p.cfg).map_err(|e| Error::run(&path, e.to_string()))?;
        std::fs::write(&path, text).map_err(Error::io("write", &path))?;
        Ok(p)
    }

    /// The index of an item's task.
    fn task_of(&self, source: &str, category: Option<&str>) -> Result<usize> {
        let bad = |message: String| data_error(source, message);
        let Some(c) = category else {
            return Err(bad("no category (`label` / `category`): training needs one".into()));
        };
        self.cfg.tasks.iter().position(|t| t.name == c).ok_or_else(|| {
            let names: Vec<&str> = self.cfg.tasks.iter().map(|t| t.name.as_str()).collect();
            bad(format!("category `{c}` is not a task of the config ({})", names.join(", ")))
        })
    }

    /// `(task, capability)` of a capability pair; without a category the point must belong to
    /// exactly one task.
    fn capability_of(&self, pair: &CapabilityPair) -> Result<(usize, usize)> {
        let bad = |message: String| data_error(&pair.source, message);
        let candidates: Vec<usize> = match &pair.category {
            Some(_) => vec![self.task_of(&pair.source, pair.category.as_deref())?],
            None => (0..self.cfg.tasks.len()).collect(),
        };
        let found: Vec<(usize, usize)> = candidates
            .into_iter()
            .filter_map(|t| self.cfg.tasks[t].capabilities.iter().position(|c| *c == pair.point).map(|c| (t, c)))
            .collect();
        match found.as_slice() {
            [one] => Ok(*one),
            [] => Err(bad(format!("capability `{}` is not a point of its task in the config", pair.point))),
            _ => Err(bad(format!("capability `{}` belongs to several tasks: give the pair a `category`", pair.point))),
        }
    }

    fn run(&self, sub: &str, label: String, settings: &PhaseSettings, seed: u64) -> PhaseRun {
        PhaseRun { dir: self.cfg.out.join(sub), label, settings: settings.clone(), seed }
    }

    /// Groups of the preference items that pass `keep`: all their responses, all ordered pairs.
    fn preference_groups(&mut self, valid: bool, keep: impl Fn(&Preference) -> bool) -> Result<Vec<Group>> {
        let items: Vec<&Preference> =
            (if valid { &self.valid } else { &self.train }).iter().filter(|p| keep(p)).collect();
        let mut texts = Vec::new();
        for item in &items {
            for r in &item.responses {
                texts.push(self.frozen.expert_ids(&item.messages, r)?);
            }
        }
        let what = if valid { "validation responses" } else { "training responses" };
        let index = self.frozen.cache(&mut self.cache, texts, what)?;
        let mut groups = Vec::with_capacity(items.len());
        let mut next = 0;
        for item in items {
            let n = item.responses.len();
            let pairs = item.pairs();
            if !pairs.is_empty() {
                groups.push(Group { texts: index[next..next + n].to_vec(), pairs });
            }
            next += n;
        }
        Ok(groups)
    }

    /// Groups of the capability pairs of `(task, capability)`.
    fn capability_groups(&mut self, valid: bool, task: usize, cap: usize) -> Result<Vec<Group>> {
        let pairs: Vec<CapabilityPair> = (if valid { &self.caps_valid } else { &self.caps_train })
            .iter()
            .filter(|p| self.capability_of(p).ok() == Some((task, cap)))
            .cloned()
            .collect();
        let mut texts = Vec::new();
        for p in &pairs {
            texts.push(self.frozen.expert_ids(&p.messages, &p.better)?);
            texts.push(self.frozen.expert_ids(&p.messages, &p.worse)?);
        }
        let index = self.frozen.cache(&mut self.cache, texts, "capability pairs")?;
        Ok(index.chunks(2).map(|c| Group { texts: c.to_vec(), pairs: vec![(0, 1)] }).collect())
    }

    /// Models of the right shapes, for reading finished phases (their values are replaced).
    fn router_shape(&self) -> Router {
        RouterConfig::new(self.frozen.hidden_size(), self.cfg.tasks.len()).init(&self.device)
    }

    fn expert_shape(&self) -> Expert {
        init_expert(&self.layout, self.frozen.hidden_size(), &mut Rng::new(0), &self.device)
    }

    fn aggregator_shape(&self, experts: usize) -> Aggregator {
        AggregatorConfig::new(experts, self.frozen.hidden_size()).init(&self.device)
    }

    /// The router; `None` with a single task (no router needed).
    pub fn router(&mut self) -> Result<Option<Trained<Router>>> {
        let tasks = self.cfg.tasks.len();
        if tasks < 2 {
            return Ok(None);
        }
        let run = self.run("router", "router".into(), &self.cfg.router, self.cfg.seed);
        if let Some(done) = run.result(self.router_shape())? {
            return Ok(Some(done));
        }
        let mut sets = Vec::new();
        for items in [&self.train, &self.valid] {
            let mut rows = Vec::with_capacity(items.len());
            let mut labels = Vec::with_capacity(items.len());
            for item in items {
                rows.push(self.frozen.router_ids(&item.messages)?);
                labels.push(self.task_of(&item.source, item.category.as_deref())?);
            }
            let features = self.frozen.bare_pooled(&rows, "router queries")?;
            sets.push(features.into_iter().zip(labels).collect::<Vec<_>>());
        }
        let valid = sets.pop().unwrap_or_default();
        let train = sets.pop().unwrap_or_default();
        let objective =
            RouterObjective { train, valid, tasks, hidden: self.frozen.hidden_size(), device: self.device.clone() };
        run.train(&objective).map(Some)
    }

    fn phase1_run(&self, task: usize) -> PhaseRun {
        let name = &self.cfg.tasks[task].name;
        self.run(&format!("phase1/{name}"), format!("phase 1 {name}"), &self.cfg.phase1, self.cfg.seed)
    }

    /// Phase 1: per task, a LoRA adapter + value head on the task's overall preference.
    pub fn phase1(&mut self) -> Result<Vec<Trained<Expert>>> {
        (0..self.cfg.tasks.len()).map(|t| self.phase1_task(t)).collect()
    }

    fn phase1_task(&mut self, t: usize) -> Result<Trained<Expert>> {
        let run = self.phase1_run(t);
        if let Some(done) = run.result(self.expert_shape())? {
            return Ok(done);
        }
        let name = self.cfg.tasks[t].name.clone();
        let train = self.preference_groups(false, |p| p.category.as_deref() == Some(&name))?;
        let valid = self.preference_groups(true, |p| p.category.as_deref() == Some(&name))?;
        self.train_pairwise(&run, train, valid, None)
    }

    fn train_pairwise(
        &self,
        run: &PhaseRun,
        train: Vec<Group>,
        valid: Vec<Group>,
        start: Option<Expert>,
    ) -> Result<Trained<Expert>> {
        if valid.is_empty() {
            return Err(Error::run(&run.dir, format!("{}: no validation data", run.label)));
        }
        let objective =
            PairwiseLora { frozen: &self.frozen, cache: &self.cache, layout: &self.layout, train, valid, start };
        run.train(&objective)
    }

    fn phase2_run(&self, task: usize, cap: usize) -> PhaseRun {
        let t = &self.cfg.tasks[task];
        let c = &t.capabilities[cap];
        self.run(&format!("phase2/{}/{c}", t.name), format!("phase 2 {}/{c}", t.name), &self.cfg.phase2, self.cfg.seed)
    }

    /// Phase 2: per capability point, an expert starting from the task's phase-1 adapter and
    /// head, on that capability's labels.
    pub fn phase2(&mut self) -> Result<Vec<Vec<Trained<Expert>>>> {
        if self.caps_train.is_empty() || self.caps_valid.is_empty() {
            return Err(Error::Config {
                file: self.cfg.out.join("config.toml").display().to_string(),
                message: "phase 2 needs data.capabilities_train and data.capabilities_valid".into(),
            });
        }
        let mut all = Vec::new();
        for t in 0..self.cfg.tasks.len() {
            let start = self.phase1_task(t)?.model;
            let mut experts = Vec::new();
            for c in 0..self.cfg.tasks[t].capabilities.len() {
                let run = self.phase2_run(t, c);
                if let Some(done) = run.result(self.expert_shape())? {
                    experts.push(done);
                    continue;
                }
                let train = self.capability_groups(false, t, c)?;
                let valid = self.capability_groups(true, t, c)?;
                experts.push(self.train_pairwise(&run, train, valid, Some(start.clone()))?);
            }
            all.push(experts);
        }
        Ok(all)
    }

    fn phase3_run(&self, task: usize) -> PhaseRun {
        let name = &self.cfg.tasks[task].name;
        self.run(&format!("phase3/{name}"), format!("phase 3 {name}"), &self.cfg.phase3, self.cfg.seed)
    }

    /// Phase 3: per task with several experts, the aggregator on the overall preference, with
    /// the backbone and the experts frozen (their pooled states computed once).
    pub fn phase3(&mut self) -> Result<Vec<Option<Trained<Aggregator>>>> {
        let experts = self.phase2()?;
        self.phase3_on(&experts)
    }

    /// Phase 3 on the given phase-2 experts of every task.
    fn phase3_on(&mut self, experts: &[Vec<Trained<Expert>>]) -> Result<Vec<Option<Trained<Aggregator>>>> {
        let mut out = Vec::new();
        for (t, experts) in experts.iter().enumerate() {
            if experts.len() < 2 {
                out.push(None);
                continue;
            }
            let run = self.phase3_run(t);
            if let Some(done) = run.result(self.aggregator_shape(experts.len()))? {
                out.push(Some(done));
                continue;
            }
            let name = self.cfg.tasks[t].name.clone();
            let mut train = self.preference_groups(false, |p| p.category.as_deref() == Some(&name))?;
            let mut valid = self.preference_groups(true, |p| p.category.as_deref() == Some(&name))?;
            // Features of every text the groups use, in a local index.
            let mut local: Vec<usize> = Vec::new();
            let mut position = std::collections::HashMap::new();
            for g in train.iter_mut().chain(valid.iter_mut()) {
                for text in g.texts.iter_mut() {
                    *text = *position.entry(*text).or_insert_with(|| {
                        local.push(*text);
                        local.len() - 1
                    });
                }
            }
            let members: Vec<&Expert> = experts.iter().map(|e| &e.model).collect();
            let group = ExpertGroup::stack(&members);
            let (k, h) = (members.len(), self.frozen.hidden_size());
            let mut features = Vec::with_capacity(local.len());
            let bar = crate::progress::bar(local.len(), &format!("expert states {name}"));
            for chunk in local.chunks(FEATURE_BATCH) {
                let n = chunk.len();
                let pooled = read(self.frozen.pooled(&self.cache, chunk, group.adapter(), k))?; // [k*n, H]
                for j in 0..n {
                    features.push((0..k).flat_map(|e| pooled[(e * n + j) * h..(e * n + j + 1) * h].to_vec()).collect());
                }
                bar.inc(n as u64);
            }
            bar.finish_and_clear();
            let expert_heads = match self.cfg.aggregator_init {
                AggregatorInit::Experts => experts.iter().map(|e| e.value_head()).collect::<Result<_>>()?,
                AggregatorInit::Random => Vec::new(),
            };
            let objective = AggregatorObjective {
                features,
                experts: k,
                hidden: h,
                train,
                valid,
                expert_heads,
                device: self.device.clone(),
            };
            out.push(Some(run.train(&objective)?));
        }
        Ok(out)
    }

    /// Writes the DMoERM bundle to `<out>/bundle` from the finished phases (training what is
    /// missing), loads it back as a check, and returns its path.
    pub fn all(&mut self) -> Result<PathBuf> {
        let router = self.router()?;
        let experts = self.phase2()?;
        let aggregators = self.phase3_on(&experts)?;
        let groups: Vec<ExpertGroup> =
            experts.iter().map(|ex| ExpertGroup::stack(&ex.iter().map(|e| &e.model).collect::<Vec<_>>())).collect();
        let tasks = self
            .cfg
            .tasks
            .iter()
            .zip(&experts)
            .zip(&groups)
            .zip(&aggregators)
            .map(|(((t, ex), group), agg)| TaskOut {
                name: t.name.clone(),
                description: t.description.clone(),
                experts: t
                    .capabilities
                    .iter()
                    .zip(ex)
                    .map(|(c, e)| ExpertOut { name: c.clone(), adapter: Some(e.model.adapter()) })
                    .collect(),
                heads: group.heads(),
                aggregator: agg.as_ref().map(|a| &a.model),
                combine: None,
            })
            .collect();
        let description = "DMoERM: router, capability LoRA experts, aggregators (dmoerm train all)".to_string();
        self.export("bundle", router.as_ref().map(|r| &r.model), tasks, description)
    }

    fn export(&self, sub: &str, router: Option<&Router>, tasks: Vec<TaskOut>, description: String) -> Result<PathBuf> {
        let out = self.cfg.out.join(sub);
        let backbone = BackboneFiles { dir: self.frozen.dir.clone(), spec: self.frozen.spec.clone() };
        let bundle = BundleOut {
            name: self.cfg.name.clone(),
            description: Some(description),
            backbone: &backbone,
            input: self.cfg.input.clone(),
            pooling: self.cfg.pooling,
            router,
            tasks,
        };
        write_bundle(&out, &bundle)?;
        RewardModel::load_on(&out, self.device.clone())?;
        Ok(out)
    }

    fn single_run(&mut self, sub: &str, label: String, seed: u64) -> Result<Trained<Expert>> {
        let run = self.run(sub, label, &self.cfg.phase1.clone(), seed);
        if let Some(done) = run.result(self.expert_shape())? {
            return Ok(done);
        }
        let train = self.preference_groups(false, |_| true)?;
        let valid = self.preference_groups(true, |_| true)?;
        self.train_pairwise(&run, train, valid, None)
    }

    /// The single-RM baseline: one LoRA + value head on every task's overall preference
    /// (phase-1 settings), written to `<out>/baseline-single`.
    pub fn baseline_single(&mut self) -> Result<PathBuf> {
        let single = self.single_run("baseline/single", "single RM".into(), self.cfg.seed)?;
        let group = ExpertGroup::stack(&[&single.model]);
        let task = TaskOut {
            name: "all".into(),
            description: Some("every task".into()),
            experts: vec![ExpertOut { name: "overall".into(), adapter: Some(single.model.adapter()) }],
            heads: group.heads(),
            aggregator: None,
            combine: None,
        };
        self.export("baseline-single", None, vec![task], "single reward model baseline".into())
    }

    /// The ensemble baseline: `baseline.members` single RMs with seeds `seed+1..` (their own
    /// initialisation and data order), written to `<out>/baseline-ensemble` with the mean
    /// rule (`dmoerm eval --combine` picks min or uncertainty-weighted).
    pub fn baseline_ensemble(&mut self) -> Result<PathBuf> {
        let mut members = Vec::new();
        for i in 1..=self.cfg.baseline.members {
            let seed = self.cfg.seed + i as u64;
            members.push(self.single_run(
                &format!("baseline/ensemble/member_{i}"),
                format!("ensemble member {i}"),
                seed,
            )?);
        }
        let group = ExpertGroup::stack(&members.iter().map(|m| &m.model).collect::<Vec<_>>());
        let task = TaskOut {
            name: "all".into(),
            description: Some("every task".into()),
            experts: members
                .iter()
                .enumerate()
                .map(|(i, m)| ExpertOut { name: format!("member_{}", i + 1), adapter: Some(m.model.adapter()) })
                .collect(),
            heads: group.heads(),
            aggregator: None,
            combine: Some(Combine::Mean),
        };
        self.export("baseline-ensemble", None, vec![task], "ensemble of single reward models baseline".into())
    }
}
