//! The parity fixtures of `tests/fixtures` and their reference outputs (computed by
//! `tests/fixtures/generate.py` with torch + transformers + peft).

use std::collections::BTreeMap;
use std::path::PathBuf;

use dmoerm::{Conversation, Message, RewardModel, Score};
use serde::Deserialize;

pub const FIXTURES: [&str; 14] = [
    "llama",
    "llama3_rope",
    "qwen2",
    "qwen3",
    "bert",
    "bert_mean",
    "plain_rm",
    "mistral_window",
    "qwen2_window",
    "hf_llama3",
    "hf_qwen2",
    "hf_mistral",
    "hf_qwen3_multilabel",
    "hf_bert",
];

/// The Hugging Face reward-model directories among [`FIXTURES`] (no `dmoerm.json`).
pub const HF_FIXTURES: [&str; 5] = ["hf_llama3", "hf_qwen2", "hf_mistral", "hf_qwen3_multilabel", "hf_bert"];

#[derive(Debug, Deserialize)]
pub struct ExpectedScore {
    pub reward: f32,
    pub task: String,
    pub task_probs: BTreeMap<String, f32>,
    pub capabilities: BTreeMap<String, f32>,
    pub truncated: bool,
}

#[derive(Debug, Deserialize)]
pub struct Input {
    pub messages: Vec<Message>,
    pub response: String,
    pub expected: ExpectedScore,
    pub router_ids: Option<Vec<u32>>,
    pub expert_ids: Vec<u32>,
    /// The text transformers' `apply_chat_template` renders (Hugging Face reward models).
    #[serde(default)]
    pub chat_text: Option<String>,
    /// The text the same template renders from the user turns alone (what a DMoERM router
    /// reads with `input.chat_template`), or `None` where it refuses them.
    #[serde(default)]
    pub router_text: Option<String>,
    /// The template's error when it refuses the user turns alone.
    #[serde(default)]
    pub router_refused: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct Rank {
    pub prompt: String,
    pub candidates: Vec<String>,
    pub task: String,
    pub order: Vec<usize>,
    pub rewards: Vec<f32>,
}

#[derive(Debug, Deserialize)]
pub struct Expected {
    pub family: String,
    pub tolerance: f32,
    pub inputs: Vec<Input>,
    pub rank: Rank,
}

pub fn fixture_dir(name: &str) -> PathBuf {
    crate::repo_root().join("tests/fixtures").join(name)
}

pub fn expected(name: &str) -> Expected {
    let text = std::fs::read_to_string(fixture_dir(name).join("expected.json")).expect("fixture expected.json");
    serde_json::from_str(&text).expect("valid expected.json")
}

impl Input {
    pub fn conversation(&self) -> Conversation {
        Conversation::with_messages(self.messages.clone(), self.response.clone())
    }
}

fn close(what: &str, got: f32, want: f32, tol: f32) {
    assert!((got - want).abs() <= tol, "{what}: got {got}, reference {want} (|diff| {} > {tol})", (got - want).abs());
}

/// Asserts a score equals the reference within `tol`.
pub fn assert_score(ctx: &str, got: &Score, want: &ExpectedScore, tol: f32) {
    assert_eq!(got.task, want.task, "{ctx}: routed task");
    assert_eq!(got.truncated, want.truncated, "{ctx}: truncated flag");
    close(&format!("{ctx}: reward"), got.reward, want.reward, tol);
    assert_eq!(got.task_probs.len(), want.task_probs.len(), "{ctx}: number of tasks");
    for (name, p) in &got.task_probs {
        close(&format!("{ctx}: P({name})"), *p, want.task_probs[name], tol);
    }
    assert_eq!(got.capabilities.len(), want.capabilities.len(), "{ctx}: number of capabilities");
    for (name, v) in &got.capabilities {
        close(&format!("{ctx}: capability {name}"), *v, want.capabilities[name], tol);
    }
}

/// The whole parity check of one fixture on one model: batched scores (one padded batch, as
/// the reference ran), every input alone, and best-of-n ranking.
pub fn check_model(name: &str, model: &RewardModel) {
    let exp = expected(name);
    let tol = exp.tolerance;
    let convs: Vec<Conversation> = exp.inputs.iter().map(Input::conversation).collect();
    let batch = model.score_batch(&convs).expect("score_batch");
    for (i, (got, input)) in batch.iter().zip(&exp.inputs).enumerate() {
        assert_score(&format!("{name} batch input {i}"), got, &input.expected, tol);
    }
    for (i, input) in exp.inputs.iter().enumerate() {
        let got = model.score(&input.conversation()).expect("score");
        assert_score(&format!("{name} single input {i}"), &got, &input.expected, tol);
    }
    let ranked = model.rank(&exp.rank.prompt, &exp.rank.candidates).expect("rank");
    assert_eq!(ranked.iter().map(|r| r.index).collect::<Vec<_>>(), exp.rank.order, "{name}: best-of-n order");
    for r in &ranked {
        assert_eq!(r.score.task, exp.rank.task, "{name}: rank routed task");
        close(&format!("{name}: rank reward {}", r.index), r.score.reward, exp.rank.rewards[r.index], tol);
    }
}
