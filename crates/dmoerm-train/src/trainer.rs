//! The training loop shared by every phase: Adam, validation accuracy every `eval_every`
//! steps, early stopping, the best parameters kept, and resumption.
//!
//! A phase's directory holds:
//! - `checkpoint.safetensors`: parameters, Adam moments, the best parameters so far and the
//!   loop state (in the metadata), written atomically at every validation;
//! - `result.safetensors`: the best parameters, written when the phase ends; a phase with a
//!   result is done and is not trained again;
//! - `metrics.json` and `curve.svg`: the train / validation accuracy curve;
//! - `log.txt`: one line per start, resume, validation and end.
//!
//! Resuming continues from the last checkpoint with the same data order, so an interrupted
//! run ends with the same parameters as an uninterrupted one.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::tensor::Device;
use serde::{Deserialize, Serialize};

use crate::config::PhaseSettings;
use crate::error::{Error, Result};
use crate::features::read;
use crate::objectives::{Objective, Tally};
use crate::params::{load_safetensors, save_safetensors, Adam, HostParams, Params};
use crate::rng::Rng;
use crate::{plot, progress};

/// One validation point of the curve.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Point {
    pub step: usize,
    /// Mean training loss since the previous point (none at step 0).
    pub train_loss: Option<f64>,
    /// Training accuracy since the previous point.
    pub train_accuracy: Option<f64>,
    pub valid_accuracy: f64,
}

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

/// A phase's outcome: its best parameters.
#[derive(Debug, Clone)]
pub struct Trained {
    pub params: Params,
    pub summary: Summary,
}

impl Trained {
    /// The value head (`head.weight` `[H]`, `head.bias`) of a LoRA phase's result.
    pub fn value_head(&self) -> Result<(Vec<f32>, f32)> {
        let bias = read(self.params.get::<1>("head.bias"))?;
        Ok((read(self.params.get::<1>("head.weight"))?, bias.first().copied().unwrap_or(0.0)))
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
    adam_t: u64,
    /// Optimisation time so far and the units it processed.
    seconds: f64,
    units: usize,
    history: Vec<Point>,
}

const CHECKPOINT: &str = "checkpoint.safetensors";
const RESULT: &str = "result.safetensors";

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

    /// The finished result of this phase, if there is one.
    pub fn result(&self, device: &Device) -> Result<Option<Trained>> {
        let path = self.dir.join(RESULT);
        if !path.exists() {
            return Ok(None);
        }
        let (host, meta) = load_safetensors(&path)?;
        let summary = meta
            .get("summary")
            .and_then(|s| serde_json::from_str(s).ok())
            .ok_or_else(|| Error::run(&path, "no summary in the metadata"))?;
        Ok(Some(Trained { params: Params::from_host(host, device), summary }))
    }

    /// Trains `objective` (or returns the phase's result if it already finished).
    pub fn train(&self, objective: &dyn Objective, device: &Device) -> Result<Trained> {
        if let Some(done) = self.result(device)? {
            return Ok(done);
        }
        let n = objective.train_size();
        if n == 0 {
            return Err(Error::run(&self.dir, format!("{}: no training data", self.label)));
        }
        let s = &self.settings;
        let fingerprint = self.fingerprint(n);
        let ckpt = self.dir.join(CHECKPOINT);
        let (mut params, mut adam, mut best, mut state) = if ckpt.exists() {
            self.resume(&ckpt, &fingerprint, device)?
        } else {
            let params = objective.init(&mut Rng::new(self.seed));
            let acc = objective.validate(&params)?.accuracy();
            let state = State {
                fingerprint,
                step: 0,
                best_step: 0,
                best_accuracy: acc,
                bad_evals: 0,
                adam_t: 0,
                seconds: 0.0,
                units: 0,
                history: vec![Point { step: 0, train_loss: None, train_accuracy: None, valid_accuracy: acc }],
            };
            (params.clone(), Adam::new(&params), params, state)
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
            let tracked = params.tracked();
            if let Some(out) = objective.step(&tracked, &units)? {
                loss_sum += crate::features::read(out.loss.clone())?[0] as f64;
                loss_steps += 1;
                tally.add((out.tally.correct, out.tally.total));
                let grads = out.loss.backward();
                adam.step(&mut params, &tracked, &grads, s.lr);
            }
            state.seconds += started.elapsed().as_secs_f64();
            state.units += units.len();
            state.step += 1;
            bar.set_position(state.step as u64);
            if state.step % s.eval_every == 0 || state.step == s.max_steps {
                let acc = objective.validate(&params)?.accuracy();
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
                    best = params.clone();
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
                state.adam_t = adam.t;
                self.checkpoint(&ckpt, &params, &adam, &best, &state)?;
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
        Ok(Trained { params: best, summary })
    }

    fn resume(&self, ckpt: &Path, fingerprint: &str, device: &Device) -> Result<(Params, Adam, Params, State)> {
        let (host, meta) = load_safetensors(ckpt)?;
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
        let part = |prefix: &str| {
            let sub: HostParams =
                host.iter().filter_map(|(k, v)| k.strip_prefix(prefix).map(|n| (n.to_string(), v.clone()))).collect();
            Params::from_host(sub, device)
        };
        let adam = Adam { m: part("m/"), v: part("v/"), t: state.adam_t };
        Ok((part("p/"), adam, part("best/"), state))
    }

    fn checkpoint(&self, path: &Path, params: &Params, adam: &Adam, best: &Params, state: &State) -> Result<()> {
        let mut host = HostParams::new();
        for (prefix, p) in [("p/", params), ("m/", &adam.m), ("v/", &adam.v), ("best/", best)] {
            host.extend(p.to_host()?.into_iter().map(|(k, v)| (format!("{prefix}{k}"), v)));
        }
        let state_json = serde_json::to_string(state).map_err(|e| Error::run(path, e.to_string()))?;
        save_safetensors(path, &host, BTreeMap::from([("state".to_string(), state_json)]))?;
        self.write_metrics(&state.history)
    }

    fn finish(&self, best: &Params, summary: &Summary) -> Result<()> {
        let json = serde_json::to_string(summary).map_err(|e| Error::run(&self.dir, e.to_string()))?;
        save_safetensors(&self.dir.join(RESULT), &best.to_host()?, BTreeMap::from([("summary".to_string(), json)]))?;
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
