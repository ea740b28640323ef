//! Training and evaluation data, three JSONL layouts, each line checked with errors that
//! name the file and the line:
//!
//! - **ranked** (the DMoERM reference dataset): `{"src": [user turns], "tgt": [earlier
//!   assistant turns], "response": [candidates], "rank": [1 = best, ...], "label": category}`,
//!   optionally `"gold": [scores]` (true quality, for best-of-n evaluation);
//! - **pairwise** (the common HF preference layout): `{"prompt": text | "messages": [{"role",
//!   "content"}], "chosen": text, "rejected": text, "category"?: name}`;
//! - **capability pairs** (what `dmoerm label` writes): `{"messages": [{"role", "content"}] |
//!   "query": text, "responses": [a, b], "rank": [1, 2] | [2, 1], "point": capability,
//!   "category"?: name}` (`query` is a single user prompt).
//!
//! Ranked and pairwise lines may be mixed in one file; both become [`Preference`]s.

use std::path::Path;

use dmoerm::{Message, Role};
use serde::Deserialize;

use crate::{Error, Result};

/// Responses to one conversation, ranked (an overall preference).
#[derive(Debug, Clone, PartialEq)]
pub struct Preference {
    /// `file:line`, for messages.
    pub source: String,
    /// The history before the responses; the last message is the user's.
    pub messages: Vec<Message>,
    /// The candidate responses.
    pub responses: Vec<String>,
    /// Rank of each response, 1 = best; equal ranks are ties.
    pub rank: Vec<u32>,
    /// The task category, if the data gives it.
    pub category: Option<String>,
    /// True quality scores of the responses (higher = better), if known.
    pub gold: Option<Vec<f64>>,
}

impl Preference {
    /// Every ordered pair `(better, worse)` of responses with different ranks.
    pub fn pairs(&self) -> Vec<(usize, usize)> {
        ordered_pairs(&self.rank)
    }

    /// The user turns only (what the router reads).
    pub fn user_turns(&self) -> impl Iterator<Item = &Message> {
        self.messages.iter().filter(|m| m.role == Role::User)
    }
}

/// A capability label: which of two responses is better on one capability point.
#[derive(Debug, Clone, PartialEq)]
pub struct CapabilityPair {
    /// `file:line`.
    pub source: String,
    /// The conversation before the responses.
    pub messages: Vec<Message>,
    /// The two responses, better first.
    pub better: String,
    /// The worse response.
    pub worse: String,
    /// The capability point.
    pub point: String,
    /// The task category, if given.
    pub category: Option<String>,
}

/// Every ordered pair `(i, j)` with `rank[i] < rank[j]` (i better), in index order.
pub fn ordered_pairs(rank: &[u32]) -> Vec<(usize, usize)> {
    let mut pairs = Vec::new();
    for i in 0..rank.len() {
        for j in 0..rank.len() {
            if rank[i] < rank[j] {
                pairs.push((i, j));
            }
        }
    }
    pairs
}

#[derive(Deserialize)]
struct RankedLine {
    src: Vec<String>,
    #[serde(default)]
    tgt: Vec<String>,
    response: Vec<String>,
    rank: Vec<i64>,
    #[serde(default)]
    label: Option<String>,
    #[serde(default)]
    gold: Option<Vec<f64>>,
}

#[derive(Deserialize)]
struct PairwiseLine {
    #[serde(default)]
    prompt: Option<String>,
    #[serde(default)]
    messages: Option<Vec<Message>>,
    chosen: String,
    rejected: String,
    #[serde(default)]
    category: Option<String>,
}

#[derive(Deserialize)]
struct CapabilityLine {
    /// A single user prompt (the layout's name for `prompt`).
    #[serde(default, alias = "query")]
    prompt: Option<String>,
    #[serde(default)]
    messages: Option<Vec<Message>>,
    responses: Vec<String>,
    rank: Vec<i64>,
    point: String,
    #[serde(default)]
    category: Option<String>,
}

/// Reads ranked and/or pairwise preferences.
pub fn read_preferences(path: &Path) -> Result<Vec<Preference>> {
    read_lines(path, |file, line, text| {
        let value: serde_json::Value = parse(file, line, text)?;
        let bad = |message: String| Error::Data { file: file.to_string(), line, message };
        let source = format!("{file}:{line}");
        if value.get("src").is_some() {
            let r: RankedLine = from_value(file, line, value)?;
            if r.src.is_empty() {
                return Err(bad("`src` has no user turn".into()));
            }
            if r.tgt.len() + 1 != r.src.len() {
                return Err(bad(format!(
                    "`tgt` must have one assistant turn fewer than `src` ({} user turns, {} assistant turns)",
                    r.src.len(),
                    r.tgt.len()
                )));
            }
            let rank = check_ranks(&r.rank, r.response.len()).map_err(bad)?;
            if let Some(g) = &r.gold {
                if g.len() != r.response.len() || g.iter().any(|x| !x.is_finite()) {
                    return Err(bad(format!("`gold` needs {} finite numbers", r.response.len())));
                }
            }
            let mut messages = Vec::with_capacity(r.src.len() * 2);
            for (i, user) in r.src.into_iter().enumerate() {
                messages.push(Message { role: Role::User, content: user });
                if let Some(a) = r.tgt.get(i) {
                    messages.push(Message { role: Role::Assistant, content: a.clone() });
                }
            }
            Ok(Preference { source, messages, responses: r.response, rank, category: r.label, gold: r.gold })
        } else if value.get("chosen").is_some() {
            let p: PairwiseLine = from_value(file, line, value)?;
            let messages = dmoerm::text::history(p.prompt, p.messages).map_err(|e| bad(e.to_string()))?;
            if !messages.iter().any(|m| m.role == Role::User) {
                return Err(bad("`messages` has no user message".into()));
            }
            Ok(Preference {
                source,
                messages,
                responses: vec![p.chosen, p.rejected],
                rank: vec![1, 2],
                category: p.category,
                gold: None,
            })
        } else {
            Err(bad(
                "neither the ranked layout (src, response, rank) nor the pairwise one (prompt|messages, chosen, rejected)"
                    .into(),
            ))
        }
    })
}

/// Reads capability-labeled pairs.
pub fn read_capability_pairs(path: &Path) -> Result<Vec<CapabilityPair>> {
    read_lines(path, |file, line, text| {
        let c: CapabilityLine = from_value(file, line, parse(file, line, text)?)?;
        let bad = |message: &str| Error::Data { file: file.to_string(), line, message: message.to_string() };
        let [a, b]: [String; 2] =
            c.responses.try_into().map_err(|_| bad("`responses` must hold exactly two responses"))?;
        let (better, worse) = match c.rank.as_slice() {
            [1, 2] => (a, b),
            [2, 1] => (b, a),
            _ => return Err(bad("`rank` must be [1, 2] or [2, 1]")),
        };
        if c.point.is_empty() {
            return Err(bad("`point` is empty"));
        }
        let messages = dmoerm::text::history(c.prompt, c.messages).map_err(|e| bad(&e.to_string()))?;
        if !messages.iter().any(|m| m.role == Role::User) {
            return Err(bad("`messages` has no user message"));
        }
        Ok(CapabilityPair {
            source: format!("{file}:{line}"),
            messages,
            better,
            worse,
            point: c.point,
            category: c.category,
        })
    })
}

fn check_ranks(rank: &[i64], responses: usize) -> std::result::Result<Vec<u32>, String> {
    if responses < 2 {
        return Err(format!("`response` needs at least two candidates, found {responses}"));
    }
    if rank.len() != responses {
        return Err(format!("`rank` has {} entries for {responses} responses", rank.len()));
    }
    rank.iter()
        .map(|&r| {
            u32::try_from(r).ok().filter(|&r| r >= 1).ok_or_else(|| format!("rank {r} is not a positive integer"))
        })
        .collect()
}

fn parse(file: &str, line: usize, text: &str) -> Result<serde_json::Value> {
    serde_json::from_str(text).map_err(|e| Error::Data { file: file.to_string(), line, message: e.to_string() })
}

fn from_value<T: serde::de::DeserializeOwned>(file: &str, line: usize, v: serde_json::Value) -> Result<T> {
    serde_json::from_value(v).map_err(|e| Error::Data { file: file.to_string(), line, message: e.to_string() })
}

/// Calls `f(file, line_number, text)` for every non-blank line.
fn read_lines<T>(path: &Path, mut f: impl FnMut(&str, usize, &str) -> Result<T>) -> Result<Vec<T>> {
    let text =
        std::fs::read_to_string(path).map_err(|source| Error::Io { path: path.display().to_string(), source })?;
    let file = path.display().to_string();
    let out = text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| f(&file, i + 1, l))
        .collect::<Result<Vec<_>>>()?;
    if out.is_empty() {
        return Err(Error::Data { file, line: 0, message: "the file has no data lines".into() });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(name: &str, text: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("dmoerm-data-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("d.jsonl");
        std::fs::write(&p, text).unwrap();
        p
    }

    #[test]
    fn ranked_lines_interleave_turns_and_keep_ranks() {
        let p = write(
            "ranked",
            r#"{"src": ["hi", "how are you?"], "tgt": ["hello"], "response": ["fine", "bad", "ok"], "rank": [1, 3, 2], "label": "chat"}"#,
        );
        let d = read_preferences(&p).unwrap();
        assert_eq!(d.len(), 1);
        let roles: Vec<Role> = d[0].messages.iter().map(|m| m.role).collect();
        assert_eq!(roles, [Role::User, Role::Assistant, Role::User]);
        assert_eq!(d[0].messages[2].content, "how are you?");
        assert_eq!(d[0].category.as_deref(), Some("chat"));
        assert_eq!(d[0].pairs(), vec![(0, 1), (0, 2), (2, 1)]);
    }

    #[test]
    fn ties_make_no_pair() {
        assert_eq!(ordered_pairs(&[1, 1, 2]), vec![(0, 2), (1, 2)]);
        assert!(ordered_pairs(&[2, 2]).is_empty());
    }

    #[test]
    fn pairwise_lines_become_two_ranked_responses() {
        let p = write(
            "pairwise",
            "{\"prompt\": \"q\", \"chosen\": \"good\", \"rejected\": \"bad\"}\n\n{\"messages\": [{\"role\": \"user\", \"content\": \"q2\"}], \"chosen\": \"a\", \"rejected\": \"b\", \"category\": \"x\"}\n",
        );
        let d = read_preferences(&p).unwrap();
        assert_eq!(d.len(), 2);
        assert_eq!(d[0].responses, ["good", "bad"]);
        assert_eq!(d[0].pairs(), vec![(0, 1)]);
        assert_eq!(d[1].source, format!("{}:3", p.display()));
        assert_eq!(d[1].category.as_deref(), Some("x"));
    }

    #[test]
    fn errors_name_the_file_and_the_line() {
        let cases = [
            ("{\"src\": [\"a\"], \"response\": [\"x\", \"y\"], \"rank\": [1]}", "`rank` has 1 entries"),
            ("{\"src\": [\"a\", \"b\"], \"response\": [\"x\", \"y\"], \"rank\": [1, 2]}", "one assistant turn fewer"),
            ("{\"src\": [\"a\"], \"response\": [\"x\", \"y\"], \"rank\": [0, 1]}", "rank 0 is not"),
            ("{\"prompt\": \"a\", \"chosen\": \"x\"}", "missing field `rejected`"),
            ("{\"prompt\": \"a\", \"messages\": [], \"chosen\": \"x\", \"rejected\": \"y\"}", "exactly one of"),
            ("{\"question\": 1}", "neither the ranked layout"),
            ("{not json", "key must be a string"),
        ];
        for (i, (line, want)) in cases.iter().enumerate() {
            let p = write(
                &format!("bad{i}"),
                &format!("{{\"prompt\": \"ok\", \"chosen\": \"a\", \"rejected\": \"b\"}}\n{line}\n"),
            );
            let err = read_preferences(&p).unwrap_err().to_string();
            assert!(err.starts_with(&format!("{}:2: ", p.display())), "{err}");
            assert!(err.contains(want), "{err} should say {want}");
        }
    }

    #[test]
    fn capability_pairs_put_the_better_response_first() {
        let p = write(
            "caps",
            "{\"id\": \"1\", \"category\": \"chat\", \"point\": \"empathy\", \"query\": \"q\", \"responses\": [\"a\", \"b\"], \"rank\": [2, 1]}\n",
        );
        let d = read_capability_pairs(&p).unwrap();
        assert_eq!((d[0].better.as_str(), d[0].worse.as_str()), ("b", "a"));
        assert_eq!(d[0].messages, [Message { role: Role::User, content: "q".into() }]);
        // what `dmoerm label` writes: the history as messages, kept turn by turn
        let p = write(
            "caps-messages",
            "{\"point\": \"e\", \"messages\": [{\"role\": \"user\", \"content\": \"hi\"}, {\"role\": \"assistant\", \"content\": \"hello\"}, {\"role\": \"user\", \"content\": \"q\"}], \"responses\": [\"a\", \"b\"], \"rank\": [1, 2]}\n",
        );
        let d = read_capability_pairs(&p).unwrap();
        let roles: Vec<Role> = d[0].messages.iter().map(|m| m.role).collect();
        assert_eq!(roles, [Role::User, Role::Assistant, Role::User]);
        let p = write(
            "caps-bad",
            "{\"point\": \"e\", \"query\": \"q\", \"responses\": [\"a\", \"b\"], \"rank\": [1, 1]}\n",
        );
        let err = read_capability_pairs(&p).unwrap_err().to_string();
        assert!(err.contains(":1: `rank` must be [1, 2] or [2, 1]"), "{err}");
    }
}
