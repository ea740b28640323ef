//! Readers of the real text the benchmark is made from:
//! - WordNet 3.0 `data.noun` / `data.verb` / `data.adj` (Debian `wordnet-base`): words, their
//!   definitions and example sentences;
//! - the chitchat dataset's `dataset.json` (PyPI `chitchat-dataset`, MIT): human
//!   conversations, as (message, reply) exchanges;
//! - fortune files (Debian `fortunes`): sayings, quotations and jokes.

use std::path::Path;

use serde::Deserialize;

use crate::{Error, Result};

/// One WordNet sense of a single-word lemma.
#[derive(Debug, Clone, PartialEq)]
pub struct Sense {
    pub word: String,
    pub definition: String,
    /// Example sentences that contain the word.
    pub examples: Vec<String>,
}

/// A message and the reply to it, from one conversation.
#[derive(Debug, Clone, PartialEq)]
pub struct Exchange {
    pub message: String,
    pub reply: String,
}

fn read(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|source| Error::Io { path: path.display().to_string(), source })
}

/// Senses of single-word lemmas from `dir/data.{noun,verb,adj}`: the first lemma of each
/// synset, the gloss split into its definition and its quoted examples.
pub fn read_wordnet(dir: &Path) -> Result<Vec<Sense>> {
    let mut senses = Vec::new();
    for pos in ["noun", "verb", "adj"] {
        let path = dir.join(format!("data.{pos}"));
        for line in read(&path)?.lines() {
            // license header lines start with two spaces
            if line.starts_with("  ") {
                continue;
            }
            let Some((fields, gloss)) = line.split_once(" | ") else { continue };
            let fields: Vec<&str> = fields.split_whitespace().collect();
            // offset lex_filenum ss_type w_cnt(hex) word lex_id ...
            let Some(&word) = fields.get(4) else { continue };
            let word = word.split('(').next().unwrap_or(word);
            if !(3..=14).contains(&word.len()) || !word.chars().all(|c| c.is_ascii_lowercase()) {
                continue;
            }
            let mut parts = gloss.trim().split("; ");
            let definition = parts.next().unwrap_or("").trim().to_string();
            if !(20..=160).contains(&definition.len()) || definition.contains('"') {
                continue;
            }
            let examples = parts
                .filter_map(|p| p.trim().strip_prefix('"').and_then(|p| p.strip_suffix('"')))
                .filter(|e| e.split(|c: char| !c.is_ascii_alphabetic()).any(|w| w.eq_ignore_ascii_case(word)))
                .filter(|e| (20..=160).contains(&e.len()))
                .map(str::to_string)
                .collect();
            senses.push(Sense { word: word.to_string(), definition, examples });
        }
    }
    if senses.is_empty() {
        return Err(Error::Source(format!("{}: no WordNet senses found", dir.display())));
    }
    Ok(senses)
}

#[derive(Deserialize)]
struct ChatMessage {
    text: String,
    sender: String,
}

#[derive(Deserialize)]
struct Conversation {
    messages: Vec<Vec<ChatMessage>>,
}

/// Consecutive turns of different speakers, each turn's messages joined; messages of 10-160
/// characters, replies of 20-240, in file order.
pub fn read_chitchat(path: &Path) -> Result<Vec<Exchange>> {
    let text = read(path)?;
    let convs: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(&text).map_err(|e| Error::Source(format!("{}: {e}", path.display())))?;
    let mut out = Vec::new();
    // serde_json::Map is sorted by key: a stable order independent of the file's.
    for (id, v) in convs {
        let conv: Conversation = serde_json::from_value(v)
            .map_err(|e| Error::Source(format!("{}: conversation {id}: {e}", path.display())))?;
        let turns: Vec<(String, String)> = conv
            .messages
            .iter()
            .filter(|t| !t.is_empty())
            .map(|t| {
                let text = t.iter().map(|m| m.text.trim()).filter(|s| !s.is_empty()).collect::<Vec<_>>().join(" ");
                (t[0].sender.clone(), text)
            })
            .collect();
        for w in turns.windows(2) {
            let ((a, message), (b, reply)) = (&w[0], &w[1]);
            let clean = |s: &str| s.is_ascii() && !s.contains("http");
            if a != b
                && (10..=160).contains(&message.len())
                && (20..=240).contains(&reply.len())
                && clean(message)
                && clean(reply)
                && reply.split_whitespace().count() >= 5
            {
                out.push(Exchange { message: message.clone(), reply: reply.clone() });
            }
        }
    }
    if out.is_empty() {
        return Err(Error::Source(format!("{}: no exchanges found", path.display())));
    }
    Ok(out)
}

/// Sayings of 40-240 characters from fortune files (entries separated by `%` lines), with
/// their whitespace collapsed.
pub fn read_fortunes(dir: &Path, files: &[&str]) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for f in files {
        let path = dir.join(f);
        for entry in read(&path)?.split("\n%\n") {
            let text = entry.split_whitespace().collect::<Vec<_>>().join(" ");
            if (40..=240).contains(&text.len()) && text.is_ascii() && text.split_whitespace().count() >= 8 {
                out.push(text);
            }
        }
    }
    if out.is_empty() {
        return Err(Error::Source(format!("{}: no sayings found in {files:?}", dir.display())));
    }
    Ok(out)
}
