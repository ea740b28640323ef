//! `dmoerm train ...`: a thin wrapper over `dmoerm-train`.

use std::path::PathBuf;

use clap::{Subcommand, ValueEnum};
use dmoerm_train::pipeline::Pipeline;
use dmoerm_train::trainer::Summary;
use dmoerm_train::TrainConfig;

use crate::{CliError, DeviceArg};

#[derive(Clone, Copy, ValueEnum)]
pub enum BaselineKind {
    /// One LoRA + value head on every task's overall preference.
    Single,
    /// `baseline.members` single RMs with different seeds and data order.
    Ensemble,
}

#[derive(Subcommand)]
pub enum TrainCommand {
    /// The router: a task classifier on the user turns.
    Router(TrainArgs),
    /// Phase 1: per task, a LoRA adapter + value head on the overall preference.
    Phase1(TrainArgs),
    /// Phase 2: per capability point, a LoRA expert + value head from phase 1 (runs phase 1 if needed).
    Phase2(TrainArgs),
    /// Phase 3: per task, the aggregator MLP over the frozen experts (runs phases 1-2 if needed).
    Phase3(TrainArgs),
    /// The whole pipeline, then the bundle in OUT/bundle.
    All(TrainArgs),
    /// The paper's baselines, as bundles in OUT/baseline-single or OUT/baseline-ensemble.
    Baseline {
        #[arg(long, value_enum)]
        kind: BaselineKind,
        #[command(flatten)]
        args: TrainArgs,
    },
}

#[derive(clap::Args)]
pub struct TrainArgs {
    /// The training config (TOML).
    #[arg(long)]
    config: PathBuf,
    /// The run directory, instead of the config's `out`.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Where to train: auto = a hardware GPU if there is one, else the CPU.
    #[arg(long, value_enum, default_value = "auto")]
    device: DeviceArg,
}

fn open(args: &TrainArgs) -> Result<Pipeline, CliError> {
    let mut cfg = TrainConfig::load(&args.config)?;
    if let Some(out) = &args.out {
        cfg.out = out.clone();
    }
    let device = crate::open_device(args.device)?;
    Ok(Pipeline::open(cfg, device)?)
}

fn report(phases: &[&Summary]) {
    println!("{:<36} {:>6} {:>10} {:>10} {:>12}", "phase", "steps", "best step", "valid acc", "units/s");
    for s in phases {
        println!(
            "{:<36} {:>6} {:>10} {:>10.4} {:>12.1}",
            s.label, s.steps, s.best_step, s.best_valid_accuracy, s.train_units_per_second
        );
    }
}

pub fn train(command: TrainCommand) -> Result<(), CliError> {
    match command {
        TrainCommand::Router(args) => {
            let mut p = open(&args)?;
            match p.router()? {
                Some(t) => report(&[&t.summary]),
                None => println!("one task: no router to train"),
            }
        }
        TrainCommand::Phase1(args) => {
            let ts = open(&args)?.phase1()?;
            report(&ts.iter().map(|t| &t.summary).collect::<Vec<_>>());
        }
        TrainCommand::Phase2(args) => {
            let ts = open(&args)?.phase2()?;
            report(&ts.iter().flatten().map(|t| &t.summary).collect::<Vec<_>>());
        }
        TrainCommand::Phase3(args) => {
            let ts = open(&args)?.phase3()?;
            report(&ts.iter().flatten().map(|t| &t.summary).collect::<Vec<_>>());
        }
        TrainCommand::All(args) => {
            let mut p = open(&args)?;
            let bundle = p.all()?;
            let mut all: Vec<Summary> = p.router()?.into_iter().map(|t| t.summary).collect();
            all.extend(p.phase1()?.into_iter().map(|t| t.summary));
            all.extend(p.phase2()?.into_iter().flatten().map(|t| t.summary));
            all.extend(p.phase3()?.into_iter().flatten().map(|t| t.summary));
            report(&all.iter().collect::<Vec<_>>());
            println!("bundle: {}", bundle.display());
        }
        TrainCommand::Baseline { kind, args } => {
            let mut p = open(&args)?;
            let bundle = match kind {
                BaselineKind::Single => p.baseline_single()?,
                BaselineKind::Ensemble => p.baseline_ensemble()?,
            };
            println!("bundle: {}", bundle.display());
        }
    }
    Ok(())
}
