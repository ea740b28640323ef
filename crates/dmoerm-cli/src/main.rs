//! `dmoerm`: score, rank, inspect and pack DMoERM reward-model bundles; label, train and
//! evaluate them.

mod eval;
#[cfg(feature = "serve")]
mod serve;
#[cfg(feature = "train")]
mod train;

use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use dmoerm::{Conversation, DeviceChoice, LoadOptions, Message, PackDtype, Quantize, RewardModel, Score};
use indicatif::{ProgressBar, ProgressStyle};
use serde::Deserialize;

#[derive(Parser)]
#[command(name = "dmoerm", version, about = "Double-layer mixture-of-experts reward models (DMoERM) on CPU and GPU")]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Say on stderr which device runs the model, and why.
    #[arg(short, long, global = true)]
    verbose: bool,
}

/// `-v`: set once in `main`.
static VERBOSE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Opens the device `arg` asks for; with `-v`, says which one it is and why, once.
pub(crate) fn open_device(arg: DeviceArg) -> Result<dmoerm::Device, CliError> {
    let (device, why) = dmoerm::device::open_explained(arg.into())?;
    if VERBOSE.load(std::sync::atomic::Ordering::Relaxed) {
        eprintln!("device: {why}");
    }
    Ok(device)
}

#[derive(Clone, Copy, ValueEnum)]
pub(crate) enum DeviceArg {
    Auto,
    Cpu,
    Gpu,
}

impl From<DeviceArg> for DeviceChoice {
    fn from(d: DeviceArg) -> Self {
        match d {
            DeviceArg::Auto => DeviceChoice::Auto,
            DeviceArg::Cpu => DeviceChoice::Cpu,
            DeviceArg::Gpu => DeviceChoice::Gpu,
        }
    }
}

/// `--quantize`: the large float matrices of a model's backbone quantised as it loads.
#[derive(Clone, Copy, ValueEnum)]
pub(crate) enum QuantizeArg {
    /// int8, one scale per row (as `pack --dtype int8`).
    Int8,
    /// 4-bit, one scale per block of 64 values of a row (as `pack --dtype q4`).
    Q4,
}

/// Loads `path` onto `device`, quantising it as it loads where `quantize` says so.
pub(crate) fn load_model(
    path: &Path,
    device: DeviceArg,
    quantize: Option<QuantizeArg>,
) -> Result<RewardModel, CliError> {
    let quantize = quantize.map(|q| match q {
        QuantizeArg::Int8 => Quantize::Int8,
        QuantizeArg::Q4 => Quantize::Q4,
    });
    Ok(RewardModel::load_with(path, open_device(device)?, LoadOptions { quantize })?)
}

#[derive(Clone, Copy, ValueEnum)]
enum DtypeArg {
    /// Keep the dtypes of the bundle.
    Keep,
    /// Store float weights as f16.
    F16,
    /// Store large matrices as int8 (one scale per row), the rest as f16.
    Int8,
    /// Store large matrices as 4-bit codes (one scale per block of 64 values of a row; int8
    /// where a row is not whole blocks), the rest as f16.
    Q4,
}

#[derive(Subcommand)]
enum Command {
    /// Score one response (--prompt/--response) or a JSONL file (--input/--output).
    Score {
        /// Bundle directory or packed file.
        #[arg(long)]
        model: PathBuf,
        #[arg(long, conflicts_with = "input", requires = "response")]
        prompt: Option<String>,
        #[arg(long, requires = "prompt")]
        response: Option<String>,
        /// JSONL with `prompt` or `messages`, and `response`, per line.
        #[arg(long, requires = "output")]
        input: Option<PathBuf>,
        /// JSONL of scores, one per input line.
        #[arg(long, requires = "input")]
        output: Option<PathBuf>,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        #[arg(long, value_enum, default_value = "auto")]
        device: DeviceArg,
        /// Quantise the backbone's large float matrices as the model loads (a Hugging Face
        /// directory of bf16 or f32 weights runs on the int8 kernels without a `pack` step).
        #[arg(long, value_enum)]
        quantize: Option<QuantizeArg>,
        /// Conversations per forward pass when streaming a file.
        #[arg(long, default_value_t = 16)]
        batch_size: usize,
    },
    /// Rank candidate responses to one prompt, best first (best-of-n).
    Rank {
        #[arg(long)]
        model: PathBuf,
        #[arg(long)]
        prompt: String,
        /// One candidate per line, or JSONL (strings, or objects with `response`).
        #[arg(long)]
        candidates: PathBuf,
        #[arg(long)]
        json: bool,
        #[arg(long, value_enum, default_value = "auto")]
        device: DeviceArg,
        /// Quantise the backbone's large float matrices as the model loads (a Hugging Face
        /// directory of bf16 or f32 weights runs on the int8 kernels without a `pack` step).
        #[arg(long, value_enum)]
        quantize: Option<QuantizeArg>,
    },
    /// Show a bundle's architecture, sizes, tasks and capabilities.
    Inspect {
        #[arg(long)]
        model: PathBuf,
        #[arg(long)]
        json: bool,
        /// Also scan every weight for NaN and infinite values; exit non-zero if any.
        #[arg(long)]
        check: bool,
    },
    /// Capability labels from an OpenAI-compatible chat API, swap-consistency filtered.
    /// The key comes from DMOERM_API_KEY (or OPENAI_API_KEY). Dropped pairs go to
    /// OUTPUT.dropped.jsonl. Re-running the same command resumes.
    Label {
        /// Ranked multi-response JSONL (`src`, `tgt`, `response`, `rank`, `label`).
        #[arg(long)]
        input: PathBuf,
        /// Capability-labeled pairs JSONL.
        #[arg(long)]
        output: PathBuf,
        /// e.g. https://api.openai.com/v1 or http://127.0.0.1:8080/v1
        #[arg(long)]
        api_base: String,
        /// Model name sent to the API.
        #[arg(long)]
        model: String,
        /// JSON: {"category": ["point", ...]} or {"category": {"point": "description"}}.
        #[arg(long)]
        categories: Option<PathBuf>,
        /// Concurrent requests.
        #[arg(long, default_value_t = 4)]
        concurrency: usize,
        /// Requests per second (all workers together).
        #[arg(long)]
        rps: Option<f64>,
        /// A text template for all capabilities, or a .json map capability -> template.
        #[arg(long)]
        prompt_template: Option<PathBuf>,
        /// Request timeout in seconds.
        #[arg(long, default_value_t = 60.0)]
        timeout: f64,
        /// Retries of a failed request.
        #[arg(long, default_value_t = 6)]
        max_retries: u32,
        /// First retry delay in milliseconds (doubles each retry, with jitter).
        #[arg(long, default_value_t = 500)]
        backoff_ms: u64,
        /// Only print how many requests the run would make.
        #[arg(long)]
        dry_run: bool,
    },
    /// Train a DMoERM bundle (router, phases 1-3) or a baseline from a TOML config.
    #[cfg(feature = "train")]
    Train {
        #[command(subcommand)]
        command: train::TrainCommand,
    },
    /// Serve a bundle over HTTP: dmoerm's API, OpenRLHF's /get_reward, vLLM's /classify and
    /// /pooling, with dynamic batching; stops on SIGTERM after the requests in flight.
    #[cfg(feature = "serve")]
    Serve(serve::ServeArgs),
    /// Benchmark data.
    Data {
        #[command(subcommand)]
        command: DataCommand,
    },
    /// Preference accuracy (overall, per task), router accuracy and best-of-n of a bundle.
    Eval {
        /// Bundle directory or packed file.
        #[arg(long)]
        model: PathBuf,
        /// Ranked or pairwise preference JSONL.
        #[arg(long)]
        data: PathBuf,
        #[arg(long)]
        json: bool,
        /// For an ensemble bundle: mean, min, or uncertainty[:LAMBDA] (mean - lambda * variance, default 0.5).
        #[arg(long)]
        combine: Option<dmoerm::Combine>,
        #[arg(long, value_enum, default_value = "auto")]
        device: DeviceArg,
        /// Quantise the backbone's large float matrices as the model loads (a Hugging Face
        /// directory of bf16 or f32 weights runs on the int8 kernels without a `pack` step).
        #[arg(long, value_enum)]
        quantize: Option<QuantizeArg>,
    },
    /// Pack a bundle directory (or a Hugging Face reward-model directory) into one safetensors
    /// file for the web.
    Pack {
        #[arg(long)]
        model: PathBuf,
        #[arg(long)]
        out: PathBuf,
        #[arg(long, value_enum, default_value = "keep")]
        dtype: DtypeArg,
    },
    /// Write a Hugging Face *ForSequenceClassification reward model (config.json, safetensors,
    /// tokenizer) as a bundle: its files and the dmoerm.json its config implies. Every command
    /// also reads such a directory as it is; import it to edit the manifest or keep it.
    Import {
        /// The Hugging Face model directory.
        dir: PathBuf,
        #[arg(long)]
        out: PathBuf,
        /// With several output labels: the label whose score is the reward (default: label 0).
        #[arg(long)]
        reward_label: Option<String>,
    },
}

#[derive(Subcommand)]
enum DataCommand {
    /// The multi-task capability benchmark from real text (docs/benchmark.md), deterministic
    /// from --seed: train/valid/test preferences, capability labels, stats.json.
    Synth {
        /// Output directory.
        #[arg(long)]
        out: PathBuf,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Prompts per task in each split.
        #[arg(long, default_value_t = 300)]
        train: usize,
        #[arg(long, default_value_t = 50)]
        valid: usize,
        #[arg(long, default_value_t = 100)]
        test: usize,
        /// WordNet 3.0 database directory (Debian wordnet-base).
        #[arg(long, default_value = "/usr/share/wordnet")]
        wordnet: PathBuf,
        /// The chitchat dataset's dataset.json (PyPI chitchat-dataset).
        #[arg(long)]
        chitchat: PathBuf,
        /// Fortune files directory (Debian fortunes).
        #[arg(long, default_value = "/usr/share/games/fortunes")]
        fortunes: PathBuf,
    },
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum CliError {
    #[error(transparent)]
    Synth(#[from] dmoerm_synth::Error),
    #[error(transparent)]
    Data(#[from] dmoerm_data::Error),
    #[error(transparent)]
    Model(#[from] dmoerm::Error),
    #[error(transparent)]
    #[cfg(feature = "train")]
    Train(#[from] dmoerm_train::Error),
    #[error(transparent)]
    Label(#[from] dmoerm_label::Error),
    #[error("{path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("{path}:{line}: {message}")]
    Line { path: String, line: usize, message: String },
    #[error("{0}")]
    Usage(String),
}

/// A flag given in seconds: a positive, finite number.
pub(crate) fn seconds(flag: &str, value: f64) -> Result<std::time::Duration, CliError> {
    if !(value.is_finite() && value > 0.0) {
        return Err(CliError::Usage(format!("{flag} must be a positive number of seconds")));
    }
    Ok(std::time::Duration::from_secs_f64(value))
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> CliError + '_ {
    move |source| CliError::Io { path: path.display().to_string(), source }
}

fn main() -> ExitCode {
    // SAFETY: no other thread exists yet.
    unsafe { dmoerm::device::quiet_vulkan_loader() };
    let cli = Cli::parse();
    VERBOSE.store(cli.verbose, std::sync::atomic::Ordering::Relaxed);
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<(), CliError> {
    match cli.command {
        #[cfg(feature = "train")]
        Command::Train { command } => train::train(command),
        #[cfg(feature = "serve")]
        Command::Serve(args) => serve::serve(args),
        Command::Data {
            command: DataCommand::Synth { out, seed, train, valid, test, wordnet, chitchat, fortunes },
        } => {
            let sources = dmoerm_synth::read_sources(&wordnet, &chitchat, &fortunes)?;
            let items = dmoerm_synth::generate::items(&sources);
            let opts = dmoerm_synth::Options { seed, train, valid, test, ..Default::default() };
            let bench = dmoerm_synth::synth(&items, &opts)?;
            dmoerm_synth::write(&out, &bench)?;
            println!("{}", serde_json::to_string_pretty(&bench.stats["annotation_noise"]).unwrap_or_default());
            println!("{}", serde_json::to_string_pretty(&bench.stats["capability_labels_train"]).unwrap_or_default());
            println!("written to {}", out.display());
            Ok(())
        }
        Command::Eval { model, data, json, combine, device, quantize } => {
            eval::eval(load_model(&model, device, quantize)?, &data, json, combine)
        }
        Command::Score { model, prompt, response, input, output, json, device, quantize, batch_size } => {
            let model = load_model(&model, device, quantize)?;
            match (prompt, response, input, output) {
                (Some(p), Some(r), None, None) => {
                    let score = model.score(&Conversation::new(p, r))?;
                    if json {
                        println!("{}", to_json(&score));
                    } else {
                        print_score(&score);
                    }
                    Ok(())
                }
                (None, None, Some(i), Some(o)) => score_file(&model, &i, &o, batch_size.max(1)),
                _ => Err(CliError::Usage("give --prompt and --response, or --input and --output".into())),
            }
        }
        Command::Rank { model, prompt, candidates, json, device, quantize } => {
            let model = load_model(&model, device, quantize)?;
            let candidates = read_candidates(&candidates)?;
            let ranked = model.rank(&prompt, &candidates)?;
            if json {
                println!("{}", serde_json::to_string(&ranked).unwrap_or_default());
            } else {
                println!("task: {}", ranked.first().map_or("", |r| r.score.task.as_str()));
                println!("{:>4}  {:>5}  {:>9}  candidate", "rank", "index", "reward");
                for (i, r) in ranked.iter().enumerate() {
                    println!(
                        "{:>4}  {:>5}  {:>9.4}  {}",
                        i + 1,
                        r.index,
                        r.score.reward,
                        preview(&candidates[r.index])
                    );
                }
            }
            Ok(())
        }
        Command::Inspect { model: path, json, check } => {
            let model = RewardModel::load_on(&path, open_device(DeviceArg::Cpu)?)?;
            let scan = match check {
                true => Some(dmoerm::bundle::non_finite_tensors(&path)?),
                false => None,
            };
            inspect(&model, scan.as_ref(), json);
            match scan {
                Some((bad, _)) if !bad.is_empty() => {
                    Err(CliError::Usage(format!("{} tensors hold NaN or infinite values", bad.len())))
                }
                _ => Ok(()),
            }
        }
        Command::Label {
            input,
            output,
            api_base,
            model,
            categories,
            concurrency,
            rps,
            prompt_template,
            timeout,
            max_retries,
            backoff_ms,
            dry_run,
        } => {
            let path = |p: &Path| p.display().to_string();
            let api_key = ["DMOERM_API_KEY", "OPENAI_API_KEY"]
                .iter()
                .find_map(|k| std::env::var(k).ok().filter(|v| !v.is_empty()));
            let timeout = seconds("--timeout", timeout)?;
            let opts = dmoerm_label::job::Options {
                input: path(&input),
                output: path(&output),
                categories: match categories {
                    Some(c) => dmoerm_label::categories::load(&path(&c))?,
                    None => dmoerm_label::categories::defaults(),
                },
                templates: match prompt_template {
                    Some(t) => dmoerm_label::prompt::Templates::load(&path(&t))?,
                    None => Default::default(),
                },
                client: dmoerm_label::client::ClientConfig {
                    api_base,
                    model,
                    api_key,
                    timeout,
                    max_retries,
                    backoff: std::time::Duration::from_millis(backoff_ms),
                    rps,
                },
                concurrency,
                progress: true,
            };
            if dry_run {
                let (items, done, requests) = dmoerm_label::job::dry_run(&opts)?;
                println!("{items} items (pairs x capability points), {done} already done, {requests} requests to make");
                return Ok(());
            }
            let summary = dmoerm_label::job::run(&opts)?;
            println!("{}", serde_json::to_string(&summary).unwrap_or_default());
            Ok(())
        }
        Command::Import { dir, out, reward_label } => {
            let manifest = dmoerm::bundle::write::import(&dir, &out, reward_label.as_deref())?;
            // the written bundle loads
            RewardModel::load(&out, DeviceChoice::Cpu)?;
            let labels: Vec<&str> = manifest.tasks[0].experts.iter().map(|e| e.name.as_str()).collect();
            println!("wrote {} ({:?} pooling, labels: {})", out.display(), manifest.pooling, labels.join(", "));
            Ok(())
        }
        Command::Pack { model: dir, out, dtype } => {
            // Load first: only a valid bundle is packed.
            RewardModel::load(&dir, DeviceChoice::Cpu)?;
            let dtype = match dtype {
                DtypeArg::Keep => PackDtype::Keep,
                DtypeArg::F16 => PackDtype::F16,
                DtypeArg::Int8 => PackDtype::int8(),
                DtypeArg::Q4 => PackDtype::q4(),
            };
            let (bytes, report) = dmoerm::pack_bytes(&dir, dtype)?;
            std::fs::write(&out, &bytes).map_err(io_err(&out))?;
            println!("wrote {} ({} tensors, {:.2} MB)", out.display(), report.tensors, report.bytes as f64 / 1e6);
            Ok(())
        }
    }
}

fn to_json(score: &Score) -> String {
    serde_json::to_string(score).unwrap_or_default()
}

fn print_score(s: &Score) {
    println!("reward     {:.4}", s.reward);
    println!("task       {}", s.task);
    if s.task_probs.len() > 1 {
        let probs: Vec<String> = s.task_probs.iter().map(|(t, p)| format!("{t} {p:.3}")).collect();
        println!("routing    {}", probs.join(", "));
    }
    println!("truncated  {}", s.truncated);
    let width = s.capabilities.iter().map(|(n, _)| n.len()).max().unwrap_or(0);
    println!("capabilities:");
    for (name, v) in &s.capabilities {
        println!("  {name:<width$}  {v:>9.4}");
    }
}

fn preview(text: &str) -> String {
    let one_line = text.replace('\n', " ");
    if one_line.chars().count() > 70 {
        format!("{}...", one_line.chars().take(67).collect::<String>())
    } else {
        one_line
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct InputLine {
    #[serde(default)]
    prompt: Option<String>,
    #[serde(default)]
    messages: Option<Vec<Message>>,
    response: String,
    /// Carried through to the output.
    #[serde(default)]
    id: Option<serde_json::Value>,
}

fn parse_line(path: &Path, line_no: usize, text: &str) -> Result<(Conversation, Option<serde_json::Value>), CliError> {
    let bad = |message: String| CliError::Line { path: path.display().to_string(), line: line_no, message };
    let line: InputLine = serde_json::from_str(text).map_err(|e| bad(e.to_string()))?;
    let conv = Conversation::from_parts(line.prompt, line.messages, line.response).map_err(|e| bad(e.to_string()))?;
    Ok((conv, line.id))
}

fn score_file(model: &RewardModel, input: &Path, output: &Path, batch_size: usize) -> Result<(), CliError> {
    let total = BufReader::new(File::open(input).map_err(io_err(input))?).lines().count() as u64;
    let reader = BufReader::new(File::open(input).map_err(io_err(input))?);
    let mut out = BufWriter::new(File::create(output).map_err(io_err(output))?);
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} lines  {per_sec}  eta {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let mut pending: Vec<(Conversation, Option<serde_json::Value>)> = Vec::new();
    let flush = |pending: &mut Vec<(Conversation, Option<serde_json::Value>)>,
                 out: &mut BufWriter<File>|
     -> Result<(), CliError> {
        let convs: Vec<Conversation> = pending.iter().map(|(c, _)| c.clone()).collect();
        let scores = model.score_batch(&convs)?;
        for ((_, id), score) in pending.iter().zip(scores) {
            let mut value = serde_json::to_value(&score).unwrap_or_default();
            if let (Some(id), Some(obj)) = (id, value.as_object_mut()) {
                obj.insert("id".into(), id.clone());
            }
            writeln!(out, "{value}").map_err(io_err(output))?;
        }
        bar.inc(pending.len() as u64);
        pending.clear();
        Ok(())
    };
    for (i, line) in reader.lines().enumerate() {
        let line = line.map_err(io_err(input))?;
        if line.trim().is_empty() {
            bar.inc(1);
            continue;
        }
        pending.push(parse_line(input, i + 1, &line)?);
        if pending.len() == batch_size {
            flush(&mut pending, &mut out)?;
        }
    }
    if !pending.is_empty() {
        flush(&mut pending, &mut out)?;
    }
    out.flush().map_err(io_err(output))?;
    bar.finish_and_clear();
    Ok(())
}

fn read_candidates(path: &Path) -> Result<Vec<String>, CliError> {
    let text = std::fs::read_to_string(path).map_err(io_err(path))?;
    let lines: Vec<(usize, &str)> = text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()).collect();
    let jsonl = lines.first().is_some_and(|(_, l)| l.trim_start().starts_with(['{', '"']));
    let mut out = Vec::with_capacity(lines.len());
    for (i, line) in lines {
        if !jsonl {
            out.push(line.to_string());
            continue;
        }
        let bad = |message: String| CliError::Line { path: path.display().to_string(), line: i + 1, message };
        let value: serde_json::Value = serde_json::from_str(line).map_err(|e| bad(e.to_string()))?;
        let text = match &value {
            serde_json::Value::String(s) => s.clone(),
            serde_json::Value::Object(o) => o
                .get("response")
                .and_then(|v| v.as_str())
                .ok_or_else(|| bad("object without a string `response`".into()))?
                .to_string(),
            _ => return Err(bad("expected a string or an object with `response`".into())),
        };
        out.push(text);
    }
    if out.is_empty() {
        return Err(CliError::Usage(format!("{}: no candidates", path.display())));
    }
    Ok(out)
}

/// What `inspect --check` found: the tensors with non-finite values, and how many were scanned.
type Scan = (Vec<dmoerm::bundle::NonFiniteTensor>, usize);

fn inspect(model: &RewardModel, scan: Option<&Scan>, json: bool) {
    let m = model.manifest();
    let b = model.backbone();
    let tasks: Vec<serde_json::Value> = m
        .tasks
        .iter()
        .map(|t| {
            serde_json::json!({
                "name": t.name,
                "capabilities": t.experts.iter().map(|e| &e.name).collect::<Vec<_>>(),
                "aggregator": t.aggregator.is_some(),
            })
        })
        .collect();
    let mut info = serde_json::json!({
        "name": m.name,
        "architecture": b.model_type(),
        "layers": b.num_layers(),
        "hidden_size": b.hidden_size(),
        "vocab_size": b.vocab_size(),
        "backbone_params": b.num_params(),
        "pooling": m.pooling,
        "max_length": m.input.max_length,
        "router": m.router.is_some(),
        "tasks": tasks,
    });
    if let Some((bad, scanned)) = scan {
        info["check"] = serde_json::json!({"tensors_scanned": scanned, "non_finite": bad});
    }
    if json {
        println!("{info}");
        return;
    }
    println!("name          {}", m.name.as_deref().unwrap_or("-"));
    println!(
        "architecture  {} ({} layers, hidden {}, vocab {})",
        b.model_type(),
        b.num_layers(),
        b.hidden_size(),
        b.vocab_size()
    );
    println!("parameters    {:.2} M in the backbone", b.num_params() as f64 / 1e6);
    println!("pooling       {:?}", m.pooling);
    println!("max length    {} tokens", m.input.max_length);
    println!("router        {}", if m.router.is_some() { "yes" } else { "no (one task)" });
    for t in &m.tasks {
        let caps: Vec<&str> = t.experts.iter().map(|e| e.name.as_str()).collect();
        println!("task {:<12} {} experts: {}", t.name, caps.len(), caps.join(", "));
    }
    if let Some((bad, scanned)) = scan {
        match bad.is_empty() {
            true => println!("weights       all finite ({scanned} float tensors scanned)"),
            false => {
                for t in bad {
                    println!(
                        "weights       {}::{}: {} of {} values NaN or infinite",
                        t.file, t.tensor, t.count, t.numel
                    );
                }
            }
        }
    }
}
