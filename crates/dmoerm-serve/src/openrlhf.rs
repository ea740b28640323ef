//! OpenRLHF's remote reward model API (`--remote_rm_url http://HOST:PORT/get_reward`).
//!
//! OpenRLHF sends each sample as the policy rendered it: `query[i]` is the whole chat-formatted
//! text (prompt, then response) and `prompts[i]` its prompt part. The response is what follows
//! the prompt in the query (text before the prompt, such as left padding, is dropped); the
//! prompt, as the policy rendered it, is the user turn the reward model reads.
//!
//! The answer is `{"rewards": [r], "scores": [r], "extra_logs": {...}}`. OpenRLHF logs each
//! `extra_logs` list's batch mean; a capability score exists only for the samples routed to
//! its task, so the lists are `"<task>/<capability>"` (the score, 0 where the sample went to
//! another task) and `"<task>/routed"` (1 or 0): their means' ratio is the mean within the task.

use std::collections::BTreeMap;

use axum::extract::State;
use axum::Json;
use dmoerm::Conversation;
use serde::{Deserialize, Serialize};

use crate::error::ServeError;
use crate::state::{JsonBody, Shared};

/// OpenRLHF's request body (`labels` and any other field are accepted and not used).
#[derive(Deserialize)]
pub(crate) struct RewardRequest {
    query: Vec<String>,
    #[serde(default)]
    prompts: Option<Vec<String>>,
}

#[derive(Serialize)]
pub(crate) struct RewardResponse {
    rewards: Vec<f32>,
    scores: Vec<f32>,
    extra_logs: BTreeMap<String, Vec<f32>>,
}

pub(crate) async fn get_reward(
    State(state): State<Shared>,
    JsonBody(req): JsonBody<RewardRequest>,
) -> Result<Json<RewardResponse>, ServeError> {
    let prompts = req.prompts.ok_or_else(|| {
        ServeError::BadRequest("`prompts` is required: it tells where each query's response begins".into())
    })?;
    if prompts.len() != req.query.len() {
        return Err(ServeError::BadRequest(format!(
            "{} queries but {} prompts: give one prompt per query",
            req.query.len(),
            prompts.len()
        )));
    }
    let convs = req
        .query
        .iter()
        .zip(&prompts)
        .enumerate()
        .map(|(i, (query, prompt))| {
            split(query, prompt)
                .ok_or_else(|| ServeError::BadRequest(format!("query[{i}] does not contain prompts[{i}]")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let (scores, _) = state.score(convs).await?;
    let rewards: Vec<f32> = scores.iter().map(|s| s.reward).collect();
    let mut extra_logs = BTreeMap::new();
    for task in state.model.tasks() {
        let routed = scores.iter().map(|s| if s.task == task { 1.0 } else { 0.0 }).collect();
        extra_logs.insert(format!("{task}/routed"), routed);
        for capability in state.model.capabilities(task).unwrap_or_default() {
            let values = scores
                .iter()
                .map(|s| {
                    let score = s.capabilities.iter().find(|(name, _)| name == capability);
                    score.filter(|_| s.task == task).map_or(0.0, |(_, v)| *v)
                })
                .collect();
            extra_logs.insert(format!("{task}/{capability}"), values);
        }
    }
    Ok(Json(RewardResponse { scores: rewards.clone(), rewards, extra_logs }))
}

/// The conversation of one sample: the prompt as the user turn, what follows it as the response.
fn split(query: &str, prompt: &str) -> Option<Conversation> {
    if prompt.is_empty() {
        return None;
    }
    let start = query.find(prompt)?;
    Some(Conversation::new(prompt, &query[start + prompt.len()..]))
}

#[cfg(test)]
mod tests {
    use super::split;

    #[test]
    fn the_response_is_what_follows_the_prompt() {
        let c = split("<pad><pad>User: hi\nAssistant: hello</s>", "User: hi\nAssistant:").unwrap();
        assert_eq!(c.messages[0].content, "User: hi\nAssistant:");
        assert_eq!(c.response, " hello</s>");
        assert!(split("something else", "User: hi").is_none());
        assert!(split("anything", "").is_none());
    }
}
