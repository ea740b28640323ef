//! The labeling run: the work list, the workers, and the resumable, ordered output.
//!
//! Work items are (input line, response pair i < j, capability point of the line's
//! category), in that order; each has a stable id `"<line>:<i>:<j>:<point>"`. Each item asks
//! the judge twice, as (A, B) and (B, A), and becomes a label (both orders agree) or a
//! dropped record with its reason (`inconsistent`, `unparseable`, `refused`).
//!
//! Output is written in item order (a reorder buffer holds items that finish early), one
//! whole line per `write`, each followed by `fsync`. So at any instant the files hold a
//! prefix of the item order; a re-run skips the ids already present (after cutting a torn
//! last line, if a kill left one) and appends the rest: killed and resumed, or uninterrupted,
//! the files are byte-identical. Items that fail after every retry are not written, so the
//! next run retries them.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Mutex};

use indicatif::{ProgressBar, ProgressStyle};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::answer::{parse, Verdict};
use crate::categories::{Categories, Point};
use crate::client::{Client, ClientConfig};
use crate::prompt::Templates;
use crate::{Error, Result};

/// One line of the ranked multi-response input (the reference dataset's layout).
#[derive(Debug, Clone, Deserialize)]
struct RankedLine {
    /// User turns.
    src: Vec<String>,
    /// Earlier assistant turns (one fewer than `src`).
    #[serde(default)]
    tgt: Vec<String>,
    /// Candidate responses.
    response: Vec<String>,
    /// Their ranks, 1 = best (not used for capability labels, but checked).
    #[serde(default)]
    rank: Vec<i64>,
    /// The task category.
    label: String,
}

/// One unit of work: one ordered pair of responses and one capability point.
#[derive(Debug, Clone)]
pub struct Item {
    /// Stable id, `"<line>:<i>:<j>:<point>"`.
    pub id: String,
    /// The category.
    pub category: String,
    /// The capability point.
    pub point: Point,
    /// The conversation before the responses, as `[{role, content}]` messages (what the
    /// output line keeps, so training renders it as scoring does).
    pub messages: serde_json::Value,
    /// The same conversation as text for the judge (`User: ...` / `Assistant: ...` lines).
    pub query: String,
    /// Response i.
    pub a: String,
    /// Response j.
    pub b: String,
}

/// What one item became.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Outcome {
    Label(String),
    Dropped { line: String, reason: &'static str },
    Failed(String),
}

/// Settings of a run.
#[derive(Debug, Clone)]
pub struct Options {
    /// Ranked JSONL input.
    pub input: String,
    /// Labels JSONL output; dropped pairs go to `<output>.dropped.jsonl`.
    pub output: String,
    /// Category -> capability points.
    pub categories: Categories,
    /// Judge prompts.
    pub templates: Templates,
    /// The API.
    pub client: ClientConfig,
    /// Concurrent requests.
    pub concurrency: usize,
    /// Show a progress bar.
    pub progress: bool,
}

/// What a run did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Summary {
    /// Items in the input (pairs x points).
    pub items: usize,
    /// Items already in the output files, skipped.
    pub already_done: usize,
    /// Labels written by this run.
    pub labeled: usize,
    /// Dropped records written by this run, by reason.
    pub dropped: BTreeMap<String, usize>,
    /// Items that failed after all retries (not written).
    pub failed: usize,
    /// Requests made (retries included).
    pub requests: u64,
    /// Transient errors that were retried.
    pub retried: u64,
    /// Tokens the API reported.
    pub tokens: u64,
}

/// The side file of dropped pairs.
pub fn dropped_path(output: &str) -> String {
    format!("{output}.dropped.jsonl")
}

/// The conversation as messages: user turns `src` interleaved with the assistant turns `tgt`.
fn messages(src: &[String], tgt: &[String]) -> serde_json::Value {
    let mut out = Vec::with_capacity(src.len() + tgt.len());
    for (i, user) in src.iter().enumerate() {
        out.push(json!({"role": "user", "content": user}));
        if let Some(assistant) = tgt.get(i) {
            out.push(json!({"role": "assistant", "content": assistant}));
        }
    }
    serde_json::Value::Array(out)
}

/// The conversation as the judge reads it.
fn render_query(src: &[String], tgt: &[String]) -> String {
    let mut turns = Vec::with_capacity(src.len() + tgt.len());
    for (i, user) in src.iter().enumerate() {
        turns.push(format!("User: {user}"));
        if let Some(assistant) = tgt.get(i) {
            turns.push(format!("Assistant: {assistant}"));
        }
    }
    turns.join("\n")
}

/// Reads the input and lists the work, in order.
pub fn plan(input: &str, categories: &Categories) -> Result<Vec<Item>> {
    let file = File::open(input).map_err(|source| Error::Io { path: input.into(), source })?;
    let mut items = Vec::new();
    for (n, line) in BufReader::new(file).lines().enumerate() {
        let line_no = n + 1;
        let line = line.map_err(|source| Error::Io { path: input.into(), source })?;
        if line.trim().is_empty() {
            continue;
        }
        let bad = |message: String| Error::Line { path: input.into(), line: line_no, message };
        let r: RankedLine = serde_json::from_str(&line).map_err(|e| bad(e.to_string()))?;
        if r.src.is_empty() {
            return Err(bad("`src` has no user turn".into()));
        }
        if r.tgt.len() + 1 != r.src.len() {
            return Err(bad(format!("`tgt` must have one turn fewer than `src` ({} vs {})", r.tgt.len(), r.src.len())));
        }
        if !r.rank.is_empty() && r.rank.len() != r.response.len() {
            return Err(bad(format!("{} ranks for {} responses", r.rank.len(), r.response.len())));
        }
        let points = categories.get(&r.label).ok_or_else(|| {
            bad(format!(
                "category `{}` is not in the categories ({:?})",
                r.label,
                categories.keys().collect::<Vec<_>>()
            ))
        })?;
        let query = render_query(&r.src, &r.tgt);
        let history = messages(&r.src, &r.tgt);
        for i in 0..r.response.len() {
            for j in i + 1..r.response.len() {
                for point in points {
                    items.push(Item {
                        id: format!("{line_no}:{i}:{j}:{}", point.name),
                        category: r.label.clone(),
                        point: point.clone(),
                        messages: history.clone(),
                        query: query.clone(),
                        a: r.response[i].clone(),
                        b: r.response[j].clone(),
                    });
                }
            }
        }
    }
    Ok(items)
}

/// Ids already written to `path`. A torn last line (no newline: the process died inside a
/// write) is cut off first.
fn read_done(path: &str) -> Result<HashSet<String>> {
    let io = |source| Error::Io { path: path.into(), source };
    let mut bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(HashSet::new()),
        Err(e) => return Err(io(e)),
    };
    if !bytes.is_empty() && bytes.last() != Some(&b'\n') {
        let keep = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |p| p + 1);
        OpenOptions::new().write(true).open(path).and_then(|f| f.set_len(keep as u64)).map_err(io)?;
        bytes.truncate(keep);
    }
    let mut ids = HashSet::new();
    for (n, line) in String::from_utf8_lossy(&bytes).lines().enumerate() {
        let v: serde_json::Value = serde_json::from_str(line).map_err(|e| Error::Line {
            path: path.into(),
            line: n + 1,
            message: format!("not a dmoerm label line: {e}"),
        })?;
        let id = v.get("id").and_then(|v| v.as_str()).ok_or_else(|| Error::Line {
            path: path.into(),
            line: n + 1,
            message: "line without an `id`".into(),
        })?;
        ids.insert(id.to_string());
    }
    Ok(ids)
}

/// The work list and the ids already in the label and dropped files.
fn plan_and_done(opts: &Options) -> Result<(Vec<Item>, HashSet<String>)> {
    let items = plan(&opts.input, &opts.categories)?;
    let mut done = read_done(&opts.output)?;
    done.extend(read_done(&dropped_path(&opts.output))?);
    Ok((items, done))
}

/// Counts for `--dry-run`: (items, already done, requests still to make).
pub fn dry_run(opts: &Options) -> Result<(usize, usize, usize)> {
    let (items, done) = plan_and_done(opts)?;
    let todo = items.iter().filter(|i| !done.contains(&i.id)).count();
    Ok((items.len(), items.len() - todo, 2 * todo))
}

/// Labels one item: ask (A, B) and (B, A), keep the label if both agree.
fn label(client: &Client, templates: &Templates, item: &Item, stats: &Stats) -> (Outcome, u64) {
    let mut tokens = 0;
    let mut verdicts = Vec::with_capacity(2);
    let mut answers = Vec::with_capacity(2);
    for (first, second) in [(&item.a, &item.b), (&item.b, &item.a)] {
        let prompt = templates.render(&item.query, first, second, &item.point.name, &item.point.description);
        stats.requests.fetch_add(1, Ordering::Relaxed);
        let reply = client.ask(&prompt, |_| {
            stats.retried.fetch_add(1, Ordering::Relaxed);
            stats.requests.fetch_add(1, Ordering::Relaxed);
        });
        match reply {
            Ok(r) => {
                tokens += r.tokens;
                verdicts.push(if r.refusal { Verdict::Refused } else { parse(&r.content) });
                answers.push(r.content);
            }
            Err(e) => return (Outcome::Failed(e.0), tokens),
        }
    }
    let base = json!({
        "id": item.id,
        "category": item.category,
        "point": item.point.name,
        "messages": item.messages,
        "responses": [item.a, item.b],
    });
    let outcome = match (verdicts[0], verdicts[1]) {
        // A shown first won, and A shown second won: A is better.
        (Verdict::First, Verdict::Second) => Outcome::Label(with(base, "rank", json!([1, 2])).to_string()),
        (Verdict::Second, Verdict::First) => Outcome::Label(with(base, "rank", json!([2, 1])).to_string()),
        (x, y) => {
            let reason = if x == Verdict::Refused || y == Verdict::Refused {
                "refused"
            } else if x == Verdict::Unparseable || y == Verdict::Unparseable {
                "unparseable"
            } else {
                "inconsistent"
            };
            let line = with(with(base, "reason", json!(reason)), "answers", json!(answers)).to_string();
            Outcome::Dropped { line, reason }
        }
    };
    (outcome, tokens)
}

fn with(mut v: serde_json::Value, key: &str, value: serde_json::Value) -> serde_json::Value {
    if let Some(o) = v.as_object_mut() {
        o.insert(key.into(), value);
    }
    v
}

#[derive(Default)]
struct Stats {
    requests: AtomicU64,
    retried: AtomicU64,
}

/// An append-only JSONL file: each line is one `write` followed by `fsync`.
struct Appender {
    path: String,
    file: File,
}

impl Appender {
    fn open(path: &str) -> Result<Self> {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|source| Error::Io { path: path.into(), source })?;
        Ok(Self { path: path.into(), file })
    }

    fn append(&mut self, line: &str) -> Result<()> {
        let mut buf = Vec::with_capacity(line.len() + 1);
        buf.extend_from_slice(line.as_bytes());
        buf.push(b'\n');
        self.file
            .write_all(&buf)
            .and_then(|_| self.file.sync_data())
            .map_err(|source| Error::Io { path: self.path.clone(), source })
    }
}

/// Runs (or resumes) a labeling job.
pub fn run(opts: &Options) -> Result<Summary> {
    let (items, done) = plan_and_done(opts)?;
    let dropped_file = dropped_path(&opts.output);
    let todo: Vec<&Item> = items.iter().filter(|i| !done.contains(&i.id)).collect();
    let mut summary = Summary { items: items.len(), already_done: items.len() - todo.len(), ..Summary::default() };
    let mut labels = Appender::open(&opts.output)?;
    let mut dropped = Appender::open(&dropped_file)?;

    let bar = if opts.progress { ProgressBar::new(todo.len() as u64) } else { ProgressBar::hidden() };
    bar.set_style(
        ProgressStyle::with_template("{bar:30} {pos}/{len} items  {msg}  eta {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let client = Client::new(opts.client.clone());
    let stats = Stats::default();
    let queue = Mutex::new(todo.iter().copied().enumerate().collect::<VecDeque<_>>());
    let stop = AtomicBool::new(false);
    let mut last_error = String::new();

    let result = std::thread::scope(|s| -> Result<()> {
        let (tx, rx) = mpsc::channel::<(usize, Outcome, u64)>();
        for _ in 0..opts.concurrency.max(1) {
            let tx = tx.clone();
            let (queue, client, stats, stop, templates) = (&queue, &client, &stats, &stop, &opts.templates);
            s.spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let next = queue.lock().unwrap_or_else(|e| e.into_inner()).pop_front();
                    let Some((pos, item)) = next else { break };
                    let (outcome, tokens) = label(client, templates, item, stats);
                    if tx.send((pos, outcome, tokens)).is_err() {
                        break;
                    }
                }
            });
        }
        drop(tx);
        // Write in item order.
        let mut pending: BTreeMap<usize, Outcome> = BTreeMap::new();
        let mut next = 0;
        for (pos, outcome, tokens) in rx {
            summary.tokens += tokens;
            pending.insert(pos, outcome);
            while let Some(outcome) = pending.remove(&next) {
                let written = match outcome {
                    Outcome::Label(line) => {
                        summary.labeled += 1;
                        labels.append(&line)
                    }
                    Outcome::Dropped { line, reason } => {
                        *summary.dropped.entry(reason.to_string()).or_default() += 1;
                        dropped.append(&line)
                    }
                    Outcome::Failed(e) => {
                        summary.failed += 1;
                        last_error = e;
                        Ok(())
                    }
                };
                if let Err(e) = written {
                    stop.store(true, Ordering::Relaxed);
                    return Err(e);
                }
                next += 1;
                bar.inc(1);
                bar.set_message(format!(
                    "labeled {}  dropped {}  errors {}  tokens {}",
                    summary.labeled,
                    summary.dropped.values().sum::<usize>(),
                    stats.retried.load(Ordering::Relaxed) + summary.failed as u64,
                    summary.tokens
                ));
            }
        }
        Ok(())
    });
    bar.finish_and_clear();
    result?;
    summary.requests = stats.requests.load(Ordering::Relaxed);
    summary.retried = stats.retried.load(Ordering::Relaxed);
    if summary.failed > 0 {
        return Err(Error::Failed { failed: summary.failed, last: last_error });
    }
    Ok(summary)
}
