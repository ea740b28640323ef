//! One long conversation scored on the CPU, with the time and memory it took: the dmoerm side
//! of `benches/long/run.sh` (one process per input, so the peak memory is this input's).
//!
//!     long_input MODEL CONV_JSONL [CALLS]
//!
//! Scores the conversation CALLS times (default 2) and prints one JSON line: tokens, reward,
//! load seconds and the fastest call's seconds, and the resident memory
//! (Linux `VmRSS` / `VmHWM`, MB) after loading, at the loading's peak, and at the scoring's
//! peak.

use std::time::Instant;

use dmoerm::{Conversation, ConversationInput, DeviceChoice, RewardModel};

/// A `/proc/self/status` field in MB (0 where there is none).
fn status_mb(field: &str) -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kb = status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.trim().strip_suffix("kB")?.trim().parse::<f64>().ok())
        .unwrap_or(0.0);
    kb / 1024.0
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let (Some(model), Some(conv)) = (args.get(1), args.get(2)) else {
        return Err("usage: long_input MODEL CONV_JSONL [CALLS]".into());
    };
    let calls: usize = args.get(3).map_or(Ok(2), |c| c.parse())?;
    let line = std::fs::read_to_string(conv)?;
    let input: ConversationInput = serde_json::from_str(line.lines().next().unwrap_or_default())?;
    let conv: Conversation = input.try_into()?;
    let start = Instant::now();
    let model = RewardModel::load(model, DeviceChoice::Cpu)?;
    let load_seconds = start.elapsed().as_secs_f64();
    let rss_loaded_mb = status_mb("VmRSS:");
    let load_peak_rss_mb = status_mb("VmHWM:");
    // restart the peak count (Linux: "5" resets VmHWM to the current RSS), so the peak below
    // is the scoring's
    let scoring_peak_counted = std::fs::write("/proc/self/clear_refs", "5").is_ok();
    let tokens = model.encode(&conv)?.expert.ids.len();
    let (mut seconds, mut score) = (f64::INFINITY, None);
    for _ in 0..calls.max(1) {
        let start = Instant::now();
        score = Some(model.score(&conv)?);
        seconds = seconds.min(start.elapsed().as_secs_f64());
    }
    let score = score.ok_or("no call")?;
    let out = serde_json::json!({
        "tokens": tokens,
        "truncated": score.truncated,
        "reward": score.reward,
        "load_seconds": load_seconds,
        "seconds": seconds,
        "rss_loaded_mb": rss_loaded_mb,
        "load_peak_rss_mb": load_peak_rss_mb,
        // the peak while scoring (without the reset: the process's peak)
        "peak_rss_mb": status_mb("VmHWM:"),
        "scoring_peak_counted": scoring_peak_counted,
    });
    println!("{out}");
    Ok(())
}
