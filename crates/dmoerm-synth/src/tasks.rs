//! The task categories, their capability points, and the defects that lower one capability
//! of a response each.
//!
//! A candidate response starts from the ideal answer to its prompt (real text) and gets a
//! random set of defects, each with a severity `s` in {0.5, 1}: its quality on that
//! capability is `1 - s`, and 1 on the others. The true overall score of a response is the
//! task's weighted sum of its capability qualities ([`Task::weights`]).

use dmoerm_data::rng::Rng;

/// Every capability point of the benchmark.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Capability {
    /// Answers this prompt (not another one).
    Relevance,
    /// States the right fact (objective QA).
    Correctness,
    /// Says all of it (not cut off).
    Completeness,
    /// Reads well (no repeated or scrambled words).
    Readability,
    /// No filler.
    Conciseness,
    /// Polite.
    Tone,
}

impl Capability {
    pub fn name(self) -> &'static str {
        match self {
            Capability::Relevance => "relevance",
            Capability::Correctness => "correctness",
            Capability::Completeness => "completeness",
            Capability::Readability => "readability",
            Capability::Conciseness => "conciseness",
            Capability::Tone => "tone",
        }
    }
}

/// A task category.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Task {
    /// Objective QA: what a word means (WordNet definitions).
    ObjQa,
    /// Text creation: a sentence that uses a word (WordNet examples).
    Text,
    /// Chat: reply to a message (chitchat conversations).
    Chat,
    /// Sayings: a quotation or joke about a topic (fortunes).
    Sayings,
}

pub const TASKS: [Task; 4] = [Task::ObjQa, Task::Text, Task::Chat, Task::Sayings];

impl Task {
    pub fn name(self) -> &'static str {
        match self {
            Task::ObjQa => "obj_qa",
            Task::Text => "text",
            Task::Chat => "chat",
            Task::Sayings => "sayings",
        }
    }

    /// The capability points and their weights in the overall score (sum 1). The weights
    /// differ between tasks, so one reward model for every task meets conflicting trade-offs
    /// (e.g. a rude but complete answer beats a polite but truncated one in `text`, and loses
    /// in `chat`).
    pub fn weights(self) -> &'static [(Capability, f64)] {
        use Capability::*;
        match self {
            Task::ObjQa => {
                &[(Correctness, 0.35), (Relevance, 0.25), (Completeness, 0.2), (Readability, 0.1), (Conciseness, 0.1)]
            }
            Task::Text => {
                &[(Relevance, 0.3), (Readability, 0.3), (Completeness, 0.25), (Conciseness, 0.1), (Tone, 0.05)]
            }
            Task::Chat => {
                &[(Tone, 0.35), (Relevance, 0.25), (Conciseness, 0.2), (Readability, 0.1), (Completeness, 0.1)]
            }
            Task::Sayings => {
                &[(Completeness, 0.35), (Relevance, 0.25), (Tone, 0.2), (Readability, 0.1), (Conciseness, 0.1)]
            }
        }
    }

    pub fn capabilities(self) -> Vec<Capability> {
        self.weights().iter().map(|(c, _)| *c).collect()
    }
}

/// One prompt of a task with its ideal answer and what a wrong answer can borrow.
#[derive(Debug, Clone, PartialEq)]
pub struct Item {
    pub task: Task,
    pub prompt: String,
    pub answer: String,
    /// For correctness defects (objective QA): the asked word.
    pub word: Option<String>,
}

/// A defect applied to a response, and how bad.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Defect {
    pub capability: Capability,
    /// 0.5 (mild) or 1 (severe).
    pub severity: f64,
}

const FILLERS: [&str; 6] = [
    "That is a really good question.",
    "I hope this helps you.",
    "Let me know if you want to know more.",
    "There are many ways to look at this.",
    "I have thought about this carefully.",
    "Thank you for asking me about it.",
];
const MILD_RUDE: [&str; 3] = ["Obviously,", "Well, if you must know,", "As anyone could tell you,"];
const SEVERE_RUDE: [&str; 3] = ["Ugh, fine.", "What a silly thing to ask.", "Seriously? Whatever."];
const SEVERE_RUDE_END: [&str; 3] = ["Don't ask me again.", "Figure it out yourself next time.", "Happy now?"];

fn pick<'a>(rng: &mut Rng, xs: &'a [&'a str]) -> &'a str {
    xs[(rng.next_u64() % xs.len() as u64) as usize]
}

/// The response of `item` with `defects` (at most one per capability). `other` is the ideal
/// item of another prompt of the same task (for relevance and correctness defects).
pub fn respond(item: &Item, other: &Item, defects: &[Defect], rng: &mut Rng) -> String {
    let has = |c: Capability| defects.iter().find(|d| d.capability == c).map(|d| d.severity);
    // 1. what is said
    let mut text = if has(Capability::Relevance).is_some() {
        other.answer.clone()
    } else if has(Capability::Correctness).is_some() {
        // the asked word with another word's definition: a wrong fact, stated confidently
        let word = item.word.as_deref().unwrap_or("it");
        let definition = other.answer.split_once(" means ").map_or(other.answer.as_str(), |(_, d)| d);
        format!("{} means {definition}", capitalize(&format!("\"{word}\"")))
    } else {
        item.answer.clone()
    };
    // 2. cut off
    if let Some(s) = has(Capability::Completeness) {
        let words: Vec<&str> = text.split_whitespace().collect();
        let keep = ((words.len() as f64) * if s >= 1.0 { 0.3 } else { 0.6 }).round().max(2.0) as usize;
        text = words[..keep.min(words.len().saturating_sub(1)).max(1)].join(" ");
    }
    // 3. repeated or scrambled words
    if let Some(s) = has(Capability::Readability) {
        let mut words: Vec<String> = text.split_whitespace().map(str::to_string).collect();
        if s >= 1.0 {
            let tail = rng.permutation(words.len().saturating_sub(1));
            let first = words[0].clone();
            let rest: Vec<String> = tail.iter().map(|&i| words[i + 1].clone()).collect();
            words = std::iter::once(first).chain(rest).collect();
        } else {
            let n = words.len();
            let start = (rng.next_u64() % (n as u64).max(1)) as usize;
            let chunk: Vec<String> = words[start..(start + 3).min(n)].to_vec();
            let at = (start + chunk.len()).min(n);
            words.splice(at..at, chunk.iter().cloned().chain(chunk.iter().cloned()));
        }
        text = words.join(" ");
    }
    // 4. filler
    if let Some(s) = has(Capability::Conciseness) {
        let a = pick(rng, &FILLERS);
        text = if s >= 1.0 {
            let b = pick(rng, &FILLERS);
            let c = pick(rng, &FILLERS);
            format!("{a} {b} {text} {c}")
        } else {
            format!("{a} {text}")
        };
    }
    // 5. rudeness
    if let Some(s) = has(Capability::Tone) {
        text = if s >= 1.0 {
            format!("{} {text} {}", pick(rng, &SEVERE_RUDE), pick(rng, &SEVERE_RUDE_END))
        } else {
            format!("{} {}", pick(rng, &MILD_RUDE), lower_first(&text))
        };
    }
    text
}

pub fn capitalize(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}

fn lower_first(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_lowercase().chain(c).collect(),
        None => String::new(),
    }
}

/// Quality of a response on each capability of `task` given its defects: `1 - severity`.
pub fn qualities(task: Task, defects: &[Defect]) -> Vec<f64> {
    task.capabilities()
        .iter()
        .map(|c| 1.0 - defects.iter().find(|d| d.capability == *c).map_or(0.0, |d| d.severity))
        .collect()
}

/// The true overall score: the task's weighted sum of qualities.
pub fn gold(task: Task, qualities: &[f64]) -> f64 {
    task.weights().iter().zip(qualities).map(|((_, w), q)| w * q).sum()
}
