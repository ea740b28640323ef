//! The training loop shared by every phase: the objective's module trained with
//! `burn::optim`'s Adam, validation accuracy every `eval_every` steps, early stopping, the best
//! model kept, and resumption.
//!
//! A phase's directory holds:
//! - `checkpoint.safetensors`: burn's records of the model, of Adam's state and of the best
//!   model so far (burnpack bytes, one tensor each) and the loop state (in the metadata),
//!   written atomically at every validation;
//! - `result.safetensors`: the best model's record and the summary, written when the phase
//!   ends; a phase with a result is done and is not trained again;
//! - `metrics.json` and `curve.svg`: the train / validation accuracy curve;
//! - `log.txt`: one line per start, resume, validation and end.
//!
//! Resuming continues from the last checkpoint with the same data order, so an interrupted
//! run ends with the same parameters as an uninterrupted one.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::module::{Module, ParamGroup};
use burn::optim::{
    Adam, AdamConfig, DynOptimizer, DynState, GradientsParams, LearningRate, ModuleOptimizer, StateSink, StateSource,
};
use burn::store::ModuleRecord;
use burn::tensor::kind::BridgeTensor;
use burn::tensor::{Bytes, Device};
use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};
use serde::{Deserialize, Serialize};

use crate::config::PhaseSettings;
use crate::error::{Error, Result};
use crate::features::read;
use crate::host::renumber;
use crate::objectives::{Objective, Tally};
pub use crate::plot::Point;
use crate::{plot, progress};
use dmoerm_data::rng::Rng;

/// What a finished phase reports (`metrics.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub label: String,
    /// Steps run.
    pub steps: usize,
    /// Step of the kept parameters (0 = the initial ones).
    pub best_step: usize,
    pub best_valid_accuracy: f64,
    /// `early_stopping` or `max_steps`.
    pub stopped: String,
    /// Training units (prompts, pairs or queries) per second of optimisation, validation excluded.
    pub train_units_per_second: f64,
    /// Training units in the data.
    pub train_units: usize,
    pub history: Vec<Point>,
}

/// A phase's outcome: its best model.
#[derive(Debug, Clone)]
pub struct Trained<M> {
    pub model: M,
    pub summary: Summary,
}

impl Trained<dmoerm::expert::Expert> {
    /// The value head (`weight` `[H]`, `bias`) of a LoRA phase's result.
    pub fn value_head(&self) -> Result<(Vec<f32>, f32)> {
        let head = self.model.head();
        let bias = match &head.bias {
            Some(b) => read(b.val())?.first().copied().unwrap_or(0.0),
            None => 0.0,
        };
        Ok((read(head.weight.val())?, bias))
    }
}

/// Where and how to run one phase.
#[derive(Debug, Clone)]
pub struct PhaseRun {
    pub dir: PathBuf,
    /// Shown on the progress bar and in the metrics.
    pub label: String,
    pub settings: PhaseSettings,
    pub seed: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct State {
    fingerprint: String,
    step: usize,
    best_step: usize,
    best_accuracy: f64,
    bad_evals: usize,
    /// Optimisation time so far and the units it processed.
    seconds: f64,
    units: usize,
    history: Vec<Point>,
}

const CHECKPOINT: &str = "checkpoint.safetensors";
const RESULT: &str = "result.safetensors";

/// Adam (Kingma & Ba) with bias correction; beta1 0.9, beta2 0.999, eps 1e-8 (PyTorch's
/// defaults), no weight decay; a resumed state is placed on `device`.
fn adam(device: &Device) -> ModuleOptimizer {
    let config = AdamConfig::new().with_epsilon(1e-8);
    // `from` needs a plain optimiser as the fallback group; the group over every parameter
    // added after it takes precedence, so AdamOn is what runs.
    ModuleOptimizer::from(config.build()).with_group(
        ParamGroup::all(),
        AdamOn { adam: config.build(), device: device.clone() },
        None,
    )
}

/// burn's Adam, except that a state read back from a record goes to the training device.
/// (`ModuleOptimizer::load_record` materialises the states on `Device::default()`, which is the
/// wgpu device whenever wgpu is compiled in: resuming a CPU run would start a GPU runtime, or
/// fail on a machine without one.)
struct AdamOn {
    adam: Adam,
    device: Device,
}

impl DynOptimizer for AdamOn {
    fn step_dyn(
        &self,
        rank: usize,
        lr: LearningRate,
        tensor: BridgeTensor,
        grad: BridgeTensor,
        state: Option<DynState>,
    ) -> (BridgeTensor, Option<DynState>) {
        self.adam.step_dyn(rank, lr, tensor, grad, state)
    }

    fn to_device_dyn(&self, state: DynState, device: &Device) -> DynState {
        self.adam.to_device_dyn(state, device)
    }

    fn state_flatten(&self, prefix: &str, state: &DynState, out: &mut StateSink) {
        self.adam.state_flatten(prefix, state, out)
    }

    fn state_unflatten(&self, rank: usize, prefix: &str, src: &mut StateSource, _: &Device) -> Option<DynState> {
        self.adam.state_unflatten(rank, prefix, src, &self.device)
    }
}

impl PhaseRun {
    /// The settings that must match for a checkpoint to be resumed (`max_steps` and
    /// `patience` may change: a run can be continued for longer).
    fn fingerprint(&self, train_size: usize) -> String {
        let s = &self.settings;
        format!(
            "{}|units={train_size}|lr={}|batch={}|eval_every={}|seed={}",
            self.label, s.lr, s.batch_size, s.eval_every, self.seed
        )
    }

    /// The finished result of this phase, if there is one; `skeleton` is a model of the right
    /// shape, whose values the result replaces.
    pub fn result<M: Module>(&self, skeleton: M) -> Result<Option<Trained<M>>> {
        let path = self.dir.join(RESULT);
        if !path.exists() {
            return Ok(None);
        }
        let (mut records, meta) = read_records(&path)?;
        let summary = meta
            .get("summary")
            .and_then(|s| serde_json::from_str(s).ok())
            .ok_or_else(|| Error::run(&path, "no summary in the metadata"))?;
        let model = load_model(&path, skeleton, records.remove("best"))?;
        Ok(Some(Trained { model, summary }))
    }

    /// Trains `objective` (or returns the phase's result if it already finished).
    pub fn train<O: Objective>(&self, objective: &O) -> Result<Trained<O::Model>> {
        // The initial model: where a fresh run starts, and the shape records are read into.
        let init = renumber(objective.init(&mut Rng::new(self.seed)));
        let device = model_device(&init);
        if let Some(done) = self.result(init.clone())? {
            return Ok(done);
        }
        let n = objective.train_size();
        if n == 0 {
            return Err(Error::run(&self.dir, format!("{}: no training data", self.label)));
        }
        let s = &self.settings;
        let fingerprint = self.fingerprint(n);
        let ckpt = self.dir.join(CHECKPOINT);
        let (mut model, mut optim, mut best, mut state) = if ckpt.exists() {
            self.resume(&ckpt, &fingerprint, init, &device)?
        } else {
            let model = init;
            let acc = objective.validate(&model)?.accuracy();
            let state = State {
                fingerprint,
                step: 0,
                best_step: 0,
                best_accuracy: acc,
                bad_evals: 0,
                seconds: 0.0,
                units: 0,
                history: vec![Point { step: 0, train_loss: None, train_accuracy: None, valid_accuracy: acc }],
            };
            (model.clone(), adam(&device), model, state)
        };

        self.log(&format!(
            "{} at step {} of {} ({n} training units, lr {}, batch {})",
            if state.step == 0 { "start" } else { "resume" },
            state.step,
            s.max_steps,
            s.lr,
            s.batch_size
        ))?;
        if state.step == 0 {
            self.log(&format!("step 0 valid_accuracy {:.4} (initial parameters)", state.history[0].valid_accuracy))?;
        }
        let bar = progress::bar(s.max_steps, &self.label);
        bar.set_position(state.step as u64);
        let mut order = Order::new(n, self.seed);
        let (mut loss_sum, mut loss_steps, mut tally) = (0.0, 0usize, Tally::default());
        while state.step < s.max_steps && state.bad_evals < s.patience {
            let units = order.units(state.step, s.batch_size);
            let started = Instant::now();
            let tracked = model.clone().train();
            if let Some(out) = objective.step(&tracked, &units)? {
                loss_sum += read(out.loss.clone())?[0] as f64;
                loss_steps += 1;
                tally.add((out.tally.correct, out.tally.total));
                let grads = GradientsParams::from_grads(out.loss.backward(), &tracked);
                model = optim.step(s.lr, tracked, grads).valid();
            }
            state.seconds += started.elapsed().as_secs_f64();
            state.units += units.len();
            state.step += 1;
            bar.set_position(state.step as u64);
            if state.step % s.eval_every == 0 || state.step == s.max_steps {
                let acc = objective.validate(&model)?.accuracy();
                state.history.push(Point {
                    step: state.step,
                    train_loss: (loss_steps > 0).then(|| loss_sum / loss_steps as f64),
                    train_accuracy: (tally.total > 0).then(|| tally.accuracy()),
                    valid_accuracy: acc,
                });
                (loss_sum, loss_steps, tally) = (0.0, 0, Tally::default());
                if acc > state.best_accuracy {
                    state.best_accuracy = acc;
                    state.best_step = state.step;
                    state.bad_evals = 0;
                    best = model.clone();
                } else {
                    state.bad_evals += 1;
                }
                bar.set_prefix(format!("valid {:.3} (best {:.3})", acc, state.best_accuracy));
                let last = &state.history[state.history.len() - 1];
                self.log(&format!(
                    "step {} train_loss {} train_accuracy {} valid_accuracy {acc:.4} best {:.4} (step {})",
                    state.step,
                    last.train_loss.map_or("-".into(), |l| format!("{l:.4}")),
                    last.train_accuracy.map_or("-".into(), |a| format!("{a:.4}")),
                    state.best_accuracy,
                    state.best_step
                ))?;
                self.checkpoint(&ckpt, &model, &optim, &best, &state)?;
            }
        }
        bar.finish_and_clear();
        let summary = Summary {
            label: self.label.clone(),
            steps: state.step,
            best_step: state.best_step,
            best_valid_accuracy: state.best_accuracy,
            stopped: if state.bad_evals >= s.patience { "early_stopping" } else { "max_steps" }.into(),
            train_units_per_second: if state.seconds > 0.0 { state.units as f64 / state.seconds } else { 0.0 },
            train_units: n,
            history: state.history,
        };
        self.finish(&best, &summary)?;
        self.log(&format!(
            "done: {} after {} steps; best valid_accuracy {:.4} at step {}; {:.2} units/s",
            summary.stopped,
            summary.steps,
            summary.best_valid_accuracy,
            summary.best_step,
            summary.train_units_per_second
        ))?;
        Ok(Trained { model: best, summary })
    }

    fn resume<M: Module>(
        &self,
        ckpt: &Path,
        fingerprint: &str,
        skeleton: M,
        device: &Device,
    ) -> Result<(M, ModuleOptimizer, M, State)> {
        let (mut records, meta) = read_records(ckpt)?;
        let state: State = meta
            .get("state")
            .and_then(|s| serde_json::from_str(s).ok())
            .ok_or_else(|| Error::run(ckpt, "no loop state in the metadata"))?;
        if state.fingerprint != fingerprint {
            return Err(Error::run(
                ckpt,
                format!(
                    "the checkpoint was made with other settings ({}, now {fingerprint}); delete {} to start this phase over",
                    state.fingerprint,
                    self.dir.display()
                ),
            ));
        }
        let model = load_model(ckpt, skeleton.clone(), records.remove("model"))?;
        let best = load_model(ckpt, skeleton, records.remove("best"))?;
        let optim_bytes = records.remove("optimizer").ok_or_else(|| Error::run(ckpt, "no optimizer record"))?;
        let optim = adam(device)
            .from_bytes(Bytes::from_bytes_vec(optim_bytes))
            .map_err(|e| Error::run(ckpt, format!("optimizer record: {e:?}")))?;
        Ok((model, optim, best, state))
    }

    fn checkpoint<M: Module>(
        &self,
        path: &Path,
        model: &M,
        optim: &ModuleOptimizer,
        best: &M,
        state: &State,
    ) -> Result<()> {
        let bytes = |r: std::result::Result<Bytes, burn::store::RecordError>| {
            r.map(|b| b.to_vec()).map_err(|e| Error::run(path, format!("record: {e:?}")))
        };
        let records = [
            ("model", bytes(model.clone().into_record().into_bytes())?),
            ("optimizer", bytes(optim.into_bytes())?),
            ("best", bytes(best.clone().into_record().into_bytes())?),
        ];
        let state_json = serde_json::to_string(state).map_err(|e| Error::run(path, e.to_string()))?;
        write_records(path, &records, BTreeMap::from([("state".to_string(), state_json)]))?;
        self.write_metrics(&state.history)
    }

    fn finish<M: Module>(&self, best: &M, summary: &Summary) -> Result<()> {
        let path = self.dir.join(RESULT);
        let record =
            best.clone().into_record().into_bytes().map_err(|e| Error::run(&path, format!("record: {e:?}")))?;
        let json = serde_json::to_string(summary).map_err(|e| Error::run(&self.dir, e.to_string()))?;
        write_records(&path, &[("best", record.to_vec())], BTreeMap::from([("summary".to_string(), json)]))?;
        self.write_metrics(&summary.history)?;
        let pretty = serde_json::to_string_pretty(summary).map_err(|e| Error::run(&self.dir, e.to_string()))?;
        let path = self.dir.join("metrics.json");
        std::fs::write(&path, pretty + "\n").map_err(Error::io("write", &path))
    }

    /// Appends a line to the phase's `log.txt`.
    fn log(&self, line: &str) -> Result<()> {
        use std::io::Write;
        let path = self.dir.join("log.txt");
        std::fs::create_dir_all(&self.dir).map_err(Error::io("create", &self.dir))?;
        let mut f =
            std::fs::OpenOptions::new().create(true).append(true).open(&path).map_err(Error::io("write", &path))?;
        writeln!(f, "{line}").map_err(Error::io("write", &path))
    }

    fn write_metrics(&self, history: &[Point]) -> Result<()> {
        plot::accuracy_curve(&self.dir.join("curve.svg"), &self.label, history)
    }
}

/// The device of a model's parameters (flex for a model without any).
fn model_device<M: Module>(model: &M) -> Device {
    model.devices().into_iter().next().unwrap_or_else(Device::flex)
}

/// `model` with the values of the burn record `bytes` (a record of the same module).
fn load_model<M: Module>(path: &Path, model: M, bytes: Option<Vec<u8>>) -> Result<M> {
    let bytes = bytes.ok_or_else(|| Error::run(path, "a model record is missing"))?;
    let record = ModuleRecord::from_bytes(Bytes::from_bytes_vec(bytes))
        .map_err(|e| Error::run(path, format!("record: {e:?}")))?;
    model.try_load_record(record).map_err(|e| Error::run(path, format!("record: {e:?}")))
}

/// Writes named byte blobs (burn records) as U8 tensors of one safetensors file with string
/// metadata, atomically: the checkpoint is whole or absent.
fn write_records(path: &Path, records: &[(&str, Vec<u8>)], metadata: BTreeMap<String, String>) -> Result<()> {
    let views = records
        .iter()
        .map(|(name, bytes)| {
            TensorView::new(Dtype::U8, vec![bytes.len()], bytes)
                .map(|v| (name.to_string(), v))
                .map_err(|e| Error::run(path, e.to_string()))
        })
        .collect::<Result<Vec<_>>>()?;
    let meta: std::collections::HashMap<String, String> = metadata.into_iter().collect();
    let data = safetensors::serialize(views, Some(meta)).map_err(|e| Error::run(path, e.to_string()))?;
    dmoerm::weights::write_atomic(path, &data)?;
    Ok(())
}

/// Named byte blobs (burn records) and string metadata: what [`write_records`] writes.
type Records = (BTreeMap<String, Vec<u8>>, BTreeMap<String, String>);

/// The byte blobs and metadata of a file written by [`write_records`].
fn read_records(path: &Path) -> Result<Records> {
    let bytes = std::fs::read(path).map_err(Error::io("read", path))?;
    let (_, meta) = SafeTensors::read_metadata(&bytes).map_err(|e| Error::run(path, e.to_string()))?;
    let st = SafeTensors::deserialize(&bytes).map_err(|e| Error::run(path, e.to_string()))?;
    let records = st.tensors().into_iter().map(|(name, view)| (name, view.data().to_vec())).collect();
    let metadata = meta.metadata().clone().unwrap_or_default().into_iter().collect();
    Ok((records, metadata))
}

/// What the burn records of a checkpoint or result hold, in a canonical order: every tensor
/// (by record and name), scalar and metadata entry. Two runs that reached the same state give
/// equal contents (a record's byte layout may differ: the optimiser lists its states in hash
/// order). The loop state beside the records (with its timings) is not part of it.
pub fn record_contents(path: &Path) -> Result<BTreeMap<String, Vec<u8>>> {
    let (records, _) = read_records(path)?;
    let mut out = BTreeMap::new();
    for (record, bytes) in records {
        let reader = burn_pack::Reader::from_bytes(Bytes::from_bytes_vec(bytes))
            .map_err(|e| Error::run(path, format!("{record}: {e:?}")))?;
        for name in reader.tensor_names() {
            let data = reader.tensor_data(name).map_err(|e| Error::run(path, format!("{record}: {e:?}")))?;
            out.insert(format!("{record}/tensor/{name}"), data);
        }
        for (k, v) in reader.scalars() {
            out.insert(format!("{record}/scalar/{k}"), format!("{v:?}").into_bytes());
        }
        for (k, v) in reader.metadata() {
            out.insert(format!("{record}/metadata/{k}"), v.clone().into_bytes());
        }
    }
    Ok(out)
}

/// The data order: a fresh seeded permutation per epoch; step `s` takes positions
/// `s*batch .. (s+1)*batch` of the concatenated epochs, so it depends only on the step.
struct Order {
    n: usize,
    seed: u64,
    epoch: usize,
    perm: Vec<usize>,
}

impl Order {
    fn new(n: usize, seed: u64) -> Self {
        Self { n, seed, epoch: usize::MAX, perm: Vec::new() }
    }

    fn units(&mut self, step: usize, batch: usize) -> Vec<usize> {
        (step * batch..(step + 1) * batch)
            .map(|pos| {
                let epoch = pos / self.n;
                if epoch != self.epoch {
                    self.epoch = epoch;
                    let seed = self.seed.wrapping_mul(0x100_0000_01B3).wrapping_add(epoch as u64);
                    self.perm = Rng::new(seed).permutation(self.n);
                }
                self.perm[pos % self.n]
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_unit_is_seen_once_per_epoch() {
        let mut o = Order::new(10, 3);
        let mut seen: Vec<usize> = (0..5).flat_map(|s| o.units(s, 2)).collect();
        seen.sort_unstable();
        assert_eq!(seen, (0..10).collect::<Vec<_>>());
        // the order is a function of the step: a fresh Order gives the same units
        let again = Order::new(10, 3).units(7, 3);
        assert_eq!(again, o.units(7, 3));
    }
}
