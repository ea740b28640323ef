//! Scores a stream of conversations of varied lengths on wgpu and counts what the GPU path pays
//! for them: kernel compilations (CubeCL's compilation log), compute dispatches per score (a
//! CubeCL launch observer) and time per score.
//!
//!     cargo run --release -p dmoerm --example gpu_stream -- MODEL [COUNT] [MAX_WORDS]
//!
//! MODEL is a bundle or a Hugging Face reward-model directory. The stream is COUNT (default 200)
//! conversations of 4 to MAX_WORDS (default 400) words, lengths drawn from a fixed seed, so two
//! runs see the same stream. Prints one line per score whose input length is new, then the
//! totals: compilations in all and after the first score, distinct input lengths, dispatches
//! per score, and the time per score of the first pass and of a second pass over the same
//! stream (everything compiled by then).

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cubecl::config::{compilation::CompilationLogLevel, CubeClRuntimeConfig, RuntimeConfig};
use cubecl::logging::{LaunchObservation, LaunchObserver};
use dmoerm::{Conversation, DeviceChoice, RewardModel};

const WORDS: &[&str] =
    &["the", "sea", "is", "wide", "and", "fox", "quick", "while", "reward", "models", "read", "every"];

/// Counts every kernel launch (a compute dispatch on wgpu), and the launches of each kernel.
#[derive(Default)]
struct Dispatches {
    all: AtomicUsize,
    by_kernel: Mutex<BTreeMap<&'static str, usize>>,
}

impl LaunchObserver for Dispatches {
    fn launched(&self, kernel: &'static str) {
        self.all.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut by_kernel) = self.by_kernel.lock() {
            *by_kernel.entry(kernel).or_default() += 1;
        }
    }
}

/// A kernel's type name without its module path and generic arguments.
fn short(kernel: &str) -> &str {
    let name = kernel.split('<').next().unwrap_or(kernel);
    name.rsplit("::").next().unwrap_or(name)
}

fn text(words: usize, offset: usize) -> String {
    (0..words).map(|i| WORDS[(i + offset) % WORDS.len()]).collect::<Vec<_>>().join(" ")
}

/// The stream: (prompt words, response words), from a fixed linear congruential sequence.
fn stream(count: usize, max_words: usize) -> Vec<Conversation> {
    let mut state: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = |n: usize| {
        state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (state >> 33) as usize % n
    };
    (0..count)
        .map(|i| {
            let words = 4 + next(max_words.saturating_sub(3));
            let response = 1 + words / 4;
            Conversation::new(text(words - response, i), text(response, i + 5))
        })
        .collect()
}

/// The kernels CubeCL's logger says it compiled ("[Compiling kernel] name" lines in `log`; it
/// writes from a task of its own: give it a moment).
fn compiled_kernels(log: &PathBuf) -> Vec<String> {
    std::thread::sleep(Duration::from_millis(200));
    let text = std::fs::read_to_string(log).unwrap_or_default();
    text.lines().filter_map(|l| l.split_once("[Compiling kernel]")).map(|(_, name)| name.trim().to_string()).collect()
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let Some(path) = args.get(1) else {
        return Err("usage: gpu_stream MODEL [COUNT] [MAX_WORDS]".into());
    };
    let count: usize = args.get(2).map(|c| c.parse()).transpose()?.unwrap_or(200);
    let max_words: usize = args.get(3).map(|c| c.parse()).transpose()?.unwrap_or(400);

    // CubeCL reads its configuration once, at the first kernel: set the compilation log first
    let log = std::env::temp_dir().join(format!("dmoerm-gpu-stream-{}.log", std::process::id()));
    let mut config = CubeClRuntimeConfig::default();
    config.compilation.logger.level = CompilationLogLevel::Basic;
    config.compilation.logger.file = Some(log.clone());
    CubeClRuntimeConfig::set(config);

    let model = RewardModel::load(path, DeviceChoice::Gpu)?;
    let conversations = stream(count, max_words);
    let dispatches = Arc::new(Dispatches::default());
    let _observing = LaunchObservation::new(dispatches.clone());

    let mut lengths = BTreeSet::new();
    let mut per_score = Vec::with_capacity(count);
    let mut after_first = 0;
    let mut first_pass = Duration::ZERO;
    for (i, conversation) in conversations.iter().enumerate() {
        let tokens = model.encode(conversation)?.expert.ids.len();
        let before = dispatches.all.load(Ordering::Relaxed);
        let start = Instant::now();
        let score = model.score(conversation)?;
        first_pass += start.elapsed();
        per_score.push(dispatches.all.load(Ordering::Relaxed) - before);
        if i == 0 {
            after_first = compiled_kernels(&log).len();
        }
        if lengths.insert(tokens) {
            println!(
                "score {i:>3}: {tokens:>5} tokens (new), reward {:>9.5}, {} dispatches, {:.1} ms",
                score.reward,
                per_score[i],
                start.elapsed().as_secs_f64() * 1e3
            );
        }
    }
    let kernels = compiled_kernels(&log);
    let compiled = kernels.len();
    // what one score launches (the last one of the stream), kernel by kernel
    if let Ok(mut by_kernel) = dispatches.by_kernel.lock() {
        by_kernel.clear();
    }
    if let Some(last) = conversations.last() {
        model.score(last)?;
    }
    if let Ok(by_kernel) = dispatches.by_kernel.lock() {
        let listed: Vec<String> = by_kernel.iter().map(|(k, n)| format!("{n} {}", short(k))).collect();
        println!("one score's dispatches: {}", listed.join(", "));
    }
    println!(
        "compiled after the first score: {}",
        kernels[after_first.min(compiled)..].iter().map(|k| short(k)).collect::<Vec<_>>().join(", ")
    );
    let start = Instant::now();
    for conversation in &conversations {
        model.score(conversation)?;
    }
    let second_pass = start.elapsed();
    let recompiled = compiled_kernels(&log).len() - compiled;
    let _ = std::fs::remove_file(&log);

    let (min, max) = (per_score.iter().min().copied().unwrap_or(0), per_score.iter().max().copied().unwrap_or(0));
    let mean = per_score.iter().sum::<usize>() as f64 / count.max(1) as f64;
    println!(
        "{path}: {count} conversations, {} distinct input lengths ({}..={} tokens)",
        lengths.len(),
        lengths.first().unwrap_or(&0),
        lengths.last().unwrap_or(&0)
    );
    println!(
        "compilations: {compiled} in all, {after_first} at the first score, {} after it; {recompiled} in a second pass",
        compiled - after_first
    );
    println!("dispatches per score: mean {mean:.1}, min {min}, max {max}");
    println!(
        "time per score: first pass {:.1} ms, second pass {:.1} ms",
        first_pass.as_secs_f64() * 1e3 / count.max(1) as f64,
        second_pass.as_secs_f64() * 1e3 / count.max(1) as f64
    );
    Ok(())
}
