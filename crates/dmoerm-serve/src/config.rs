//! The server's limits and settings.

use std::time::Duration;

/// How the server batches, and what it accepts. The defaults suit a CPU and the default model.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// The name reported as `model` in the vLLM-style responses.
    pub model_name: String,
    /// How long the idle worker waits for more requests after the first one of a batch.
    pub batch_window: Duration,
    /// Most conversations in one batch (requests are merged up to this many).
    pub max_batch_inputs: usize,
    /// Most tokens (experts' inputs, after truncation) in one batch.
    pub max_batch_tokens: usize,
    /// Most conversations waiting or being scored; a request that does not fit gets `429`.
    pub queue_inputs: usize,
    /// Most conversations (or candidates) in one request (`400` above).
    pub max_inputs: usize,
    /// Most bytes of text in one conversation (`400` above).
    pub max_input_bytes: usize,
    /// Most bytes in a request body (`413` above).
    pub max_body_bytes: usize,
    /// Longest a request may wait and be scored (`504` after).
    pub timeout: Duration,
    /// When set, every route but `/health` needs `Authorization: Bearer <key>`.
    pub api_key: Option<String>,
}

impl Default for ServeConfig {
    fn default() -> Self {
        Self {
            model_name: "dmoerm".into(),
            batch_window: Duration::from_millis(5),
            max_batch_inputs: 64,
            max_batch_tokens: 16_384,
            queue_inputs: 1024,
            max_inputs: 256,
            max_input_bytes: 64 * 1024,
            max_body_bytes: 8 * 1024 * 1024,
            timeout: Duration::from_secs(60),
            api_key: None,
        }
    }
}

impl ServeConfig {
    /// Rejects settings under which some requests could never be served.
    pub fn check(&self) -> Result<(), String> {
        if self.max_inputs == 0 || self.max_batch_inputs == 0 || self.max_batch_tokens == 0 {
            return Err("max_inputs, max_batch_inputs and max_batch_tokens must be at least 1".into());
        }
        if self.queue_inputs < self.max_inputs {
            return Err(format!(
                "queue_inputs ({}) must be at least max_inputs ({}): a full-size request could never enter the queue",
                self.queue_inputs, self.max_inputs
            ));
        }
        if u32::try_from(self.queue_inputs).is_err() {
            return Err("queue_inputs is too large".into());
        }
        if matches!(&self.api_key, Some(k) if k.is_empty()) {
            return Err("the API key is empty".into());
        }
        Ok(())
    }
}
