//! This crate's side of the side-by-side benchmark (`benches/compare/run.sh` drives it).
//!
//!     bench_compare SPEC.json        # times the cases of SPEC, prints JSON
//!     bench_compare --memory BUNDLE [cpu|gpu]  # peak resident memory of loading + scoring
//!                                              # (on the CPU, or a GPU: wgpu), prints JSON
//!     bench_compare --pack int8|q4 DIR OUT  # packs the bundle directory DIR into OUT
//!
//! SPEC: `{"bundle": DIR, "warmup": 2, "runs": 10, "cases": [CASE...]}` (and `"device": "gpu"`
//! for wgpu; the CPU by default) with CASE one of
//! `{"name", "kind": "score", "conversations": [..]}` (one `score_batch` call over them) or
//! `{"name", "kind": "rank", "prompt", "candidates": [..]}` (one `rank` call).
//! Every timed call is the whole public call: tokenizing, routing, experts, heads, aggregator.

use std::time::Instant;

use dmoerm::{Conversation, DeviceChoice, PackDtype, RewardModel};
use serde::{Deserialize, Serialize};

#[derive(Deserialize)]
struct Spec {
    bundle: String,
    warmup: usize,
    runs: usize,
    cases: Vec<Case>,
    #[serde(default)]
    device: Option<String>,
}

#[derive(Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
enum Case {
    Score { name: String, conversations: Vec<Conversation> },
    Rank { name: String, prompt: String, candidates: Vec<String> },
}

#[derive(Serialize)]
struct CaseResult {
    name: String,
    /// Seconds of each timed call.
    times_s: Vec<f64>,
    /// Rewards in input order.
    rewards: Vec<f32>,
    /// Router input tokens (one per routed text).
    router_tokens: Vec<usize>,
    /// Expert input tokens per conversation (each runs k experts).
    expert_tokens: Vec<usize>,
    experts: usize,
}

/// One timed public call; returns the rewards in input order.
type Call<'a> = Box<dyn Fn() -> dmoerm::Result<Vec<f32>> + 'a>;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("--memory") => memory(
            args.get(2).ok_or("--memory needs a bundle path")?,
            args.get(3).map_or(Ok(DeviceChoice::Cpu), |d| d.parse())?,
        ),
        Some("--pack") => match &args[2..] {
            [dtype, dir, out] => pack(dtype, dir, out),
            _ => Err("usage: bench_compare --pack int8|q4 DIR OUT".into()),
        },
        Some(spec) => run(&std::fs::read_to_string(spec)?),
        None => Err("usage: bench_compare SPEC.json | --memory BUNDLE [cpu|gpu] | --pack int8|q4 DIR OUT".into()),
    }
}

fn run(spec: &str) -> Result<(), Box<dyn std::error::Error>> {
    let spec: Spec = serde_json::from_str(spec)?;
    let device = spec.device.as_deref().map_or(Ok(DeviceChoice::Cpu), str::parse)?;
    let model = RewardModel::load(&spec.bundle, device)?;
    let mut results = Vec::new();
    for case in &spec.cases {
        let (name, call): (&str, Call) = match case {
            Case::Score { name, conversations } => {
                (name, Box::new(|| Ok(model.score_batch(conversations)?.into_iter().map(|s| s.reward).collect())))
            }
            Case::Rank { name, prompt, candidates } => (
                name,
                Box::new(|| {
                    let ranked = model.rank(prompt, candidates)?;
                    let mut rewards = vec![0.0; ranked.len()];
                    for r in ranked {
                        rewards[r.index] = r.score.reward;
                    }
                    Ok(rewards)
                }),
            ),
        };
        let convs: Vec<Conversation> = match case {
            Case::Score { conversations, .. } => conversations.clone(),
            Case::Rank { prompt, candidates, .. } => {
                candidates.iter().map(|c| Conversation::new(prompt.clone(), c.clone())).collect()
            }
        };
        let encodings = convs.iter().map(|c| model.encode(c)).collect::<dmoerm::Result<Vec<_>>>()?;
        let routed = match case {
            Case::Score { .. } => encodings.len(),
            Case::Rank { .. } => 1,
        };
        let router_tokens =
            encodings.iter().take(routed).filter_map(|e| e.router.as_ref()).map(|r| r.ids.len()).collect();
        let task = model.score(&convs[0])?.task;
        let experts = model.capabilities(&task).map_or(0, |c| c.len());

        for _ in 0..spec.warmup {
            call()?;
        }
        let mut times_s = Vec::with_capacity(spec.runs);
        let mut rewards = Vec::new();
        for _ in 0..spec.runs {
            let t = Instant::now();
            rewards = call()?;
            times_s.push(t.elapsed().as_secs_f64());
        }
        results.push(CaseResult {
            name: name.to_string(),
            times_s,
            rewards,
            router_tokens,
            expert_tokens: encodings.iter().map(|e| e.expert.ids.len()).collect(),
            experts,
        });
    }
    println!("{}", serde_json::to_string(&results)?);
    Ok(())
}

/// The quantised variants of the benchmark's bundles, packed as `dmoerm pack --dtype` does.
fn pack(dtype: &str, dir: &str, out: &str) -> Result<(), Box<dyn std::error::Error>> {
    let dtype = match dtype {
        "int8" => PackDtype::int8(),
        "q4" => PackDtype::q4(),
        other => return Err(format!("--pack: unknown dtype {other}").into()),
    };
    let (bytes, _) = dmoerm::pack_bytes(std::path::Path::new(dir), dtype)?;
    std::fs::write(out, bytes)?;
    Ok(())
}

/// Resident set size and its peak so far, in bytes (Linux `/proc/self/status`).
fn rss() -> (u64, u64) {
    (status("VmRSS:"), status("VmHWM:"))
}

/// A field of `/proc/self/status` given in kB, in bytes (0 where there is none).
fn status(key: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |key: &str| {
        status
            .lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
            .map_or(0, |kb| kb * 1024)
    };
    field(key)
}

fn memory(bundle: &str, device: DeviceChoice) -> Result<(), Box<dyn std::error::Error>> {
    let (before, _) = rss();
    let file_before = status("RssFile:");
    let model = RewardModel::load(bundle, device)?;
    let (after_load, peak_load) = rss();
    let conv = Conversation::new(
        "Tell me about the river and the quiet town, please, in a few sentences?",
        "The river keeps its promise to a quiet town: every morning it brings the boats, the light and \
         the sound of water, and every evening it carries them away again.",
    );
    for _ in 0..3 {
        model.score(&conv)?;
    }
    let (after_score, peak_score) = rss();
    let candidates: Vec<String> = (0..16).map(|i| format!("{} ({i})", conv.response)).collect();
    model.rank(&conv.messages[0].content, &candidates)?;
    let (after_rank, peak_rank) = rss();
    println!(
        "{}",
        serde_json::json!({
            "rss_before_load": before, "rss_after_load": after_load, "peak_after_load": peak_load,
            "rss_after_score": after_score, "peak_after_score": peak_score,
            "rss_after_rank16": after_rank, "peak_after_rank16": peak_rank,
            // file-backed pages (the program's code as it runs for the first time, mapped files)
            "rss_file_before_load": file_before, "rss_file_after_rank16": status("RssFile:"),
            "backbone_params": model.backbone().num_params(),
            "quantized_params": model.backbone().quantized_params(),
            "half_params": model.backbone().half_params(),
        })
    );
    Ok(())
}
