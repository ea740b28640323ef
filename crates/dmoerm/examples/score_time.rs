//! Times single `score` calls of a bundle on the CPU (flex) and on wgpu.
//!
//!     cargo run --release -p dmoerm --example score_time -- tests/fixtures/llama [runs]
//!
//! Prints the mean and the best of `runs` single-conversation scores after 3 warm-up calls.

use std::time::Instant;

use dmoerm::{Conversation, DeviceChoice, RewardModel};

fn main() -> Result<(), dmoerm::Error> {
    let args: Vec<String> = std::env::args().collect();
    let path = args.get(1).map(String::as_str).unwrap_or("tests/fixtures/llama");
    let runs: usize = args.get(2).and_then(|r| r.parse().ok()).unwrap_or(50);
    let conv = Conversation::new(
        "I feel sad today, can you cheer me up?",
        "Of course. Tell me what happened, and we can think about it together.",
    );
    for (label, choice) in [("cpu (flex)", DeviceChoice::Cpu), ("gpu (wgpu)", DeviceChoice::Gpu)] {
        let model = match RewardModel::load(path, choice) {
            Ok(m) => m,
            Err(e) => {
                println!("{label}: not available ({e})");
                continue;
            }
        };
        for _ in 0..3 {
            model.score(&conv)?;
        }
        let mut times = Vec::with_capacity(runs);
        for _ in 0..runs {
            let t = Instant::now();
            model.score(&conv)?;
            times.push(t.elapsed().as_secs_f64() * 1e3);
        }
        let mean = times.iter().sum::<f64>() / runs as f64;
        let best = times.iter().cloned().fold(f64::INFINITY, f64::min);
        println!("{label}: {path}: mean {mean:.2} ms, best {best:.2} ms over {runs} single scores");
    }
    Ok(())
}
