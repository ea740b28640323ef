//! The benchmark: prompts per task split into train / valid / test (no prompt in two
//! splits), candidate responses with known capability qualities, noisy training ranks,
//! capability labels made as `dmoerm label` makes them, and statistics.

use std::collections::{BTreeMap, BTreeSet};

use dmoerm_data::rng::Rng;
use serde::Serialize;
use serde_json::json;

use crate::sources::{Exchange, Sense};
use crate::tasks::{gold, qualities, respond, Capability, Defect, Item, Task, TASKS};
use crate::{Error, Result};

/// Generation settings.
#[derive(Debug, Clone, Serialize)]
pub struct Options {
    pub seed: u64,
    /// Prompts per task in each split.
    pub train: usize,
    pub valid: usize,
    pub test: usize,
    /// Candidate responses per prompt.
    pub candidates: usize,
    /// Chance that a candidate has a defect on a given capability.
    pub defect_rate: f64,
    /// Agreement of the noisy training ranks with the truth (over pairs of different true
    /// score) that the annotation noise is calibrated to.
    pub target_agreement: f64,
    /// The simulated capability judge: noise of its verdicts and its preference for the
    /// response shown first.
    pub judge_noise: f64,
    pub judge_position_bias: f64,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            seed: 0,
            train: 300,
            valid: 50,
            test: 100,
            candidates: 4,
            defect_rate: 0.4,
            target_agreement: 0.70,
            judge_noise: 0.3,
            judge_position_bias: 0.15,
        }
    }
}

/// The real text, read by [`crate::sources`].
pub struct Sources {
    pub senses: Vec<Sense>,
    pub exchanges: Vec<Exchange>,
    pub sayings: Vec<String>,
}

/// One prompt with its candidates.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    pub task: Task,
    pub prompt: String,
    pub responses: Vec<String>,
    /// `[candidate][capability]`, in the task's capability order.
    pub qualities: Vec<Vec<f64>>,
    pub gold: Vec<f64>,
    /// The ranks a model trains on (noisy for train, true for valid and test).
    pub rank: Vec<u32>,
}

/// A capability label.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CapabilityLabel {
    pub id: String,
    pub category: String,
    pub point: String,
    pub query: String,
    pub responses: [String; 2],
    pub rank: [u32; 2],
    /// Whether the label agrees with the true qualities (not written to the labels file).
    #[serde(skip)]
    pub correct: bool,
}

/// Everything `dmoerm data synth` writes.
pub struct Benchmark {
    pub train: Vec<Record>,
    pub valid: Vec<Record>,
    pub test: Vec<Record>,
    pub caps_train: Vec<CapabilityLabel>,
    pub caps_valid: Vec<CapabilityLabel>,
    pub stats: serde_json::Value,
}

const STOP: [&str; 24] = [
    "about",
    "after",
    "again",
    "always",
    "because",
    "before",
    "being",
    "could",
    "every",
    "never",
    "other",
    "people",
    "should",
    "something",
    "their",
    "there",
    "these",
    "thing",
    "things",
    "think",
    "those",
    "through",
    "where",
    "which",
];

/// The prompts of every task with their ideal answers, distinct prompts, in a stable order.
pub fn items(sources: &Sources) -> BTreeMap<&'static str, Vec<Item>> {
    let mut out: BTreeMap<&'static str, Vec<Item>> = BTreeMap::new();
    let mut seen = BTreeSet::new();
    let mut push = |item: Item| {
        if seen.insert(item.prompt.clone()) {
            out.entry(item.task.name()).or_default().push(item);
        }
    };
    for s in &sources.senses {
        push(Item {
            task: Task::ObjQa,
            prompt: format!("What does the word \"{}\" mean?", s.word),
            answer: format!("\"{}\" means {}.", s.word, s.definition),
            word: Some(s.word.clone()),
        });
    }
    for s in &sources.senses {
        if let Some(e) = s.examples.first() {
            push(Item {
                task: Task::Text,
                prompt: format!("Write a sentence that uses the word \"{}\".", s.word),
                answer: sentence(e),
                word: Some(s.word.clone()),
            });
        }
    }
    for e in &sources.exchanges {
        push(Item { task: Task::Chat, prompt: e.message.clone(), answer: e.reply.clone(), word: None });
    }
    for text in &sources.sayings {
        let keyword = text
            .split(|c: char| !c.is_ascii_alphabetic())
            .filter(|w| w.len() >= 5 && w.chars().all(|c| c.is_ascii_lowercase()) && !STOP.contains(w))
            .max_by_key(|w| w.len());
        if let Some(k) = keyword {
            push(Item {
                task: Task::Sayings,
                prompt: format!("Tell me a saying about {k}."),
                answer: text.clone(),
                word: Some(k.to_string()),
            });
        }
    }
    out
}

fn sentence(s: &str) -> String {
    let s = crate::tasks::capitalize(s.trim());
    if s.ends_with(['.', '!', '?']) {
        s
    } else {
        format!("{s}.")
    }
}

/// A standard normal draw (Box-Muller).
fn normal(rng: &mut Rng) -> f64 {
    let u1 = rng.next_f64().max(1e-12);
    let u2 = rng.next_f64();
    (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
}

/// Dense ranks, 1 = highest score; equal scores share a rank.
pub fn ranks(scores: &[f64]) -> Vec<u32> {
    scores
        .iter()
        .map(|s| 1 + scores.iter().filter(|o| *o > s).map(|o| o.to_bits()).collect::<BTreeSet<_>>().len() as u32)
        .collect()
}

/// Candidates of one prompt; `others` are the other prompts of the same task and split.
fn record(item: &Item, others: &[&Item], opts: &Options, rng: &mut Rng) -> Record {
    let caps = item.task.capabilities();
    let mut responses = Vec::new();
    let mut qs = Vec::new();
    for _ in 0..opts.candidates {
        let mut defects: Vec<Defect> = Vec::new();
        for &c in &caps {
            if rng.next_f64() < opts.defect_rate {
                let excluded =
                    c == Capability::Correctness && defects.iter().any(|d| d.capability == Capability::Relevance);
                if !excluded {
                    let severity = if rng.next_f64() < 0.5 { 0.5 } else { 1.0 };
                    defects.push(Defect { capability: c, severity });
                }
            }
        }
        let other = others[(rng.next_u64() % others.len() as u64) as usize];
        responses.push(respond(item, other, &defects, rng));
        qs.push(qualities(item.task, &defects));
    }
    let gold: Vec<f64> = qs.iter().map(|q| gold(item.task, q)).collect();
    Record { task: item.task, prompt: item.prompt.clone(), responses, qualities: qs, rank: ranks(&gold), gold }
}

/// Fraction of pairs with different true scores that `noisy` orders like the truth.
fn agreement(records: &[Record], noisy: &[Vec<f64>]) -> f64 {
    let (mut agree, mut all) = (0usize, 0usize);
    for (r, n) in records.iter().zip(noisy) {
        for i in 0..r.gold.len() {
            for j in 0..r.gold.len() {
                if r.gold[i] > r.gold[j] {
                    all += 1;
                    agree += usize::from(n[i] > n[j]);
                }
            }
        }
    }
    agree as f64 / all.max(1) as f64
}

/// Annotator noise: the scores annotators "see" are the true ones plus Gaussian noise whose
/// spread is set (by bisection, from a fixed seed) so their ranks agree with the truth on
/// `target` of the pairs.
fn noisy_ranks(records: &mut [Record], target: f64, seed: u64) -> (f64, f64) {
    let draw = |sigma: f64| {
        let mut rng = Rng::new(seed);
        records
            .iter()
            .map(|r| r.gold.iter().map(|g| g + sigma * normal(&mut rng)).collect::<Vec<_>>())
            .collect::<Vec<_>>()
    };
    let (mut lo, mut hi) = (0.0, 5.0);
    for _ in 0..40 {
        let mid = (lo + hi) / 2.0;
        if agreement(records, &draw(mid)) > target {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    let sigma = (lo + hi) / 2.0;
    let noisy = draw(sigma);
    let achieved = agreement(records, &noisy);
    for (r, n) in records.iter_mut().zip(&noisy) {
        r.rank = ranks(n);
    }
    (sigma, achieved)
}

/// Capability labels as `dmoerm label` makes them: a judge asked twice, with the responses in
/// both orders, its verdict = true quality difference + noise + a bias for the first shown;
/// kept only when the two answers agree.
fn judged_labels(split: &str, records: &[Record], opts: &Options, rng: &mut Rng) -> (Vec<CapabilityLabel>, usize) {
    let mut out = Vec::new();
    let mut asked = 0;
    for (p, r) in records.iter().enumerate() {
        for (c, cap) in r.task.capabilities().iter().enumerate() {
            for i in 0..r.responses.len() {
                for j in i + 1..r.responses.len() {
                    if r.responses[i] == r.responses[j] {
                        continue;
                    }
                    asked += 1;
                    let diff = r.qualities[i][c] - r.qualities[j][c];
                    let first = diff + opts.judge_noise * normal(rng) + opts.judge_position_bias > 0.0; // i shown first
                    let second = -diff + opts.judge_noise * normal(rng) + opts.judge_position_bias > 0.0; // j shown first
                    if first == second {
                        continue; // position-inconsistent: dropped
                    }
                    let i_better = first;
                    out.push(CapabilityLabel {
                        id: format!("{split}:{p}:{i}:{j}:{}", cap.name()),
                        category: r.task.name().into(),
                        point: cap.name().into(),
                        query: r.prompt.clone(),
                        responses: [r.responses[i].clone(), r.responses[j].clone()],
                        rank: if i_better { [1, 2] } else { [2, 1] },
                        correct: if i_better { diff > 0.0 } else { diff < 0.0 },
                    });
                }
            }
        }
    }
    (out, asked)
}

/// True capability labels (validation): every pair whose qualities differ.
fn true_labels(split: &str, records: &[Record], rng: &mut Rng) -> Vec<CapabilityLabel> {
    let mut out = Vec::new();
    for (p, r) in records.iter().enumerate() {
        for (c, cap) in r.task.capabilities().iter().enumerate() {
            for i in 0..r.responses.len() {
                for j in i + 1..r.responses.len() {
                    let diff = r.qualities[i][c] - r.qualities[j][c];
                    if diff == 0.0 || r.responses[i] == r.responses[j] {
                        continue;
                    }
                    let swap = rng.next_f64() < 0.5;
                    let (a, b) = if swap { (j, i) } else { (i, j) };
                    let a_better = (r.qualities[a][c] - r.qualities[b][c]) > 0.0;
                    out.push(CapabilityLabel {
                        id: format!("{split}:{p}:{a}:{b}:{}", cap.name()),
                        category: r.task.name().into(),
                        point: cap.name().into(),
                        query: r.prompt.clone(),
                        responses: [r.responses[a].clone(), r.responses[b].clone()],
                        rank: if a_better { [1, 2] } else { [2, 1] },
                        correct: true,
                    });
                }
            }
        }
    }
    out
}

/// Builds the benchmark from the source items, deterministically from `opts.seed`.
pub fn synth(items: &BTreeMap<&'static str, Vec<Item>>, opts: &Options) -> Result<Benchmark> {
    let mut rng = Rng::new(opts.seed);
    let (mut train, mut valid, mut test) = (Vec::new(), Vec::new(), Vec::new());
    let need = opts.train + opts.valid + opts.test;
    for task in TASKS {
        let pool = items.get(task.name()).map(Vec::as_slice).unwrap_or_default();
        if pool.len() < need || opts.train < 2 || opts.valid < 2 || opts.test < 2 {
            return Err(Error::Source(format!(
                "task {}: {} distinct prompts in the sources, {need} needed (at least 2 per split)",
                task.name(),
                pool.len()
            )));
        }
        let order = rng.permutation(pool.len());
        let chosen: Vec<&Item> = order[..need].iter().map(|&i| &pool[i]).collect();
        let (tr, rest) = chosen.split_at(opts.train);
        let (va, te) = rest.split_at(opts.valid);
        for (split, out) in [(tr, &mut train), (va, &mut valid), (te, &mut test)] {
            for (k, item) in split.iter().enumerate() {
                let others: Vec<&Item> = split.iter().enumerate().filter(|(o, _)| *o != k).map(|(_, i)| *i).collect();
                out.push(record(item, &others, opts, &mut rng));
            }
        }
    }
    let (sigma, achieved) = noisy_ranks(&mut train, opts.target_agreement, opts.seed ^ 0xA5A5);
    let (caps_train, asked) = judged_labels("train", &train, opts, &mut rng);
    let caps_valid = true_labels("valid", &valid, &mut rng);
    let mut stats = statistics(&train, &valid, &test, &caps_train, asked, &caps_valid, sigma, achieved, opts);
    for task in TASKS {
        stats["tasks"][task.name()]["distinct_prompts_in_sources"] = json!(items.get(task.name()).map_or(0, Vec::len));
    }
    Ok(Benchmark { train, valid, test, caps_train, caps_valid, stats })
}

fn pair_count(records: &[Record]) -> usize {
    records.iter().map(|r| dmoerm_data::preferences::ordered_pairs(&r.rank).len()).sum()
}

#[allow(clippy::too_many_arguments)]
fn statistics(
    train: &[Record],
    valid: &[Record],
    test: &[Record],
    caps_train: &[CapabilityLabel],
    asked: usize,
    caps_valid: &[CapabilityLabel],
    sigma: f64,
    agreement: f64,
    opts: &Options,
) -> serde_json::Value {
    let mut tasks = serde_json::Map::new();
    for task in TASKS {
        let of = |rs: &[Record]| rs.iter().filter(|r| r.task == task).cloned().collect::<Vec<_>>();
        let (tr, va, te) = (of(train), of(valid), of(test));
        let mut caps = serde_json::Map::new();
        for (c, cap) in task.capabilities().iter().enumerate() {
            let defects = tr.iter().flat_map(|r| &r.qualities).filter(|q| q[c] < 1.0).count();
            let total = tr.iter().map(|r| r.qualities.len()).sum::<usize>();
            let labels: Vec<&CapabilityLabel> =
                caps_train.iter().filter(|l| l.category == task.name() && l.point == cap.name()).collect();
            let correct = labels.iter().filter(|l| l.correct).count();
            caps.insert(
                cap.name().into(),
                json!({
                    "weight": task.weights()[c].1,
                    "defect_rate_train": defects as f64 / total.max(1) as f64,
                    "labels_train": labels.len(),
                    "labels_train_correct": correct as f64 / labels.len().max(1) as f64,
                    "labels_valid": caps_valid.iter().filter(|l| l.category == task.name() && l.point == cap.name()).count(),
                }),
            );
        }
        tasks.insert(
            task.name().into(),
            json!({
                "prompts": {"train": tr.len(), "valid": va.len(), "test": te.len()},
                "pairs": {"train": pair_count(&tr), "valid": pair_count(&va), "test": pair_count(&te)},
                "capabilities": caps,
            }),
        );
    }
    let correct = caps_train.iter().filter(|l| l.correct).count();
    json!({
        "options": opts,
        "annotation_noise": {"sigma": sigma, "train_rank_agreement_with_truth": agreement},
        "capability_labels_train": {
            "asked_pairs": asked,
            "kept": caps_train.len(),
            "kept_fraction": caps_train.len() as f64 / asked.max(1) as f64,
            "kept_correct": correct as f64 / caps_train.len().max(1) as f64,
        },
        "tasks": tasks,
    })
}

/// The ranked JSONL line of a record; `truth` adds the true scores and qualities.
pub fn ranked_line(r: &Record, truth: bool) -> serde_json::Value {
    let mut v = json!({
        "src": [r.prompt],
        "tgt": [],
        "response": r.responses,
        "rank": r.rank,
        "label": r.task.name(),
    });
    if truth {
        let caps = r.task.capabilities();
        let q: serde_json::Map<String, serde_json::Value> = caps
            .iter()
            .enumerate()
            .map(|(c, cap)| (cap.name().to_string(), json!(r.qualities.iter().map(|q| q[c]).collect::<Vec<_>>())))
            .collect();
        v["gold"] = json!(r.gold);
        v["qualities"] = serde_json::Value::Object(q);
    }
    v
}

/// `(file name, lines)` of the benchmark directory.
pub fn files(b: &Benchmark) -> Vec<(&'static str, Vec<String>)> {
    let lines = |rs: &[Record], truth: bool| rs.iter().map(|r| ranked_line(r, truth).to_string()).collect();
    let labels = |ls: &[CapabilityLabel]| ls.iter().map(|l| serde_json::to_string(l).unwrap_or_default()).collect();
    vec![
        ("train.jsonl", lines(&b.train, false)),
        ("train_truth.jsonl", lines(&b.train, true)),
        ("valid.jsonl", lines(&b.valid, true)),
        ("test.jsonl", lines(&b.test, true)),
        ("caps_train.jsonl", labels(&b.caps_train)),
        ("caps_valid.jsonl", labels(&b.caps_valid)),
        ("stats.json", vec![serde_json::to_string_pretty(&b.stats).unwrap_or_default()]),
    ]
}
