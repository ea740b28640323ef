//! Criterion benches of the scoring path on the default model (`models/default/model.dmoerm`:
//! all-MiniLM-L6-v2, 4 tasks x 5 LoRA experts, inputs cut at 128 tokens).
//!
//!     cargo bench -p dmoerm --bench scoring
//!
//! Groups (flex CPU; the same on wgpu when a hardware adapter exists, or on any adapter with
//! `DMOERM_BENCH_WGPU=1`):
//! - `pass`: one backbone pass without LoRA over `rows` copies of a 128-token input, next to
//!   the batched pass of the k = 5 experts of a task over `rows / k` inputs (the same rows):
//!   the experts' overhead is the ratio of the two;
//! - `score`: one [`RewardModel::score`] (router pass + experts pass + heads + aggregator);
//! - `best_of_16`: [`RewardModel::rank`] of 16 candidates (routes once) next to
//!   [`RewardModel::score_batch`] of the same 16 conversations (routes each).

use std::hint::black_box;
use std::time::Duration;

use burn::tensor::Tensor;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use dmoerm::backbones::TokenBatch;
use dmoerm::{Conversation, Device, DeviceChoice, RewardModel};

const TASK: &str = "chat";
const K: usize = 5;

fn default_model(device: Device) -> RewardModel {
    let path = dmoerm_testkit::repo_root().join("models/default/model.dmoerm");
    RewardModel::load_on(&path, device).expect("the default model loads")
}

/// A prompt and a response long enough to fill the model's 128 tokens.
fn long_conversation(seed: usize) -> Conversation {
    let words = ["the", "river", "keeps", "its", "promise", "to", "a", "quiet", "town", "and", "every", "morning"];
    let text = |n: usize, off: usize| (0..n).map(|i| words[(i * 7 + off) % words.len()]).collect::<Vec<_>>().join(" ");
    Conversation::new(format!("Tell me about {} please?", text(40, seed)), format!("Sure. {}.", text(120, seed + 3)))
}

fn candidates(n: usize) -> (String, Vec<String>) {
    let conv = long_conversation(0);
    let prompt = conv.messages[0].content.clone();
    (prompt, (0..n).map(|i| long_conversation(i).response).collect())
}

/// One value of `t`, read back: the GPU has run everything queued before. (`into_data` alone
/// returns before then: burn's data is read lazily, when its values are first looked at.)
fn finished<const D: usize>(t: Tensor<D>) -> f32 {
    let first = t.flatten::<1>(0, D - 1).slice(0..1);
    first.into_data().try_into_vec::<f32>().expect("f32 values")[0]
}

fn benches_on(c: &mut Criterion, label: &str, device: Device) {
    let model = default_model(device.clone());
    let enc = model.encode(&long_conversation(0)).expect("encodes");
    let pad = model.manifest().input.pad_token_id;

    let mut pass = c.benchmark_group(format!("{label}/pass"));
    pass.sample_size(10).measurement_time(Duration::from_secs(8));
    for n in [1usize, 4] {
        let rows = n * K;
        let batch = TokenBatch::new(&vec![enc.expert.ids.clone(); rows], pad, &device);
        pass.bench_with_input(BenchmarkId::new("backbone_no_lora", rows), &batch, |b, batch| {
            b.iter(|| finished(model.backbone().forward(black_box(batch), None)))
        });
        let convs: Vec<Conversation> = (0..n).map(|_| long_conversation(0)).collect();
        pass.bench_with_input(BenchmarkId::new("k5_experts_batched", rows), &convs, |b, convs| {
            b.iter(|| finished(model.expert_states(TASK, black_box(convs)).expect("runs")))
        });
    }
    pass.finish();

    let mut score = c.benchmark_group(format!("{label}/score"));
    score.sample_size(10).measurement_time(Duration::from_secs(8));
    let conv = long_conversation(0);
    score.bench_function("single_128_tokens", |b| b.iter(|| model.score(black_box(&conv)).expect("scores")));
    score.finish();

    let mut bon = c.benchmark_group(format!("{label}/best_of_16"));
    bon.sample_size(10).measurement_time(Duration::from_secs(20));
    let (prompt, cands) = candidates(16);
    bon.bench_function("rank_routes_once", |b| b.iter(|| model.rank(black_box(&prompt), &cands).expect("ranks")));
    let convs: Vec<Conversation> = cands.iter().map(|r| Conversation::new(prompt.clone(), r.clone())).collect();
    bon.bench_function("score_batch_routes_each", |b| b.iter(|| model.score_batch(black_box(&convs)).expect("scores")));
    bon.finish();
}

fn scoring(c: &mut Criterion) {
    benches_on(c, "flex", Device::flex());
    let forced = std::env::var("DMOERM_BENCH_WGPU").is_ok_and(|v| v == "1");
    if forced || dmoerm::device::has_hardware_gpu() {
        match dmoerm::device::open_explained(DeviceChoice::Gpu) {
            Ok((device, on)) => {
                eprintln!("wgpu benches on {on}");
                benches_on(c, "wgpu", device)
            }
            Err(e) => eprintln!("wgpu benches skipped: {e}"),
        }
    } else {
        eprintln!("wgpu benches skipped: no hardware GPU adapter (DMOERM_BENCH_WGPU=1 runs them on a software one)");
    }
}

criterion_group!(benches, scoring);
criterion_main!(benches);
