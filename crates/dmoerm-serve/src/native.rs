//! dmoerm's own API: `POST /v1/score` and `POST /v1/rank`, whose results are the objects
//! `dmoerm score --json` and `dmoerm rank --json` print.

use axum::extract::State;
use axum::Json;
use dmoerm::{Conversation, ConversationInput, Message, Ranked, Score};
use serde::{Deserialize, Serialize};

use crate::error::ServeError;
use crate::state::{JsonBody, Shared};

/// `{"inputs": [{"prompt" or "messages", "response"}, ...]}`
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ScoreRequest {
    inputs: Vec<ConversationInput>,
}

/// `{"scores": [Score, ...]}`, in input order.
#[derive(Serialize)]
pub(crate) struct ScoreResponse {
    scores: Vec<Score>,
}

pub(crate) async fn score(
    State(state): State<Shared>,
    JsonBody(req): JsonBody<ScoreRequest>,
) -> Result<Json<ScoreResponse>, ServeError> {
    let convs = req
        .inputs
        .into_iter()
        .enumerate()
        .map(|(i, input)| {
            Conversation::try_from(input).map_err(|e| ServeError::BadRequest(format!("inputs[{i}]: {e}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let (scores, _) = state.score(convs).await?;
    Ok(Json(ScoreResponse { scores }))
}

/// `{"prompt" or "messages", "candidates": [str, ...]}`
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RankRequest {
    #[serde(default)]
    prompt: Option<String>,
    #[serde(default)]
    messages: Option<Vec<Message>>,
    candidates: Vec<String>,
}

/// `{"ranked": [Ranked, ...]}`, best first.
#[derive(Serialize)]
pub(crate) struct RankResponse {
    ranked: Vec<Ranked>,
}

pub(crate) async fn rank(
    State(state): State<Shared>,
    JsonBody(req): JsonBody<RankRequest>,
) -> Result<Json<RankResponse>, ServeError> {
    let messages = dmoerm::text::history(req.prompt, req.messages)?;
    let ranked = state.rank(messages, req.candidates).await?;
    Ok(Json(RankResponse { ranked }))
}
