//! One long conversation scored on the CPU, with the time and memory it took: the dmoerm side
//! of `benches/long/run.sh` (one process per input, so the peak memory is this input's).
//!
//!     long_input MODEL CONV_JSONL [CALLS]
//!
//! Scores the conversation CALLS times (default 2) and prints one JSON line: tokens, reward,
//! load seconds and the fastest call's seconds, and the resident memory
//! (Linux `VmRSS` / `VmHWM`, MB) after loading, at the loading's peak, and at the scoring's
//! peak.
//!
//! With several conversations (a line each; `benches/long/batch.sh`) they are one batch:
//! `seconds` is `score_batch` (its sequences packed, the sum of their tokens), `padded_seconds`
//! the backbone on the same batch padded to its longest row (what a batch cost before packing),
//! `single_seconds` the sum of scoring each alone; `rewards` are the batch's.

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
    let lines = std::fs::read_to_string(conv)?;
    let convs = lines
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| Ok(serde_json::from_str::<ConversationInput>(l)?.try_into()?))
        .collect::<Result<Vec<Conversation>, Box<dyn std::error::Error>>>()?;
    let Some(conv) = convs.first().cloned() else { return Err(format!("no conversation in {conv}").into()) };
    let start = Instant::now();
    let model = RewardModel::load(model, DeviceChoice::Cpu)?;
    let load_seconds = start.elapsed().as_secs_f64();
    let rss_loaded_mb = status_mb("VmRSS:");
    let load_peak_rss_mb = status_mb("VmHWM:");
    // restart the peak count (Linux: "5" resets VmHWM to the current RSS), so the peak below
    // is the scoring's
    let scoring_peak_counted = std::fs::write("/proc/self/clear_refs", "5").is_ok();
    if convs.len() > 1 {
        return batch(&model, &convs, calls);
    }
    let tokens = model.encode(&conv)?.expert.ids.len();
    let (seconds, score) = best_of(calls, || model.score(&conv))?;
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
        "int8_kernel": dmoerm::quant::Int8Linear::kernel_name(),
    });
    println!("{out}");
    Ok(())
}

/// The fastest of `calls` runs of `f`, in seconds, and its last result.
fn best_of<T>(calls: usize, mut f: impl FnMut() -> Result<T, dmoerm::Error>) -> Result<(f64, T), dmoerm::Error> {
    let mut best = (f64::INFINITY, None);
    for _ in 0..calls.max(1) {
        let start = Instant::now();
        let out = f()?;
        best = (best.0.min(start.elapsed().as_secs_f64()), Some(out));
    }
    Ok((best.0, best.1.expect("at least one call")))
}

/// `convs` as one batch: packed (`score_batch`), padded (the backbone on the padded rows) and
/// one at a time.
fn batch(model: &RewardModel, convs: &[Conversation], calls: usize) -> Result<(), Box<dyn std::error::Error>> {
    use dmoerm::backbones::TokenBatch;
    let encoded = convs.iter().map(|c| Ok(model.encode(c)?.expert)).collect::<dmoerm::Result<Vec<_>>>()?;
    let rows: Vec<Vec<u32>> = encoded.iter().map(|e| e.ids.clone()).collect();
    let longest = rows.iter().map(Vec::len).max().unwrap_or(0);
    let (seconds, scores) = best_of(calls, || model.score_batch(convs))?;
    let padded = TokenBatch::new(&rows, model.encoder().format().pad_token_id, model.device());
    let (backbone, pooling) = (model.backbone(), model.manifest().pooling);
    let (padded_seconds, _) =
        best_of(calls, || Ok(backbone.pool(backbone.forward(&padded, None), &padded, pooling).into_data()))?;
    let (single_seconds, _) = best_of(calls, || convs.iter().map(|c| model.score(c)).collect::<Result<Vec<_>, _>>())?;
    let out = serde_json::json!({
        "conversations": convs.len(),
        "tokens": rows.iter().map(Vec::len).sum::<usize>(),
        "padded_tokens": rows.len() * longest,
        "rewards": scores.iter().map(|s| s.reward).collect::<Vec<_>>(),
        "seconds": seconds,
        "padded_seconds": padded_seconds,
        "single_seconds": single_seconds,
        "peak_rss_mb": status_mb("VmHWM:"),
    });
    println!("{out}");
    Ok(())
}
