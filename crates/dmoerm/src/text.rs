//! From a conversation to token ids: the bundle's prompt template, tokenization, and the
//! truncation policy.
//!
//! # Rendering
//! - The *query* of the experts is the whole history: every message rendered with its role's
//!   turn template (`user_turn`, `assistant_turn`, `system_turn`, each with `{content}`),
//!   joined by `turn_separator`.
//! - The *query* of the router is the user turns only, rendered the same way.
//! - The expert input is `template` with `{query}` and `{response}` substituted; the router
//!   input is `router_template` with `{query}`. Substitution is one pass over the template, so
//!   braces inside the user's text are never expanded.
//! - With `chat_template`, the tokenizer's own chat template ([`crate::chat_template`]) renders
//!   the messages followed by the response as an assistant message (the router: the user
//!   messages), and no special tokens are added on top (the template writes them), as
//!   transformers' `apply_chat_template(..., tokenize=True)` does.
//! - With `text_pair` (encoders such as BERT), the experts read the rendered history and the
//!   response as two segments, the second with token type 1, as `tokenizer(query, response)`
//!   encodes them in transformers.
//!
//! # Truncation
//! An input longer than `max_length` tokens is truncated, never rejected, and its score says
//! `truncated: true`. Tokens are classed by their offsets as query, response, or fixed
//! (template text, special tokens, and tokens straddling a boundary; with a chat template the
//! query runs from the first message's text to the response's, and the response is the last
//! place its text appears; with a text pair each segment is one class). The policy:
//! 1. drop query tokens from the left (the oldest context goes first);
//! 2. then drop response tokens from the right;
//! 3. if the fixed tokens alone are still too long, keep the first `max_length - 1` tokens
//!    and the last one.

use std::ops::Range;

use serde::{Deserialize, Serialize};
use tokenizers::Tokenizer;

use crate::chat_template::ChatTemplate;
use crate::error::{Error, Result};

/// Who wrote a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "typescript", derive(tsify::Tsify))]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// A system prompt.
    System,
    /// The user.
    User,
    /// The assistant (an earlier turn).
    Assistant,
}

impl Role {
    /// `system`, `user` or `assistant`, as JSON and chat templates spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::System => "system",
            Role::User => "user",
            Role::Assistant => "assistant",
        }
    }
}

/// One message of the history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "typescript", derive(tsify::Tsify))]
pub struct Message {
    /// Author.
    pub role: Role,
    /// Text.
    pub content: String,
}

/// A dialogue history and the response to score.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Conversation {
    /// Messages before the response, oldest first; the last is usually the user's.
    pub messages: Vec<Message>,
    /// The assistant response to score.
    pub response: String,
}

impl Conversation {
    /// A single-turn conversation: one user prompt and a response.
    pub fn new(prompt: impl Into<String>, response: impl Into<String>) -> Self {
        Self { messages: vec![Message { role: Role::User, content: prompt.into() }], response: response.into() }
    }

    /// A multi-turn conversation.
    pub fn with_messages(messages: Vec<Message>, response: impl Into<String>) -> Self {
        Self { messages, response: response.into() }
    }

    /// From what callers give (a JSONL line, a JS object, a Python dict, an HTTP body):
    /// `prompt` or `messages`, exactly one of them (see [`history`]), and the response.
    pub fn from_parts(
        prompt: Option<String>,
        messages: Option<Vec<Message>>,
        response: impl Into<String>,
    ) -> Result<Self> {
        let c = Self { messages: history(prompt, messages)?, response: response.into() };
        c.validate()?;
        Ok(c)
    }

    pub(crate) fn validate(&self) -> Result<()> {
        if !self.messages.iter().any(|m| m.role == Role::User) {
            return Err(Error::Input("a conversation needs at least one user message".into()));
        }
        Ok(())
    }
}

/// The one rule for "prompt or messages": the history before a response is either a single
/// user `prompt` or a list of `messages`, exactly one of the two.
pub fn history(prompt: Option<String>, messages: Option<Vec<Message>>) -> Result<Vec<Message>> {
    match (prompt, messages) {
        (Some(p), None) => Ok(vec![Message { role: Role::User, content: p }]),
        (None, Some(m)) => Ok(m),
        (Some(_), Some(_)) => Err(Error::Input("give exactly one of `prompt` and `messages`, not both".into())),
        (None, None) => Err(Error::Input(
            "a prompt (`prompt` or `messages`) is required: give exactly one of `prompt` and `messages`".into(),
        )),
    }
}

/// One conversation as JSON, JS and Python give it: `{"prompt" | "messages", "response"}`.
/// Turn it into a [`Conversation`] with `try_into` (which applies [`history`]).
#[derive(Debug, Clone, Deserialize)]
#[cfg_attr(feature = "typescript", derive(tsify::Tsify))]
pub struct ConversationInput {
    /// A single user message.
    #[serde(default)]
    #[cfg_attr(feature = "typescript", tsify(optional))]
    pub prompt: Option<String>,
    /// Or a history, oldest first.
    #[serde(default)]
    #[cfg_attr(feature = "typescript", tsify(optional))]
    pub messages: Option<Vec<Message>>,
    /// The assistant response to score.
    pub response: String,
}

impl TryFrom<ConversationInput> for Conversation {
    type Error = Error;

    fn try_from(input: ConversationInput) -> Result<Self> {
        Conversation::from_parts(input.prompt, input.messages, input.response)
    }
}

/// How a bundle turns a conversation into text (the `input` section of the manifest).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InputFormat {
    /// Expert input, with `{query}` and `{response}`.
    #[serde(default = "default_template")]
    pub template: String,
    /// Router input, with `{query}` (the user turns).
    #[serde(default = "default_router_template")]
    pub router_template: String,
    /// Rendering of a user message, with `{content}`.
    #[serde(default = "default_turn")]
    pub user_turn: String,
    /// Rendering of an earlier assistant message, with `{content}`.
    #[serde(default = "default_turn")]
    pub assistant_turn: String,
    /// Rendering of a system message, with `{content}`.
    #[serde(default = "default_turn")]
    pub system_turn: String,
    /// Between rendered messages.
    #[serde(default = "default_separator")]
    pub turn_separator: String,
    /// Maximum number of tokens of one input (template and special tokens included).
    pub max_length: usize,
    /// Let the tokenizer add its special tokens (`[CLS]`/`[SEP]`, BOS...).
    #[serde(default = "default_true")]
    pub add_special_tokens: bool,
    /// Id used to pad batches (never attended to).
    #[serde(default)]
    pub pad_token_id: u32,
    /// Render with the tokenizer's chat template instead of `template` and the turn templates.
    #[serde(default, skip_serializing_if = "is_false")]
    pub chat_template: bool,
    /// Encode the experts' input as a text pair (history, response) with token types 0 and 1.
    #[serde(default, skip_serializing_if = "is_false")]
    pub text_pair: bool,
}

fn is_false(b: &bool) -> bool {
    !*b
}

fn default_template() -> String {
    "<extra_0>{query}<extra_1>{response}<extra_2>".into()
}
fn default_router_template() -> String {
    "{query}".into()
}
fn default_turn() -> String {
    "{content}".into()
}
fn default_separator() -> String {
    "\n".into()
}
fn default_true() -> bool {
    true
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Slot {
    Query,
    Response,
}

/// A template split once into literal text and slots.
#[derive(Debug, Clone)]
struct Template {
    parts: Vec<(String, Option<Slot>)>,
}

impl Template {
    fn parse(file: &str, field: &str, text: &str, allowed: &[(&str, Slot)], required: &[&str]) -> Result<Self> {
        let mut parts = Vec::new();
        let mut rest = text;
        let mut seen = Vec::new();
        while let Some(start) = rest.find('{') {
            let hit = allowed.iter().find(|(name, _)| rest[start..].starts_with(&format!("{{{name}}}")));
            match hit {
                Some((name, slot)) => {
                    parts.push((rest[..start].to_string(), None));
                    parts.push((String::new(), Some(*slot)));
                    seen.push(*name);
                    rest = &rest[start + name.len() + 2..];
                }
                None => {
                    parts.push((rest[..=start].to_string(), None));
                    rest = &rest[start + 1..];
                }
            }
        }
        parts.push((rest.to_string(), None));
        for r in required {
            if seen.iter().filter(|s| *s == r).count() != 1 {
                return Err(Error::bundle(file, format!("input.{field} must contain {{{r}}} exactly once")));
            }
        }
        Ok(Self { parts })
    }

    /// The text and the byte ranges of the query and the response in it.
    fn render(&self, query: &str, response: &str) -> (String, Range<usize>, Range<usize>) {
        let mut out = String::new();
        let (mut q, mut r) = (0..0, 0..0);
        for (literal, slot) in &self.parts {
            match slot {
                None => out.push_str(literal),
                Some(Slot::Query) => {
                    let s = out.len();
                    out.push_str(query);
                    q = s..out.len();
                }
                Some(Slot::Response) => {
                    let s = out.len();
                    out.push_str(response);
                    r = s..out.len();
                }
            }
        }
        (out, q, r)
    }
}

/// One tokenized input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Encoded {
    /// Token ids, at most `max_length`.
    pub ids: Vec<u32>,
    /// Token type ids (segment of each token) of a text pair; empty otherwise (all 0).
    pub type_ids: Vec<u32>,
    /// Whether tokens were dropped.
    pub truncated: bool,
}

/// An input's text before tokenization.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rendered {
    /// One text, with the byte ranges of the query and the response in it.
    Text { text: String, query: Range<usize>, response: Range<usize> },
    /// Two segments (history, response) of an encoder's text pair.
    Pair { query: String, response: String },
}

/// The compiled input format with its tokenizer.
#[derive(Debug, Clone)]
pub struct InputEncoder {
    format: InputFormat,
    expert: Template,
    router: Template,
    turns: [Template; 3],
    chat: Option<ChatTemplate>,
    tokenizer: Tokenizer,
    vocab_size: usize,
}

impl InputEncoder {
    /// The tokenizer's own padding and truncation settings (sentence-transformers exports
    /// pad every input to a fixed length, e.g. all-MiniLM-L6-v2's 128) are switched off:
    /// batching pads, and truncation follows `format.max_length` and the policy above.
    /// `chat` is the tokenizer's chat template, required when `format.chat_template`.
    pub fn new(
        file: &str,
        format: InputFormat,
        mut tokenizer: Tokenizer,
        vocab_size: usize,
        chat: Option<ChatTemplate>,
    ) -> Result<Self> {
        if format.chat_template && chat.is_none() {
            return Err(Error::bundle(
                file,
                "input.chat_template is true but the tokenizer has no chat template \
                 (tokenizer_config.json `chat_template`, or chat_template.jinja)",
            ));
        }
        if format.chat_template && format.text_pair {
            return Err(Error::bundle(file, "input.chat_template and input.text_pair exclude each other"));
        }
        tokenizer.with_padding(None);
        tokenizer.with_truncation(None).map_err(|e| Error::Tokenizer(format!("{file}: {e}")))?;
        let q = ("query", Slot::Query);
        let r = ("response", Slot::Response);
        let c = ("content", Slot::Query);
        if format.max_length < 2 {
            return Err(Error::bundle(file, "input.max_length must be at least 2"));
        }
        if format.pad_token_id as usize >= vocab_size {
            return Err(Error::bundle(
                file,
                format!(
                    "input.pad_token_id {} is outside the backbone's vocabulary of {vocab_size} tokens",
                    format.pad_token_id
                ),
            ));
        }
        Ok(Self {
            expert: Template::parse(file, "template", &format.template, &[q, r], &["query", "response"])?,
            router: Template::parse(file, "router_template", &format.router_template, &[q], &["query"])?,
            turns: [
                Template::parse(file, "user_turn", &format.user_turn, &[c], &["content"])?,
                Template::parse(file, "assistant_turn", &format.assistant_turn, &[c], &["content"])?,
                Template::parse(file, "system_turn", &format.system_turn, &[c], &["content"])?,
            ],
            chat: chat.filter(|_| format.chat_template),
            format,
            tokenizer,
            vocab_size,
        })
    }

    pub fn format(&self) -> &InputFormat {
        &self.format
    }

    fn render_turns<'a>(&self, messages: impl Iterator<Item = &'a Message>) -> String {
        let rendered: Vec<String> = messages
            .map(|m| {
                let t = match m.role {
                    Role::User => &self.turns[0],
                    Role::Assistant => &self.turns[1],
                    Role::System => &self.turns[2],
                };
                t.render(&m.content, "").0
            })
            .collect();
        rendered.join(&self.format.turn_separator)
    }

    /// The experts' input before tokenization.
    pub fn expert_text(&self, conv: &Conversation) -> Result<Rendered> {
        if let Some(chat) = &self.chat {
            let mut messages = pairs(&conv.messages);
            messages.push((Role::Assistant.as_str(), &conv.response));
            return Ok(locate(chat.render(&messages, false)?, &conv.messages, &conv.response));
        }
        let query = self.render_turns(conv.messages.iter());
        if self.format.text_pair {
            return Ok(Rendered::Pair { query, response: conv.response.clone() });
        }
        let (text, query, response) = self.expert.render(&query, &conv.response);
        Ok(Rendered::Text { text, query, response })
    }

    /// The router's input (the user messages) before tokenization.
    pub fn router_text(&self, conv: &Conversation) -> Result<Rendered> {
        let users: Vec<Message> = conv.messages.iter().filter(|m| m.role == Role::User).cloned().collect();
        if let Some(chat) = &self.chat {
            return Ok(locate(chat.render(&pairs(&users), false)?, &users, ""));
        }
        let (text, query, response) = self.router.render(&self.render_turns(users.iter()), "");
        Ok(Rendered::Text { text, query, response })
    }

    /// The experts' token ids.
    pub fn expert(&self, conv: &Conversation) -> Result<Encoded> {
        self.encode(&self.expert_text(conv)?)
    }

    /// The router's token ids.
    pub fn router(&self, conv: &Conversation) -> Result<Encoded> {
        self.encode(&self.router_text(conv)?)
    }

    /// Tokenizes and truncates (see the module docs).
    pub fn encode(&self, rendered: &Rendered) -> Result<Encoded> {
        // a chat template writes its own special tokens
        let special = self.format.add_special_tokens && !self.format.chat_template;
        let tokenize = |e: tokenizers::Error| Error::Tokenizer(e.to_string());
        let (enc, classes) = match rendered {
            Rendered::Text { text, query, response } => {
                let enc = self.tokenizer.encode(text.as_str(), special).map_err(tokenize)?;
                let inside = |r: &Range<usize>, (s, e): (usize, usize)| e > s && s >= r.start && e <= r.end;
                let classes: Vec<Class> = enc
                    .get_offsets()
                    .iter()
                    .map(|&o| {
                        if inside(query, o) {
                            Class::Query
                        } else if inside(response, o) {
                            Class::Response
                        } else {
                            Class::Fixed
                        }
                    })
                    .collect();
                (enc, classes)
            }
            Rendered::Pair { query, response } => {
                let enc = self.tokenizer.encode((query.as_str(), response.as_str()), special).map_err(tokenize)?;
                let classes = enc
                    .get_sequence_ids()
                    .iter()
                    .zip(enc.get_special_tokens_mask())
                    .map(|(seq, &special)| match (seq, special) {
                        (Some(0), 0) => Class::Query,
                        (Some(1), 0) => Class::Response,
                        _ => Class::Fixed,
                    })
                    .collect();
                (enc, classes)
            }
        };
        let ids = enc.get_ids();
        if ids.is_empty() {
            return Err(Error::Input("the input renders to no tokens: there is nothing to score".into()));
        }
        let type_ids = match rendered {
            Rendered::Pair { .. } => enc.get_type_ids().to_vec(),
            Rendered::Text { .. } => Vec::new(),
        };
        if let Some(&bad) = ids.iter().find(|&&id| id as usize >= self.vocab_size) {
            return Err(Error::Input(format!(
                "the tokenizer produced id {bad}, outside the backbone's vocabulary of {}",
                self.vocab_size
            )));
        }
        let max = self.format.max_length;
        if ids.len() <= max {
            return Ok(Encoded { ids: ids.to_vec(), type_ids, truncated: false });
        }
        let mut keep = vec![true; ids.len()];
        let mut excess = ids.len() - max;
        // 1. query tokens from the left
        for (i, class) in classes.iter().enumerate() {
            if excess == 0 {
                break;
            }
            if *class == Class::Query {
                keep[i] = false;
                excess -= 1;
            }
        }
        // 2. response tokens from the right
        for (i, class) in classes.iter().enumerate().rev() {
            if excess == 0 {
                break;
            }
            if *class == Class::Response {
                keep[i] = false;
                excess -= 1;
            }
        }
        let kept = |values: &[u32]| -> Vec<u32> {
            let mut kept: Vec<u32> = values.iter().zip(&keep).filter(|(_, k)| **k).map(|(v, _)| *v).collect();
            // 3. fixed tokens alone too long
            if kept.len() > max {
                let last = kept[kept.len() - 1];
                kept.truncate(max - 1);
                kept.push(last);
            }
            kept
        };
        let type_ids = if type_ids.is_empty() { type_ids } else { kept(&type_ids) };
        Ok(Encoded { ids: kept(ids), type_ids, truncated: true })
    }
}

/// `(role, content)` of each message, as a chat template reads them.
fn pairs(messages: &[Message]) -> Vec<(&str, &str)> {
    messages.iter().map(|m| (m.role.as_str(), m.content.as_str())).collect()
}

/// What truncation may drop of a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    Query,
    Response,
    Fixed,
}

/// A chat template's text with the query and response located in it: the query from the first
/// message's text to the response, the response at the last place its text appears (a template
/// may trim texts, so the trimmed text is searched). Anything not found is fixed.
fn locate(text: String, messages: &[Message], response: &str) -> Rendered {
    let response = response.trim();
    let r_start = if response.is_empty() { None } else { text.rfind(response) };
    let end = r_start.unwrap_or(text.len());
    let first = messages.iter().map(|m| m.content.trim()).find(|c| !c.is_empty());
    let q_start = first.and_then(|c| text[..end].find(c));
    let query = q_start.map_or(0..0, |s| s..end);
    let response = r_start.map_or(0..0, |s| s..s + response.len());
    Rendered::Text { text, query, response }
}

/// Parses a `tokenizer.json`. tokenizers 0.22 panics instead of failing on some malformed
/// files (found by `fuzz/` and the npm package's mutation test): a syntax error inside the
/// `decoder` section, and a BPE merge whose second token is shorter than the model's
/// `continuing_subword_prefix`. Both are checked first (the only guard that also holds in
/// wasm, where a panic aborts), and a panic that still happens natively becomes a typed error.
pub fn parse_tokenizer(file: &str, json: &str) -> Result<Tokenizer> {
    // One pass reads the BPE fields and checks the syntax of the whole file; only when those
    // fields have other types (an error tokenizers reports itself) is the syntax checked apart.
    let syntax = match serde_json::from_str::<TokenizerModel>(json) {
        Ok(TokenizerModel { model }) => {
            check_bpe_merges(file, &model)?;
            Ok(())
        }
        Err(e) if e.is_data() => serde_json::from_str::<serde::de::IgnoredAny>(json).map(|_| ()),
        Err(e) => Err(e),
    };
    if let Err(e) = syntax {
        return Err(Error::Tokenizer(format!("{file}: not valid JSON: {e}")));
    }
    let parsed = std::panic::catch_unwind(|| json.parse::<Tokenizer>().map_err(|e| e.to_string()));
    match parsed {
        Ok(Ok(tokenizer)) => Ok(tokenizer),
        Ok(Err(e)) => Err(Error::Tokenizer(format!("{file}: {e}"))),
        Err(_) => Err(Error::Tokenizer(format!("{file}: malformed tokenizer (the tokenizers parser panicked)"))),
    }
}

/// The part of a `tokenizer.json` that [`check_bpe_merges`] reads; every other field is
/// only checked for its JSON syntax and left to tokenizers.
#[derive(Deserialize)]
struct TokenizerModel {
    model: BpeFields,
}

#[derive(Deserialize)]
struct BpeFields {
    #[serde(rename = "type")]
    kind: Option<String>,
    continuing_subword_prefix: Option<String>,
    #[serde(default)]
    merges: Vec<Merge>,
}

/// A BPE merge: `"a b"` (the older format) or `["a", "b"]`.
#[derive(Deserialize)]
#[serde(untagged)]
enum Merge {
    Text(String),
    Pair(serde::de::IgnoredAny, String),
}

/// tokenizers builds each merged token as `a + b[prefix.len()..]`, slicing without a check.
fn check_bpe_merges(file: &str, model: &BpeFields) -> Result<()> {
    let (Some(prefix), None | Some("BPE")) = (&model.continuing_subword_prefix, model.kind.as_deref()) else {
        return Ok(());
    };
    for merge in &model.merges {
        let second = match merge {
            Merge::Text(line) => line.split_once(' ').map_or("", |(_, b)| b),
            Merge::Pair(_, b) => b,
        };
        if second.get(prefix.len()..).is_none() {
            return Err(Error::Tokenizer(format!(
                "{file}: BPE merge token `{second}` is shorter than the continuing_subword_prefix `{prefix}`"
            )));
        }
    }
    Ok(())
}
