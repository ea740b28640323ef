//! What every handler shares, and the one path from a request's conversations to the batcher:
//! limits, token counts, the queue, the answer.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use dmoerm::{Conversation, Message, Ranked, RewardModel, Score};
use serde::de::DeserializeOwned;

use crate::batcher::{Batcher, Done, Work};
use crate::config::ServeConfig;
use crate::error::ServeError;
use crate::metrics::Metrics;

/// What every handler shares.
pub(crate) struct AppState {
    pub model: Arc<RewardModel>,
    pub config: ServeConfig,
    pub batcher: Batcher,
    pub metrics: Arc<Metrics>,
}

pub(crate) type Shared = Arc<AppState>;

impl AppState {
    /// Scores `convs` through the queue: checks the request's limits, counts tokens, waits.
    /// Returns the scores in input order and the experts' token count.
    pub async fn score(self: &Arc<Self>, convs: Vec<Conversation>) -> Result<(Vec<Score>, usize), ServeError> {
        self.check_count(convs.len(), "inputs")?;
        let state = self.clone();
        let (convs, tokens) = blocking(move || {
            let tokens = convs.iter().map(|c| state.tokens(c)).sum::<Result<usize, _>>()?;
            Ok((convs, tokens))
        })
        .await?;
        let n = convs.len();
        match self.batcher.submit(Work::Score(convs), n, tokens, self.config.timeout).await? {
            Done::Scores(scores) => Ok((scores, tokens)),
            Done::Ranked(_) => Err(ServeError::Model(dmoerm::Error::Backend("a rank came back for a score".into()))),
        }
    }

    /// Ranks `candidates` after `messages` through the queue, best first.
    pub async fn rank(
        self: &Arc<Self>,
        messages: Vec<Message>,
        candidates: Vec<String>,
    ) -> Result<Vec<Ranked>, ServeError> {
        self.check_count(candidates.len(), "candidates")?;
        let state = self.clone();
        let (messages, candidates, tokens) = blocking(move || {
            let mut tokens = 0;
            for c in &candidates {
                tokens += state.tokens(&Conversation::with_messages(messages.clone(), c.clone()))?;
            }
            Ok((messages, candidates, tokens))
        })
        .await?;
        let n = candidates.len();
        match self.batcher.submit(Work::Rank { messages, candidates }, n, tokens, self.config.timeout).await? {
            Done::Ranked(ranked) => Ok(ranked),
            Done::Scores(_) => Err(ServeError::Model(dmoerm::Error::Backend("scores came back for a rank".into()))),
        }
    }

    fn check_count(&self, n: usize, what: &str) -> Result<(), ServeError> {
        if n == 0 {
            return Err(ServeError::BadRequest(format!("no {what}: give at least one")));
        }
        if n > self.config.max_inputs {
            return Err(ServeError::BadRequest(format!(
                "{n} {what} in one request; the limit is {} (split the request)",
                self.config.max_inputs
            )));
        }
        Ok(())
    }

    /// The experts' token count of `conv`, after the input size check.
    fn tokens(&self, conv: &Conversation) -> Result<usize, ServeError> {
        let bytes = conv.response.len() + conv.messages.iter().map(|m| m.content.len()).sum::<usize>();
        if bytes > self.config.max_input_bytes {
            return Err(ServeError::BadRequest(format!(
                "an input has {bytes} bytes of text; the limit is {}",
                self.config.max_input_bytes
            )));
        }
        Ok(self.model.encode(conv)?.expert.ids.len())
    }
}

/// Tokenizing a large request takes a while: off the async threads.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ServeError> + Send + 'static,
) -> Result<T, ServeError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ServeError::Model(dmoerm::Error::Backend(format!("tokenizing failed: {e}"))))?
}

/// A JSON body, parsed after the size limit, with errors in the server's JSON error shape.
pub(crate) struct JsonBody<T>(pub T);

impl<T: DeserializeOwned> FromRequest<Shared> for JsonBody<T> {
    type Rejection = ServeError;

    async fn from_request(req: Request, state: &Shared) -> Result<Self, ServeError> {
        let bytes = Bytes::from_request(req, state).await.map_err(|e| {
            if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ServeError::TooLarge(state.config.max_body_bytes)
            } else {
                ServeError::BadRequest(e.body_text())
            }
        })?;
        serde_json::from_slice(&bytes)
            .map(JsonBody)
            .map_err(|e| ServeError::BadRequest(format!("invalid request body: {e}")))
    }
}
