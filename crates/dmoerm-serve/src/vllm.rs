//! vLLM's `POST /classify` and `POST /pooling`, with the response shapes vLLM serves.
//!
//! A reward model scores a response to a history, so the request names both: vLLM's chat form
//! `{"model", "messages": [..., {"role": "assistant", "content": response}]}` (the last message
//! is the response), or `{"model", "input": [{"prompt" or "messages", "response"}, ...]}`. A
//! plain string `input` (text already rendered by a chat template) cannot be split into the
//! two and is answered with `400`.
//!
//! - `/classify`: the outer layer, the router: `label` is the task the router chose and
//!   `probs` the probability of each task, in the bundle's order (`num_classes` tasks).
//! - `/pooling`: `data` is `[reward]`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::extract::State;
use axum::Json;
use dmoerm::{Conversation, ConversationInput, Message, Role, Score};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::error::ServeError;
use crate::state::{JsonBody, Shared};

/// The body of both routes. `model` and vLLM's other bookkeeping fields (`user`, `priority`)
/// are accepted and not used: the server serves one model. `truncate_prompt_tokens` is refused,
/// since it would change the scores: inputs are truncated to the bundle's `max_length`.
#[derive(Deserialize)]
pub(crate) struct Request {
    #[serde(default)]
    input: Option<Inputs>,
    #[serde(default)]
    messages: Option<Vec<Message>>,
    #[serde(default)]
    truncate_prompt_tokens: Option<Value>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Inputs {
    One(Input),
    Many(Vec<Input>),
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Input {
    Text(String),
    Pair(ConversationInput),
}

impl Request {
    fn conversations(self) -> Result<Vec<Conversation>, ServeError> {
        if self.truncate_prompt_tokens.is_some_and(|t| !t.is_null()) {
            return Err(ServeError::BadRequest(
                "truncate_prompt_tokens is not supported: inputs are truncated to the bundle's max_length".into(),
            ));
        }
        match (self.input, self.messages) {
            (Some(_), Some(_)) => Err(ServeError::BadRequest("give `input` or `messages`, not both".into())),
            (None, None) => Err(ServeError::BadRequest("give `input` or `messages`".into())),
            (None, Some(mut messages)) => match messages.pop() {
                Some(Message { role: Role::Assistant, content }) => {
                    Ok(vec![Conversation::from_parts(None, Some(messages), content)?])
                }
                _ => Err(ServeError::BadRequest(
                    "the last message must be the assistant's response, the one to score".into(),
                )),
            },
            (Some(inputs), None) => {
                let inputs = match inputs {
                    Inputs::One(one) => vec![one],
                    Inputs::Many(many) => many,
                };
                inputs
                    .into_iter()
                    .enumerate()
                    .map(|(i, input)| match input {
                        Input::Pair(pair) => {
                            Conversation::try_from(pair).map_err(|e| ServeError::BadRequest(format!("input[{i}]: {e}")))
                        }
                        Input::Text(text) => Err(ServeError::BadRequest(format!(
                            "input[{i}] is a string ({} bytes): a reward model needs the history and the response apart; \
                             send {{\"messages\": [..., {{\"role\": \"assistant\", \"content\": ...}}]}} or \
                             input objects {{\"prompt\" or \"messages\", \"response\"}}",
                            text.len()
                        ))),
                    })
                    .collect()
            }
        }
    }
}

pub(crate) async fn classify(
    State(state): State<Shared>,
    JsonBody(req): JsonBody<Request>,
) -> Result<Json<Value>, ServeError> {
    answer(&state, req, "classify", |index, s| {
        let probs: Vec<f32> = s.task_probs.iter().map(|(_, p)| *p).collect();
        json!({"index": index, "label": s.task, "probs": probs, "num_classes": probs.len()})
    })
    .await
}

pub(crate) async fn pooling(
    State(state): State<Shared>,
    JsonBody(req): JsonBody<Request>,
) -> Result<Json<Value>, ServeError> {
    answer(&state, req, "pool", |index, s| json!({"index": index, "object": "pooling", "data": [s.reward]})).await
}

/// Scores the request's conversations and answers one `item` per score.
async fn answer(
    state: &Shared,
    req: Request,
    kind: &str,
    item: impl Fn(usize, &Score) -> Value,
) -> Result<Json<Value>, ServeError> {
    let (scores, tokens) = state.score(req.conversations()?).await?;
    let data = scores.iter().enumerate().map(|(index, s)| item(index, s)).collect();
    Ok(Json(envelope(kind, &state.config.model_name, data, tokens)))
}

/// vLLM's response around the data: id, object, created, model, usage.
fn envelope(kind: &str, model: &str, data: Vec<Value>, tokens: usize) -> Value {
    static NEXT_ID: AtomicU64 = AtomicU64::new(0);
    let created = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    json!({
        "id": format!("{kind}-{:016x}", NEXT_ID.fetch_add(1, Ordering::Relaxed)),
        "object": "list",
        "created": created,
        "model": model,
        "data": data,
        "usage": Usage { prompt_tokens: tokens, total_tokens: tokens, completion_tokens: 0, prompt_tokens_details: None },
    })
}

#[derive(Serialize)]
struct Usage {
    prompt_tokens: usize,
    total_tokens: usize,
    completion_tokens: usize,
    prompt_tokens_details: Option<Value>,
}
