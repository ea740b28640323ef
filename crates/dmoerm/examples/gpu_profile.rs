//! What scoring costs on wgpu: time, compute dispatches (a CubeCL launch observer), kernel
//! compilations (CubeCL's compilation log) and GPU memory, for one input length or for a stream
//! of varied lengths.
//!
//!     cargo run --release -p dmoerm --example gpu_profile -- time MODEL TOKENS [RUNS] [int8|q4]
//!     cargo run --release -p dmoerm --example gpu_profile -- stream MODEL [COUNT] [MAX_WORDS]
//!
//! MODEL is a bundle or a Hugging Face reward-model directory; `int8` or `q4` quantises it as
//! it loads (`LoadOptions::quantize`).
//!
//! `time` scores one conversation of about TOKENS tokens: once (compiling the kernels), then
//! RUNS times (default 5). It prints the time per score (best and median), the dispatches of a
//! score and per layer, its read-backs, the compilations of the first score and of the others
//! (there should be none), GFLOP/s (the projections' and attention's multiply-adds, from `config.json` where
//! MODEL is a directory) and the GPU memory held after loading and after scoring. Its last line
//! is `result key=value ...` for scripts (`scripts/gpu-check.sh`). With `GPU_PROFILE_CONVERSATION`
//! set to a file name, it writes the conversation there (one JSON line, the form
//! `benches/long/peer.py` reads) for a peer to score the same tokens.
//!
//! `stream` scores COUNT (default 200) conversations of 4 to MAX_WORDS (default 400) words,
//! lengths drawn from a fixed seed, then the same stream again, and prints one line per score
//! whose input length is new, the compilations in all, at the first score, after it and in the
//! second pass, and the dispatches per score.
//!
//!     cargo run --release -p dmoerm --example gpu_profile -- products TOKENS [RUNS]
//!
//! `products` times the products of one decoder layer of the Qwen3-0.6B shape (query, key,
//! value, output, the gated MLP's gate and up in one launch, down) on TOKENS rows of
//! pseudo-random values, the weights f32, f16, int8 and q4 through `kernels::gpu` and f32 through
//! burn's matmul, each the mean of RUNS (default 20) launches after one that compiles. It prints
//! each product's time and the layer's GFLOP/s per weight format, then a `result` line; with
//! `DMOERM_GPU_TILED` it times the kernels that stage their operands in workgroup memory (`1`) or
//! those that do not (`0`) instead of the adapter's. The f32 kernel's worst difference from
//! burn's product (over `sqrt(k)`) is `f32_error` there, and `cmma` the side of the cooperative
//! matrices the f16 products ran on (`none`: without them; `DMOERM_GPU_CMMA=0` turns them off).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use burn::tensor::{DType, Tensor, TensorData};
use cubecl::config::{compilation::CompilationLogLevel, CubeClRuntimeConfig, RuntimeConfig};
use cubecl::logging::{LaunchObservation, LaunchObserver};
use dmoerm::kernels::gpu::{cooperative_matrices, gated, gated_quant, linear, linear_quant, QuantWeight};
use dmoerm::quant::{quantize_rows, Int8Matrix, Q4Matrix, QuantMatrix};
use dmoerm::{Conversation, Device, DeviceChoice, LoadOptions, RewardModel};

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

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

impl Dispatches {
    fn count(&self) -> usize {
        self.all.load(Ordering::Relaxed)
    }

    /// The launches since the last call, kernel by kernel (`3 MatmulKernel, ...`).
    fn take_by_kernel(&self) -> String {
        let Ok(mut by_kernel) = self.by_kernel.lock() else { return String::new() };
        let listed: Vec<String> = by_kernel.iter().map(|(k, n)| format!("{n} {}", short(k))).collect();
        by_kernel.clear();
        listed.join(", ")
    }
}

/// A kernel's type name without its module path and generic arguments.
fn short(kernel: &str) -> &str {
    let name = kernel.split('<').next().unwrap_or(kernel);
    name.rsplit("::").next().unwrap_or(name)
}

/// CubeCL's compilation log, in a file of its own.
struct CompilationLog(PathBuf);

impl CompilationLog {
    /// Turns the log on: before the first kernel (CubeCL reads its configuration once).
    fn start() -> Self {
        let log = std::env::temp_dir().join(format!("dmoerm-gpu-profile-{}.log", std::process::id()));
        let mut config = CubeClRuntimeConfig::default();
        config.compilation.logger.level = CompilationLogLevel::Basic;
        config.compilation.logger.file = Some(log.clone());
        CubeClRuntimeConfig::set(config);
        Self(log)
    }

    /// The kernels compiled so far ("[Compiling kernel] name" lines; the logger writes from a
    /// task of its own: it is given a moment).
    fn kernels(&self) -> Vec<String> {
        std::thread::sleep(Duration::from_millis(200));
        let text = std::fs::read_to_string(&self.0).unwrap_or_default();
        let names = text.lines().filter_map(|l| l.split_once("[Compiling kernel]"));
        names.map(|(_, name)| short(name.trim()).to_string()).collect()
    }
}

impl Drop for CompilationLog {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn text(words: usize, offset: usize) -> String {
    (0..words).map(|i| WORDS[(i + offset) % WORDS.len()]).collect::<Vec<_>>().join(" ")
}

/// A conversation of `words` words, a quarter of them the response.
fn conversation(words: usize, offset: usize) -> Conversation {
    let response = 1 + words / 4;
    Conversation::new(text(words.saturating_sub(response).max(1), offset), text(response, offset + 5))
}

fn load(path: &str, quantize: Option<&String>) -> Result<RewardModel> {
    let device = dmoerm::device::open(DeviceChoice::Gpu)?;
    let quantize = quantize.map(|q| q.parse()).transpose()?;
    Ok(RewardModel::load_with(path, device, LoadOptions { quantize })?)
}

fn mib(bytes: Option<u64>) -> String {
    bytes.map_or("n/a".into(), |b| format!("{:.0}", b as f64 / (1 << 20) as f64))
}

/// The multiply-adds of one score of `tokens` tokens times 2 (the projections, and attention's
/// two products over the keys a query sees: causal, half of them), from a decoder's
/// `config.json`; `None` where MODEL has none.
fn flops(model: &Path, tokens: usize) -> Option<f64> {
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(model.join("config.json")).ok()?).ok()?;
    let get = |key: &str| config.get(key).and_then(serde_json::Value::as_u64).map(|v| v as f64);
    let (h, layers, heads, mlp) =
        (get("hidden_size")?, get("num_hidden_layers")?, get("num_attention_heads")?, get("intermediate_size")?);
    let kv = get("num_key_value_heads").unwrap_or(heads);
    let hd = get("head_dim").unwrap_or(h / heads);
    let per_token = h * hd * (2.0 * heads + 2.0 * kv) + 3.0 * h * mlp;
    let t = tokens as f64;
    let attention = 2.0 * heads * hd * t * (t + 1.0) / 2.0;
    Some(2.0 * layers * (per_token * t + attention))
}

fn time(path: &str, tokens: usize, runs: usize, quantize: Option<&String>) -> Result<()> {
    let log = CompilationLog::start();
    let model = load(path, quantize)?;
    let layers = model.backbone().num_layers();
    let held = dmoerm::device::gpu_memory_reserved(model.device());
    // words until the input is about `tokens` tokens (truncated at the model's longest input)
    let mut words = tokens.max(4);
    let mut conv = conversation(words, 0);
    for _ in 0..40 {
        let n = model.encode(&conv)?.expert.ids.len();
        if n.abs_diff(tokens) <= tokens / 100 + 1 {
            break;
        }
        words = (words * tokens / n.max(1)).max(words.saturating_sub(words / 2)).max(4);
        conv = conversation(words, 0);
    }
    let encoded = model.encode(&conv)?.expert;
    let n = encoded.ids.len();
    if let Some(file) = std::env::var_os("GPU_PROFILE_CONVERSATION") {
        std::fs::write(file, format!("{}\n", serde_json::to_string(&conv)?))?;
    }
    let dispatches = Arc::new(Dispatches::default());
    let _observing = LaunchObservation::new(dispatches.clone());
    let start = Instant::now();
    let first = model.score(&conv)?;
    let first_ms = start.elapsed().as_secs_f64() * 1e3;
    let compiled_first = log.kernels().len();
    let (before, reads_before) = (dispatches.count(), dmoerm::model::read_backs());
    let mut times = Vec::with_capacity(runs);
    for _ in 0..runs.max(1) {
        let start = Instant::now();
        let score = model.score(&conv)?;
        times.push(start.elapsed().as_secs_f64() * 1e3);
        if score.reward.to_bits() != first.reward.to_bits() {
            println!("note: reward {} differs from the first score's {}", score.reward, first.reward);
        }
    }
    let per_score = (dispatches.count() - before) / times.len();
    let reads = (dmoerm::model::read_backs() - reads_before) as f64 / times.len() as f64;
    // one more score, kernel by kernel
    dispatches.take_by_kernel();
    model.score(&conv)?;
    let kernels = dispatches.take_by_kernel();
    let compiled_after = log.kernels().len() - compiled_first;
    let after = dmoerm::device::gpu_memory_reserved(model.device());
    times.sort_by(f64::total_cmp);
    let (best, median) = (times[0], times[times.len() / 2]);
    let gflops = flops(Path::new(path), n).map(|f| f / (best * 1e-3) / 1e9);
    let quant = quantize.map_or("as stored", String::as_str);
    println!("{path} ({quant}) on {:?}: {n} tokens, {layers} layers", model.device());
    println!(
        "first score (compiles) {first_ms:.1} ms; then best {best:.2} ms, median {median:.2} ms over {} scores",
        times.len()
    );
    println!("dispatches per score: {per_score}, {:.2} per layer ({kernels})", per_score as f64 / layers.max(1) as f64);
    println!("read-backs per score: {reads}");
    println!("compilations: {compiled_first} at the first score, {compiled_after} after it");
    match gflops {
        Some(g) => println!("GFLOP/s (projections and attention): {g:.0}"),
        None => println!("GFLOP/s: n/a (no config.json)"),
    }
    println!("GPU memory held: {} MiB loaded, {} MiB after scoring", mib(held), mib(after));
    println!(
        "result tokens={n} best_ms={best:.3} median_ms={median:.3} dispatches={per_score} per_layer={:.2} \
         read_backs={reads} compiled_first={compiled_first} compiled_after={compiled_after} gflops={} mib_loaded={} mib_scoring={} reward={}",
        per_score as f64 / layers.max(1) as f64,
        gflops.map_or("n/a".into(), |g| format!("{g:.0}")),
        mib(held),
        mib(after),
        first.reward
    );
    Ok(())
}

fn stream(path: &str, count: usize, max_words: usize) -> Result<()> {
    let log = CompilationLog::start();
    let model = load(path, None)?;
    // the stream: lengths from a fixed linear congruential sequence
    let mut state: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = |n: usize| random(&mut state) as usize % n;
    let conversations: Vec<Conversation> =
        (0..count).map(|i| conversation(4 + next(max_words.saturating_sub(3).max(1)), i)).collect();
    let dispatches = Arc::new(Dispatches::default());
    let _observing = LaunchObservation::new(dispatches.clone());

    let mut lengths = BTreeSet::new();
    let mut per_score = Vec::with_capacity(count);
    let mut after_first = 0;
    let mut first_pass = Duration::ZERO;
    let reads_before = dmoerm::model::read_backs();
    for (i, conversation) in conversations.iter().enumerate() {
        let tokens = model.encode(conversation)?.expert.ids.len();
        let before = dispatches.count();
        let start = Instant::now();
        let score = model.score(conversation)?;
        first_pass += start.elapsed();
        per_score.push(dispatches.count() - before);
        if i == 0 {
            after_first = log.kernels().len();
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
    let reads = (dmoerm::model::read_backs() - reads_before) as f64 / count.max(1) as f64;
    let kernels = log.kernels();
    let compiled = kernels.len();
    let start = Instant::now();
    for conversation in &conversations {
        model.score(conversation)?;
    }
    let second_pass = start.elapsed();
    let recompiled = log.kernels().len() - compiled;
    // one more score, kernel by kernel
    dispatches.take_by_kernel();
    let last = conversations.last().map(|c| model.score(c)).transpose()?;
    let by_kernel = dispatches.take_by_kernel();

    let count = count.max(1);
    let (min, max) = (per_score.iter().min().copied().unwrap_or(0), per_score.iter().max().copied().unwrap_or(0));
    let mean = per_score.iter().sum::<usize>() as f64 / count as f64;
    let (shortest, longest) = (lengths.first().copied().unwrap_or(0), lengths.last().copied().unwrap_or(0));
    println!("{path}: {count} conversations, {} distinct input lengths ({shortest}..={longest} tokens)", lengths.len());
    if last.is_some() {
        println!("one score's dispatches: {by_kernel}");
    }
    println!("compiled after the first score: {}", kernels[after_first.min(compiled)..].join(", "));
    println!(
        "compilations: {compiled} in all, {after_first} at the first score, {} after it; {recompiled} in a second pass",
        compiled - after_first
    );
    println!("dispatches per score: mean {mean:.1}, min {min}, max {max}; read-backs per score: {reads}");
    println!(
        "time per score: first pass {:.1} ms, second pass {:.1} ms",
        first_pass.as_secs_f64() * 1e3 / count as f64,
        second_pass.as_secs_f64() * 1e3 / count as f64
    );
    println!(
        "result conversations={count} lengths={} compiled={compiled} compiled_first={after_first} recompiled={recompiled} dispatches_max={max} read_backs={reads}",
        lengths.len()
    );
    Ok(())
}

/// One decoder layer's products in the Qwen3-0.6B shape (hidden 1024, 16 query and 8 KV heads
/// of 128, MLP 3072): name, `in`, `out`, and whether it is the gated MLP's pair (two weights).
const PRODUCTS: [(&str, usize, usize, bool); 6] = [
    ("q", 1024, 2048, false),
    ("k", 1024, 1024, false),
    ("v", 1024, 1024, false),
    ("o", 2048, 1024, false),
    ("gate,up", 1024, 3072, true),
    ("down", 3072, 1024, false),
];

/// The next 31 random bits of a linear congruential sequence.
fn random(state: &mut u64) -> u64 {
    *state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    *state >> 33
}

/// `n` values in `-1 .. 1` from `seed`.
fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut state = seed;
    (0..n).map(|_| random(&mut state) as f32 / (1u64 << 30) as f32 - 1.0).collect()
}

/// A product's weights in each format: `[in, out]` f32 and f16 tensors and the quantised
/// layouts, from the same values (and the up projection's, where gated).
struct Weights {
    f32: Tensor<2>,
    f16: Tensor<2>,
    int8: QuantWeight,
    q4: QuantWeight,
}

impl Weights {
    fn new(d_in: usize, d_out: usize, seed: u64, device: &Device) -> Result<Self> {
        let w = values(d_in * d_out, seed); // [out, in], as a bundle stores it
        let (codes, scales) = quantize_rows(&w, d_out);
        let int8 = QuantMatrix::Int8(Int8Matrix::new(d_out, d_in, codes, scales).ok_or("int8 layout")?);
        let q4 = QuantMatrix::Q4(Q4Matrix::quantize(&w, d_out).ok_or("q4 layout")?);
        let transposed: Vec<f32> = (0..d_in * d_out).map(|i| w[(i % d_out) * d_in + i / d_out]).collect();
        let halves: Vec<half::f16> = transposed.iter().map(|&v| half::f16::from_f32(v)).collect();
        Ok(Self {
            f32: Tensor::from_data(TensorData::new(transposed, [d_in, d_out]), device),
            f16: Tensor::from_data(TensorData::new(halves, [d_in, d_out]), (device, DType::F16)),
            int8: QuantWeight::new(&int8, device).ok_or("int8 on the GPU")?,
            q4: QuantWeight::new(&q4, device).ok_or("q4 on the GPU")?,
        })
    }
}

/// The mean time of `runs` calls of `op` in ms, after one call that compiles; `None` where the
/// kernels do not take the product. Reading a few values back waits for the queue (the values
/// themselves: `into_data` alone returns before the GPU is done).
fn mean_ms(runs: usize, op: impl Fn() -> Option<Tensor<3>>) -> Option<f64> {
    let wait = |t: Tensor<3>| t.slice([0..1, 0..1, 0..4]).into_data().try_into_vec::<f32>().ok();
    wait(op()?);
    let start = Instant::now();
    let mut last = None;
    for _ in 0..runs.max(1) {
        last = Some(op()?);
    }
    wait(last?);
    Some(start.elapsed().as_secs_f64() * 1e3 / runs.max(1) as f64)
}

fn products(tokens: usize, runs: usize) -> Result<()> {
    let device = dmoerm::device::open(DeviceChoice::Gpu)?;
    const FORMATS: [&str; 5] = ["f32", "f16", "int8", "q4", "burn f32"];
    let mut layer_ms = [0.0f64; FORMATS.len()];
    let mut flops = 0.0;
    let mut f32_error = 0.0f64;
    println!("{tokens} rows on {device:?}, the mean of {runs} launches (ms): {}", FORMATS.join(", "));
    for (seed, &(name, d_in, d_out, pair)) in PRODUCTS.iter().enumerate() {
        let x: Tensor<3> =
            Tensor::from_data(TensorData::new(values(tokens * d_in, 100 + seed as u64), [1, tokens, d_in]), &device);
        let w = Weights::new(d_in, d_out, 2 * seed as u64, &device)?;
        let up = if pair { Some(Weights::new(d_in, d_out, 2 * seed as u64 + 1, &device)?) } else { None };
        let ours = |format: &str| -> Option<Tensor<3>> {
            let x = x.clone();
            match (format, &up) {
                ("f32", None) => linear(x, &w.f32, None, None).ok(),
                ("f16", None) => linear(x, &w.f16, None, None).ok(),
                ("int8", None) => linear_quant(x, &w.int8, None, None).ok(),
                ("q4", None) => linear_quant(x, &w.q4, None, None).ok(),
                ("f32", Some(u)) => gated(x, &w.f32, &u.f32).ok(),
                ("f16", Some(u)) => gated(x, &w.f16, &u.f16).ok(),
                ("int8", Some(u)) => gated_quant(x, &w.int8, &u.int8).ok(),
                ("q4", Some(u)) => gated_quant(x, &w.q4, &u.q4).ok(),
                ("burn f32", None) => Some(x.matmul(w.f32.clone().unsqueeze())),
                ("burn f32", Some(u)) => {
                    let gate = burn::tensor::activation::silu(x.clone().matmul(w.f32.clone().unsqueeze()));
                    Some(gate * x.matmul(u.f32.clone().unsqueeze()))
                }
                _ => None,
            }
        };
        let times: Vec<Option<f64>> = FORMATS.iter().map(|f| mean_ms(runs, || ours(f))).collect();
        let (Some(kernel), Some(burn)) = (ours("f32"), ours("burn f32")) else {
            return Err(format!("{name}: the f32 kernel does not take the product").into());
        };
        let values = |t: Tensor<3>| t.into_data().try_into_vec::<f32>().map_err(|e| format!("{e:?}"));
        let (kernel, burn) = (values(kernel)?, values(burn)?);
        let worst = kernel.iter().zip(&burn).map(|(a, b)| f64::from((a - b).abs())).fold(0.0, f64::max);
        f32_error = f32_error.max(worst / (d_in as f64).sqrt());
        let shown: Vec<String> = times.iter().map(|t| t.map_or("n/a".into(), |t| format!("{t:.3}"))).collect();
        println!("{name:>8} {tokens} x {d_in} x {d_out}{}: {}", if pair { " x 2" } else { "" }, shown.join(", "));
        for (sum, t) in layer_ms.iter_mut().zip(&times) {
            *sum += t.unwrap_or(f64::NAN);
        }
        flops += 2.0 * (tokens * d_in * d_out) as f64 * if pair { 2.0 } else { 1.0 };
    }
    let gflops: Vec<f64> = layer_ms.iter().map(|ms| flops / (ms * 1e-3) / 1e9).collect();
    for ((format, ms), g) in FORMATS.iter().zip(&layer_ms).zip(&gflops) {
        println!("layer's products, {format}: {ms:.3} ms, {g:.0} GFLOP/s");
    }
    println!(
        "result tokens={tokens} f32_gflops={:.0} f16_gflops={:.0} int8_gflops={:.0} q4_gflops={:.0} burn_f32_gflops={:.0} \
         q4_over_f16={:.2} f32_over_burn={:.2} f32_error={f32_error:.1e} cmma={}",
        gflops[0],
        gflops[1],
        gflops[2],
        gflops[3],
        gflops[4],
        layer_ms[3] / layer_ms[1],
        layer_ms[0] / layer_ms[4],
        cooperative_matrices(&device).map_or("none".into(), |side| side.to_string()),
    );
    Ok(())
}

fn main() -> Result<()> {
    // SAFETY: the first statement of `main`, before any thread starts
    unsafe { dmoerm::device::quiet_vulkan_loader() };
    let args: Vec<String> = std::env::args().collect();
    let usage = "usage: gpu_profile time MODEL TOKENS [RUNS] [int8|q4] | stream MODEL [COUNT] [MAX_WORDS] | products TOKENS [RUNS]";
    let number = |i: usize, default: usize| -> Result<usize> {
        Ok(args.get(i).map(|a| a.parse()).transpose()?.unwrap_or(default))
    };
    match (args.get(1).map(String::as_str), args.get(2)) {
        (Some("time"), Some(model)) => {
            let tokens = args.get(3).ok_or(usage)?.parse()?;
            time(model, tokens, number(4, 5)?, args.get(5))
        }
        (Some("stream"), Some(model)) => stream(model, number(3, 200)?, number(4, 400)?),
        (Some("products"), Some(tokens)) => products(tokens.parse()?, number(3, 20)?),
        _ => Err(usage.into()),
    }
}
