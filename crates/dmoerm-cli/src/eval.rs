//! `dmoerm eval`: how well any bundle orders preference data (`dmoerm_data::evaluate`).

use std::path::Path;

use dmoerm::{Combine, RewardModel};
use dmoerm_data::{evaluate, read_preferences, Report};

use crate::CliError;

pub fn eval(mut model: RewardModel, data: &Path, json: bool, combine: Option<Combine>) -> Result<(), CliError> {
    if let Some(rule) = combine {
        if model.set_combine(rule) == 0 {
            return Err(CliError::Usage("--combine: the bundle is not an ensemble".into()));
        }
    }
    let data = read_preferences(data)?;
    let bar = indicatif::ProgressBar::new(data.len() as u64).with_message("evaluating");
    let r = evaluate(&model, &data, |done, _| bar.set_position(done as u64))?;
    bar.finish_and_clear();
    if json {
        println!("{}", serde_json::to_string(&r).unwrap_or_default());
    } else {
        print_report(&r);
    }
    Ok(())
}

fn print_report(r: &Report) {
    println!("pairwise accuracy  {:.4}  ({} pairs)", r.accuracy, r.pairs);
    for (task, acc) in &r.per_task {
        println!("  {task:<24} {acc:.4}");
    }
    match r.router_accuracy {
        Some(a) => println!("router accuracy    {a:.4}"),
        None => println!("router accuracy    n/a"),
    }
    if let Some(b) = &r.bon {
        println!(
            "best-of-n ({} prompts, {:.1} candidates): model {:.4}  oracle {:.4}  random {:.4}",
            b.prompts, b.mean_candidates, b.model, b.oracle, b.random
        );
    }
}
